//! Tests of the analysis: a table of rules, serialization, and properties against naive
//! re-implementations over random series.

use std::collections::BTreeMap;

use proptest::collection::vec;
use proptest::prelude::*;

use super::anomalies::moving_means;
use super::*;
use crate::core::numeric::{scan, scan_blocks};

/// The test reference for exact sums, written apart from [`ExactSum`] so that the
/// reference does not share the code it checks.
use crate::core::numeric::reference::fsum;

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
