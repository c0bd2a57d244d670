//! Exact floating-point summation, shared by the moving average and analytics.
//!
//! - [`two_sum`]: the error-free sum of two floats;
//! - [`CompensatedSum`]: a running `hi + lo` pair, about 106 bits, for the moving window;
//! - [`ExactSum`]: Shewchuk's exact summation (Python's `math.fsum`), rounded once;
//! - [`scaled_sum`]: the same where the plain sum would overflow;
//! - [`summarize`]: one fast pass over a slice: count, correctly rounded sum and mean, the
//!   earliest min and max.
//!
//! [`summarize`]'s hot loop keeps its speed without giving up exactness: eight independent
//! TwoSum lanes (so LLVM can vectorize them) carry every rounding error of the running sums, an
//! a-priori bound on the little error that can remain is kept per block, and at the end an exact
//! summation of the sixteen lane words settles the result whenever that bound cannot change the
//! rounding. When it can (heavy cancellation, such as `1e100, 1, -1e100`), an exact second pass
//! decides: rare, and correct rather than fast.

/// Error-free sum of two floats: `a + b == s + e` exactly (Knuth's TwoSum; no precondition on
/// magnitudes).
#[inline(always)]
pub fn two_sum(a: f64, b: f64) -> (f64, f64) {
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

    /// The pair `hi + lo` as it is, for a sum found another way (see [`ExactSum::split`]).
    pub fn from_parts(hi: f64, lo: f64) -> Self {
        CompensatedSum { hi, lo }
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

/// Shewchuk's exact summation, the algorithm of Python's `math.fsum`: the partials always add
/// up exactly to the values added so far, and [`ExactSum::value`] rounds that once.
#[derive(Debug, Default)]
pub struct ExactSum {
    /// Non-overlapping, increasing in magnitude.
    partials: Vec<f64>,
    /// Some partial overflowed: the sum is beyond what the partials can hold.
    overflow: bool,
}

impl ExactSum {
    /// The exact sum of `values`.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut s = ExactSum::default();
        for x in values {
            s.add(x);
        }
        s
    }

    /// Adds one value, exactly.
    pub fn add(&mut self, x: f64) {
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

    /// The sum rounded once, and what that rounding dropped (itself rounded): about 106 bits
    /// of the exact sum, to carry on from; `None` if it overflowed.
    pub fn split(&self) -> Option<(f64, f64)> {
        let hi = self.value()?;
        let mut rest = ExactSum {
            partials: self.partials.clone(),
            overflow: false,
        };
        rest.add(-hi);
        Some((hi, rest.value().unwrap_or(0.0)))
    }

    /// The sum rounded once to the nearest f64 (ties to even); `None` if it overflowed.
    pub fn value(&self) -> Option<f64> {
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

/// The exact sum of `len` finite values scaled by 2^-k, rounded once, with the factor 2^k that
/// scales it back: with 2^k >= 2·len no partial sum can overflow, and powers of two scale
/// exactly, so `s / len * up` is the mean even where the plain sum overflows (values near
/// f64::MAX). `None` only for non-finite input.
pub fn scaled_sum(values: impl IntoIterator<Item = f64>, len: usize) -> Option<(f64, f64)> {
    let k = (usize::BITS - len.leading_zeros()) as i32 + 1;
    let (down, up) = (2f64.powi(-k), 2f64.powi(k));
    let s = ExactSum::of(values.into_iter().map(|x| x * down)).value()?;
    Some((s, up))
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

/// Independent lanes in the hot loops. Eight, because the loop-carried chains (hi, lo) must be
/// several adder latencies apart, and because eight f64 are two AVX registers or four SSE ones:
/// the lane state stays in registers either way (measured: four lanes ran 25–35 % slower on SSE2,
/// sixteen gained nothing on AVX once memory is the limit).
pub(crate) const LANES: usize = 8;
/// Values per block: the error bound is updated and the lanes renormalized once per block, and
/// the min and max loops read the block again while it is still in L1.
pub(crate) const BLOCK: usize = 1024;
/// How far ahead of the sum loop to prefetch, in values (2 KiB). The hardware prefetcher alone
/// leaves the loop waiting on memory about a third of the time at 10 million values; with this
/// hint the pass runs at about 90 % of a plain sum's speed over the same memory.
pub(crate) const PREFETCH_AHEAD: usize = 256;
/// Unit roundoff of f64, 2^-53.
pub(crate) const U: f64 = f64::EPSILON / 2.0;

/// Asks the CPU to start loading the cache line at `p`.
#[inline(always)]
pub(crate) fn prefetch(p: *const f64) {
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
pub(crate) struct Lanes {
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
pub(crate) struct Scan {
    /// The correctly rounded sum, when the error bound proves it; `None` when it cannot.
    pub(crate) certified_sum: Option<f64>,
    /// The smallest value and the index of its first occurrence.
    pub(crate) min: f64,
    pub(crate) min_index: usize,
    /// The largest value and the index of its first occurrence.
    pub(crate) max: f64,
    pub(crate) max_index: usize,
}

/// The hot loop, compiled for AVX when the CPU has it (twice the lanes per instruction of the
/// SSE2 that every x86-64 has, and the crate is built for), chosen at run time.
pub(crate) fn scan(values: &[f64]) -> Option<Scan> {
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
pub(crate) fn scan_blocks(values: &[f64]) -> Option<Scan> {
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
pub(crate) fn certify(words: impl Iterator<Item = f64> + Clone, bound: f64) -> Option<f64> {
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
            match scaled_sum(values.iter().copied(), values.len()) {
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

#[cfg(test)]
pub(crate) mod reference {
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
        if let Some(&next) = partials.last()
            && ((lo < 0.0 && next < 0.0) || (lo > 0.0 && next > 0.0))
        {
            let y = lo * 2.0;
            let x = hi + y;
            if y == x - hi {
                hi = x;
            }
        }
        hi
    }
}
