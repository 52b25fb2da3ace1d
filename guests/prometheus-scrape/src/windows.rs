//! windows_exporter's families under node_exporter's names, where they mean the same, so a
//! dashboard built on node_exporter's names shows Windows hosts too. The windows_* series
//! are kept as scraped; these are added beside them (`windows_node_names = false` turns
//! them off).
//!
//! | windows_exporter | node_exporter |
//! |---|---|
//! | `windows_cpu_time_total{core,mode}` | `node_cpu_seconds_total{cpu,mode}`: idle, user; privileged → system, interrupt → irq, dpc → softirq; core `0,3` → cpu `3` (processor group 0), `1,3` kept |
//! | `windows_memory_available_bytes` | `node_memory_MemAvailable_bytes` |
//! | `windows_memory_free_and_zero_page_list_bytes` | `node_memory_MemFree_bytes` |
//! | `windows_memory_physical_total_bytes`, else `windows_cs_physical_memory_bytes` | `node_memory_MemTotal_bytes` |
//! | `windows_logical_disk_size_bytes{volume}` | `node_filesystem_size_bytes{mountpoint,device}` |
//! | `windows_logical_disk_free_bytes{volume}` | `node_filesystem_avail_bytes`, `node_filesystem_free_bytes` |
//! | `windows_logical_disk_{read,write}_bytes_total`, `_reads_total`, `_writes_total`, `_{read,write}_seconds_total` | `node_disk_read_bytes_total`, `_written_bytes_total`, `_reads_completed_total`, `_writes_completed_total`, `_read_time_seconds_total`, `_write_time_seconds_total` {device} |
//! | `windows_net_bytes_{received,sent}_total{nic}`, packets, errors, discards | `node_network_{receive,transmit}_{bytes,packets,errs,drop}_total{device}` |
//! | `windows_service_state{name,state}` | `node_systemd_unit_state{name,state}`: running → active, start/continue pending → activating, stop/pause pending → deactivating, stopped/paused → inactive |
//! | `windows_system_boot_time_timestamp_seconds`, else `windows_system_system_up_time` | `node_boot_time_seconds` |
//!
//! Not mapped (no equivalent meaning): Windows' cache and pool bytes, commit charge, CPU
//! frequency and C-states, a service's start mode.

use sotp_guest::{Label, Sample};
use std::collections::BTreeMap;

/// The node_exporter-named samples `samples` (one scrape of a windows_exporter) stand for.
pub fn node_equivalents(samples: &[Sample]) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut services: BTreeMap<String, (Option<&'static str>, &Sample)> = BTreeMap::new();
    let has = |name: &str| samples.iter().any(|s| s.metric == name);
    for s in samples {
        match s.metric.as_str() {
            "windows_cpu_time_total" => {
                let mode = match get(s, "mode") {
                    Some("idle") => "idle",
                    Some("user") => "user",
                    Some("privileged") => "system",
                    Some("interrupt") => "irq",
                    Some("dpc") => "softirq",
                    _ => continue,
                };
                let core = get(s, "core").unwrap_or("");
                let cpu = core.strip_prefix("0,").unwrap_or(core);
                out.push(renamed(
                    s,
                    "node_cpu_seconds_total",
                    &["core", "mode"],
                    &[("cpu", cpu), ("mode", mode)],
                ));
            }
            "windows_memory_available_bytes" => {
                out.push(renamed(s, "node_memory_MemAvailable_bytes", &[], &[]))
            }
            "windows_memory_free_and_zero_page_list_bytes" => {
                out.push(renamed(s, "node_memory_MemFree_bytes", &[], &[]))
            }
            "windows_memory_physical_total_bytes" => {
                out.push(renamed(s, "node_memory_MemTotal_bytes", &[], &[]))
            }
            "windows_cs_physical_memory_bytes" if !has("windows_memory_physical_total_bytes") => {
                out.push(renamed(s, "node_memory_MemTotal_bytes", &[], &[]))
            }
            "windows_system_boot_time_timestamp_seconds" => {
                out.push(renamed(s, "node_boot_time_seconds", &[], &[]))
            }
            "windows_system_system_up_time"
                if !has("windows_system_boot_time_timestamp_seconds") =>
            {
                out.push(renamed(s, "node_boot_time_seconds", &[], &[]))
            }
            "windows_logical_disk_size_bytes" => out.push(volume(s, "node_filesystem_size_bytes")),
            "windows_logical_disk_free_bytes" => {
                out.push(volume(s, "node_filesystem_avail_bytes"));
                out.push(volume(s, "node_filesystem_free_bytes"));
            }
            "windows_service_state" => {
                let Some(name) = get(s, "name") else { continue };
                let entry = services.entry(name.to_string()).or_insert((None, s));
                if s.value == 1.0 {
                    entry.0 = unit_state(get(s, "state").unwrap_or(""));
                }
            }
            other => {
                if let Some(node) = disk_name(other) {
                    let device = get(s, "volume").unwrap_or("");
                    out.push(renamed(s, node, &["volume"], &[("device", device)]));
                } else if let Some(node) = net_name(other) {
                    let device = get(s, "nic").unwrap_or("");
                    out.push(renamed(s, node, &["nic"], &[("device", device)]));
                }
            }
        }
    }
    for (name, (state, s)) in services {
        for candidate in ["active", "activating", "deactivating", "inactive", "failed"] {
            let mut sample = renamed(
                s,
                "node_systemd_unit_state",
                &["name", "state", "display_name"],
                &[("name", &name), ("state", candidate)],
            );
            sample.value = if state == Some(candidate) { 1.0 } else { 0.0 };
            out.push(sample);
        }
    }
    out
}

