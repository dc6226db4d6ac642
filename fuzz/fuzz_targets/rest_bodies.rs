#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hopcast::testkit::fuzz::rest_bodies(data));
