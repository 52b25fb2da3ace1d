//! IPFIX: a sequence of messages (split on `sotp_flow_fuzz::SEP`), version 10 forced on
//! each, through one decoder — templates, options templates, withdrawal (of one or all),
//! redefinition, enterprise and variable-length elements, data held until its template.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sotp_flow_fuzz::sequence(sotp_flow_fuzz::IPFIX, data));
