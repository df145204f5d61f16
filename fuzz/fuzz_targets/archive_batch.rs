#![no_main]
//! Fuzz target `archive_batch`: see `urpnet_node::fuzz::archive_batch`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| urpnet_node::fuzz::archive_batch(data));
