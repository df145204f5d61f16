#![no_main]
//! Fuzz target `shared_versions`: see `urpnet_node::fuzz::shared_versions`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| urpnet_node::fuzz::shared_versions(data));
