//! Classic pcap files of UDP flow exports: read them (for the oracle tests and replays) and
//! generate them with the scapy script in tests/flows.
//!
//! Written by hand: the format is a 24-byte header and 16-byte record headers, and only
//! Ethernet/IPv4/UDP frames are needed here.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// One UDP datagram of a capture.
#[derive(Clone, Debug)]
pub struct Datagram {
    pub source: IpAddr,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

pub fn read_udp(path: &Path) -> anyhow::Result<Vec<Datagram>> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    anyhow::ensure!(bytes.len() >= 24, "{}: not a pcap file", path.display());
    let magic = u32::from_le_bytes(bytes[0..4].try_into()?);
    let le = match magic {
        0xa1b2c3d4 | 0xa1b23c4d => true,
        0xd4c3b2a1 | 0x4d3cb2a1 => false,
        _ => anyhow::bail!("{}: not a classic pcap file", path.display()),
    };
    let u32_at = |b: &[u8], i: usize| {
        let a: [u8; 4] = b[i..i + 4].try_into().unwrap_or([0; 4]);
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let linktype = u32_at(&bytes, 20);
    let mut out = Vec::new();
    let mut pos = 24;
    while pos + 16 <= bytes.len() {
        let caplen = u32_at(&bytes, pos + 8) as usize;
        let frame = bytes
            .get(pos + 16..pos + 16 + caplen)
            .ok_or_else(|| anyhow::anyhow!("{}: truncated record", path.display()))?;
        pos += 16 + caplen;
        let ip = match linktype {
            1 => &frame[14.min(frame.len())..],   // Ethernet
            101 => frame,                         // raw IP
            113 => &frame[16.min(frame.len())..], // Linux cooked
            t => anyhow::bail!("{}: unsupported link type {t}", path.display()),
        };
        if ip.len() < 28 || ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let ihl = (ip[0] & 0x0f) as usize * 4;
        let udp = &ip[ihl..];
        let source = IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]));
        let dst_port = u16::from_be_bytes([udp[2], udp[3]]);
        let len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
        let payload = udp.get(8..len.min(udp.len())).unwrap_or_default().to_vec();
        out.push(Datagram {
            source,
            dst_port,
            payload,
        });
    }
    Ok(out)
}

/// tests/flows in the source tree.
pub fn flows_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("flows")
}

/// Run tests/flows/gen_pcaps.py into `dir` (scapy imports with the system python only).
pub fn generate(dir: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("/usr/bin/python3")
        .arg(flows_dir().join("gen_pcaps.py"))
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(
        status.success(),
        "gen_pcaps.py failed ({status}); is python3-scapy installed? (scripts/setup)"
    );
    Ok(())
}

/// `tshark -T json` of a capture, with `port` dissected as NetFlow/IPFIX when given.
pub fn tshark_json(pcap: &Path, cflow_port: Option<u16>) -> anyhow::Result<serde_json::Value> {
    let mut cmd = std::process::Command::new("tshark");
    cmd.arg("-r")
        .arg(pcap)
        .args(["-T", "json", "--no-duplicate-keys"]);
    if let Some(port) = cflow_port {
        cmd.arg("-d").arg(format!("udp.port=={port},cflow"));
    }
    let out = cmd
        .output()
        .map_err(|e| anyhow::anyhow!("running tshark: {e} (scripts/setup installs it)"))?;
    anyhow::ensure!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}
