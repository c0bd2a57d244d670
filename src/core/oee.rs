//! OEE arithmetic (SPEC §8): planned and running time from the job status, parts from
//! counter parameters (resets handled), availability × performance × quality, per bucket
//! (hour, day, shift) laid out in a time zone. Pure: the config is parsed from text, the
//! times come as steps, nothing here reads a file or a store.

use chrono::{Duration, NaiveDate, NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;
use serde::Deserialize;

use super::states::Step;
use crate::status::JobStatus;

/// Most buckets one answer has.
pub const MAX_BUCKETS: usize = 10_000;

/// The job statuses whose time is planned production time.
pub const PLANNED: [JobStatus; 4] = [
    JobStatus::Started,
    JobStatus::Running,
    JobStatus::Paused,
    JobStatus::Failed,
];

/// Nanoseconds in each job status, indexed like [`JobStatus::ALL`].
pub type StatusNanos = [i64; 6];

fn index(s: JobStatus) -> usize {
    JobStatus::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

/// The time in each status from the time per (status, reason).
pub fn status_nanos_from(reasons: &[super::states::ReasonTime<JobStatus>]) -> StatusNanos {
    let mut out = [0; 6];
    for r in reasons {
        out[index(r.state)] += r.nanos;
    }
    out
}

/// Planned time: STARTED + RUNNING + PAUSED + FAILED.
pub fn planned(n: &StatusNanos) -> i64 {
    PLANNED.iter().map(|s| n[index(*s)]).sum()
}

/// Time RUNNING.
pub fn running(n: &StatusNanos) -> i64 {
    n[index(JobStatus::Running)]
}

/// How good parts are counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quality {
    /// A counter of good parts.
    Good(String),
    /// A counter of rejected parts: good = counted − rejected.
    Reject(String),
}

/// The OEE settings of one group of machines.
#[derive(Debug, Clone)]
pub struct Group {
    /// The glob as written, such as `press-*`.
    pub pattern: String,
    matcher: globset::GlobMatcher,
    /// The counter parameter of all parts made.
    pub count: String,
    /// How good parts are counted.
    pub quality: Quality,
    /// Ideal rate in parts per minute.
    pub ideal_rate: f64,
}

/// The `--oee FILE`: a `[[machine]]` table per group; the first group whose glob matches a
/// machine is its group.
#[derive(Debug, Clone, Default)]
pub struct OeeConfig {
    /// The groups, in file order.
    pub groups: Vec<Group>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    machine: Vec<GroupFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupFile {
    machines: String,
    count: String,
    good: Option<String>,
    reject: Option<String>,
    ideal_rate: f64,
}

impl OeeConfig {
    /// Reads the TOML text of an OEE file; errors name the table and the field.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut groups = Vec::new();
        for (i, g) in file.machine.into_iter().enumerate() {
            let at = format!("[[machine]] #{}", i + 1);
            let matcher = globset::Glob::new(&g.machines)
                .map_err(|e| format!("{at}: machines: {e}"))?
                .compile_matcher();
            let param = |field: &str, name: &str| {
                crate::reading::ParamName::parse(name)
                    .map(|_| name.to_owned())
                    .map_err(|e| format!("{at}: {field}: {e}"))
            };
            let count = param("count", &g.count)?;
            let quality = match (g.good, g.reject) {
                (Some(good), None) => Quality::Good(param("good", &good)?),
                (None, Some(reject)) => Quality::Reject(param("reject", &reject)?),
                _ => return Err(format!("{at}: give exactly one of good and reject")),
            };
            if !(g.ideal_rate.is_finite() && g.ideal_rate > 0.0) {
                return Err(format!(
                    "{at}: ideal_rate: {} must be a positive number of parts per minute",
                    g.ideal_rate
                ));
            }
            groups.push(Group {
                pattern: g.machines,
                matcher,
                count,
                quality,
                ideal_rate: g.ideal_rate,
            });
        }
        Ok(OeeConfig { groups })
    }

    /// The group of a machine, if any matches.
    pub fn group_of(&self, machine: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.matcher.is_match(machine))
    }
}

