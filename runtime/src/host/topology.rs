//! `sotp:telemetry/topology`: what a correlation policy reads during `decide` — the
//! snapshot the correlation engine hands the instance for the batch. Outside a `decide`
//! (in `init`) there is none, and every function answers empty.

use super::HostState;
use super::policy_world::sotp::telemetry::topology::{self, LinkInfo, NodeInfo};
use super::{WitAlert, WitIncident};

impl topology::Host for HostState {
    fn node(&mut self, device: String) -> Option<NodeInfo> {
        self.topology.as_ref()?.node(&device)
    }

    fn children(&mut self, device: String) -> Vec<String> {
        self.topology
            .as_ref()
            .map(|t| t.children(&device))
            .unwrap_or_default()
    }

    fn links(&mut self, device: String) -> Vec<LinkInfo> {
        self.topology
            .as_ref()
            .map(|t| t.links(&device))
            .unwrap_or_default()
    }

    fn firing(&mut self, device: String) -> Vec<WitAlert> {
        self.topology
            .as_ref()
            .map(|t| t.firing(&device))
            .unwrap_or_default()
    }

    fn incidents(&mut self) -> Vec<WitIncident> {
        self.topology
            .as_ref()
            .map(|t| t.incidents())
            .unwrap_or_default()
    }
}

impl super::policy_world::sotp::telemetry::correlation_types::Host for HostState {}
