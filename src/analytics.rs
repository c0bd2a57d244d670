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
//! Moving baselines and bucket averages are correctly rounded the same way.
//!
//! Inputs are finite (the parser and the readings guarantee it); no input makes a NaN or an
//! infinity in the output: sums near f64::MAX are taken scaled by a power of two, and a deviation
//! beyond f64 saturates at ±f64::MAX.

use std::marker::PhantomData;

use serde::Serializer;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::pipeline::serialize_number;
use crate::timestamp::Timestamp;
use crate::window::ExactSum;

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
    // look at them one by one only when one of the eight is flagged. The loop only waits for
    // memory, so it prefetches like the summary's.
    let chunks = values.chunks_exact(LANES);
    let tail_start = values.len() - chunks.remainder().len();
    for (c, chunk) in chunks.enumerate() {
        prefetch(chunk.as_ptr().wrapping_add(PREFETCH_AHEAD));
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
    let mut out = Vec::new();
    moving_means(values, window, |i, baseline| {
        let v = values[i];
        if exceeds(v, baseline, threshold) {
            out.push(Anomaly {
                timestamp: timestamps[i],
                value: v,
                deviation: deviation(v, baseline),
                baseline: Some(baseline),
            });
        }
    });
    out
}

/// Calls `f(i, mean)` with the mean of the last `window` values up to and including `values[i]`
/// (fewer at the start: the mean of those there are), SPEC §2's moving average, each one the
/// correctly rounded window sum divided by the window's length.
///
/// Not [`crate::window::MovingAverage`]: its compensated running sum drifts when a window mixes
/// wildly different magnitudes (a proptest here found 4.5e-13 relative error, some 2000 ulp,
/// after a 6e77 had left a window of 3). Here the running sum is a TwoSum pair, renormalized
/// every step, plus the exact size of what its low word has lost (usually nothing); as long as
/// that cannot change the rounding of the high word, the high word is the correctly rounded sum.
/// When it could (the sum's magnitude fell by orders while some loss was on the books), the
/// window is summed again exactly, which also clears the books.
fn moving_means(values: &[f64], window: usize, mut f: impl FnMut(usize, f64)) {
    let window = window.clamp(1, values.len().max(1));
    // Scaled by 2^-k with 2^k > 2·(window + 1), no partial of a window can overflow.
    let k = (usize::BITS - window.leading_zeros()) as i32 + 2;
    let (down, up) = (2f64.powi(-k), 2f64.powi(k));
    // 1, or `down` for good once a window's sum has overflowed (values near f64::MAX).
    let mut scale = 1.0;
    let (mut hi, mut lo, mut err) = (0.0_f64, 0.0_f64, 0.0_f64);
    for (i, &x) in values.iter().enumerate() {
        let len = (i + 1).min(window);
        add_to_window(&mut hi, &mut lo, &mut err, x * scale);
        if i >= window {
            add_to_window(&mut hi, &mut lo, &mut err, -values[i - window] * scale);
        }
        (hi, lo) = two_sum(hi, lo);
        if !rounds_to_hi(hi, lo, err) {
            let start = i + 1 - len;
            (hi, lo, err) = loop {
                match exact_split(values[start..=i].iter().map(|v| v * scale)) {
                    Some(state) => break state,
                    None if scale == 1.0 => scale = down,
                    // Only non-finite input gets here.
                    None => break (f64::NAN, 0.0, 0.0),
                }
            };
        }
        let mean = hi / len as f64;
        f(i, if scale == 1.0 { mean } else { mean * up });
    }
}

/// Adds `x` to a window sum kept as `hi + lo`, exact up to at most `err`.
#[inline(always)]
fn add_to_window(hi: &mut f64, lo: &mut f64, err: &mut f64, x: f64) {
    let (s, e) = two_sum(*hi, x);
    let (l, lost) = two_sum(*lo, e);
    (*hi, *lo) = (s, l);
    // `lost` is exactly what `lo + e` rounded away: nothing at all unless the window mixes
    // magnitudes far apart, so err usually stays 0 and even rounding ties are settled. The
    // factor keeps the rounding of this very sum from making the bound too small.
    *err = (*err + lost.abs()) * (1.0 + f64::EPSILON);
}

/// Whether `hi` is the correctly rounded value of every real within `err` of `hi + lo`, where
/// `(hi, lo)` is the result of a TwoSum (so `hi = RN(hi + lo)`).
fn rounds_to_hi(hi: f64, lo: f64, err: f64) -> bool {
    if err == 0.0 {
        return hi.is_finite();
    }
    let bits = hi.to_bits() & !(1 << 63);
    let exponent = bits >> 52;
    if exponent == 0 || exponent == 0x7ff {
        // Zero, subnormal or not finite: the exact path decides.
        return false;
    }
    let ulp = f64::from_bits(exponent << 52) * f64::EPSILON;
    // Toward zero, the gap to the next double is half as wide at a power of two.
    let gap_toward_zero = if bits & ((1 << 52) - 1) == 0 {
        ulp / 2.0
    } else {
        ulp
    };
    let away = if hi > 0.0 { lo } else { -lo };
    away + err < ulp / 2.0 && err - away < gap_toward_zero / 2.0
}

