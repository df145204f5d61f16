#![no_main]
//! Fuzz target `photo`: see `urpnet_node::fuzz::photo`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| urpnet_node::fuzz::photo(data));
