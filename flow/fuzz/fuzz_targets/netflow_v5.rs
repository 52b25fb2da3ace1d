//! NetFlow v5: one datagram per input, version 5 forced. Stateless: header, record count
//! against the datagram's length, fixed 48-byte records, uptime-relative timestamps.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sotp_flow_fuzz::single(sotp_flow_fuzz::NETFLOW_V5, data));
