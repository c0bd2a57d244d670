//! Time in state over a step function (SPEC §8): how long something was in each state over
//! `[since, until]`, how often it entered each state, the time by reason, and a timeline.
//!
//! Pure and exact: times are integer nanoseconds, so the states' times add up to the length
//! of the range to the nanosecond, whatever the number of changes. The step function is
//! given as its changes in time order plus the state that holds before the first one; the
//! same code serves the job status (from the status history) and a state parameter (from
//! readings, see [`steps_from_readings`]).

use std::collections::HashMap;
use std::hash::Hash;

use compact_str::CompactString;

/// Most segments a timeline has (SPEC §8); a range with more is drawn coarser.
pub const MAX_TIMELINE: usize = 10_000;

/// The label of time for which a state parameter has no fresh reading.
pub const UNKNOWN: &str = "UNKNOWN";

/// One change of a step function: from `at` (nanoseconds since the epoch) on, the state is
/// `state`, for `reason` (the reason given with a job-status change; none for readings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<S> {
    /// When the change happened.
    pub at: i64,
    /// The state from then on.
    pub state: S,
    /// Why, when the change said.
    pub reason: Option<CompactString>,
}

/// The time one state held within the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateTime<S> {
    /// The state.
    pub state: S,
    /// Nanoseconds within the range.
    pub nanos: i64,
    /// Changes into the state within the range (bounds inclusive).
    pub entered: u64,
}

/// The time one (state, reason) pair held within the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonTime<S> {
    /// The state.
    pub state: S,
    /// The reason of the change into it; none when the change gave none.
    pub reason: Option<CompactString>,
    /// Nanoseconds within the range.
    pub nanos: i64,
    /// Changes into the state with this reason within the range.
    pub entered: u64,
}

/// One piece of the timeline: `state` from `from` to `to` (nanoseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<S> {
    /// The state (for a coarsened timeline: the state that held longest in the piece).
    pub state: S,
    /// Start, inclusive.
    pub from: i64,
    /// End.
    pub to: i64,
}

/// Everything [`time_in_state`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Times<S> {
    /// `until - since`: what the states' nanoseconds add up to.
    pub total: i64,
    /// Every state that held or was entered within the range, longest first (ties by state).
    pub states: Vec<StateTime<S>>,
    /// The same time split by reason, longest first.
    pub reasons: Vec<ReasonTime<S>>,
    /// The timeline, when asked for: adjacent equal states merged, at most the asked number
    /// of segments.
    pub timeline: Option<Vec<Segment<S>>>,
}

impl<S> Times<S> {
    /// The fraction of the range each state's time is, in the order of `states`; a range of
    /// length zero gives the whole share to the state that holds at its one instant (listed
    /// first), so that shares always sum to 1.
    pub fn shares(&self) -> Vec<f64> {
        self.states
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if self.total == 0 {
                    if i == 0 { 1.0 } else { 0.0 }
                } else {
                    s.nanos as f64 / self.total as f64
                }
            })
            .collect()
    }
}

