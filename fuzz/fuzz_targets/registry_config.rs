#![no_main]
//! Fuzz target `registry_config`: see `urpnet_registry::config::fuzz`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| urpnet_registry::config::fuzz(data));
