#![no_main]
//! Fuzz target `config`: see `hotline::fuzz::config` (the same body replays the corpus in the test suite).
libfuzzer_sys::fuzz_target!(|data: &[u8]| hotline::fuzz::config(data));
