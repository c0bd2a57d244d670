//! Integration tests: the real binary and the real router, over real sockets.
//! One test binary with modules, so it links once.

mod alerts;
mod alerts_browser;
mod analytics;
mod api;
mod auth;
mod auth_browser;
mod cli_ingest;
mod crash;
mod damaged;
mod dashboard;
mod dashboard_firsthour;
mod dedup;
mod export;
mod firsthour;
mod fuzz_corpus;
mod grafana;
mod limits;
mod mqtt;
mod pg;
mod pg_sql;
mod readme;
mod resources;
mod serve_bin;
mod states;
mod stores;
mod support;
