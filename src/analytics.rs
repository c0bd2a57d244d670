//! Analytics over a series (SPEC §5): count, average, the earliest min and max, anomalies against
//! a global or moving baseline, and optional time buckets; and the parser for the series bodies
//! that `POST /analytics` and `millwatch analyze` accept. Pure: bytes and slices in, values out.
//!
//! The average is the correctly rounded sum divided by the count, the same number Python's
//! `math.fsum(values) / n` gives, for any mix of magnitudes. The hot loop gets there without
//! giving up speed: eight independent TwoSum lanes (so LLVM can vectorize them) carry every
//! rounding error of the running sums, an a-priori bound on the little error that can remain is
//! kept per block, and at the end an exact summation of the sixteen lane words settles the result
//! whenever that bound cannot change the rounding. When it can (heavy cancellation, such as
//! `1e100, 1, -1e100`), an exact second pass decides: rare, and correct rather than fast.

use std::marker::PhantomData;

use serde::Serializer;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::pipeline::serialize_number;
use crate::timestamp::Timestamp;
use crate::window::MovingAverage;

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

/// Count, exact sum and mean, and the earliest min and max of a slice, found in one pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of values.
    pub count: u64,
    /// The correctly rounded sum (±inf only if the exact sum is beyond f64).
    pub sum: f64,
    /// The correctly rounded sum divided by the count; finite even where `sum` overflows.
    pub mean: f64,
    /// The smallest value.
    pub min: f64,
    /// Index of its first occurrence.
    pub min_index: usize,
    /// The largest value.
    pub max: f64,
    /// Index of its first occurrence.
    pub max_index: usize,
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

/// SPEC §5's test, `|value − baseline| > threshold × |baseline|`, in f64 and overflow-proof.
fn exceeds(value: f64, baseline: f64, threshold: f64) -> bool {
    let limit = threshold * baseline.abs();
    if limit.is_finite() {
        // An overflowing difference is +inf, which is right: the true one is beyond f64::MAX too.
        (value - baseline).abs() > limit
    } else {
        // Both sides may be beyond f64::MAX: compare them halved (exact for such magnitudes).
        (value * 0.5 - baseline * 0.5).abs() > threshold * (baseline.abs() * 0.5)
    }
}

/// `(value − baseline) / |baseline|`, never NaN: `None` for a zero baseline, and saturated at
/// ±f64::MAX where the true quotient is beyond f64 (JSON has no infinity).
fn deviation(value: f64, baseline: f64) -> Option<f64> {
    if baseline == 0.0 {
        return None;
    }
    let q = (value - baseline) / baseline.abs();
    if q.is_finite() {
        return Some(q);
    }
    let q = (value * 0.5 - baseline * 0.5) / (baseline.abs() * 0.5);
    Some(if q.is_finite() {
        q
    } else {
        f64::MAX.copysign(value - baseline)
    })
}

fn global_anomalies(
    timestamps: &[Timestamp],
    values: &[f64],
    baseline: f64,
    threshold: f64,
) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let mut take = |i: usize, value: f64| {
        out.push(Anomaly {
            timestamp: timestamps[i],
            value,
            deviation: deviation(value, baseline),
            baseline: None,
        })
    };
    let limit = threshold * baseline.abs();
    if !limit.is_finite() {
        for (i, &v) in values.iter().enumerate() {
            if exceeds(v, baseline, threshold) {
                take(i, v);
            }
        }
        return out;
    }
    // Anomalies are rare: test eight values at once without a branch (this vectorizes), and
    // look at them one by one only when one of the eight is flagged.
    let chunks = values.chunks_exact(LANES);
    let tail_start = values.len() - chunks.remainder().len();
    for (c, chunk) in chunks.enumerate() {
        let any = chunk
            .iter()
            .fold(false, |any, &v| any | ((v - baseline).abs() > limit));
        if any {
            for (j, &v) in chunk.iter().enumerate() {
                if (v - baseline).abs() > limit {
                    take(c * LANES + j, v);
                }
            }
        }
    }
    for (j, &v) in values[tail_start..].iter().enumerate() {
        if (v - baseline).abs() > limit {
            take(tail_start + j, v);
        }
    }
    out
}

