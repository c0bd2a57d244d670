//! Data out (SPEC §10): records as CSV, NDJSON and Parquet, for `GET /data` and `millwatch
//! export`.

pub mod csv;
