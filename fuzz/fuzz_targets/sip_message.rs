#![no_main]
//! Fuzz target `sip_message`: see `hotline::fuzz::sip_message` (the same body replays the corpus in the test suite).
libfuzzer_sys::fuzz_target!(|data: &[u8]| hotline::fuzz::sip_message(data));