fn moving_anomalies(
    timestamps: &[Timestamp],
    values: &[f64],
    window: usize,
    threshold: f64,
) -> Vec<Anomaly> {
    // A window longer than the series behaves like one exactly as long (fewer than N values so
    // far: the mean of those there are); capping it keeps the ring from allocating `window`.
    let mut sma = MovingAverage::new(window.clamp(1, values.len().max(1)));
    let mut out = Vec::new();
    for (i, &v) in values.iter().enumerate() {
        let baseline = sma.push(v);
        if exceeds(v, baseline, threshold) {
            out.push(Anomaly {
                timestamp: timestamps[i],
                value: v,
                deviation: deviation(v, baseline),
                baseline: Some(baseline),
            });
        }
    }
    out
}

/// Groups the series into buckets of `width` nanoseconds aligned to the epoch.
fn bucketize(timestamps: &[Timestamp], values: &[f64], width: i64) -> Vec<Bucket> {
    // A width of 0 or less would divide by zero; the callers validate it, this only keeps a
    // mistake from panicking.
    let width = width.max(1);
    // Floor division, so that 1969 instants land in the bucket that starts before them.
    let keys: Vec<i64> = timestamps
        .iter()
        .map(|t| t.as_nanos().div_euclid(width))
        .collect();
    if keys.is_sorted() {
        return runs(&keys, values, width);
    }
    // A stable sort keeps equal keys in series order, so each bucket still sees its values in
    // the order they came.
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|&i| keys[i]);
    let sorted_keys: Vec<i64> = order.iter().map(|&i| keys[i]).collect();
    let sorted_values: Vec<f64> = order.iter().map(|&i| values[i]).collect();
    runs(&sorted_keys, &sorted_values, width)
}

fn runs(keys: &[i64], values: &[f64], width: i64) -> Vec<Bucket> {
    let mut out = Vec::new();
    let mut start = 0;
    for group in keys.chunk_by(|a, b| a == b) {
        let end = start + group.len();
        if let Some(s) = summarize(&values[start..end]) {
            out.push(Bucket {
                // Saturates only for the bucket that starts before 1677, which i64 cannot hold.
                start: Timestamp::from_nanos(group[0].saturating_mul(width)),
                count: s.count,
                average: s.mean,
                min: s.min,
                max: s.max,
            });
        }
        start = end;
    }
    out
}

/// Width of the branch-free anomaly test in [`global_anomalies`].
const LANES: usize = 8;
/// Values per block: the error bound is updated and the lanes renormalized once per block, and a
/// block in which the min or max improves is rescanned for its index while it is still in L1.
const BLOCK: usize = 1024;
/// Unit roundoff of f64, 2^-53.
const U: f64 = f64::EPSILON / 2.0;

/// Error-free sum: `a + b == s + e` exactly (Knuth's TwoSum; no precondition on magnitudes).
#[inline(always)]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    (s, e)
}

/// The lanes' running sums: lane k's exact sum so far is `hi[k] + lo[k]`, up to an error that
/// [`scan_lanes`] bounds.
struct Lanes<const L: usize> {
    hi: [f64; L],
    lo: [f64; L],
}

impl<const L: usize> Lanes<L> {
    /// Adds one block (lane k takes values k, k + L, ...) and returns the block's min and max.
    #[inline(always)]
    // Indexing by lane is the form the SLP vectorizer turns into vector instructions.
    #[allow(clippy::needless_range_loop)]
    fn add_block(&mut self, block: &[f64]) -> (f64, f64) {
        let mut min = [f64::INFINITY; L];
        let mut max = [f64::NEG_INFINITY; L];
        let mut chunks = block.chunks_exact(L);
        for chunk in &mut chunks {
            for k in 0..L {
                let x = chunk[k];
                let (s, e) = two_sum(self.hi[k], x);
                self.hi[k] = s;
                self.lo[k] += e;
                // `if x < m { x } else { m }` is exactly one MINPD; f64::min adds NaN handling.
                min[k] = if x < min[k] { x } else { min[k] };
                max[k] = if x > max[k] { x } else { max[k] };
            }
        }
        for (k, &x) in chunks.remainder().iter().enumerate() {
            let (s, e) = two_sum(self.hi[k], x);
            self.hi[k] = s;
            self.lo[k] += e;
            min[k] = if x < min[k] { x } else { min[k] };
            max[k] = if x > max[k] { x } else { max[k] };
        }
        let lo = min
            .iter()
            .fold(f64::INFINITY, |m, &x| if x < m { x } else { m });
        let hi = max
            .iter()
            .fold(f64::NEG_INFINITY, |m, &x| if x > m { x } else { m });
        (lo, hi)
    }
}

