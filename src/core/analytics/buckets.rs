//! Time buckets of a series: count, correctly rounded average, min and max per bucket of a fixed
//! width, aligned to the epoch (also before 1970).

use super::Bucket;
use crate::core::numeric::summarize;
use crate::timestamp::Timestamp;

/// Groups the series into buckets of `width` nanoseconds aligned to the epoch.
pub(super) fn bucketize(timestamps: &[Timestamp], values: &[f64], width: i64) -> Vec<Bucket> {
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