/// How an OEE answer is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// Local clock hours.
    Hour,
    /// Local calendar days.
    Day,
    /// Shifts starting at the `--shifts` times.
    Shift,
}

impl By {
    /// Reads `hour`, `day` or `shift`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "hour" => Ok(By::Hour),
            "day" => Ok(By::Day),
            "shift" => Ok(By::Shift),
            _ => Err(format!("{s:?} is not a bucket: use hour, day or shift")),
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            By::Hour => "hour",
            By::Day => "day",
            By::Shift => "shift",
        }
    }
}

/// The start times of the shifts of a day, such as `06:00,14:00,22:00`, sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shifts(Vec<NaiveTime>);

impl Default for Shifts {
    fn default() -> Self {
        Shifts(
            [6, 14, 22]
                .iter()
                .filter_map(|h| NaiveTime::from_hms_opt(*h, 0, 0))
                .collect(),
        )
    }
}

impl Shifts {
    /// Reads a comma-separated list of local `HH:MM` start times.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut times = Vec::new();
        for part in s.split(',') {
            let t = NaiveTime::parse_from_str(part.trim(), "%H:%M").map_err(|_| {
                format!("{part:?} is not a shift start: write HH:MM, as in 06:00,14:00,22:00")
            })?;
            times.push(t);
        }
        times.sort();
        times.dedup();
        if times.is_empty() {
            return Err("no shift start times".into());
        }
        Ok(Shifts(times))
    }

    /// The start times, sorted.
    pub fn times(&self) -> &[NaiveTime] {
        &self.0
    }
}

/// One bucket of an OEE answer: its part of `[since, until]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Start (nanoseconds), inclusive; `since` for the first bucket.
    pub from: i64,
    /// End (nanoseconds), exclusive except for the last bucket, which ends at `until`.
    pub to: i64,
    /// Where the whole period starts, even when the range cuts it (nanoseconds).
    pub start: i64,
    /// For a shift: its local start time, such as `22:00`.
    pub shift: Option<String>,
}

/// The instant of a local time: the earlier of an ambiguous one, and for one that a DST
/// change skips, the moment the clock jumps (where a bucket starting then really starts).
fn instant(tz: Tz, naive: chrono::NaiveDateTime) -> Option<i64> {
    for minutes in 0..=180 {
        let t = naive + Duration::minutes(minutes);
        if let Some(dt) = tz.from_local_datetime(&t).earliest() {
            return dt.timestamp_nanos_opt();
        }
    }
    None
}

fn local_date(tz: Tz, nanos: i64) -> NaiveDate {
    tz.timestamp_nanos(nanos).date_naive()
}

/// Buckets a day holds by day or shift (at least one).
fn buckets_per_day(by: By, shifts_per_day: usize) -> usize {
    match by {
        By::Day => 1,
        _ => shifts_per_day.max(1),
    }
}

/// Where the newest [`MAX_BUCKETS`] buckets by `by` up to `until` start, at the latest
/// `since`: a range with more buckets is answered for its newest ones (as `/data` answers its
/// newest `limit`), so that [`buckets`] never refuses it. Partial buckets at both ends and
/// daylight-saving days are counted with some to spare.
pub fn newest_buckets_start(since: i64, until: i64, by: By, shifts_per_day: usize) -> i64 {
    const HOUR: i64 = 3_600_000_000_000;
    let span = match by {
        By::Hour => (MAX_BUCKETS as i64 - 2) * HOUR,
        By::Day | By::Shift => {
            let days = (MAX_BUCKETS / buckets_per_day(by, shifts_per_day))
                .saturating_sub(3)
                .max(1);
            days as i64 * 24 * HOUR
        }
    };
    since.max(until.saturating_sub(span))
}

