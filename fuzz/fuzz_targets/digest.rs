#![no_main]
//! Fuzz target `digest`: see `hotline::fuzz::digest` (the same body replays the corpus in the test suite).
libfuzzer_sys::fuzz_target!(|data: &[u8]| hotline::fuzz::digest(data));
