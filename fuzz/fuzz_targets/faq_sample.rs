#![no_main]
//! Fuzz target `faq_sample`: see `urpnet_node::fuzz::faq_sample`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| urpnet_node::fuzz::faq_sample(data));
