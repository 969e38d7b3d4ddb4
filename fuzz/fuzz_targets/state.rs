#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dac_fuzz_targets::state(data));
