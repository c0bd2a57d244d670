//! millwatch: machine telemetry in one binary. Readings come in from sources, the pipeline
//! gives them moving averages, the store keeps them, the alert engine watches them, and the API
//! and dashboard show them. This file is the code map; docs/architecture.md tells the rest.
//!
//! Data flows one way: sources → [`service`] (the [`pipeline`], then [`alerting`]) → [`store`]
//! (durable, then acknowledged) → the latest cache and the live events of [`api`].

// The pure core: values in, values out; no I/O, HTTP, SQL or MQTT.
pub mod core; // analytics, numeric (exact sums), alerts (rules and states), states, oee
pub mod csv_input; // CSV readings (SPEC §1)
pub mod dedup; // the duplicate rule over a machine's whole history (SPEC §2)
pub mod lineproto; // InfluxDB line protocol (SPEC §1)
pub mod pipeline; // reading in, processed record out (SPEC §2)
pub mod reading; // reading types and the JSON parsers, serde and fast path (SPEC §1)
pub mod status; // the job-status lifecycle (SPEC §4)
pub mod timestamp; // instants as nanoseconds, RFC 3339 in and out
pub mod window; // the exact moving average

// The running service and its adapters.
pub mod alerting; // the alert engine behind a lock, its clock and its storing task (SPEC §7)
pub mod api; // the axum router, auth, the one error type, a file per resource (SPEC §4, §9)
pub mod jobs; // job statuses moved by readings or the simulator's MES
pub mod metrics; // the Prometheus recorder behind /metrics
pub mod notify; // the outbox's delivery: webhook, Alertmanager, MQTT (SPEC §7)
pub mod service; // one pipeline fed by every door
pub mod sources; // file, HTTP poll, MQTT, simulator: one file per kind
pub mod store; // the Store trait; memory, SQLite (with its log engine), PostgreSQL (SPEC §6, §10)

// Commands: one module per subcommand, and what they share.
pub mod alerts_check; // millwatch alerts check
pub mod analyze; // millwatch analyze
pub mod chain; // an error with its causes, in one line
pub mod cli; // the clap definitions of every command
pub mod export; // millwatch export, and CSV for GET /data (SPEC §10)
pub mod ingest; // millwatch ingest
pub mod serve; // millwatch serve
pub mod token; // millwatch token new

#[doc(hidden)]
pub mod fuzzing; // the fuzz targets' checks, replayed by the normal tests