/// Time in state over `[since, until]` for the step function that is `initial` before the
/// first of `steps` (sorted by `at`; of changes at the same instant the last one holds).
/// Only the steps in the range and the last one before it matter; the others are skipped.
/// `timeline`: the most segments wanted (none: no timeline). Needs `since <= until`.
pub fn time_in_state<S: Clone + Eq + Hash + Ord>(
    initial: S,
    steps: &[Step<S>],
    since: i64,
    until: i64,
    timeline: Option<usize>,
) -> Times<S> {
    let until = until.max(since);
    // The state at `since`: the last change before it, or the initial state.
    let first_in = steps.partition_point(|s| s.at < since);
    let (mut state, mut reason) = match first_in.checked_sub(1).map(|i| &steps[i]) {
        Some(s) => (s.state.clone(), s.reason.clone()),
        None => (initial, None),
    };
    let mut acc = Acc {
        by_state: HashMap::new(),
        by_reason: HashMap::new(),
        segments: Vec::new(),
        cursor: since,
        timeline: timeline.is_some(),
    };
    acc.by_state.entry(state.clone()).or_default();
    acc.by_reason
        .entry((state.clone(), reason.clone()))
        .or_default();
    for step in steps[first_in..].iter().take_while(|s| s.at <= until) {
        acc.close(&state, &reason, step.at);
        if step.state != state {
            acc.by_state.entry(step.state.clone()).or_default().1 += 1;
            acc.by_reason
                .entry((step.state.clone(), step.reason.clone()))
                .or_default()
                .1 += 1;
        } else if step.reason != reason {
            // A new reason for the same state: the time splits, the state was not re-entered.
            acc.by_reason
                .entry((step.state.clone(), step.reason.clone()))
                .or_default();
        }
        state = step.state.clone();
        reason = step.reason.clone();
    }
    acc.close(&state, &reason, until);
    let Acc {
        by_state,
        by_reason,
        segments,
        ..
    } = acc;
    // A state that neither held nor was entered (the state before a change at `since`)
    // is left out, except the one state of a zero-length range.
    let keep = |s: &S, r: Option<&Option<CompactString>>, nanos: i64, entered: u64| {
        nanos > 0
            || entered > 0
            || (until == since && *s == state && r.is_none_or(|r| *r == reason))
    };
    let mut states: Vec<StateTime<S>> = by_state
        .into_iter()
        .filter(|(s, (n, e))| keep(s, None, *n, *e))
        .map(|(state, (nanos, entered))| StateTime {
            state,
            nanos,
            entered,
        })
        .collect();
    states.sort_by(|a, b| b.nanos.cmp(&a.nanos).then_with(|| a.state.cmp(&b.state)));
    if until == since {
        // Zero length: the state at that instant (after the changes at it) first, so that
        // it carries the share.
        if let Some(i) = states.iter().position(|s| s.state == state) {
            let s = states.remove(i);
            states.insert(0, s);
        }
    }
    let mut reasons: Vec<ReasonTime<S>> = by_reason
        .into_iter()
        .filter(|((s, r), (n, e))| keep(s, Some(r), *n, *e))
        .map(|((state, reason), (nanos, entered))| ReasonTime {
            state,
            reason,
            nanos,
            entered,
        })
        .collect();
    reasons.sort_by(|a, b| {
        b.nanos
            .cmp(&a.nanos)
            .then_with(|| a.state.cmp(&b.state))
            .then_with(|| a.reason.cmp(&b.reason))
    });
    let timeline = timeline.map(|max| coarsen(segments, since, until, max.max(1)));
    Times {
        total: until - since,
        states,
        reasons,
        timeline,
    }
}

/// [`Times`] from the time per (state, reason) over a range of length `total` > 0, as a
/// store that keeps running sums answers it: the states are the sums of their reasons; pairs
/// that neither held nor were entered are left out, as [`time_in_state`] does. No timeline.
pub fn times_from_reasons<S: Clone + Eq + Hash + Ord>(
    total: i64,
    reasons: Vec<ReasonTime<S>>,
) -> Times<S> {
    let mut by_state: HashMap<S, (i64, u64)> = HashMap::new();
    let mut reasons: Vec<ReasonTime<S>> = reasons
        .into_iter()
        .filter(|r| r.nanos > 0 || r.entered > 0)
        .collect();
    for r in &reasons {
        let e = by_state.entry(r.state.clone()).or_default();
        e.0 += r.nanos;
        e.1 += r.entered;
    }
    let mut states: Vec<StateTime<S>> = by_state
        .into_iter()
        .map(|(state, (nanos, entered))| StateTime {
            state,
            nanos,
            entered,
        })
        .collect();
    states.sort_by(|a, b| b.nanos.cmp(&a.nanos).then_with(|| a.state.cmp(&b.state)));
    reasons.sort_by(|a, b| {
        b.nanos
            .cmp(&a.nanos)
            .then_with(|| a.state.cmp(&b.state))
            .then_with(|| a.reason.cmp(&b.reason))
    });
    Times {
        total,
        states,
        reasons,
        timeline: None,
    }
}

/// The running sums of [`time_in_state`].
struct Acc<S> {
    by_state: HashMap<S, (i64, u64)>,
    by_reason: HashMap<(S, Option<CompactString>), (i64, u64)>,
    segments: Vec<Segment<S>>,
    cursor: i64,
    timeline: bool,
}

impl<S: Clone + Eq + Hash> Acc<S> {
    /// Ends the piece of `state` that ran from the cursor to `to`.
    fn close(&mut self, state: &S, reason: &Option<CompactString>, to: i64) {
        let nanos = to - self.cursor;
        if nanos > 0 {
            self.by_state.entry(state.clone()).or_default().0 += nanos;
            self.by_reason
                .entry((state.clone(), reason.clone()))
                .or_default()
                .0 += nanos;
            if self.timeline {
                push_merged(&mut self.segments, state, self.cursor, to);
            }
        }
        self.cursor = to;
    }
}

fn push_merged<S: Clone + Eq>(segments: &mut Vec<Segment<S>>, state: &S, from: i64, to: i64) {
    match segments.last_mut() {
        Some(last) if last.state == *state && last.to == from => last.to = to,
        _ => segments.push(Segment {
            state: state.clone(),
            from,
            to,
        }),
    }
}

