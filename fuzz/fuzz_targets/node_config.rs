#![no_main]
//! Fuzz target `node_config`: see `urpnet_node::fuzz::node_config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| urpnet_node::fuzz::node_config(data));