/// What the one pass over the values finds.
struct Scan {
    /// The correctly rounded sum, when the error bound proves it; `None` when it cannot.
    certified_sum: Option<f64>,
    min: f64,
    min_index: usize,
    max: f64,
    max_index: usize,
}

/// The hot loop, compiled for the widest vectors the CPU has. The lane state (sum, error, min,
/// max per lane) must stay in registers: with AVX's sixteen 256-bit registers eight lanes fit
/// (8 of them for state), with baseline SSE2's sixteen 128-bit ones only four do, and eight would
/// spill on every iteration, which measured three times slower.
fn scan(values: &[f64]) -> Option<Scan> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports AVX, checked just above.
        return unsafe { scan_avx(values) };
    }
    scan_lanes::<4>(values)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn scan_avx(values: &[f64]) -> Option<Scan> {
    scan_lanes::<8>(values)
}

/// [`scan`] with `L` independent lanes.
#[inline(always)]
fn scan_lanes<const L: usize>(values: &[f64]) -> Option<Scan> {
    let &first = values.first()?;
    let mut lanes = Lanes::<L> {
        hi: [0.0; L],
        lo: [0.0; L],
    };
    let mut bound = 0.0_f64;
    let (mut min, mut min_index, mut max, mut max_index) = (first, 0, first, 0);
    for (b, block) in values.chunks(BLOCK).enumerate() {
        let h: f64 = lanes.hi.iter().map(|h| h.abs()).sum();
        let (block_min, block_max) = lanes.add_block(block);
        // Why the sum can still be off: TwoSum makes every `hi` addition exact, so only the
        // `lo += e` additions round. Per lane and block (m = values per lane, H = |hi| at the
        // start, M = max |x|), each partial hi is at most about H + m·M, each e at most u times
        // that, each lo at most u·H (after the renormalization below) plus the e's so far, and
        // each rounding at most u·|lo|: in total at most u²·m(m+3)/2·(H + m·M). Twice that,
        // summed over lanes, covers the rounding of this very computation.
        let m = block.len().div_ceil(L) as f64;
        let big = block_min.abs().max(block_max.abs());
        bound += U * U * m * (m + 3.0) * (h + L as f64 * m * big);
        // Fold lo into hi (exactly) so that lo starts the next block at most u·|hi|.
        for (hi, lo) in lanes.hi.iter_mut().zip(lanes.lo.iter_mut()) {
            (*hi, *lo) = two_sum(*hi, *lo);
        }
        // Strict comparisons: an equal value in a later block is not earlier.
        let start = b * BLOCK;
        if block_min < min {
            if let Some(i) = block.iter().position(|&x| x == block_min) {
                (min, min_index) = (block[i], start + i);
            }
        }
        if block_max > max {
            if let Some(i) = block.iter().position(|&x| x == block_max) {
                (max, max_index) = (block[i], start + i);
            }
        }
    }
    let words = lanes.hi.iter().chain(&lanes.lo).copied();
    Some(Scan {
        certified_sum: certify(words, bound),
        min,
        min_index,
        max,
        max_index,
    })
}

/// The correctly rounded sum, if the lane words and the bound prove it: the exact sum lies
/// within `bound` of the words' exact total, and rounding is monotonic, so when both ends of
/// that interval round to the same f64, so does the sum.
fn certify(words: impl Iterator<Item = f64> + Clone, bound: f64) -> Option<f64> {
    let sum = ExactSum::of(words.clone()).value()?;
    let upper = ExactSum::of(words.clone().chain([bound])).value()?;
    let lower = ExactSum::of(words.chain([-bound])).value()?;
    (upper == sum && lower == sum).then_some(sum)
}

