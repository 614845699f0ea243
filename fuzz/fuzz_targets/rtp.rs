#![no_main]
//! Fuzz target `rtp`: see `hotline::fuzz::rtp` (the same body replays the corpus in the test suite).
libfuzzer_sys::fuzz_target!(|data: &[u8]| hotline::fuzz::rtp(data));
