//! Fuzz target `analytics_body`: the check is `millwatch::fuzzing::analytics_body`, which the normal test suite
//! also runs over this target's saved corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| millwatch::fuzzing::analytics_body(data));
