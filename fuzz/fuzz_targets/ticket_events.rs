#![no_main]
//! Fuzz target `ticket_events`: see `urpnet_node::fuzz::ticket_events`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| urpnet_node::fuzz::ticket_events(data));
