#![no_main]
//! Fuzz target `ics`: see `urpnet_node::fuzz::ics`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| urpnet_node::fuzz::ics(data));
