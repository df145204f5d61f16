#![no_main]
//! Fuzz target `taxonomy`: see `urpnet_node::fuzz::taxonomy`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| urpnet_node::fuzz::taxonomy(data));