/// At most `max` segments: when there are more, the range is cut into `max` equal slots and
/// each slot shows the state that held longest in it (ties: the earlier one), adjacent equal
/// slots merged. The first slot starts at `since`, the last ends at `until`.
fn coarsen<S: Clone + Eq + Hash>(
    segments: Vec<Segment<S>>,
    since: i64,
    until: i64,
    max: usize,
) -> Vec<Segment<S>> {
    if segments.len() <= max {
        return segments;
    }
    let total = i128::from(until - since);
    let edge = |k: usize| since + (total * k as i128 / max as i128) as i64;
    let mut out: Vec<Segment<S>> = Vec::new();
    let mut seg = 0;
    for k in 0..max {
        let (lo, hi) = (edge(k), edge(k + 1));
        if hi <= lo {
            continue;
        }
        let mut held: Vec<(S, i64)> = Vec::new();
        while seg < segments.len() && segments[seg].to <= lo {
            seg += 1;
        }
        let mut j = seg;
        while j < segments.len() && segments[j].from < hi {
            let s = &segments[j];
            let nanos = s.to.min(hi) - s.from.max(lo);
            match held.iter_mut().find(|(st, _)| *st == s.state) {
                Some((_, n)) => *n += nanos,
                None => held.push((s.state.clone(), nanos)),
            }
            j += 1;
        }
        // The longest; `max_by_key` would take the last of equals, hence the fold.
        let best = held
            .into_iter()
            .fold(None::<(S, i64)>, |best, (s, n)| match best {
                Some((bs, bn)) if bn >= n => Some((bs, bn)),
                _ => Some((s, n)),
            });
        if let Some((state, _)) = best {
            push_merged(&mut out, &state, lo, hi);
        }
    }
    out
}

