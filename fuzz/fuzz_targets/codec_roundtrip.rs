//! Fuzz target `codec_roundtrip`: the check is `millwatch::fuzzing::codec_roundtrip`, which the normal test suite
//! also runs over this target's saved corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| millwatch::fuzzing::codec_roundtrip(data));