/// Shewchuk's exact summation, the algorithm of Python's `math.fsum`: the partials always add
/// up exactly to the values added so far, and [`ExactSum::value`] rounds that once.
#[derive(Debug, Default)]
struct ExactSum {
    /// Non-overlapping, increasing in magnitude.
    partials: Vec<f64>,
    /// Some partial overflowed: the sum is beyond what the partials can hold.
    overflow: bool,
}

impl ExactSum {
    fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut s = ExactSum::default();
        for x in values {
            s.add(x);
        }
        s
    }

    fn add(&mut self, x: f64) {
        if self.overflow {
            return;
        }
        let mut x = x;
        let mut kept = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        self.partials.truncate(kept);
        if x.is_finite() {
            self.partials.push(x);
        } else {
            self.overflow = true;
        }
    }

    /// The sum rounded once to the nearest f64 (ties to even); `None` if it overflowed.
    fn value(&self) -> Option<f64> {
        if self.overflow {
            return None;
        }
        let p = &self.partials;
        let Some(&top) = p.last() else {
            return Some(0.0);
        };
        let (mut hi, mut lo) = (top, 0.0);
        let mut rest = p.len() - 1;
        while rest > 0 {
            rest -= 1;
            let (x, y) = (hi, p[rest]);
            hi = x + y;
            lo = y - (hi - x);
            if lo != 0.0 {
                break;
            }
        }
        // Half-way case: if the next partial has the sign of lo, the true sum is past the
        // midpoint and must round away from hi (math.fsum's correction).
        if rest > 0 && ((lo < 0.0 && p[rest - 1] < 0.0) || (lo > 0.0 && p[rest - 1] > 0.0)) {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        hi.is_finite().then_some(hi)
    }
}

/// One fast pass: count, correctly rounded sum and mean, and the earliest min and max.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let scan = scan(values)?;
    let n = values.len() as f64;
    let unscaled = scan
        .certified_sum
        .or_else(|| ExactSum::of(values.iter().copied()).value());
    let (sum, mean) = match unscaled {
        Some(sum) => (sum, sum / n),
        None => {
            // A partial sum overflows (values near f64::MAX). Scaled by 2^-k with 2^k >= 2n, no
            // partial can; powers of two scale exactly, so the mean comes back unchanged.
            let k = (usize::BITS - values.len().leading_zeros()) as i32 + 1;
            let (down, up) = (2f64.powi(-k), 2f64.powi(k));
            match ExactSum::of(values.iter().map(|x| x * down)).value() {
                Some(s) => (s * up, s / n * up),
                // Only non-finite input gets here.
                None => (f64::NAN, f64::NAN),
            }
        }
    };
    // The mean of values lies between their min and max; this keeps a constant series' mean
    // equal to its value even on the scaled path.
    let mean = if mean < scan.min {
        scan.min
    } else if mean > scan.max {
        scan.max
    } else {
        mean
    };
    Some(Summary {
        count: values.len() as u64,
        sum,
        mean,
        min: scan.min,
        min_index: scan.min_index,
        max: scan.max,
        max_index: scan.max_index,
    })
}

// ---------------------------------------------------------------------------------------------
// Series input

/// A series as `POST /analytics` and `millwatch analyze` take it: parallel timestamps and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// When each value was taken.
    pub timestamps: Vec<Timestamp>,
    /// The values, finite.
    pub values: Vec<f64>,
    /// The threshold the body asked for, if any (finite, >= 0).
    pub threshold: Option<f64>,
}

