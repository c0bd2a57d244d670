//! Fuzz target `csv`: the check is `millwatch::fuzzing::csv`, which the normal test suite
//! also runs over this target's saved corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| millwatch::fuzzing::csv(data));
