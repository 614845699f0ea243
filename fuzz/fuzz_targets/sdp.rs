#![no_main]
//! Fuzz target `sdp`: see `hotline::fuzz::sdp` (the same body replays the corpus in the test suite).
libfuzzer_sys::fuzz_target!(|data: &[u8]| hotline::fuzz::sdp(data));