/// Why a body is not a usable series; the message names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    /// The body is not a series at all (a reading, an array, NDJSON, nothing): read it as readings.
    #[error(
        "not a series: expected {{\"timestamps\": [...], \"values\": [...]}} or \
         {{\"series\": [{{\"timestamp\": ..., \"value\": ...}}, ...]}}"
    )]
    NotASeries,
    /// The text is not JSON.
    #[error("invalid JSON: {0}")]
    Syntax(String),
    /// One field broke a rule.
    #[error("field {field:?}: {reason}")]
    Field {
        /// The field's name.
        field: String,
        /// What was wrong with it.
        reason: String,
    },
    /// `timestamps` and `values` differ in length.
    #[error("\"timestamps\" has {timestamps} entries and \"values\" {values}: they must be equal")]
    LengthMismatch {
        /// Length of `timestamps`.
        timestamps: usize,
        /// Length of `values`.
        values: usize,
    },
    /// Top-level fields that a series does not have.
    #[error(
        "unknown field{} {}: a series has \"timestamps\", \"values\" and \"threshold\", or \
         \"series\" and \"threshold\"",
        if .0.len() == 1 { "" } else { "s" },
        quoted(.0)
    )]
    UnknownFields(Vec<String>),
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl SeriesError {
    fn field(field: &str, reason: impl Into<String>) -> Self {
        SeriesError::Field {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

const THRESHOLD_RULE: &str = "must be a finite number >= 0";

/// Parses `{"timestamps": [...], "values": [...], "threshold": t}` or
/// `{"series": [{"timestamp": ..., "value": ...}, ...], "threshold": t}` (threshold optional).
///
/// A body is taken for a series when it is an object in which `timestamps`, `values` or `series`
/// holds an array; anything else is [`SeriesError::NotASeries`]. Readings never hold arrays
/// (SPEC §1), so a reading with a parameter that happens to be called `values` stays a reading.
/// Only the first JSON value is read before deciding, so NDJSON readings are recognized at once.
pub fn parse_series(body: &[u8]) -> Result<Series, SeriesError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(SeriesError::NotASeries);
    }
    let mut st = ParseState::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw = match (&mut de).deserialize_map(TopVisitor { st: &mut st }) {
        Ok(raw) => raw,
        Err(e) => return Err(st.explain(e)),
    };
    let is_series = raw.timestamps.is_array() || raw.values.is_array() || raw.series.is_array();
    if !is_series {
        return Err(SeriesError::NotASeries);
    }
    de.end().map_err(|e| SeriesError::Syntax(e.to_string()))?;
    if let Some(name) = raw.duplicate {
        return Err(SeriesError::field(name, "appears more than once"));
    }
    if !raw.unknown.is_empty() {
        return Err(SeriesError::UnknownFields(raw.unknown));
    }
    let threshold = match raw.threshold {
        Slot::Absent => None,
        Slot::Array(Some(t)) if t.is_finite() && t >= 0.0 => Some(t),
        _ => return Err(SeriesError::field("threshold", THRESHOLD_RULE)),
    };
    let both = "cannot be combined with \"timestamps\" and \"values\": send one form";
    let (timestamps, values) = match (raw.series, raw.timestamps, raw.values) {
        (Slot::Array(points), Slot::Absent, Slot::Absent) => points.into_iter().unzip(),
        (Slot::Absent, timestamps, values) => {
            let timestamps = required(timestamps, "timestamps")?;
            let values = required(values, "values")?;
            if timestamps.len() != values.len() {
                return Err(SeriesError::LengthMismatch {
                    timestamps: timestamps.len(),
                    values: values.len(),
                });
            }
            (timestamps, values)
        }
        _ => return Err(SeriesError::field("series", both)),
    };
    Ok(Series {
        timestamps,
        values,
        threshold,
    })
}

fn required<T>(slot: Slot<Vec<T>>, name: &str) -> Result<Vec<T>, SeriesError> {
    match slot {
        Slot::Array(v) => Ok(v),
        Slot::Absent => Err(SeriesError::field(
            name,
            "missing: a series needs \"timestamps\" and \"values\" of equal length",
        )),
        Slot::Other(kind) => Err(SeriesError::field(
            name,
            format!("must be an array, got {kind}"),
        )),
    }
}

/// Where the parser is, so that an error serde_json raises on its own (a number beyond f64) can
/// still name the field, and the error our visitors found, kept whole rather than as text.
#[derive(Default)]
struct ParseState {
    failure: Option<SeriesError>,
    at: Option<(&'static str, Option<usize>)>,
}

impl ParseState {
    fn explain(&mut self, e: serde_json::Error) -> SeriesError {
        if let Some(f) = self.failure.take() {
            return f;
        }
        // serde_json rejects 1e400 itself, before any visitor sees it.
        if e.to_string().starts_with("number out of range") {
            match self.at {
                Some(("values", Some(i))) => {
                    return SeriesError::field(
                        "values",
                        format!("index {i} is not a finite number"),
                    );
                }
                Some(("threshold", _)) => return SeriesError::field("threshold", THRESHOLD_RULE),
                Some((field, Some(i))) => {
                    return SeriesError::field(field, format!("index {i}: number out of range"));
                }
                Some((field, None)) => return SeriesError::field(field, "number out of range"),
                None => {}
            }
        }
        SeriesError::Syntax(e.to_string())
    }
}

/// A top-level field as found: absent, the expected shape (an array; a number for `threshold`),
/// or something else (named for the error message).
#[derive(Debug, Default)]
enum Slot<T> {
    #[default]
    Absent,
    Array(T),
    Other(&'static str),
}

impl<T> Slot<T> {
    fn is_array(&self) -> bool {
        matches!(self, Slot::Array(_))
    }
}

#[derive(Default)]
struct RawSeries {
    timestamps: Slot<Vec<Timestamp>>,
    values: Slot<Vec<f64>>,
    series: Slot<Vec<(Timestamp, f64)>>,
    /// `Array(None)` is a threshold that is not a number.
    threshold: Slot<Option<f64>>,
    unknown: Vec<String>,
    duplicate: Option<&'static str>,
}

struct TopVisitor<'s> {
    st: &'s mut ParseState,
}

impl<'de> Visitor<'de> for TopVisitor<'_> {
    type Value = RawSeries;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a series object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawSeries, A::Error> {
        let mut raw = RawSeries::default();
        while let Some(key) = map.next_key::<String>()? {
            self.st.at = None;
            let (name, duplicate) = match key.as_str() {
                "timestamps" => {
                    let slot = map.next_value_seed(ArrayOr::<TimeElement>::new(self.st))?;
                    ("timestamps", replace(&mut raw.timestamps, slot))
                }
                "values" => {
                    let slot = map.next_value_seed(ArrayOr::<ValueElement>::new(self.st))?;
                    ("values", replace(&mut raw.values, slot))
                }
                "series" => {
                    let slot = map.next_value_seed(ArrayOr::<PointElement>::new(self.st))?;
                    ("series", replace(&mut raw.series, slot))
                }
                "threshold" => {
                    self.st.at = Some(("threshold", None));
                    let t = map.next_value_seed(ScalarSeed(NumberVisitor))?;
                    self.st.at = None;
                    let slot = match t {
                        Scalar::Null => Slot::Absent,
                        Scalar::Value(v) => Slot::Array(v),
                    };
                    ("threshold", replace(&mut raw.threshold, slot))
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    raw.unknown.push(key);
                    continue;
                }
            };
            if duplicate && raw.duplicate.is_none() {
                raw.duplicate = Some(name);
            }
        }
        Ok(raw)
    }
}

/// Stores `new` in `slot`; true if the slot was already filled (a duplicate key).
fn replace<T>(slot: &mut Slot<T>, new: Slot<T>) -> bool {
    let was_filled = !matches!(slot, Slot::Absent);
    *slot = new;
    was_filled
}

/// How one kind of array element is read.
trait Element {
    type Item;
    /// The field the array is in.
    const FIELD: &'static str;
    /// Reads element `index`; `Ok(Err(reason))` when it is JSON but not a valid element.
    fn read<'de, D: Deserializer<'de>>(
        d: D,
        index: usize,
    ) -> Result<Result<Self::Item, String>, D::Error>;
}

struct ArrayOr<'s, E> {
    st: &'s mut ParseState,
    element: PhantomData<E>,
}

