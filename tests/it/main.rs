//! Integration tests: the real binary and the real router, over real sockets.
//! One test binary with modules, so it links once.

mod analytics;
mod api;
mod cli_ingest;
mod crash;
mod dashboard;
mod fuzz_corpus;
mod mqtt;
mod pg;
mod stores;
mod support;
