//! The simple moving average over the last N values, O(1) per update and exact.
//!
//! A plain running sum (add the new value, subtract the one that leaves) drifts: once a 1e9
//! has passed through a window of 1e-3 values, the sum has lost every digit of them. We keep
//! the sum as an unevaluated pair `hi + lo` (Neumaier's compensated summation, where `lo`
//! collects the rounding error of every addition exactly, via TwoSum), and every N updates we
//! recompute the pair from the ring, which resets whatever error could still build up. That
//! recomputation costs O(N) once per N updates: O(1) amortized.

use std::collections::VecDeque;

use crate::core::numeric::{CompensatedSum, ExactSum, scaled_sum};

/// The mean of the last `capacity` values pushed, exact to the last bit or two.
#[derive(Debug, Clone)]
pub struct MovingAverage {
    ring: VecDeque<f64>,
    capacity: usize,
    sum: CompensatedSum,
    /// Evictions since the sum was last recomputed from the ring.
    since_recompute: usize,
    /// The largest magnitude added since the last recomputation: when the sum has become tiny
    /// beside it, the running sum may have cancelled away the digits that matter.
    max_abs: f64,
}

/// How much larger than the sum a past value may be before the sum is recomputed exactly:
/// the compensated sum keeps about 2^-104 of the largest magnitude, so at 2^40 it still holds
/// every bit of the mean with room to spare.
const CANCELLATION_LIMIT: f64 = 1_099_511_627_776.0; // 2^40

/// Past this magnitude a value may make a step of the running sum overflow: 2^1000, far
/// beyond any measurement, so the exact path costs only windows that hold such values.
const HUGE: f64 = 1.071_508_607_186_267_3e301;

