//! Integration tests: the real binary and the real router, over real sockets.
//! One test binary with modules, so it links once.

mod analytics;
mod api;
mod cli_ingest;
mod crash;
mod dashboard;
mod mqtt;
mod pg;
mod states;
mod stores;
mod support;