/// The buckets that cut `[since, until]` by local hour, day or shift in `tz`; an error when
/// there would be more than [`MAX_BUCKETS`].
pub fn buckets(
    since: i64,
    until: i64,
    by: By,
    tz: Tz,
    shifts: &Shifts,
) -> Result<Vec<Bucket>, String> {
    const HOUR: i64 = 3_600_000_000_000;
    const QUARTER: i64 = HOUR / 4;
    let too_many = || {
        format!(
            "by={}: more than {MAX_BUCKETS} buckets in the range; narrow since/until or use a coarser bucket",
            by.as_str()
        )
    };
    // Each boundary with its shift label.
    let mut edges: Vec<(i64, Option<String>)> = Vec::new();
    match by {
        By::Hour => {
            if (until - since) / HOUR > MAX_BUCKETS as i64 {
                return Err(too_many());
            }
            // Every quarter hour in UTC that is a full local hour: covers zones whose offset
            // is not whole hours, and DST changes, where local hours repeat or vanish.
            let mut t = since.div_euclid(QUARTER) * QUARTER - 2 * HOUR;
            while t <= until + HOUR {
                let local = tz.timestamp_nanos(t);
                if local.minute() == 0 && local.second() == 0 {
                    edges.push((t, None));
                }
                t += QUARTER;
            }
        }
        By::Day | By::Shift => {
            let first = local_date(tz, since) - Duration::days(1);
            let last = local_date(tz, until) + Duration::days(1);
            let per_day = buckets_per_day(by, shifts.times().len());
            if (last - first).num_days() as usize * per_day > MAX_BUCKETS + 8 {
                return Err(too_many());
            }
            let times: Vec<NaiveTime> = match by {
                By::Day => vec![NaiveTime::MIN],
                _ => shifts.times().to_vec(),
            };
            let mut d = first;
            while d <= last {
                for t in &times {
                    if let Some(at) = instant(tz, d.and_time(*t)) {
                        let label = (by == By::Shift).then(|| t.format("%H:%M").to_string());
                        edges.push((at, label));
                    }
                }
                d += Duration::days(1);
            }
        }
    }
    edges.sort_by_key(|e| e.0);
    edges.dedup_by_key(|e| e.0);
    let mut out = Vec::new();
    for w in edges.windows(2) {
        let (start, end) = (w[0].0, w[1].0);
        let (from, to) = (start.max(since), end.min(until));
        if from < to || (since == until && start <= since && since < end) {
            out.push(Bucket {
                from,
                to,
                start,
                shift: w[0].1.clone(),
            });
        }
    }
    if out.len() > MAX_BUCKETS {
        return Err(too_many());
    }
    Ok(out)
}

/// The time in each job status per bucket, in one sweep over the changes: `edges` are the
/// buckets' bounds (`n + 1` for `n` buckets, ascending), `steps` the changes in time order,
/// `initial` the status before the first.
pub fn status_nanos_by(
    initial: JobStatus,
    steps: &[Step<JobStatus>],
    edges: &[i64],
) -> Vec<StatusNanos> {
    let n = edges.len().saturating_sub(1);
    let mut out = vec![[0i64; 6]; n];
    if n == 0 {
        return out;
    }
    let (start, end) = (edges[0], edges[n]);
    let first_in = steps.partition_point(|s| s.at <= start);
    let mut state = first_in.checked_sub(1).map_or(initial, |i| steps[i].state);
    let mut k = 0;
    let mut add = |mut from: i64, to: i64, st: JobStatus| {
        while from < to {
            while k + 1 < n && edges[k + 1] <= from {
                k += 1;
            }
            let e = if k + 1 < n { to.min(edges[k + 1]) } else { to };
            out[k][index(st)] += e - from;
            from = e;
        }
    };
    let mut cursor = start;
    for step in steps[first_in..].iter().take_while(|s| s.at < end) {
        add(cursor, step.at, state);
        cursor = step.at;
        state = step.state;
    }
    add(cursor, end, state);
    out
}

