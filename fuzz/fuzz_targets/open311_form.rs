#![no_main]
//! Fuzz target `open311_form`: see `urpnet_node::fuzz::open311_form`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| urpnet_node::fuzz::open311_form(data));