impl<'s, E> ArrayOr<'s, E> {
    fn new(st: &'s mut ParseState) -> Self {
        ArrayOr {
            st,
            element: PhantomData,
        }
    }
}

impl<'de, E: Element> DeserializeSeed<'de> for ArrayOr<'_, E> {
    type Value = Slot<Vec<E::Item>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, E: Element> Visitor<'de> for ArrayOr<'_, E> {
    type Value = Slot<Vec<E::Item>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an array for {:?}", E::FIELD)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        loop {
            let index = out.len();
            self.st.at = Some((E::FIELD, Some(index)));
            match seq.next_element_seed(ElementSeed::<E>(index, PhantomData))? {
                None => break,
                Some(Ok(item)) => out.push(item),
                Some(Err(reason)) => {
                    self.st.failure = Some(SeriesError::field(E::FIELD, reason));
                    return Err(de::Error::custom("invalid element"));
                }
            }
        }
        self.st.at = None;
        Ok(Slot::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map)?;
        Ok(Slot::Other("an object"))
    }
    fn visit_unit<Er>(self) -> Result<Self::Value, Er> {
        Ok(Slot::Absent)
    }
    fn visit_bool<Er>(self, _: bool) -> Result<Self::Value, Er> {
        Ok(Slot::Other("a boolean"))
    }
    fn visit_i64<Er>(self, _: i64) -> Result<Self::Value, Er> {
        Ok(Slot::Other("a number"))
    }
    fn visit_u64<Er>(self, _: u64) -> Result<Self::Value, Er> {
        Ok(Slot::Other("a number"))
    }
    fn visit_f64<Er>(self, _: f64) -> Result<Self::Value, Er> {
        Ok(Slot::Other("a number"))
    }
    fn visit_str<Er>(self, _: &str) -> Result<Self::Value, Er> {
        Ok(Slot::Other("a string"))
    }
}