/// Parts counted per bucket from a counter's readings `(time, value)` in time order within
/// the buckets, and `base`, the last reading before them: each reading adds its rise over the
/// one before, to the bucket it falls in; a counter that went down was reset and adds its
/// new value. A first reading with no base adds nothing (when those parts were made is not
/// known).
pub fn increments_by(base: Option<f64>, points: &[(i64, f64)], edges: &[i64]) -> Vec<f64> {
    let n = edges.len().saturating_sub(1);
    let mut out = vec![0.0; n];
    if n == 0 {
        return out;
    }
    let mut prev = base;
    for (t, v) in points {
        if let Some(p) = prev {
            let rise = if *v >= p { v - p } else { *v };
            let k = edges[1..n].partition_point(|e| e <= t);
            out[k] += rise;
        }
        prev = Some(*v);
    }
    out
}

/// The OEE figures of one span of time.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    /// Planned time, nanoseconds.
    pub planned: i64,
    /// Running time, nanoseconds.
    pub running: i64,
    /// Parts counted; none without a counter.
    pub parts: Option<f64>,
    /// Good parts; none without a counter.
    pub good: Option<f64>,
    /// RUNNING / planned.
    pub availability: Option<f64>,
    /// Parts / (ideal rate × RUNNING time), at most 1.
    pub performance: Option<f64>,
    /// Good / counted.
    pub quality: Option<f64>,
    /// The product of the three.
    pub oee: Option<f64>,
}

