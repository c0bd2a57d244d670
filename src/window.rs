//! The simple moving average over the last N values, O(1) per update and exact.
//!
//! A plain running sum (add the new value, subtract the one that leaves) drifts: once a 1e9
//! has passed through a window of 1e-3 values, the sum has lost every digit of them. We keep
//! the sum as an unevaluated pair `hi + lo` (Neumaier's compensated summation, where `lo`
//! collects the rounding error of every addition exactly, via TwoSum), and every N updates we
//! recompute the pair from the ring, which resets whatever error could still build up. That
//! recomputation costs O(N) once per N updates: O(1) amortized.

use std::collections::VecDeque;

/// Error-free sum of two floats: `a + b == s + e` exactly (Knuth's TwoSum).
#[inline]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    (s, e)
}

/// A compensated sum: `hi + lo` carries about twice the precision of one `f64`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CompensatedSum {
    hi: f64,
    lo: f64,
}

impl CompensatedSum {
    /// Adds one value.
    #[inline]
    pub fn add(&mut self, x: f64) {
        let (s, e) = two_sum(self.hi, x);
        self.hi = s;
        self.lo += e;
    }

    /// The sum, rounded once to the nearest `f64`.
    #[inline]
    pub fn value(&self) -> f64 {
        self.hi + self.lo
    }

    /// Sums an iterator of values.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut s = CompensatedSum::default();
        for v in values {
            s.add(v);
        }
        s
    }
}

/// The mean of the last `capacity` values pushed, exact to the last bit or two.
#[derive(Debug, Clone)]
pub struct MovingAverage {
    ring: VecDeque<f64>,
    capacity: usize,
    sum: CompensatedSum,
    /// Evictions since the sum was last recomputed from the ring.
    since_recompute: usize,
}

impl MovingAverage {
    /// A window over the last `capacity` values (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        MovingAverage {
            ring: VecDeque::with_capacity(capacity),
            capacity,
            sum: CompensatedSum::default(),
            since_recompute: 0,
        }
    }

    /// Adds a value (finite, as readings guarantee) and returns the new average.
    pub fn push(&mut self, x: f64) -> f64 {
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
        self.average()
    }

    fn recompute(&mut self) {
        self.sum = CompensatedSum::of(self.ring.iter().copied());
        self.since_recompute = 0;
    }

    /// The current average; `None` before the first value.
    pub fn value(&self) -> Option<f64> {
        (!self.ring.is_empty()).then(|| self.average())
    }

    fn average(&self) -> f64 {
        let n = self.ring.len() as f64;
        let sum = self.sum.value();
        if sum.is_finite() {
            sum / n
        } else {
            // Values near f64::MAX overflow the sum but not the mean: scale first.
            CompensatedSum::of(self.ring.iter().map(|v| v / n)).value()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Shewchuk's exact summation (Python's `math.fsum`): the correctly rounded sum.
    pub(crate) fn fsum(values: &[f64]) -> f64 {
        let mut partials: Vec<f64> = Vec::new();
        for &x in values {
            let mut x = x;
            let mut i = 0;
            for j in 0..partials.len() {
                let mut y = partials[j];
                if x.abs() < y.abs() {
                    std::mem::swap(&mut x, &mut y);
                }
                let hi = x + y;
                let lo = y - (hi - x);
                if lo != 0.0 {
                    partials[i] = lo;
                    i += 1;
                }
                x = hi;
            }
            partials.truncate(i);
            partials.push(x);
        }
        // Sum the partials from the top, with the half-way correction of math.fsum.
        let Some(mut hi) = partials.pop() else {
            return 0.0;
        };
        let mut lo = 0.0;
        while let Some(y) = partials.pop() {
            let x = hi;
            hi = x + y;
            let yr = hi - x;
            lo = y - yr;
            if lo != 0.0 {
                break;
            }
        }
        if let Some(&next) = partials.last() {
            if (lo < 0.0 && next < 0.0) || (lo > 0.0 && next > 0.0) {
                let y = lo * 2.0;
                let x = hi + y;
                if y == x - hi {
                    hi = x;
                }
            }
        }
        hi
    }

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

    #[test]
    fn fsum_reference_is_exact() {
        assert_eq!(fsum(&[1e100, 1.0, -1e100]), 1.0);
        assert_eq!(fsum(&[0.1; 10]), 1.0);
        assert_eq!(fsum(&[]), 0.0);
    }
}
