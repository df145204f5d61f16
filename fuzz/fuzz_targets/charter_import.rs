#![no_main]
//! Fuzz target `charter_import`: see `urpnet_node::fuzz::charter_import`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| urpnet_node::fuzz::charter_import(data));