impl MovingAverage {
    /// A window over the last `capacity` values (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        MovingAverage {
            ring: VecDeque::with_capacity(capacity),
            capacity,
            sum: CompensatedSum::default(),
            since_recompute: 0,
            max_abs: 0.0,
        }
    }

    /// Adds a value (finite, as readings guarantee) and returns the new average.
    pub fn push(&mut self, x: f64) -> f64 {
        self.max_abs = self.max_abs.max(x.abs());
        if self.ring.len() == self.capacity {
            let old = self.ring.pop_front().unwrap_or(0.0);
            self.ring.push_back(x);
            self.since_recompute += 1;
            if self.since_recompute >= self.capacity {
                self.recompute();
            } else {
                self.sum.add(-old);
                self.sum.add(x);
            }
        } else {
            self.ring.push_back(x);
            self.sum.add(x);
        }
        if self.max_abs > CANCELLATION_LIMIT * self.sum.value().abs() {
            self.recompute_exactly();
        }
        self.average()
    }

    fn recompute(&mut self) {
        self.sum = CompensatedSum::of(self.ring.iter().copied());
        self.since_recompute = 0;
        self.max_abs = self.ring.iter().fold(0.0, |m, v| m.max(v.abs()));
    }

    /// After massive cancellation (a huge value left, or huge values cancel each other): the
    /// exact sum, rounded once. Rare; O(N) when it happens.
    fn recompute_exactly(&mut self) {
        self.recompute();
        if let Some((hi, lo)) = ExactSum::of(self.ring.iter().copied()).split() {
            // Keep what rounding to `hi` dropped, so later updates start from ~106 bits.
            self.sum = CompensatedSum::from_parts(hi, lo);
        }
        // Huge values that cancel each other may still be in the window: then every push
        // recomputes until they have left. Correct first; it only costs while they are there.
    }

    /// The current average; `None` before the first value.
    pub fn value(&self) -> Option<f64> {
        (!self.ring.is_empty()).then(|| self.average())
    }

    fn average(&self) -> f64 {
        let n = self.ring.len() as f64;
        let sum = self.sum.value();
        if sum.is_finite() && self.max_abs < HUGE {
            return sum / n;
        }
        // Values near f64::MAX overflow the running sum (or one of its steps) but not the
        // mean: while one may be in the window, the mean is taken from an exact sum of the
        // values scaled down, O(N) per push for as long as they are there.
        let (lo, hi) = self
            .ring
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(*v), hi.max(*v))
            });
        match scaled_sum(self.ring.iter().copied(), self.ring.len()) {
            // The mean lies between the values' min and max: this keeps a constant window's
            // mean equal to its value.
            Some((s, up)) => (s / n * up).clamp(lo, hi),
            None => f64::NAN,
        }
    }

    /// The values in the window, oldest first.
    pub fn values(&self) -> impl ExactSizeIterator<Item = f64> + '_ {
        self.ring.iter().copied()
    }

    /// How many values the window holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Test references shared by the modules that check exact sums.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::numeric::reference::fsum;

    #[test]
    fn seed_example() {
        let mut w = MovingAverage::new(5);
        let got: Vec<f64> = [70.0, 72.0, 75.0, 71.0, 74.0, 76.0, 78.0]
            .iter()
            .map(|&v| w.push(v))
            .collect();
        assert_eq!(got, vec![70.0, 71.0, 217.0 / 3.0, 72.0, 72.4, 73.6, 74.8]);
    }

    #[test]
    fn window_of_one_is_the_value() {
        let mut w = MovingAverage::new(1);
        for v in [1e300, -3.5, 1e-300, 0.0] {
            assert_eq!(w.push(v), v);
        }
    }

    /// Three readings of f64::MAX average to f64::MAX (the case), and every window
    /// of values near f64::MAX, mixed with small ones, averages to the correctly rounded mean
    /// (computed exactly on values divided by 64, whose sum cannot overflow) within one ulp.
    #[test]
    fn values_near_f64_max_average_to_their_true_mean() {
        let mut w = MovingAverage::new(5);
        for _ in 0..3 {
            assert_eq!(w.push(f64::MAX), f64::MAX);
        }
        let mut rng = fastrand::Rng::with_seed(11);
        for &n in &[2usize, 3, 5, 16] {
            let mut w = MovingAverage::new(n);
            let mut all = Vec::new();
            for i in 0..3000 {
                let v = match i % 4 {
                    0 => f64::MAX * (1.0 - rng.f64() * 1e-3),
                    1 => -f64::MAX * rng.f64(),
                    2 => rng.f64() * 1e-3,
                    _ => f64::MAX * (0.5 + rng.f64() / 2.0),
                };
                all.push(v);
                let got = w.push(v);
                let tail = &all[all.len().saturating_sub(n)..];
                let scaled: Vec<f64> = tail.iter().map(|v| v / 64.0).collect();
                let want =
                    crate::core::numeric::reference::fsum(&scaled) / tail.len() as f64 * 64.0;
                assert!(got.is_finite(), "{n}: {tail:?}");
                let ulp = (want.abs() * f64::EPSILON).max(f64::MIN_POSITIVE);
                assert!(
                    (got - want).abs() <= ulp,
                    "{n} at {i}: {got:e} vs {want:e}, {} ulps, {tail:?}",
                    (got.to_bits() as i64 - want.to_bits() as i64)
                );
            }
        }
    }

    #[test]
    fn huge_values_do_not_overflow_the_mean() {
        let mut w = MovingAverage::new(2);
        w.push(f64::MAX);
        assert_eq!(w.push(f64::MAX), f64::MAX);
        assert_eq!(w.push(-f64::MAX), 0.0);
    }

    /// 10 million values mixing magnitudes 1e9 and 1e-3: after every push the average must be
    /// the correctly rounded mean of the window (fsum, then one division) within one ulp.
    #[test]
    fn ten_million_mixed_magnitudes_stay_exact() {
        let mut rng = fastrand::Rng::with_seed(7);
        for &n in &[5usize, 16] {
            let mut w = MovingAverage::new(n);
            let mut naive: VecDeque<f64> = VecDeque::new();
            let mut worst: f64 = 0.0;
            for i in 0..5_000_000u32 {
                let x = match rng.u8(..4) {
                    0 => 1e9 * (1.0 + rng.f64()),
                    1 => -1e9 * (1.0 + rng.f64()),
                    _ => 1e-3 * (rng.f64() - 0.5),
                };
                let got = w.push(x);
                naive.push_back(x);
                if naive.len() > n {
                    naive.pop_front();
                }
                // Checking every push with fsum would dominate the test's time; check every
                // 7th (co-prime with both window sizes) and all of the first thousand.
                if i < 1000 || i % 7 == 0 {
                    let v: Vec<f64> = naive.iter().copied().collect();
                    let want = fsum(&v) / v.len() as f64;
                    let ulp = (want.abs() * f64::EPSILON).max(f64::MIN_POSITIVE);
                    let err = (got - want).abs() / ulp;
                    worst = worst.max(err);
                    assert!(
                        err <= 1.0,
                        "push {i}: got {got:e}, want {want:e} ({err} ulp)"
                    );
                }
            }
            assert!(worst <= 1.0);
        }
    }

    /// Found by the analytics property test: a value of 5.9e77 leaving a window of tiny values
    /// used to leave the running sum 2000 ulp off.
    #[test]
    fn a_huge_value_leaving_the_window_leaves_no_trace() {
        let mut values = vec![0.0; 12];
        values.extend([
            5.892378738524076e77,
            4.0,
            2.0376873579131692e-209,
            0.0,
            -0.00040471452020814265,
        ]);
        let mut w = MovingAverage::new(3);
        let mut last = 0.0;
        for &v in &values {
            last = w.push(v);
        }
        let tail = &values[values.len() - 3..];
        assert_eq!(last, fsum(tail) / 3.0);
        assert_eq!(last, -1.3490484006938087e-4);
    }

    #[test]
    fn extreme_magnitudes_stay_exact() {
        let mut rng = fastrand::Rng::with_seed(11);
        for n in [1usize, 2, 3, 5, 8] {
            let mut w = MovingAverage::new(n);
            let mut all: Vec<f64> = Vec::new();
            for i in 0..200_000 {
                let x = match rng.u8(..6) {
                    0 => 10f64.powi(rng.i32(-300..300)) * (rng.f64() - 0.5),
                    1 => -all.last().copied().unwrap_or(1.0), // cancels the previous one
                    2 => 0.0,
                    _ => 1e-3 * (rng.f64() - 0.5),
                };
                all.push(x);
                let got = w.push(x);
                let tail = &all[all.len().saturating_sub(n)..];
                let want = fsum(
                    &tail
                        .iter()
                        .map(|v| v / tail.len() as f64)
                        .collect::<Vec<_>>(),
                );
                let exact_sum = fsum(tail);
                let want = if exact_sum.is_finite() {
                    exact_sum / tail.len() as f64
                } else {
                    want
                };
                // Both sides round twice (the sum, then the division): allow two ulps.
                let ulp = (want.abs() * f64::EPSILON).max(f64::MIN_POSITIVE);
                assert!(
                    (got - want).abs() <= 2.0 * ulp,
                    "n={n} push {i}: got {got:e}, want {want:e}, window {tail:?}"
                );
            }
        }
    }

    #[test]
    fn fsum_reference_is_exact() {
        assert_eq!(fsum(&[1e100, 1.0, -1e100]), 1.0);
        assert_eq!(fsum(&[0.1; 10]), 1.0);
        assert_eq!(fsum(&[]), 0.0);
    }
}