/// The figures from the time in each status, the parts counted and good, and the ideal
/// rate in parts per minute; each factor is in [0, 1] or none where undefined (no planned
/// time, no running time, no parts, no counter).
pub fn figures(
    nanos: &StatusNanos,
    parts: Option<f64>,
    good: Option<f64>,
    ideal_rate: Option<f64>,
) -> Figures {
    let planned = planned(nanos);
    let running = running(nanos);
    let availability = (planned > 0).then(|| running as f64 / planned as f64);
    let performance = match (parts, ideal_rate) {
        (Some(p), Some(rate)) if running > 0 && rate > 0.0 => {
            // Parts per minute × minutes running.
            let ideal = rate * running as f64 / 60e9;
            Some((p / ideal).clamp(0.0, 1.0))
        }
        _ => None,
    };
    let quality = match (parts, good) {
        (Some(p), Some(g)) if p > 0.0 => Some((g / p).clamp(0.0, 1.0)),
        _ => None,
    };
    let oee = match (availability, performance, quality) {
        (Some(a), Some(p), Some(q)) => Some(a * p * q),
        _ => None,
    };
    Figures {
        planned,
        running,
        parts,
        good,
        availability,
        performance,
        quality,
        oee,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;
    use proptest::prelude::*;

    const H: i64 = 3_600_000_000_000;

    fn nanos(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    fn berlin() -> Tz {
        "Europe/Berlin".parse().unwrap()
    }

    /// A range from 1970 is answered for its newest buckets: never refused, at most
    /// MAX_BUCKETS (a few more for day and shift edges), ending where a short range ends.
    #[test]
    fn a_long_range_keeps_its_newest_buckets() {
        let shifts = Shifts::default();
        let until = nanos("2026-10-25T05:30:00Z");
        for tz in [berlin(), Tz::UTC, "Asia/Kolkata".parse().unwrap()] {
            for by in [By::Hour, By::Day, By::Shift] {
                let since = newest_buckets_start(0, until, by, shifts.times().len());
                assert!(since > 0, "{by:?} {tz}");
                let all = buckets(since, until, by, tz, &shifts).unwrap();
                assert!(all.len() <= MAX_BUCKETS, "{by:?} {tz}: {}", all.len());
                assert!(all.len() >= MAX_BUCKETS - 10, "{by:?} {tz}: {}", all.len());
                let short = buckets(until - 3 * 24 * H, until, by, tz, &shifts).unwrap();
                assert_eq!(all.last(), short.last(), "{by:?} {tz}");
                // A range that is short enough is left as it is.
                assert_eq!(newest_buckets_start(until - H, until, by, 3), until - H);
            }
        }
    }

    #[test]
    fn shifts_across_berlin_dst() {
        let shifts = Shifts::default();
        // Spring: the night 28/29 March 2026 loses an hour.
        let b = buckets(
            nanos("2026-03-28T21:00:00Z"),
            nanos("2026-03-29T20:00:00Z"),
            By::Shift,
            berlin(),
            &shifts,
        )
        .unwrap();
        let lens: Vec<(Option<&str>, i64)> = b
            .iter()
            .map(|b| (b.shift.as_deref(), (b.to - b.from) / H))
            .collect();
        // 22:00 CET (21:00Z) .. 06:00 CEST (04:00Z) is 7 hours.
        assert_eq!(
            lens,
            vec![(Some("22:00"), 7), (Some("06:00"), 8), (Some("14:00"), 8)]
        );
        assert_eq!(b[0].start, nanos("2026-03-28T21:00:00Z"));
        // Autumn: the night 24/25 October 2026 gains one.
        let b = buckets(
            nanos("2026-10-24T20:00:00Z"),
            nanos("2026-10-25T05:00:00Z"),
            By::Shift,
            berlin(),
            &shifts,
        )
        .unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].to - b[0].from) / H, 9);
        // Days: 23 and 25 hours long.
        let b = buckets(
            nanos("2026-03-28T23:00:00Z"),
            nanos("2026-03-29T22:00:00Z"),
            By::Day,
            berlin(),
            &shifts,
        )
        .unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].to - b[0].from) / H, 23);
        let b = buckets(
            nanos("2026-10-24T22:00:00Z"),
            nanos("2026-10-25T23:00:00Z"),
            By::Day,
            berlin(),
            &shifts,
        )
        .unwrap();
        assert_eq!((b[0].to - b[0].from) / H, 25);
        // Hours: the repeated 02:00 is two buckets of one hour each.
        let b = buckets(
            nanos("2026-10-24T23:00:00Z"),
            nanos("2026-10-25T03:00:00Z"),
            By::Hour,
            berlin(),
            &shifts,
        )
        .unwrap();
        assert_eq!(b.len(), 4);
        assert!(b.iter().all(|b| b.to - b.from == H));
    }

    #[test]
    fn a_range_cut_inside_a_shift_keeps_the_shift_start() {
        let b = buckets(
            nanos("2026-01-05T07:30:00Z"),
            nanos("2026-01-05T08:00:00Z"),
            By::Shift,
            berlin(),
            &Shifts::default(),
        )
        .unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].start, nanos("2026-01-05T05:00:00Z"));
        assert_eq!(b[0].shift.as_deref(), Some("06:00"));
    }

    #[test]
    fn zero_planned_time_gives_null_factors() {
        let mut n = [0; 6];
        n[index(Idle)] = H;
        n[index(Completed)] = H;
        let f = figures(&n, Some(10.0), Some(9.0), Some(1.0));
        assert_eq!(f.planned, 0);
        assert_eq!((f.availability, f.performance, f.oee), (None, None, None));
        assert_eq!(f.quality, Some(0.9));
        let f = figures(&[0; 6], None, None, None);
        assert_eq!((f.availability, f.quality), (None, None));
    }

    #[test]
    fn the_textbook_example() {
        // 8 h planned, 7 h running, ideal 1 part a minute, 400 parts of which 380 good.
        let mut n = [0; 6];
        n[index(Running)] = 7 * H;
        n[index(Paused)] = H;
        let f = figures(&n, Some(400.0), Some(380.0), Some(1.0));
        assert_eq!(f.availability, Some(0.875));
        assert_eq!(f.performance, Some(400.0 / 420.0));
        assert_eq!(f.quality, Some(0.95));
        let oee = f.oee.unwrap();
        assert!((oee - 0.875 * 400.0 / 420.0 * 0.95).abs() < 1e-15);
    }

    #[test]
    fn config_reads_groups_and_names_mistakes() {
        let c = OeeConfig::parse(
            "[[machine]]\nmachines = \"press-*\"\ncount = \"parts\"\nreject = \"rejects\"\nideal_rate = 60\n\
             [[machine]]\nmachines = \"*\"\ncount = \"made\"\ngood = \"ok\"\nideal_rate = 2.5\n",
        )
        .unwrap();
        assert_eq!(c.group_of("press-01").unwrap().count, "parts");
        assert_eq!(
            c.group_of("lathe-1").unwrap().quality,
            Quality::Good("ok".into())
        );
        let err =
            OeeConfig::parse("[[machine]]\nmachines = \"*\"\ncount = \"parts\"\nideal_rate = 1\n")
                .unwrap_err();
        assert!(err.contains("exactly one of good and reject"), "{err}");
        let err = OeeConfig::parse(
            "[[machine]]\nmachines = \"*\"\ncount = \"parts\"\ngood = \"g\"\nideal_rate = 0\n",
        )
        .unwrap_err();
        assert!(err.contains("ideal_rate"), "{err}");
    }

    /// The naive model of the sweep: the status at each of many sample instants.
    fn naive_nanos(
        initial: JobStatus,
        steps: &[Step<JobStatus>],
        from: i64,
        to: i64,
    ) -> StatusNanos {
        let mut out = [0; 6];
        for t in from..to {
            let mut s = initial;
            for st in steps {
                if st.at <= t {
                    s = st.state;
                }
            }
            out[index(s)] += 1;
        }
        out
    }

    fn naive_parts(
        points: &[(i64, f64)],
        base: Option<f64>,
        from: i64,
        to: i64,
        last: bool,
    ) -> f64 {
        let mut sum = 0.0;
        let mut prev = base;
        for (t, v) in points {
            if let Some(p) = prev
                && *t >= from
                && (*t < to || (last && *t == to))
            {
                sum += if *v < p { *v } else { v - p };
            }
            prev = Some(*v);
        }
        sum
    }

    proptest! {
        #[test]
        fn sweep_and_counters_match_the_naive_model(
            changes in prop::collection::vec((0i64..30, 0usize..6), 0..25),
            cuts in prop::collection::btree_set(1i64..500, 0..6),
            counts in prop::collection::vec((0i64..30, 0u32..50), 0..25),
            base in prop::option::of(0u32..50),
            since in -20i64..100,
        ) {
            let mut at = 0;
            let steps: Vec<Step<JobStatus>> = changes.iter().map(|(gap, s)| {
                at += gap;
                Step { at, state: JobStatus::ALL[*s], reason: None }
            }).collect();
            let until = since + 500;
            let mut edges = vec![since];
            edges.extend(cuts.iter().map(|c| since + c));
            edges.push(until);
            let got = status_nanos_by(Idle, &steps, &edges);
            for (k, w) in edges.windows(2).enumerate() {
                prop_assert_eq!(got[k], naive_nanos(Idle, &steps, w[0], w[1]), "bucket {}", k);
            }
            let mut t = since;
            let points: Vec<(i64, f64)> = counts.iter().map(|(gap, v)| {
                t += gap;
                (t.min(until), f64::from(*v))
            }).collect();
            let base = base.map(f64::from);
            let inc = increments_by(base, &points, &edges);
            let n = edges.len() - 1;
            for (k, w) in edges.windows(2).enumerate() {
                prop_assert_eq!(inc[k], naive_parts(&points, base, w[0], w[1], k + 1 == n), "bucket {}", k);
            }
        }
    }

    #[test]
    fn a_reset_counter_counts_on_from_its_new_value() {
        let pts = [(1, 100.0), (2, 110.0), (3, 5.0), (4, 8.0)];
        assert_eq!(
            increments_by(Some(95.0), &pts, &[0, 10]),
            vec![5.0 + 10.0 + 5.0 + 3.0]
        );
        assert_eq!(increments_by(None, &pts, &[0, 10]), vec![10.0 + 5.0 + 3.0]);
        assert_eq!(increments_by(None, &pts, &[0, 3, 10]), vec![10.0, 8.0]);
    }
}