struct ElementSeed<E>(usize, PhantomData<E>);

impl<'de, E: Element> DeserializeSeed<'de> for ElementSeed<E> {
    type Value = Result<E::Item, String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        E::read(d, self.0)
    }
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// A scalar field as read: `null`, or what the visitor made of anything else.
enum Scalar<T> {
    Null,
    Value(T),
}

/// Reads one JSON value with a visitor that maps every kind of value to a `T`.
struct ScalarSeed<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for ScalarSeed<V> {
    type Value = Scalar<V::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(NullOr(self.0))
    }
}

struct NullOr<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for NullOr<V> {
    type Value = Scalar<V::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.expecting(f)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self.0).map(Scalar::Value)
    }
}

/// Any JSON value to `Some(finite f64)` if it is a number, `None` otherwise.
struct NumberVisitor;

impl<'de> Visitor<'de> for NumberVisitor {
    type Value = Option<f64>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number")
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.is_finite().then_some(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map)?;
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq)?;
        Ok(None)
    }
}

/// Any JSON value to a timestamp in one of the three forms of SPEC §1, or the reason it is not.
struct TimeVisitor;

const TIME_FORMS: &str = "expected an RFC 3339 string or seconds since the epoch";

impl<'de> Visitor<'de> for TimeVisitor {
    type Value = Result<Timestamp, String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(TIME_FORMS)
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Timestamp::parse(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Timestamp::from_unix_seconds(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Timestamp::from_unix_seconds_int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(match i64::try_from(v) {
            Ok(v) => Timestamp::from_unix_seconds_int(v),
            Err(_) => Err(format!("{v} seconds since the epoch is outside 1677..2262")),
        })
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(format!("{TIME_FORMS}, got a boolean")))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(format!("{TIME_FORMS}, got null")))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map)?;
        Ok(Err(format!("{TIME_FORMS}, got an object")))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq)?;
        Ok(Err(format!("{TIME_FORMS}, got an array")))
    }
}

struct ValueElement;

impl Element for ValueElement {
    type Item = f64;
    const FIELD: &'static str = "values";

    fn read<'de, D: Deserializer<'de>>(
        d: D,
        index: usize,
    ) -> Result<Result<f64, String>, D::Error> {
        Ok(d.deserialize_any(NumberVisitor)?
            .ok_or_else(|| format!("index {index} is not a finite number")))
    }
}

