//! Analytics over a series (SPEC §5): count, average, the earliest min and max, anomalies
//! against a global or moving baseline, and optional time buckets. Pure: slices in, values out.
//!
//! The average is the correctly rounded sum divided by the count, the same number Python's
//! `math.fsum(values) / n` gives, for any mix of magnitudes; the one-pass kernel that gets there
//! at the speed of a plain sum is [`crate::core::numeric::summarize`]. Moving baselines and bucket
//! averages are correctly rounded the same way.
//!
//! Inputs are finite (the parsers and the readings guarantee it); no input makes a NaN or an
//! infinity in the output: sums near f64::MAX are taken scaled by a power of two, and a
//! deviation beyond f64 saturates at ±f64::MAX.
//!
//! - [`anomalies`]: the deviation test and the global and moving baselines;
//! - [`buckets`]: count, average, min and max per time bucket.
//!
//! The request bodies that carry a series are parsed in `crate::api::series_body`.

mod anomalies;
mod buckets;
#[cfg(test)]
mod tests;

use serde::Serializer;

use anomalies::{global_anomalies, moving_anomalies};
use buckets::bucketize;

pub use crate::core::numeric::{Summary, summarize};
use crate::pipeline::serialize_number;
use crate::timestamp::Timestamp;

/// What a value is compared with to decide whether it is an anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// The average of the whole series (SPEC §5, the default).
    Global,
    /// Each value's own simple moving average over the last N values, itself included (SPEC §2).
    Moving(usize),
}

/// How [`analyze`] looks at a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Relative deviation above which a value is an anomaly; finite and >= 0.
    pub threshold: f64,
    /// What values are compared with.
    pub baseline: Baseline,
    /// Width of time buckets in nanoseconds (> 0), aligned to the epoch; `None` for no buckets.
    pub bucket: Option<i64>,
}

impl Default for Options {
    /// SPEC §5: threshold 0.2 against the global average, no buckets.
    fn default() -> Self {
        Options {
            threshold: 0.2,
            baseline: Baseline::Global,
            bucket: None,
        }
    }
}

/// The smallest or largest value of a series and when it was taken.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Extreme {
    /// The value.
    #[serde(serialize_with = "number")]
    pub value: f64,
    /// Its timestamp (the earliest, on a tie).
    pub timestamp: Timestamp,
}

/// A value that deviates from its baseline by more than the threshold.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Anomaly {
    /// When the value was taken.
    pub timestamp: Timestamp,
    /// The value.
    #[serde(serialize_with = "number")]
    pub value: f64,
    /// `(value − baseline) / |baseline|`; `None` (null) when the baseline is 0.
    #[serde(serialize_with = "optional_number")]
    pub deviation: Option<f64>,
    /// The moving average the value was compared with; only for [`Baseline::Moving`].
    #[serde(
        serialize_with = "optional_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub baseline: Option<f64>,
}

/// The values of one time bucket.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Bucket {
    /// Start of the bucket: a multiple of the width since the epoch.
    pub start: Timestamp,
    /// How many values fell into it.
    pub count: u64,
    /// Their average (exact, like the series average).
    #[serde(serialize_with = "number")]
    pub average: f64,
    /// Their smallest value.
    #[serde(serialize_with = "number")]
    pub min: f64,
    /// Their largest value.
    #[serde(serialize_with = "number")]
    pub max: f64,
}

/// The result of SPEC §5, serialized with exactly its field names.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Analysis {
    /// Number of values.
    pub count: u64,
    /// Their average; `None` (null) for an empty series.
    #[serde(serialize_with = "optional_number")]
    pub average: Option<f64>,
    /// The smallest value, earliest on a tie; `None` for an empty series.
    pub min: Option<Extreme>,
    /// The largest value, earliest on a tie; `None` for an empty series.
    pub max: Option<Extreme>,
    /// The threshold the anomalies were found with.
    #[serde(serialize_with = "number")]
    pub threshold: f64,
    /// The anomalies, in series order.
    pub anomalies: Vec<Anomaly>,
    /// Time buckets, ordered by start; only when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<Bucket>>,
}

fn number<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    serialize_number(*v, s)
}

fn optional_number<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => serialize_number(*v, s),
        None => s.serialize_none(),
    }
}

/// Analyzes a series of `(timestamps[i], values[i])`: SPEC §5, plus buckets when asked for.
pub fn analyze(timestamps: &[Timestamp], values: &[f64], opts: &Options) -> Analysis {
    debug_assert_eq!(
        timestamps.len(),
        values.len(),
        "timestamps and values must be parallel"
    );
    let n = timestamps.len().min(values.len());
    let (timestamps, values) = (&timestamps[..n], &values[..n]);
    let threshold = opts.threshold;
    debug_assert!(
        threshold.is_finite() && threshold >= 0.0,
        "threshold {threshold} must be finite and >= 0"
    );
    let buckets = opts
        .bucket
        .map(|width| bucketize(timestamps, values, width));
    let Some(summary) = summarize(values) else {
        return Analysis {
            count: 0,
            average: None,
            min: None,
            max: None,
            threshold,
            anomalies: Vec::new(),
            buckets,
        };
    };
    let anomalies = match opts.baseline {
        Baseline::Global => global_anomalies(timestamps, values, summary.mean, threshold),
        Baseline::Moving(window) => moving_anomalies(timestamps, values, window, threshold),
    };
    Analysis {
        count: summary.count,
        average: Some(summary.mean),
        min: Some(Extreme {
            value: summary.min,
            timestamp: timestamps[summary.min_index],
        }),
        max: Some(Extreme {
            value: summary.max,
            timestamp: timestamps[summary.max_index],
        }),
        threshold,
        anomalies,
        buckets,
    }
}