fn unit_state(windows: &str) -> Option<&'static str> {
    Some(match windows {
        "running" => "active",
        "start pending" | "continue pending" => "activating",
        "stop pending" | "pause pending" => "deactivating",
        "stopped" | "paused" => "inactive",
        _ => return None,
    })
}

fn disk_name(windows: &str) -> Option<&'static str> {
    Some(match windows {
        "windows_logical_disk_read_bytes_total" => "node_disk_read_bytes_total",
        "windows_logical_disk_write_bytes_total" => "node_disk_written_bytes_total",
        "windows_logical_disk_reads_total" => "node_disk_reads_completed_total",
        "windows_logical_disk_writes_total" => "node_disk_writes_completed_total",
        "windows_logical_disk_read_seconds_total" => "node_disk_read_time_seconds_total",
        "windows_logical_disk_write_seconds_total" => "node_disk_write_time_seconds_total",
        _ => return None,
    })
}

fn net_name(windows: &str) -> Option<&'static str> {
    Some(match windows {
        "windows_net_bytes_received_total" => "node_network_receive_bytes_total",
        "windows_net_bytes_sent_total" => "node_network_transmit_bytes_total",
        "windows_net_packets_received_total" => "node_network_receive_packets_total",
        "windows_net_packets_sent_total" => "node_network_transmit_packets_total",
        "windows_net_packets_received_errors_total" => "node_network_receive_errs_total",
        "windows_net_packets_outbound_errors_total" => "node_network_transmit_errs_total",
        "windows_net_packets_received_discarded_total" => "node_network_receive_drop_total",
        "windows_net_packets_outbound_discarded_total" => "node_network_transmit_drop_total",
        _ => return None,
    })
}

/// A volume's series as node_exporter's filesystem series (`C:` as device and mountpoint).
fn volume(s: &Sample, metric: &str) -> Sample {
    let v = get(s, "volume").unwrap_or("");
    renamed(s, metric, &["volume"], &[("device", v), ("mountpoint", v)])
}

fn get<'a>(s: &'a Sample, name: &str) -> Option<&'a str> {
    s.labels
        .iter()
        .find(|l| l.name == name)
        .map(|l| l.value.as_str())
}

/// `s` as `metric`, without the labels in `drop`, with `add`.
fn renamed(s: &Sample, metric: &str, drop: &[&str], add: &[(&str, &str)]) -> Sample {
    let mut labels: Vec<Label> = s
        .labels
        .iter()
        .filter(|l| !drop.contains(&l.name.as_str()))
        .cloned()
        .collect();
    for (name, value) in add {
        labels.push(Label {
            name: name.to_string(),
            value: value.to_string(),
        });
    }
    Sample {
        metric: metric.to_string(),
        labels,
        value: s.value,
        timestamp_ms: s.timestamp_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(metric: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            metric: metric.into(),
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            value,
            timestamp_ms: None,
        }
    }

    fn find<'a>(out: &'a [Sample], metric: &str, label: (&str, &str)) -> &'a Sample {
        out.iter()
            .find(|x| x.metric == metric && get(x, label.0) == Some(label.1))
            .unwrap_or_else(|| panic!("no {metric} with {label:?}"))
    }

    #[test]
    fn families_map_to_node_names() {
        let scraped = vec![
            s(
                "windows_cpu_time_total",
                &[("core", "0,1"), ("mode", "privileged")],
                12.5,
            ),
            s(
                "windows_cpu_time_total",
                &[("core", "1,0"), ("mode", "dpc")],
                0.5,
            ),
            s(
                "windows_cpu_cstate_seconds_total",
                &[("core", "0,1"), ("state", "c1")],
                3.0,
            ),
            s("windows_cs_physical_memory_bytes", &[], 8e9),
            s("windows_memory_available_bytes", &[], 3e9),
            s("windows_logical_disk_free_bytes", &[("volume", "C:")], 4e10),
            s("windows_net_bytes_sent_total", &[("nic", "Ethernet")], 1e6),
            s(
                "windows_service_state",
                &[("name", "dhcp"), ("state", "running")],
                1.0,
            ),
            s(
                "windows_service_state",
                &[("name", "dhcp"), ("state", "stopped")],
                0.0,
            ),
        ];
        let out = node_equivalents(&scraped);
        let cpu = find(&out, "node_cpu_seconds_total", ("cpu", "1"));
        assert_eq!((get(cpu, "mode"), cpu.value), (Some("system"), 12.5));
        assert_eq!(get(cpu, "core"), None);
        let other_group = find(&out, "node_cpu_seconds_total", ("cpu", "1,0"));
        assert_eq!(get(other_group, "mode"), Some("softirq"));
        let total = out
            .iter()
            .find(|x| x.metric == "node_memory_MemTotal_bytes");
        assert_eq!(total.map(|x| x.value), Some(8e9));
        assert_eq!(
            find(&out, "node_filesystem_avail_bytes", ("mountpoint", "C:")).value,
            4e10
        );
        assert_eq!(
            find(
                &out,
                "node_network_transmit_bytes_total",
                ("device", "Ethernet")
            )
            .value,
            1e6
        );
        let active = find(&out, "node_systemd_unit_state", ("state", "active"));
        assert_eq!(active.value, 1.0);
        assert_eq!(
            find(&out, "node_systemd_unit_state", ("state", "inactive")).value,
            0.0
        );
        assert_eq!(
            out.iter()
                .filter(|x| x.metric == "node_systemd_unit_state")
                .count(),
            5
        );
        assert!(!out.iter().any(|x| x.metric.contains("cstate")));
    }
}
