#![no_main]
//! Fuzz target `core`: see `hotline::fuzz::core` (the same body replays the corpus in the test suite).
libfuzzer_sys::fuzz_target!(|data: &[u8]| hotline::fuzz::core(data));
