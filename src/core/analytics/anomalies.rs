//! Anomalies (SPEC §5): values whose deviation from a baseline, the global average or the
//! moving average of the values before them, exceeds the threshold. The test and the moving
//! means are exact: a value is an anomaly by the real numbers, not by f64 rounding.

use super::Anomaly;
use crate::core::numeric::{ExactSum, LANES, PREFETCH_AHEAD, prefetch, two_sum};
use crate::timestamp::Timestamp;

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

pub(super) fn global_anomalies(
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

pub(super) fn moving_anomalies(
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
pub(super) fn moving_means(values: &[f64], window: usize, mut f: impl FnMut(usize, f64)) {
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
