//! millwatch: machine telemetry in one binary. Readings come in from sources, the pipeline
//! gives them moving averages, the store keeps them, and the API and dashboard show them.
//!
//! The pure core ([`timestamp`], [`reading`], [`window`], [`pipeline`]) does no I/O; everything
//! that talks to the outside world is an adapter around it.

pub mod alerting;
pub mod alerts_check;
pub mod analyze;
pub mod api;
pub mod chain;
pub mod cli;
pub mod core;
pub mod csv_input;
pub mod dedup;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
pub mod ingest;
pub mod jobs;
pub mod lineproto;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod reading;
pub mod serve;
pub mod service;
pub mod sources;
pub mod status;
pub mod store;
pub mod timestamp;
pub mod token;
pub mod window;
