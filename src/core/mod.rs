//! The pure core: no I/O, no HTTP, no SQL. Modules here take values and give values.

pub mod alerts;
pub mod analytics;
pub mod numeric;
pub mod oee;
pub mod states;