struct TimeElement;

impl Element for TimeElement {
    type Item = Timestamp;
    const FIELD: &'static str = "timestamps";

    fn read<'de, D: Deserializer<'de>>(
        d: D,
        index: usize,
    ) -> Result<Result<Timestamp, String>, D::Error> {
        Ok(d.deserialize_any(TimeVisitor)?
            .map_err(|reason| format!("index {index}: {reason}")))
    }
}

struct PointElement;

impl Element for PointElement {
    type Item = (Timestamp, f64);
    const FIELD: &'static str = "series";

    fn read<'de, D: Deserializer<'de>>(
        d: D,
        index: usize,
    ) -> Result<Result<(Timestamp, f64), String>, D::Error> {
        d.deserialize_any(PointVisitor { index })
    }
}

/// One `{"timestamp": ..., "value": ...}` of the `series` form.
struct PointVisitor {
    index: usize,
}

impl PointVisitor {
    fn not_an_object(&self) -> Result<(Timestamp, f64), String> {
        Err(format!(
            "index {} must be an object {{\"timestamp\": ..., \"value\": ...}}",
            self.index
        ))
    }
}

impl<'de> Visitor<'de> for PointVisitor {
    type Value = Result<(Timestamp, f64), String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object {\"timestamp\", \"value\"}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let i = self.index;
        let mut timestamp = None;
        let mut value = None;
        // The whole object is read even after a problem, so that the parser stays in step; the
        // first problem is the one reported.
        let mut problem: Option<String> = None;
        while let Some(key) = map.next_key_seed(PointKeySeed)? {
            match key {
                PointKey::Timestamp => {
                    let t = map.next_value_seed(ScalarSeed(TimeVisitor))?;
                    if timestamp.is_some() {
                        problem.get_or_insert(format!("index {i}: duplicate \"timestamp\""));
                    }
                    timestamp = Some(match t {
                        Scalar::Null => Err(format!("{TIME_FORMS}, got null")),
                        Scalar::Value(t) => t,
                    });
                }
                PointKey::Value => {
                    let v = map.next_value_seed(ScalarSeed(NumberVisitor))?;
                    if value.is_some() {
                        problem.get_or_insert(format!("index {i}: duplicate \"value\""));
                    }
                    value = Some(match v {
                        Scalar::Null => None,
                        Scalar::Value(v) => v,
                    });
                }
                PointKey::Other(name) => {
                    map.next_value::<IgnoredAny>()?;
                    problem.get_or_insert(format!(
                        "index {i}: unknown field {name:?}: a point has \"timestamp\" and \"value\""
                    ));
                }
            }
        }
        if let Some(p) = problem {
            return Ok(Err(p));
        }
        Ok(match (timestamp, value) {
            (None, _) => Err(format!("index {i}: missing \"timestamp\"")),
            (_, None) => Err(format!("index {i}: missing \"value\"")),
            (Some(Err(reason)), _) => Err(format!("index {i}: \"timestamp\": {reason}")),
            (_, Some(None)) => Err(format!("index {i}: \"value\" is not a finite number")),
            (Some(Ok(t)), Some(Some(v))) => Ok((t, v)),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq)?;
        Ok(self.not_an_object())
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(self.not_an_object())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(self.not_an_object())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(self.not_an_object())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(self.not_an_object())
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(self.not_an_object())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(self.not_an_object())
    }
}

/// A key of a point, matched without allocating for the two expected ones (there may be
/// millions of points).
enum PointKey {
    Timestamp,
    Value,
    Other(String),
}

struct PointKeySeed;

impl<'de> DeserializeSeed<'de> for PointKeySeed {
    type Value = PointKey;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<PointKey, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for PointKeySeed {
    type Value = PointKey;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E>(self, v: &str) -> Result<PointKey, E> {
        Ok(match v {
            "timestamp" => PointKey::Timestamp,
            "value" => PointKey::Value,
            other => PointKey::Other(other.to_owned()),
        })
    }
}
#[doc(hidden)]
pub fn __probe(values: &[f64]) -> bool { scan(values).map_or(false, |s| s.certified_sum.is_some()) }
