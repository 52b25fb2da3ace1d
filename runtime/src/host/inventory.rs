//! `sotp:telemetry/inventory`: the devices a component's grants cover and their links to
//! neighbours (read by every world), and the interface-name table collectors fill for flow
//! enrichment (written by collectors only: a compliance rule reads, it never changes).

use super::{HostState, WitError};
use crate::grants::deny_device;
use crate::host::sotp::telemetry::inventory::{self, DeviceInfo, Link};
use crate::manifest::World;
use std::time::Instant;

const MAX_INTERFACES: usize = 100_000;

impl inventory::Host for HostState {
    fn devices(&mut self) -> Vec<DeviceInfo> {
        let started = Instant::now();
        let all = self
            .env
            .services
            .devices(&self.env.tenant)
            .unwrap_or_default();
        self.clock.in_host += started.elapsed();
        all.into_iter()
            .filter(|d| deny_device(&self.env.manifest.grants, d).is_none())
            .map(|d| DeviceInfo {
                has_snmp: d.snmp.is_some(),
                has_ssh: d.ssh.is_some(),
                name: d.name,
                address: d.address,
                platform: d.platform,
                site: d.site,
                role: d.role,
                tags: d.tags,
            })
            .collect()
    }

    fn links(&mut self, device: String) -> Result<Vec<Link>, WitError> {
        let device = self.granted_device(&device)?;
        Ok(device
            .links
            .into_iter()
            .map(|l| Link {
                interface: l.interface,
                neighbor: l.neighbor,
                neighbor_interface: l.neighbor_interface,
            })
            .collect())
    }

    fn set_interface_names(
        &mut self,
        device: String,
        names: Vec<(u32, String)>,
    ) -> Result<(), WitError> {
        if self.env.manifest.world != World::Collector {
            return Err(WitError::Denied(format!(
                "a {} component cannot change the inventory",
                self.env.manifest.world.name()
            )));
        }
        let device = self.granted_device(&device)?;
        if names.len() > MAX_INTERFACES {
            return Err(WitError::Invalid(format!(
                "more than {MAX_INTERFACES} interfaces"
            )));
        }
        let started = Instant::now();
        let result = self
            .env
            .services
            .set_interface_names(&self.env.tenant, &device.name, &names);
        self.clock.in_host += started.elapsed();
        result.map_err(WitError::Unavailable)
    }
}
