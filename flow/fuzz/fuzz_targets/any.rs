//! The input as it is, one datagram: the version dispatch of `FlowDecoder::decode` and
//! whatever protocol the input happens to select.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut h = sotp_flow_fuzz::Harness::default();
    h.feed(data);
    h.check_counters();
});
