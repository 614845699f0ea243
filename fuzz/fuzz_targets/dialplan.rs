#![no_main]
//! Fuzz target `dialplan`: see `hotline::fuzz::dialplan` (the same body replays the corpus in the test suite).
libfuzzer_sys::fuzz_target!(|data: &[u8]| hotline::fuzz::dialplan(data));