/// The step function of a state parameter from its readings `(time, value)` in time order:
/// a value holds from its reading until the next reading, for at most `stale` nanoseconds;
/// beyond that (and before the first reading) the state is [`UNKNOWN`].
pub fn steps_from_readings(
    readings: &[(i64, CompactString)],
    stale: i64,
) -> Vec<Step<CompactString>> {
    let mut steps = Vec::with_capacity(readings.len() + 1);
    for (i, (at, value)) in readings.iter().enumerate() {
        steps.push(Step {
            at: *at,
            state: value.clone(),
            reason: None,
        });
        let expires = at.saturating_add(stale);
        let next = readings.get(i + 1).map(|(t, _)| *t);
        if next.is_none_or(|n| n > expires) {
            steps.push(Step {
                at: expires,
                state: CompactString::const_new(UNKNOWN),
                reason: None,
            });
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn step(at: i64, state: u8, reason: Option<&str>) -> Step<u8> {
        Step {
            at,
            state,
            reason: reason.map(CompactString::from),
        }
    }

    /// The naive model: the state at each nanosecond by a scan of every change.
    fn naive_state_at(initial: u8, steps: &[Step<u8>], t: i64) -> (u8, Option<CompactString>) {
        let mut cur = (initial, None);
        for s in steps {
            if s.at <= t {
                cur = (s.state, s.reason.clone());
            }
        }
        cur
    }

    /// Per state (nanoseconds, entries), and nanoseconds per (state, reason).
    type Naive = (
        HashMap<u8, (i64, u64)>,
        HashMap<(u8, Option<CompactString>), i64>,
    );

    fn naive(initial: u8, steps: &[Step<u8>], since: i64, until: i64) -> Naive {
        let mut by_state: HashMap<u8, (i64, u64)> = HashMap::new();
        let mut by_reason: HashMap<(u8, Option<CompactString>), i64> = HashMap::new();
        for t in since..until {
            let (s, r) = naive_state_at(initial, steps, t);
            by_state.entry(s).or_default().0 += 1;
            *by_reason.entry((s, r)).or_default() += 1;
        }
        // Entries: each change within the bounds whose state differs from the one before it.
        for (i, s) in steps.iter().enumerate() {
            if s.at < since || s.at > until {
                continue;
            }
            let before = if i == 0 { initial } else { steps[i - 1].state };
            if s.state != before {
                by_state.entry(s.state).or_default().1 += 1;
            }
        }
        (by_state, by_reason)
    }

    fn history() -> impl Strategy<Value = Vec<Step<u8>>> {
        prop::collection::vec((0i64..40, 0u8..4, prop::option::of(0u8..2)), 0..30).prop_map(|v| {
            let mut at = 0;
            v.into_iter()
                .map(|(gap, state, reason)| {
                    at += gap;
                    step(at, state, reason.map(|r| ["jam", "setup"][r as usize]))
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn matches_the_per_nanosecond_model(
            steps in history(),
            since in -50i64..700,
            len in 0i64..700,
        ) {
            let until = since + len;
            let got = time_in_state(9, &steps, since, until, Some(MAX_TIMELINE));
            let (want, want_reasons) = naive(9, &steps, since, until);
            prop_assert_eq!(got.total, len);
            prop_assert_eq!(got.states.iter().map(|s| s.nanos).sum::<i64>(), len);
            for s in &got.states {
                let (n, e) = want.get(&s.state).copied().unwrap_or_default();
                prop_assert_eq!((s.nanos, s.entered), (n, e), "state {}", s.state);
            }
            for (state, (n, e)) in &want {
                if *n > 0 || *e > 0 {
                    prop_assert!(got.states.iter().any(|s| s.state == *state), "missing {}", state);
                }
            }
            for r in &got.reasons {
                let n = want_reasons.get(&(r.state, r.reason.clone())).copied().unwrap_or(0);
                prop_assert_eq!(r.nanos, n);
            }
            let shares: f64 = got.shares().iter().sum();
            prop_assert!((shares - 1.0).abs() < 1e-9, "shares {}", shares);
            // The timeline covers the range without gaps, and each instant has its state.
            let tl = got.timeline.unwrap();
            let mut at = since;
            for seg in &tl {
                prop_assert_eq!(seg.from, at);
                prop_assert!(seg.to > seg.from);
                for t in seg.from..seg.to {
                    prop_assert_eq!(seg.state, naive_state_at(9, &steps, t).0);
                }
                at = seg.to;
            }
            prop_assert_eq!(at, if len == 0 { since } else { until });
            for w in tl.windows(2) {
                prop_assert!(w[0].state != w[1].state);
            }
        }

        #[test]
        fn running_sums_give_the_same_times(
            steps in history(),
            since in -50i64..700,
            len in 1i64..700,
        ) {
            let full = time_in_state(9, &steps, since, since + len, None);
            let again = times_from_reasons(len, full.reasons.clone());
            prop_assert_eq!(full, again);
        }

        #[test]
        fn a_coarse_timeline_has_at_most_max_segments(
            steps in history(),
            max in 1usize..6,
        ) {
            let got = time_in_state(9, &steps, 0, 600, Some(max));
            let tl = got.timeline.unwrap();
            prop_assert!(tl.len() <= max);
            prop_assert_eq!(tl.first().map(|s| s.from), Some(0));
            prop_assert_eq!(tl.last().map(|s| s.to), Some(600));
        }
    }

    #[test]
    fn before_the_first_change_is_the_initial_state() {
        let steps = [step(100, 1, Some("jam")), step(150, 2, None)];
        let t = time_in_state(0, &steps, 0, 120, None);
        assert_eq!(
            t.states,
            vec![
                StateTime {
                    state: 0,
                    nanos: 100,
                    entered: 0
                },
                StateTime {
                    state: 1,
                    nanos: 20,
                    entered: 1
                },
            ]
        );
        assert_eq!(t.reasons[1].reason.as_deref(), Some("jam"));
        // A range wholly after the changes: the last one holds, and was not entered in it.
        let t = time_in_state(0, &steps, 200, 300, None);
        assert_eq!(
            t.states,
            vec![StateTime {
                state: 2,
                nanos: 100,
                entered: 0
            }]
        );
    }

    #[test]
    fn a_zero_length_range_gives_the_whole_share_to_the_state_then() {
        let steps = [step(100, 1, None), step(150, 2, None)];
        for (at, want) in [(50, 0), (100, 1), (120, 1), (150, 2), (999, 2)] {
            let t = time_in_state(0, &steps, at, at, None);
            assert_eq!(t.states[0].state, want, "at {at}");
            assert_eq!(t.shares()[0], 1.0);
            assert_eq!(t.shares().iter().sum::<f64>(), 1.0);
        }
    }

    #[test]
    fn readings_go_stale() {
        let r = |at: i64, v: &str| (at, CompactString::from(v));
        let steps = steps_from_readings(&[r(10, "ON"), r(20, "ON"), r(100, "OFF")], 30);
        let t = time_in_state(CompactString::const_new(UNKNOWN), &steps, 0, 200, None);
        let get = |s: &str| t.states.iter().find(|x| x.state == s).map(|x| x.nanos);
        // ON 10..50 (20 + 30), OFF 100..130, UNKNOWN the rest.
        assert_eq!(get("ON"), Some(40));
        assert_eq!(get("OFF"), Some(30));
        assert_eq!(get(UNKNOWN), Some(130));
        let on = t.states.iter().find(|x| x.state == "ON").unwrap();
        assert_eq!(on.entered, 1, "a repeated value is not a new entry");
    }
}
