//! Fuzz target `codec_decode`: the check is `millwatch::fuzzing::codec_decode`, which the normal test suite
//! also runs over this target's saved corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| millwatch::fuzzing::codec_decode(data));
