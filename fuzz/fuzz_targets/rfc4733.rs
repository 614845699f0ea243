#![no_main]
//! Fuzz target `rfc4733`: see `hotline::fuzz::rfc4733` (the same body replays the corpus in the test suite).
libfuzzer_sys::fuzz_target!(|data: &[u8]| hotline::fuzz::rfc4733(data));
