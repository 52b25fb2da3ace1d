//! NetFlow v9: a sequence of datagrams (split on `sotp_flow_fuzz::SEP`), version 9 forced on
//! each, through one decoder — templates and options templates learned in one datagram and
//! used, redefined or sampled (options data) in later ones, data held until its template.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sotp_flow_fuzz::sequence(sotp_flow_fuzz::NETFLOW_V9, data));
