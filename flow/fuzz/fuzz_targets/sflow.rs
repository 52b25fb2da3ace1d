//! sFlow v5: one datagram per input, the 32-bit version 5 forced. Stateless: XDR samples and
//! records, and the sampled packet headers (Ethernet, VLAN, IPv4/IPv6, transport) in them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sotp_flow_fuzz::single(sotp_flow_fuzz::SFLOW, data));