/// The exact sum `S` of `values` as `(RN(S), RN(S − RN(S)), a bound on what is left)`, or
/// `None` if a partial overflows.
fn exact_split(values: impl Iterator<Item = f64>) -> Option<(f64, f64, f64)> {
    let mut exact = ExactSum::of(values);
    let hi = exact.value()?;
    exact.add(-hi);
    let lo = exact.value()?;
    exact.add(-lo);
    // The rest is 0 exactly when its rounding is; otherwise at most twice its rounding.
    let rest = exact.value()?;
    Some((hi, lo, 2.0 * rest.abs()))
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

/// Independent lanes in the hot loops. Eight, because the loop-carried chains (hi, lo) must be
/// several adder latencies apart, and because eight f64 are two AVX registers or four SSE ones:
/// the lane state stays in registers either way (measured: four lanes ran 25–35 % slower on SSE2,
/// sixteen gained nothing on AVX once memory is the limit).
const LANES: usize = 8;
/// Values per block: the error bound is updated and the lanes renormalized once per block, and
/// the min and max loops read the block again while it is still in L1.
const BLOCK: usize = 1024;
/// How far ahead of the sum loop to prefetch, in values (2 KiB). The hardware prefetcher alone
/// leaves the loop waiting on memory about a third of the time at 10 million values; with this
/// hint the pass runs at about 90 % of a plain sum's speed over the same memory.
const PREFETCH_AHEAD: usize = 256;
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

/// Asks the CPU to start loading the cache line at `p`.
#[inline(always)]
fn prefetch(p: *const f64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults and has no effect on memory, whatever
    // the address (the pointer may be past the end of the slice).
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The lanes' running sums: lane k's exact sum so far is `hi[k] + lo[k]`, up to an error that
/// [`scan_blocks`] bounds.
struct Lanes {
    hi: [f64; LANES],
    lo: [f64; LANES],
}

impl Lanes {
    /// Adds a block whose length is a multiple of [`LANES`] (lane k takes values k, k + 8, ...)
    /// and returns the block's min and max.
    #[inline(always)]
    // Indexing by lane with constant bounds is the form the SLP vectorizer turns into vector
    // instructions; the state is copied into locals so that it lives in registers, not memory.
    #[allow(clippy::needless_range_loop)]
    fn add_block(&mut self, block: &[f64]) -> (f64, f64) {
        debug_assert_eq!(block.len() % LANES, 0);
        let (mut hi, mut lo) = (self.hi, self.lo);
        for chunk in block.chunks_exact(LANES) {
            prefetch(chunk.as_ptr().wrapping_add(PREFETCH_AHEAD));
            for k in 0..LANES {
                let (s, e) = two_sum(hi[k], chunk[k]);
                hi[k] = s;
                lo[k] += e;
            }
        }
        (self.hi, self.lo) = (hi, lo);
        // The min and the max in loops of their own over the block, which is in L1 by now: in
        // the sum loop, the vectorizer paired each lane's min with its max instead of lane with
        // lane, and spilled. `if x < m { x } else { m }` is exactly one MINPD; f64::min would
        // add NaN handling.
        let mut min = [f64::INFINITY; LANES];
        for chunk in block.chunks_exact(LANES) {
            for k in 0..LANES {
                min[k] = if chunk[k] < min[k] { chunk[k] } else { min[k] };
            }
        }
        let mut max = [f64::NEG_INFINITY; LANES];
        for chunk in block.chunks_exact(LANES) {
            for k in 0..LANES {
                max[k] = if chunk[k] > max[k] { chunk[k] } else { max[k] };
            }
        }
        let min = min
            .iter()
            .fold(f64::INFINITY, |m, &x| if x < m { x } else { m });
        let max = max
            .iter()
            .fold(f64::NEG_INFINITY, |m, &x| if x > m { x } else { m });
        (min, max)
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

/// The hot loop, compiled for AVX when the CPU has it (twice the lanes per instruction of the
/// SSE2 that every x86-64 has, and the crate is built for), chosen at run time.
fn scan(values: &[f64]) -> Option<Scan> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports AVX, checked just above.
        return unsafe { scan_avx(values) };
    }
    scan_blocks(values)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn scan_avx(values: &[f64]) -> Option<Scan> {
    scan_blocks(values)
}

/// [`scan`]'s body: lane sums, error bound, and the earliest min and max, in one pass.
#[inline(always)]
fn scan_blocks(values: &[f64]) -> Option<Scan> {
    let &first = values.first()?;
    let mut lanes = Lanes {
        hi: [0.0; LANES],
        lo: [0.0; LANES],
    };
    let mut bound = 0.0_f64;
    let (mut min, mut min_index, mut max, mut max_index) = (first, 0, first, 0);
    // The last len % 8 values go through the same block code padded with zeros (which change no
    // sum); their min and max are taken from the values themselves.
    let whole = values.len() - values.len() % LANES;
    let mut padded = [0.0; LANES];
    padded[..values.len() - whole].copy_from_slice(&values[whole..]);
    let blocks = values[..whole]
        .chunks(BLOCK)
        .map(|block| (block, block))
        .chain((whole < values.len()).then_some((&padded[..], &values[whole..])));
    let mut start = 0;
    for (block, real) in blocks {
        let h: f64 = lanes.hi.iter().map(|h| h.abs()).sum();
        let (mut block_min, mut block_max) = lanes.add_block(block);
        if real.len() != block.len() {
            (block_min, block_max) = real
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                    (if x < lo { x } else { lo }, if x > hi { x } else { hi })
                });
        }
        // Why the sum can still be off: TwoSum makes every `hi` addition exact, so only the
        // `lo += e` additions round. Per lane and block (m = values per lane, H = |hi| at the
        // start, M = max |x|), each partial hi is at most about H + m·M, each e at most u times
        // that, each lo at most u·H (after the renormalization below) plus the e's so far, and
        // each rounding at most u·|lo|: in total at most u²·m(m+3)/2·(H + m·M). Twice that,
        // summed over lanes, covers the rounding of this very computation.
        let m = (block.len() / LANES) as f64;
        let big = block_min.abs().max(block_max.abs());
        bound += U * U * m * (m + 3.0) * (h + LANES as f64 * m * big);
        // Fold lo into hi (exactly) so that lo starts the next block at most u·|hi|.
        for (hi, lo) in lanes.hi.iter_mut().zip(lanes.lo.iter_mut()) {
            (*hi, *lo) = two_sum(*hi, *lo);
        }
        // Strict comparisons: an equal value in a later block is not earlier.
        if block_min < min
            && let Some(i) = real.iter().position(|&x| x == block_min)
        {
            (min, min_index) = (real[i], start + i);
        }
        if block_max > max
            && let Some(i) = real.iter().position(|&x| x == block_max)
        {
            (max, max_index) = (real[i], start + i);
        }
        start += real.len();
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
            // A partial sum overflows (values near f64::MAX): summed scaled instead.
            match crate::window::scaled_sum(values.iter().copied(), values.len()) {
                Some((s, up)) => (s * up, s / n * up),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// The test reference for exact sums, written apart from [`ExactSum`] so that the
    /// reference does not share the code it checks.
    use crate::window::reference::fsum;

    fn ts(i: usize) -> Timestamp {
        Timestamp::from_nanos(1_700_000_000_000_000_000 + i as i64 * 1_000_000_000)
    }

    fn times(n: usize) -> Vec<Timestamp> {
        (0..n).map(ts).collect()
    }

    fn run(values: &[f64], opts: &Options) -> Analysis {
        analyze(&times(values.len()), values, opts)
    }

    fn with_threshold(threshold: f64) -> Options {
        Options {
            threshold,
            ..Options::default()
        }
    }

    /// `x` as `m · 2^e` with an odd (or zero) integer `m`.
    fn dyadic(x: f64) -> (i128, i32) {
        if x == 0.0 {
            return (0, 0);
        }
        let bits = x.to_bits();
        let exp = ((bits >> 52) & 0x7ff) as i32;
        let frac = i128::from(bits & ((1 << 52) - 1));
        let (m, e) = if exp == 0 {
            (frac, -1074)
        } else {
            (frac | (1 << 52), exp - 1075)
        };
        let tz = m.trailing_zeros();
        let m = m >> tz;
        (if x < 0.0 { -m } else { m }, e + tz as i32)
    }

    /// SPEC §5's test `|v − b| > t·|b|` decided in exact rational arithmetic on the three
    /// doubles, for the modest magnitudes of the rule table (panics if i128 is too small).
    fn exact_exceeds(v: f64, b: f64, t: f64) -> bool {
        let ((mv, ev), (mb, eb), (mt, et)) = (dyadic(v), dyadic(b), dyadic(t));
        let e0 = ev.min(eb).min(et + eb);
        let scale = |m: i128, e: i32| {
            let shift = u32::try_from(e - e0).unwrap();
            assert!(shift < 127, "exponents too far apart for the exact check");
            m.checked_mul(1i128 << shift).unwrap()
        };
        let lhs = scale(mv, ev).checked_sub(scale(mb, eb)).unwrap().abs();
        let rhs = scale(mt.checked_mul(mb).unwrap().abs(), et + eb);
        lhs > rhs
    }

    struct Rule {
        name: &'static str,
        values: Vec<f64>,
        threshold: f64,
        average: Option<f64>,
        min: Option<(f64, usize)>,
        max: Option<(f64, usize)>,
        /// Index and deviation of each anomaly.
        anomalies: Vec<(usize, Option<f64>)>,
    }

    fn rules() -> Vec<Rule> {
        // The next double above 125 and the one below 75 (both have ulp 2^-46).
        let d = 2f64.powi(-46);
        vec![
            Rule {
                name: "seed example",
                values: vec![30.0, 32.0, 50.0, 31.0, 29.0],
                threshold: 0.2,
                average: Some(34.4),
                min: Some((29.0, 4)),
                max: Some((50.0, 2)),
                // Python: (50 - 34.4) / 34.4
                anomalies: vec![(2, Some(0.45348837209302334))],
            },
            Rule {
                name: "ties for min and max take the earliest",
                values: vec![5.0, 1.0, 3.0, 1.0, 5.0],
                threshold: 0.8,
                average: Some(3.0),
                min: Some((1.0, 1)),
                max: Some((5.0, 0)),
                anomalies: vec![],
            },
            Rule {
                name: "empty series",
                values: vec![],
                threshold: 0.2,
                average: None,
                min: None,
                max: None,
                anomalies: vec![],
            },
            Rule {
                name: "single value",
                values: vec![42.5],
                threshold: 0.2,
                average: Some(42.5),
                min: Some((42.5, 0)),
                max: Some((42.5, 0)),
                anomalies: vec![],
            },
            Rule {
                name: "average 0, zeros only: nothing deviates",
                values: vec![0.0, 0.0, 0.0],
                threshold: 0.2,
                average: Some(0.0),
                min: Some((0.0, 0)),
                max: Some((0.0, 0)),
                anomalies: vec![],
            },
            Rule {
                name: "average 0, mixed signs: every non-zero value, deviation null",
                values: vec![-3.0, 3.0, 0.0],
                threshold: 0.2,
                average: Some(0.0),
                min: Some((-3.0, 0)),
                max: Some((3.0, 1)),
                anomalies: vec![(0, None), (1, None)],
            },
            Rule {
                name: "constant negative series: no anomalies",
                values: vec![-5.0, -5.0, -5.0, -5.0],
                threshold: 0.2,
                average: Some(-5.0),
                min: Some((-5.0, 0)),
                max: Some((-5.0, 0)),
                anomalies: vec![],
            },
            Rule {
                name: "constant negative series, threshold 0: still none",
                values: vec![-0.1, -0.1, -0.1],
                threshold: 0.0,
                average: Some(-0.1),
                min: Some((-0.1, 0)),
                max: Some((-0.1, 0)),
                anomalies: vec![],
            },
            Rule {
                name: "negative average: compared with |average|",
                values: vec![-10.0, -10.0, -16.0],
                threshold: 0.2,
                average: Some(-12.0),
                min: Some((-16.0, 2)),
                max: Some((-10.0, 0)),
                anomalies: vec![(2, Some(-4.0 / 12.0))],
            },
            Rule {
                name: "threshold 0 flags every value that differs",
                values: vec![1.0, 2.0, 3.0],
                threshold: 0.0,
                average: Some(2.0),
                min: Some((1.0, 0)),
                max: Some((3.0, 2)),
                anomalies: vec![(0, Some(-0.5)), (2, Some(0.5))],
            },
            Rule {
                name: "20 % of 100 exactly is not an anomaly",
                values: vec![80.0, 100.0, 120.0],
                threshold: 0.2,
                average: Some(100.0),
                min: Some((80.0, 0)),
                max: Some((120.0, 2)),
                anomalies: vec![],
            },
            Rule {
                name: "25 % of 100 exactly (all exact in binary) is not an anomaly",
                values: vec![75.0, 125.0, 100.0, 100.0],
                threshold: 0.25,
                average: Some(100.0),
                min: Some((75.0, 0)),
                max: Some((125.0, 1)),
                anomalies: vec![],
            },
            Rule {
                name: "one ulp past 25 % is an anomaly",
                values: vec![125.0 + d, 75.0 - d, 100.0, 100.0],
                threshold: 0.25,
                average: Some(100.0),
                min: Some((75.0 - d, 1)),
                max: Some((125.0 + d, 0)),
                anomalies: vec![
                    (0, Some((125.0 + d - 100.0) / 100.0)),
                    (1, Some((75.0 - d - 100.0) / 100.0)),
                ],
            },
        ]
    }

    #[test]
    fn rule_table() {
        for r in rules() {
            let a = run(&r.values, &with_threshold(r.threshold));
            let name = r.name;
            assert_eq!(a.count, r.values.len() as u64, "{name}");
            assert_eq!(a.average, r.average, "{name}: average");
            assert_eq!(
                a.min.as_ref().map(|e| (e.value, e.timestamp)),
                r.min.map(|(v, i)| (v, ts(i))),
                "{name}: min"
            );
            assert_eq!(
                a.max.as_ref().map(|e| (e.value, e.timestamp)),
                r.max.map(|(v, i)| (v, ts(i))),
                "{name}: max"
            );
            assert_eq!(a.threshold, r.threshold, "{name}");
            let want: Vec<Anomaly> = r
                .anomalies
                .iter()
                .map(|&(i, deviation)| Anomaly {
                    timestamp: ts(i),
                    value: r.values[i],
                    deviation,
                    baseline: None,
                })
                .collect();
            assert_eq!(a.anomalies, want, "{name}: anomalies");
            assert_eq!(a.buckets, None, "{name}");
            // The expectations agree with exact arithmetic on the doubles involved.
            if let Some(avg) = r.average {
                for (i, &v) in r.values.iter().enumerate() {
                    let flagged = r.anomalies.iter().any(|&(j, _)| j == i);
                    assert_eq!(
                        exact_exceeds(v, avg, r.threshold),
                        flagged,
                        "{name}: value {v} against {avg}"
                    );
                }
            }
        }
    }

    #[test]
    fn seed_example_serializes_with_spec_field_names() {
        let a = analyze(
            &[
                Timestamp::parse("2024-10-27T12:00:00Z").unwrap(),
                Timestamp::parse("2024-10-27T12:01:00Z").unwrap(),
                Timestamp::parse("2024-10-27T12:02:00Z").unwrap(),
                Timestamp::parse("2024-10-27T12:03:00Z").unwrap(),
                Timestamp::parse("2024-10-27T12:04:00Z").unwrap(),
            ],
            &[30.0, 32.0, 50.0, 31.0, 29.0],
            &Options::default(),
        );
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"count":5,"average":34.4,"min":{"value":29,"timestamp":"2024-10-27T12:04:00Z"},"max":{"value":50,"timestamp":"2024-10-27T12:02:00Z"},"threshold":0.2,"anomalies":[{"timestamp":"2024-10-27T12:02:00Z","value":50,"deviation":0.45348837209302334}]}"#
        );
    }

    #[test]
    fn empty_series_serializes_nulls() {
        let a = run(&[], &Options::default());
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"count":0,"average":null,"min":null,"max":null,"threshold":0.2,"anomalies":[]}"#
        );
    }

    #[test]
    fn null_deviation_moving_baseline_and_buckets_serialize() {
        let a = analyze(
            &[
                Timestamp::from_nanos(0),
                Timestamp::from_nanos(1_500_000_000),
            ],
            &[-3.0, 3.0],
            &Options {
                threshold: 0.2,
                baseline: Baseline::Global,
                bucket: Some(1_000_000_000),
            },
        );
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"count":2,"average":0,"min":{"value":-3,"timestamp":"1970-01-01T00:00:00Z"},"max":{"value":3,"timestamp":"1970-01-01T00:00:01.500Z"},"threshold":0.2,"anomalies":[{"timestamp":"1970-01-01T00:00:00Z","value":-3,"deviation":null},{"timestamp":"1970-01-01T00:00:01.500Z","value":3,"deviation":null}],"buckets":[{"start":"1970-01-01T00:00:00Z","count":1,"average":-3,"min":-3,"max":-3},{"start":"1970-01-01T00:00:01Z","count":1,"average":3,"min":3,"max":3}]}"#
        );
        let m = run(
            &[10.0, 10.0, 20.0],
            &Options {
                baseline: Baseline::Moving(2),
                ..Options::default()
            },
        );
        assert_eq!(
            serde_json::to_string(&m.anomalies).unwrap(),
            r#"[{"timestamp":"2023-11-14T22:13:22Z","value":20,"deviation":0.3333333333333333,"baseline":15}]"#
        );
    }

    #[test]
    fn default_options_are_spec_defaults() {
        assert_eq!(
            Options::default(),
            Options {
                threshold: 0.2,
                baseline: Baseline::Global,
                bucket: None
            }
        );
    }

    #[test]
    fn huge_values_never_overflow_into_inf_or_nan() {
        let max = f64::MAX;
        let cases: Vec<(Vec<f64>, f64)> = vec![
            (vec![max, max, max], max),
            (vec![max, -max], 0.0),
            (vec![max, max, -max], max / 3.0),
            (vec![-max, -max, -max, -max], -max),
            (vec![max; 1000], max),
        ];
        for (values, mean) in cases {
            let s = summarize(&values).unwrap();
            assert_eq!(s.mean, mean, "{values:?}");
            let a = run(&values, &with_threshold(0.2));
            assert_eq!(a.average, Some(mean));
            for x in &a.anomalies {
                assert!(x.deviation.is_none_or(f64::is_finite), "{x:?}");
            }
        }
        // The sum itself is beyond f64; the mean is not.
        let s = summarize(&[max, max]).unwrap();
        assert_eq!((s.sum, s.mean), (f64::INFINITY, max));
        // |value − average| and threshold × |average| both beyond f64::MAX: compared halved.
        let mut values = vec![max; 9];
        values.push(-max);
        let a = run(&values, &with_threshold(1.5));
        assert_eq!(a.average, Some(max * 0.8));
        assert_eq!(a.anomalies.len(), 1);
        assert_eq!(a.anomalies[0].value, -max);
        assert_eq!(a.anomalies[0].deviation, Some(-2.25));
        // A deviation beyond f64 saturates instead of becoming inf (JSON has none).
        let a = run(&[max, -max, 3e-300], &Options::default());
        assert_eq!(a.average, Some(1e-300));
        assert_eq!(a.anomalies[0].deviation, Some(f64::MAX));
        assert_eq!(a.anomalies[1].deviation, Some(-f64::MAX));
        assert!(serde_json::to_string(&a).is_ok());
        // A moving window whose sum overflows is summed scaled from then on, still exactly.
        let a = run(
            &[max, max, -max, 4.0, 2.0],
            &Options {
                baseline: Baseline::Moving(2),
                ..Options::default()
            },
        );
        let got: Vec<(f64, Option<f64>, Option<f64>)> = a
            .anomalies
            .iter()
            .map(|x| (x.value, x.baseline, x.deviation))
            .collect();
        assert_eq!(
            got,
            vec![
                (-max, Some(0.0), None),
                (4.0, Some(-max / 2.0), Some(1.0)),
                (2.0, Some(3.0), Some(-1.0 / 3.0)),
            ]
        );
    }

    #[test]
    fn cancellation_is_settled_by_the_exact_pass() {
        let values = [1e100, 1.0, -1e100];
        assert_eq!(scan(&values).unwrap().certified_sum, None);
        let s = summarize(&values).unwrap();
        assert_eq!((s.sum, s.mean), (1.0, 1.0 / 3.0));
        let values = [1e16, 1.0, -1e16, 1.0, 1e-300];
        assert_eq!(summarize(&values).unwrap().sum, fsum(&values));
    }

    /// The fast path must settle ordinary series by itself, or summarize would make two passes.
    #[test]
    fn telemetry_like_series_are_certified_in_one_pass() {
        let mut rng = fastrand::Rng::with_seed(3);
        for n in [1, 7, 8, 1000, 1024, 1025, 100_000] {
            let temperatures: Vec<f64> = (0..n).map(|_| 60.0 + 20.0 * rng.f64()).collect();
            let centred: Vec<f64> = (0..n).map(|_| rng.f64() - 0.5).collect();
            let mixed: Vec<f64> = (0..n)
                .map(|_| match rng.u8(..4) {
                    0 => 1e9 * (1.0 + rng.f64()),
                    1 => -1e9 * (1.0 + rng.f64()),
                    _ => 1e-3 * (rng.f64() - 0.5),
                })
                .collect();
            for values in [temperatures, centred, mixed] {
                let sum = scan(&values).unwrap().certified_sum;
                assert_eq!(sum, Some(fsum(&values)), "n = {n}");
            }
        }
    }

    /// The AVX build of the loop and the SSE2 one give bit-identical results.
    #[test]
    fn both_builds_of_the_hot_loop_agree() {
        let mut rng = fastrand::Rng::with_seed(5);
        for n in [1, 5, 8, 9, 1023, 1024, 1031, 4099] {
            let values: Vec<f64> = (0..n).map(|_| rng.f64() * 1e6 - 5e5).collect();
            let (a, b) = (scan(&values).unwrap(), scan_blocks(&values).unwrap());
            assert_eq!(
                (a.certified_sum, a.min, a.min_index, a.max, a.max_index),
                (b.certified_sum, b.min, b.min_index, b.max, b.max_index)
            );
        }
    }

    /// One million values mixing 1e9 and 1e-3 (the case that defeats plain summation): the
    /// average is exactly the correctly rounded sum divided by n.
    #[test]
    fn a_million_mixed_magnitudes_average_exactly() {
        let mut rng = fastrand::Rng::with_seed(11);
        let values: Vec<f64> = (0..1_000_000)
            .map(|_| match rng.u8(..4) {
                0 => 1e9 * (1.0 + rng.f64()),
                1 => -1e9 * (1.0 + rng.f64()),
                _ => 1e-3 * (rng.f64() - 0.5),
            })
            .collect();
        let s = summarize(&values).unwrap();
        assert_eq!(s.sum, fsum(&values));
        assert_eq!(s.mean, fsum(&values) / values.len() as f64);
    }

    #[test]
    fn extremes_at_block_and_lane_boundaries() {
        for n in (2..=20).chain(1020..=1030).chain(2045..=2052) {
            for at in [0, 1, n / 2, n - 2] {
                let mut values = vec![1.0; n];
                values[at] = -7.0;
                values[n - 1 - at] = 9.0;
                // A tie later on must not win.
                let last = n - 1;
                if last != at && last != n - 1 - at {
                    values[last] = if at % 2 == 0 { -7.0 } else { 9.0 };
                }
                let s = summarize(&values).unwrap();
                let min = values.iter().copied().fold(f64::INFINITY, f64::min);
                let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let want_min = values.iter().position(|&v| v == min).unwrap();
                let want_max = values.iter().position(|&v| v == max).unwrap();
                assert_eq!((s.min, s.min_index), (min, want_min), "n {n}, at {at}");
                assert_eq!((s.max, s.max_index), (max, want_max), "n {n}, at {at}");
                assert_eq!(s.mean, fsum(&values) / n as f64);
            }
        }
    }

    fn naive_moving(values: &[f64], window: usize) -> Vec<f64> {
        (0..values.len())
            .map(|i| {
                let w = &values[(i + 1).saturating_sub(window.max(1))..=i];
                fsum(w) / w.len() as f64
            })
            .collect()
    }

    #[test]
    fn moving_baseline_matches_naive_recomputation() {
        let mut rng = fastrand::Rng::with_seed(9);
        // Small integers: every window mean is the correctly rounded one, so all must match.
        let values: Vec<f64> = (0..500).map(|_| f64::from(rng.i32(-50..100))).collect();
        for window in [0, 1, 2, 3, 5, 16, 499, 500, 10_000, usize::MAX] {
            for threshold in [0.0, 0.1, 0.5] {
                let a = run(
                    &values,
                    &Options {
                        threshold,
                        baseline: Baseline::Moving(window),
                        bucket: None,
                    },
                );
                let baselines = naive_moving(&values, window.min(values.len()));
                let want: Vec<Anomaly> = values
                    .iter()
                    .zip(&baselines)
                    .enumerate()
                    .filter(|&(_, (&v, &b))| (v - b).abs() > threshold * b.abs())
                    .map(|(i, (&v, &b))| Anomaly {
                        timestamp: ts(i),
                        value: v,
                        deviation: (b != 0.0).then(|| (v - b) / b.abs()),
                        baseline: Some(b),
                    })
                    .collect();
                assert_eq!(a.anomalies, want, "window {window}, threshold {threshold}");
                // The summary is the global one whatever the baseline.
                assert_eq!(a.average, Some(fsum(&values) / values.len() as f64));
            }
        }
    }

    #[test]
    fn buckets_align_to_the_epoch_also_before_1970() {
        let second = 1_000_000_000;
        let at = |ns: i64| Timestamp::from_nanos(ns);
        let timestamps = [
            at(-1),
            at(-second),
            at(-second - 1),
            at(0),
            at(second - 1),
            at(5),
        ];
        let values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let a = analyze(
            &timestamps,
            &values,
            &Options {
                bucket: Some(second),
                ..Options::default()
            },
        );
        let bucket = |start, count, average, min, max| Bucket {
            start: at(start),
            count,
            average,
            min,
            max,
        };
        assert_eq!(
            a.buckets.unwrap(),
            vec![
                bucket(-2 * second, 1, 3.0, 3.0, 3.0),
                bucket(-second, 2, 1.5, 1.0, 2.0),
                bucket(0, 3, 5.0, 4.0, 6.0),
            ]
        );
        // No bucket can start before i64::MIN nanoseconds: that one saturates.
        let a = analyze(
            &[Timestamp::MIN],
            &[1.0],
            &Options {
                bucket: Some(7 * second),
                ..Options::default()
            },
        );
        assert_eq!(a.buckets.unwrap()[0].start, Timestamp::MIN);
        // A width of 0 would divide by zero; it is treated as 1 ns instead of panicking.
        let a = analyze(
            &[at(3), at(3)],
            &[1.0, 2.0],
            &Options {
                bucket: Some(0),
                ..Options::default()
            },
        );
        assert_eq!(a.buckets.unwrap(), vec![bucket(3, 2, 1.5, 1.0, 2.0)]);
        // An empty series asked for buckets has none, but says so.
        assert_eq!(
            run(
                &[],
                &Options {
                    bucket: Some(second),
                    ..Options::default()
                }
            )
            .buckets,
            Some(vec![])
        );
    }

    /// Finite values of every magnitude below 1e300 (so that the fsum reference cannot
    /// overflow), weighted toward the mixes that defeat plain summation.
    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            -1e3..1e3f64,
            -1e12..1e12f64,
            -1e-3..1e-3f64,
            (-4i32..5).prop_map(f64::from),
            any::<f64>().prop_filter("finite, below 1e300", |x| x.is_finite() && x.abs() < 1e300),
        ]
    }

    /// Short and long series (past several blocks), some followed by their own negations in
    /// reverse and a small remainder, which makes the sum cancel almost completely.
    fn series() -> impl Strategy<Value = Vec<f64>> {
        (
            prop_oneof![vec(value(), 0..40), vec(value(), 1000..3100)],
            any::<bool>(),
            value(),
        )
            .prop_map(|(mut v, cancel, rest)| {
                if cancel {
                    let back: Vec<f64> = v.iter().rev().map(|x| -x).collect();
                    v.extend(back);
                    v.push(rest);
                }
                v
            })
    }

    proptest! {
        #[test]
        fn average_is_fsum_over_n(values in series()) {
            let Some(s) = summarize(&values) else {
                prop_assert!(values.is_empty());
                return Ok(());
            };
            let want = fsum(&values) / values.len() as f64;
            // Exact: within 1 ulp is the requirement, equality is what the design gives.
            prop_assert_eq!(s.mean, want);
            prop_assert_eq!(s.sum, fsum(&values));
            prop_assert_eq!(s.count, values.len() as u64);
        }

        #[test]
        fn min_max_and_indices_match_a_naive_loop(
            values in prop_oneof![
                series(),
                vec((-2i32..3).prop_map(f64::from), 0..3000),
            ]
        ) {
            let Some(s) = summarize(&values) else {
                prop_assert!(values.is_empty());
                return Ok(());
            };
            let (mut min, mut min_index, mut max, mut max_index) = (values[0], 0, values[0], 0);
            for (i, &v) in values.iter().enumerate() {
                if v < min {
                    (min, min_index) = (v, i);
                }
                if v > max {
                    (max, max_index) = (v, i);
                }
            }
            prop_assert_eq!((s.min.to_bits(), s.min_index), (min.to_bits(), min_index));
            prop_assert_eq!((s.max.to_bits(), s.max_index), (max.to_bits(), max_index));
        }

        #[test]
        fn anomalies_match_a_naive_filter(
            values in series(),
            threshold in prop_oneof![Just(0.0), Just(0.2), 0.0..3.0f64],
        ) {
            let a = run(&values, &with_threshold(threshold));
            let Some(avg) = a.average else {
                prop_assert!(a.anomalies.is_empty());
                return Ok(());
            };
            let want: Vec<(usize, Option<f64>)> = values
                .iter()
                .enumerate()
                .filter(|&(_, &v)| (v - avg).abs() > threshold * avg.abs())
                .map(|(i, &v)| {
                    // Past f64 (a tiny average), the deviation saturates.
                    let q = (v - avg) / avg.abs();
                    (i, (avg != 0.0).then(|| if q.is_finite() { q } else { f64::MAX.copysign(q) }))
                })
                .collect();
            let got: Vec<(usize, Option<f64>)> = a
                .anomalies
                .iter()
                .map(|x| ((x.timestamp.as_nanos() - ts(0).as_nanos()) as usize / 1_000_000_000, x.deviation))
                .collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn never_nan_even_near_f64_max(
            values in vec(
                prop_oneof![
                    any::<f64>().prop_filter("finite", |x| x.is_finite()),
                    Just(f64::MAX),
                    Just(-f64::MAX),
                    -1.0..1.0f64,
                ],
                0..300,
            ),
            threshold in prop_oneof![Just(0.0), 0.0..10.0f64, Just(1e300)],
            window in prop_oneof![Just(None), (1usize..8).prop_map(Some)],
        ) {
            let baseline = window.map_or(Baseline::Global, Baseline::Moving);
            let a = run(&values, &Options { threshold, baseline, bucket: Some(3_000_000_000) });
            prop_assert!(a.average.is_none_or(f64::is_finite));
            for x in &a.anomalies {
                prop_assert!(x.deviation.is_none_or(f64::is_finite), "{:?}", x);
                prop_assert!(x.baseline.is_none_or(f64::is_finite), "{:?}", x);
            }
            for b in a.buckets.iter().flatten() {
                prop_assert!(b.average.is_finite());
            }
            if let Some(s) = summarize(&values) {
                prop_assert!(!s.sum.is_nan() && s.mean.is_finite());
                prop_assert!(s.min <= s.mean && s.mean <= s.max);
            }
        }

        #[test]
        fn moving_means_are_exactly_naive(
            values in prop_oneof![
                vec(value(), 1..300),
                vec(-1e3..1e3f64, 1..300),
                // Magnitudes that come and go: the running sum must notice when they leave.
                vec(prop_oneof![Just(1e300), Just(-3e299), Just(1e-300), -1.0..1.0f64], 1..100),
            ],
            window in prop_oneof![1usize..12, 12usize..400],
        ) {
            let mut got = Vec::new();
            moving_means(&values, window, |i, mean| {
                assert_eq!(i, got.len());
                got.push(mean);
            });
            prop_assert_eq!(got, naive_moving(&values, window));
        }

        #[test]
        fn buckets_match_a_naive_grouping(
            points in vec((-2_000_000_000_000i64..2_000_000_000_000, value()), 0..400),
            width in prop_oneof![1i64..1000, 1_000_000i64..10_000_000_000],
        ) {
            let (timestamps, values): (Vec<Timestamp>, Vec<f64>) =
                points.iter().map(|&(t, v)| (Timestamp::from_nanos(t), v)).unzip();
            let a = analyze(&timestamps, &values, &Options { bucket: Some(width), ..Options::default() });
            let mut groups: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
            for &(t, v) in &points {
                groups.entry(t.div_euclid(width)).or_default().push(v);
            }
            let want: Vec<Bucket> = groups
                .into_iter()
                .map(|(q, vs)| Bucket {
                    start: Timestamp::from_nanos(q * width),
                    count: vs.len() as u64,
                    average: fsum(&vs) / vs.len() as f64,
                    min: vs.iter().copied().fold(f64::INFINITY, f64::min),
                    max: vs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                })
                .collect();
            prop_assert_eq!(a.buckets.unwrap(), want);
        }
    }

    // ---- parse_series ----------------------------------------------------------------------

    fn parse(text: &str) -> Result<Series, SeriesError> {
        parse_series(text.as_bytes())
    }

    fn field_error(text: &str) -> String {
        match parse(text) {
            Err(e @ SeriesError::Field { .. }) => e.to_string(),
            other => panic!("{text}: expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn arrays_form_with_all_three_timestamp_forms() {
        let s = parse(
            r#" {"timestamps": ["2024-10-27T12:00:00", "2024-10-27T13:00:00+01:00", 1729944000, 1729944000.5, -1],
                 "values": [30, 32.5, -1e-3, 0, 7], "threshold": 0.25} "#,
        )
        .unwrap();
        let noon = Timestamp::parse("2024-10-27T12:00:00Z").unwrap();
        assert_eq!(
            s.timestamps,
            vec![
                noon,
                noon,
                Timestamp::from_unix_seconds_int(1_729_944_000).unwrap(),
                Timestamp::from_nanos(1_729_944_000_500_000_000),
                Timestamp::from_nanos(-1_000_000_000),
            ]
        );
        assert_eq!(s.values, vec![30.0, 32.5, -1e-3, 0.0, 7.0]);
        assert_eq!(s.threshold, Some(0.25));
        let s = parse(r#"{"values": [], "timestamps": [], "threshold": null}"#).unwrap();
        assert_eq!(
            s,
            Series {
                timestamps: vec![],
                values: vec![],
                threshold: None
            }
        );
    }

    #[test]
    fn series_form() {
        let s = parse(
            r#"{"series": [{"timestamp": "2024-10-27T12:00:00Z", "value": 70},
                           {"value": 71.5, "timestamp": 1730030460}], "threshold": 0}"#,
        )
        .unwrap();
        assert_eq!(
            s.timestamps,
            vec![
                Timestamp::parse("2024-10-27T12:00:00Z").unwrap(),
                Timestamp::parse("2024-10-27T12:01:00Z").unwrap()
            ]
        );
        assert_eq!(s.values, vec![70.0, 71.5]);
        assert_eq!(s.threshold, Some(0.0));
        assert_eq!(
            parse(r#"{"series": []}"#).unwrap().values,
            Vec::<f64>::new()
        );
    }

    #[test]
    fn readings_and_other_shapes_are_not_a_series() {
        for text in [
            "",
            "  \n",
            r#"{"timestamp": "2024-10-27T12:00:00", "temperature": 70, "speed": 30, "status": "RUNNING"}"#,
            "{\"temperature\": 70}\n{\"temperature\": 71}\n",
            r#"[{"temperature": 70}]"#,
            r#"{"values": 5, "machine_id": "press-01"}"#,
            r#"{"series": "RUNNING"}"#,
            r#"{}"#,
            "42",
        ] {
            assert_eq!(parse(text), Err(SeriesError::NotASeries), "{text:?}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"timestamps": [1, 2, 3, 4], "values": [1, 2, 3, "x"]}"#,
                r#"field "values": index 3 is not a finite number"#,
            ),
            (
                r#"{"timestamps": [1, 2], "values": [1, null]}"#,
                r#"field "values": index 1 is not a finite number"#,
            ),
            (
                r#"{"timestamps": [1, 2], "values": [1e400, 1]}"#,
                r#"field "values": index 0 is not a finite number"#,
            ),
            (
                r#"{"timestamps": [1, 2], "values": [1, [2]]}"#,
                r#"field "values": index 1 is not a finite number"#,
            ),
            (
                r#"{"timestamps": [1, "yesterday"], "values": [1, 2]}"#,
                r#"field "timestamps": index 1: "yesterday" is not a time"#,
            ),
            (
                r#"{"timestamps": [1, true], "values": [1, 2]}"#,
                r#"field "timestamps": index 1: expected an RFC 3339 string or seconds since the epoch, got a boolean"#,
            ),
            (
                r#"{"timestamps": [1e300], "values": [1]}"#,
                r#"field "timestamps": index 0: 100000000000000000000"#,
            ),
            (r#"{"values": [1, 2]}"#, r#"field "timestamps": missing"#),
            (r#"{"timestamps": [1, 2]}"#, r#"field "values": missing"#),
            (
                r#"{"timestamps": [1], "values": {"a": 1}}"#,
                r#"field "values": must be an array, got an object"#,
            ),
            (
                r#"{"timestamps": [1], "values": [1], "threshold": -0.1}"#,
                r#"field "threshold": must be a finite number >= 0"#,
            ),
            (
                r#"{"timestamps": [1], "values": [1], "threshold": "20%"}"#,
                r#"field "threshold": must be a finite number >= 0"#,
            ),
            (
                r#"{"timestamps": [1], "values": [1], "threshold": 1e999}"#,
                r#"field "threshold": must be a finite number >= 0"#,
            ),
            (
                r#"{"timestamps": [1], "values": [1], "series": []}"#,
                r#"field "series": cannot be combined with "timestamps" and "values""#,
            ),
            (
                r#"{"timestamps": [1], "values": [1], "values": [2]}"#,
                r#"field "values": appears more than once"#,
            ),
            (
                r#"{"series": [{"timestamp": 1, "value": 2}, 5]}"#,
                r#"field "series": index 1 must be an object {"timestamp": ..., "value": ...}"#,
            ),
            (
                r#"{"series": [{"timestamp": 1, "value": 2, "unit": "C"}]}"#,
                r#"field "series": index 0: unknown field "unit": a point has "timestamp" and "value""#,
            ),
            (
                r#"{"series": [{"timestamp": 1}]}"#,
                r#"field "series": index 0: missing "value""#,
            ),
            (
                r#"{"series": [{"value": 1}]}"#,
                r#"field "series": index 0: missing "timestamp""#,
            ),
            (
                r#"{"series": [{"timestamp": "noon", "value": 1}]}"#,
                r#"field "series": index 0: "timestamp": "noon" is not a time"#,
            ),
            (
                r#"{"series": [{"timestamp": 1, "value": "1"}]}"#,
                r#"field "series": index 0: "value" is not a finite number"#,
            ),
            (
                r#"{"series": [{"timestamp": 1, "value": 1, "value": 2}]}"#,
                r#"field "series": index 0: duplicate "value""#,
            ),
            (
                r#"{"series": [{"timestamp": 1, "value": 1e999}]}"#,
                r#"field "series": index 0: number out of range"#,
            ),
        ];
        for (text, want) in cases {
            let got = field_error(text);
            assert!(got.starts_with(want), "{text}\n got: {got}\nwant: {want}…");
        }
    }

    #[test]
    fn length_mismatch_unknown_fields_and_syntax() {
        let e = parse(r#"{"timestamps": [1, 2, 3, 4], "values": [1, 2, 3, 4, 5]}"#).unwrap_err();
        assert_eq!(
            e,
            SeriesError::LengthMismatch {
                timestamps: 4,
                values: 5
            }
        );
        assert_eq!(
            e.to_string(),
            r#""timestamps" has 4 entries and "values" 5: they must be equal"#
        );
        let e =
            parse(r#"{"timestamps": [1], "values": [1], "unit": "C", "machine": 1}"#).unwrap_err();
        assert_eq!(
            e,
            SeriesError::UnknownFields(vec!["unit".into(), "machine".into()])
        );
        assert!(
            e.to_string()
                .starts_with(r#"unknown fields "unit", "machine": a series has"#),
            "{e}"
        );
        let e = parse(r#"{"timestamps": [1], "values": [1], "unit": "C"}"#).unwrap_err();
        assert!(
            e.to_string().starts_with(r#"unknown field "unit": "#),
            "{e}"
        );
        for broken in [
            r#"{"timestamps": [1], "values": [1,]}"#,
            r#"{"timestamps": [1], "values": [1]"#,
            r#"{"timestamps": [1], "values": [1]} trailing"#,
            r#"{"temperature": 70,, }"#,
        ] {
            let e = parse(broken).unwrap_err();
            assert!(
                matches!(e, SeriesError::Syntax(_)) && e.to_string().starts_with("invalid JSON: "),
                "{broken}: {e:?}"
            );
        }
    }

    #[test]
    fn parsed_series_analyzes() {
        let s =
            parse(r#"{"timestamps": [1, 2, 3, 4, 5], "values": [30, 32, 50, 31, 29]}"#).unwrap();
        let a = analyze(
            &s.timestamps,
            &s.values,
            &with_threshold(s.threshold.unwrap_or(0.2)),
        );
        assert_eq!(a.anomalies.len(), 1);
        assert_eq!(
            a.anomalies[0].timestamp,
            Timestamp::from_nanos(3_000_000_000)
        );
    }
}
