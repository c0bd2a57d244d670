//! Fuzz target `reading_diff`: the check is `millwatch::fuzzing::reading_diff`, which the normal test suite
//! also runs over this target's saved corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| millwatch::fuzzing::reading_diff(data));
