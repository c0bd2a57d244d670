//! `GET /states` and `GET /oee` (SPEC §8): time in state, availability and OEE of one
//! machine over a range, from the store's reads of that range and the pure core.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{RawQuery, State};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::data::{machine_param, time_param};
use super::{ApiError, AppState, parse_query};
use crate::core::oee::{self, By, Figures, OeeConfig, Quality, Shifts};
use crate::core::states::{self, MAX_TIMELINE, Step, Times, UNKNOWN};
use crate::reading::MachineId;
use crate::status::{JobStatus, StatusChange};
use crate::store::Store;
use crate::timestamp::Timestamp;

/// What `/states` and `/oee` are configured with (`serve --oee --shifts --timezone --stale`).
#[derive(Debug, Clone)]
pub struct StatesConfig {
    /// Counter parameters and ideal rates per group of machines.
    pub oee: Arc<OeeConfig>,
    /// Shift start times, local.
    pub shifts: Shifts,
    /// The zone hours, days and shifts are laid out in.
    pub timezone: chrono_tz::Tz,
    /// How long a state parameter's value holds without a new reading.
    pub stale: Duration,
}

impl Default for StatesConfig {
    fn default() -> Self {
        StatesConfig {
            oee: Arc::new(OeeConfig::default()),
            shifts: Shifts::default(),
            timezone: chrono_tz::UTC,
            stale: DEFAULT_STALE,
        }
    }
}

/// `--stale` by default: five minutes.
pub const DEFAULT_STALE: Duration = Duration::from_secs(300);

const DAY: i64 = 86_400_000_000_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatesParams {
    machine_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    parameter: Option<String>,
    timeline: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OeeParams {
    machine_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    by: Option<String>,
}

/// One state's time.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StateTimeDoc {
    /// A job status, a value of the state parameter, or UNKNOWN.
    state: String,
    /// Seconds in the state within the range.
    seconds: f64,
    /// Fraction of the range; the shares sum to 1.
    #[schema(minimum = 0, maximum = 1)]
    share: f64,
    /// Changes into the state within the range.
    entered: u64,
}

/// One (state, reason)'s time.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ReasonTimeDoc {
    state: String,
    /// The reason given with the change into the state; null when none was.
    reason: Option<String>,
    seconds: f64,
    entered: u64,
}

/// One segment of the timeline.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SegmentDoc {
    state: String,
    #[schema(value_type = String, format = DateTime)]
    from: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    to: Timestamp,
}

/// The answer of `GET /states`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StatesAnswer {
    #[schema(value_type = String)]
    machine_id: MachineId,
    #[schema(value_type = String, format = DateTime)]
    since: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    until: Timestamp,
    /// The state parameter; null for the job status.
    parameter: Option<String>,
    /// Longest first.
    states: Vec<StateTimeDoc>,
    /// The job-status time by the reason of the change; empty for a parameter.
    reasons: Vec<ReasonTimeDoc>,
    /// Only with timeline=true: at most 10000 segments; a range with more is cut into 10000
    /// equal slots, each with the state that held longest in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    timeline: Option<Vec<SegmentDoc>>,
}

fn seconds(nanos: i64) -> f64 {
    nanos as f64 / 1e9
}

/// `since` and `until` of a query: until defaults to now, since to a day before until. A
/// `since` after `until` is an empty range at `since` (SPEC §4: a filter that matches nothing
/// is not an error), so the answer's `until` then equals its `since`.
fn range(since: Option<&str>, until: Option<&str>) -> Result<(Timestamp, Timestamp), ApiError> {
    let until = time_param("until", until)?.unwrap_or_else(Timestamp::now);
    let since = time_param("since", since)?
        .unwrap_or_else(|| Timestamp::from_nanos(until.as_nanos().saturating_sub(DAY)));
    Ok((since, until.max(since)))
}

fn required_machine(v: Option<&str>) -> Result<MachineId, ApiError> {
    machine_param("machine_id", v)?
        .ok_or_else(|| ApiError::BadRequest("machine_id: required".into()))
}

/// The job-status step function from stored changes.
pub(crate) fn status_steps(changes: Vec<StatusChange>) -> Vec<Step<JobStatus>> {
    changes
        .into_iter()
        .map(|c| Step {
            at: c.since.as_nanos(),
            state: c.status,
            reason: c.reason,
        })
        .collect()
}

/// The answer from the core's times, with `label` naming a state.
pub(crate) fn answer<S>(
    machine_id: MachineId,
    since: Timestamp,
    until: Timestamp,
    parameter: Option<String>,
    times: Times<S>,
    label: impl Fn(&S) -> String,
) -> StatesAnswer {
    let shares = times.shares();
    StatesAnswer {
        machine_id,
        since,
        until,
        states: times
            .states
            .iter()
            .zip(shares)
            .map(|(s, share)| StateTimeDoc {
                state: label(&s.state),
                seconds: seconds(s.nanos),
                share,
                entered: s.entered,
            })
            .collect(),
        reasons: if parameter.is_some() {
            Vec::new()
        } else {
            times
                .reasons
                .iter()
                .map(|r| ReasonTimeDoc {
                    state: label(&r.state),
                    reason: r.reason.as_ref().map(|r| r.to_string()),
                    seconds: seconds(r.nanos),
                    entered: r.entered,
                })
                .collect()
        },
        timeline: times.timeline.map(|t| {
            t.iter()
                .map(|s| SegmentDoc {
                    state: label(&s.state),
                    from: Timestamp::from_nanos(s.from),
                    to: Timestamp::from_nanos(s.to),
                })
                .collect()
        }),
        parameter,
    }
}

/// Time in state of a machine's job status, or of a state parameter it reports.
pub(crate) async fn time_in_state(
    store: &dyn Store,
    machine: MachineId,
    since: Timestamp,
    until: Timestamp,
    parameter: Option<String>,
    timeline: bool,
    stale: Duration,
) -> Result<StatesAnswer, ApiError> {
    let (lo, hi) = (since.as_nanos(), until.as_nanos());
    let max = timeline.then_some(MAX_TIMELINE);
    Ok(match parameter {
        // Totals only: from the store's running sums, however many changes the range holds.
        None if !timeline && hi > lo => {
            let reasons = store.status_totals(&machine, since, until).await?;
            let times = states::times_from_reasons(hi - lo, reasons);
            answer(machine, since, until, None, times, |s| {
                s.as_str().to_owned()
            })
        }
        None => {
            let steps = status_steps(store.status_changes(&machine, since, until).await?);
            let times = states::time_in_state(JobStatus::Idle, &steps, lo, hi, max);
            answer(machine, since, until, None, times, |s| {
                s.as_str().to_owned()
            })
        }
        Some(p) => {
            let stale = i64::try_from(stale.as_nanos()).unwrap_or(i64::MAX);
            // Only a reading within `stale` before `since` can still hold at `since`.
            let from = Timestamp::from_nanos(lo.saturating_sub(stale));
            let values: Vec<(i64, CompactString)> = store
                .state_values(&machine, &p, from, until)
                .await?
                .into_iter()
                .map(|(t, v)| (t.as_nanos(), v))
                .collect();
            let steps = states::steps_from_readings(&values, stale);
            let times =
                states::time_in_state(CompactString::const_new(UNKNOWN), &steps, lo, hi, max);
            answer(machine, since, until, Some(p), times, |s| s.to_string())
        }
    })
}

/// Time in state over a range: the job status, or a state parameter with `parameter`.
#[utoipa::path(get, path = "/states", tag = "states",
    params(
        ("machine_id" = String, Query, description = "The machine"),
        ("since" = Option<String>, Query, description = "From (RFC 3339, inclusive); default a day before until"),
        ("until" = Option<String>, Query, description = "To (RFC 3339, inclusive); default now; before since: an empty range at since"),
        ("parameter" = Option<String>, Query, description = "A state parameter of the readings instead of the job status"),
        ("timeline" = Option<bool>, Query, description = "Also the timeline, at most 10000 segments"),
    ),
    responses(
        (status = 200, description = "Time in each state", body = StatesAnswer),
        (status = 400, description = "A bad or missing parameter", body = super::ErrorBody),
        (status = 503, description = "The store is unavailable", body = super::ErrorBody),
    ))]
pub(crate) async fn get_states(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<StatesAnswer>, ApiError> {
    let p: StatesParams = parse_query(raw.as_deref())?;
    let machine = required_machine(p.machine_id.as_deref())?;
    let (since, until) = range(p.since.as_deref(), p.until.as_deref())?;
    let timeline = match p.timeline.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "timeline: {other:?} must be true or false"
            )));
        }
    };
    if let Some(name) = &p.parameter {
        crate::reading::ParamName::parse(name)
            .map_err(|e| ApiError::BadRequest(format!("parameter: {e}")))?;
    }
    let store = state.service.store().clone();
    Ok(Json(
        time_in_state(
            store.as_ref(),
            machine,
            since,
            until,
            p.parameter,
            timeline,
            state.states.stale,
        )
        .await?,
    ))
}

/// OEE figures as sent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct FiguresDoc {
    /// Seconds in STARTED, RUNNING, PAUSED or FAILED.
    planned_seconds: f64,
    /// Seconds RUNNING.
    running_seconds: f64,
    /// Parts counted; null when the machine has no counter in the OEE file.
    parts: Option<f64>,
    /// Good parts; null without a counter.
    good: Option<f64>,
    /// RUNNING / planned; null without planned time.
    #[schema(minimum = 0, maximum = 1)]
    availability: Option<f64>,
    /// Parts / (ideal rate × RUNNING time), at most 1; null without running time or counter.
    #[schema(minimum = 0, maximum = 1)]
    performance: Option<f64>,
    /// Good / counted; null without parts.
    #[schema(minimum = 0, maximum = 1)]
    quality: Option<f64>,
    /// availability × performance × quality; null when one is.
    #[schema(minimum = 0, maximum = 1)]
    oee: Option<f64>,
}

impl From<Figures> for FiguresDoc {
    fn from(f: Figures) -> Self {
        FiguresDoc {
            planned_seconds: seconds(f.planned),
            running_seconds: seconds(f.running),
            parts: f.parts,
            good: f.good,
            availability: f.availability,
            performance: f.performance,
            quality: f.quality,
            oee: f.oee,
        }
    }
}

/// One bucket of `GET /oee?by=…`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct BucketDoc {
    /// The bucket's part of the range: from (inclusive).
    #[schema(value_type = String, format = DateTime)]
    from: Timestamp,
    /// To (exclusive, but for the last bucket, which ends at until).
    #[schema(value_type = String, format = DateTime)]
    to: Timestamp,
    /// Where the whole hour, day or shift starts, even when the range cuts it.
    #[schema(value_type = String, format = DateTime)]
    start: Timestamp,
    /// For by=shift: the shift's local start time, such as 06:00.
    #[serde(skip_serializing_if = "Option::is_none")]
    shift: Option<String>,
    #[serde(flatten)]
    figures: FiguresDoc,
}

/// The answer of `GET /oee`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct OeeAnswer {
    #[schema(value_type = String)]
    machine_id: MachineId,
    #[schema(value_type = String, format = DateTime)]
    since: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    until: Timestamp,
    /// hour, day or shift; null for the whole range only.
    by: Option<&'static str>,
    /// The counter parameter of parts; null when the OEE file names none for the machine.
    count: Option<String>,
    /// The ideal rate, parts per minute; null without one.
    ideal_rate: Option<f64>,
    /// The whole range.
    #[serde(flatten)]
    total: FiguresDoc,
    /// Only with by: the range cut by local hour, day or shift.
    #[serde(skip_serializing_if = "Option::is_none")]
    buckets: Option<Vec<BucketDoc>>,
}

/// Parts per bucket of one counter.
async fn counted(
    store: &dyn Store,
    machine: &MachineId,
    parameter: &str,
    since: Timestamp,
    until: Timestamp,
    edges: &[i64],
) -> Result<Vec<f64>, ApiError> {
    let base = store.last_value_before(machine, parameter, since).await?;
    let series = store
        .series(machine, parameter, Some(since), Some(until))
        .await?;
    let points: Vec<(i64, f64)> = series
        .timestamps
        .iter()
        .map(|t| t.as_nanos())
        .zip(series.values)
        .collect();
    Ok(oee::increments_by(base.map(|b| b.1), &points, edges))
}

/// OEE of one machine over a range, whole and (with `by`) per bucket.
pub(crate) async fn oee_of(
    store: &dyn Store,
    config: &StatesConfig,
    machine: MachineId,
    since: Timestamp,
    until: Timestamp,
    by: Option<By>,
) -> Result<OeeAnswer, ApiError> {
    let (lo, hi) = (since.as_nanos(), until.as_nanos());
    let buckets = match by {
        Some(b) => Some(
            oee::buckets(lo, hi, b, config.timezone, &config.shifts)
                .map_err(ApiError::BadRequest)?,
        ),
        None => None,
    };
    // The edges of the buckets, then the whole range as one more "bucket" from the sums.
    let edges: Vec<i64> = match &buckets {
        Some(b) if !b.is_empty() => std::iter::once(lo)
            .chain(b.iter().skip(1).map(|b| b.from))
            .chain(std::iter::once(hi))
            .collect(),
        _ => vec![lo, hi],
    };
    let nanos = if buckets.is_none() && hi > lo {
        vec![oee::status_nanos_from(
            &store.status_totals(&machine, since, until).await?,
        )]
    } else {
        let steps = status_steps(store.status_changes(&machine, since, until).await?);
        oee::status_nanos_by(JobStatus::Idle, &steps, &edges)
    };
    let group = config.oee.group_of(machine.as_str());
    let n = edges.len() - 1;
    let (parts, good) = match group {
        Some(g) => {
            let parts = counted(store, &machine, &g.count, since, until, &edges).await?;
            let good = match &g.quality {
                Quality::Good(p) => counted(store, &machine, p, since, until, &edges).await?,
                Quality::Reject(p) => counted(store, &machine, p, since, until, &edges)
                    .await?
                    .iter()
                    .zip(&parts)
                    .map(|(rejects, parts)| (parts - rejects).max(0.0))
                    .collect(),
            };
            (Some(parts), Some(good))
        }
        None => (None, None),
    };
    let ideal = group.map(|g| g.ideal_rate);
    let at = |v: &Option<Vec<f64>>, k: usize| v.as_ref().map(|v| v[k]);
    let sum = |v: &Option<Vec<f64>>| v.as_ref().map(|v| v.iter().sum::<f64>());
    let mut whole = [0i64; 6];
    for b in &nanos {
        for (w, x) in whole.iter_mut().zip(b) {
            *w += x;
        }
    }
    let total = oee::figures(&whole, sum(&parts), sum(&good), ideal).into();
    let buckets = buckets.map(|b| {
        b.into_iter()
            .enumerate()
            .take(n)
            .map(|(k, b)| BucketDoc {
                from: Timestamp::from_nanos(b.from),
                to: Timestamp::from_nanos(b.to),
                start: Timestamp::from_nanos(b.start),
                shift: b.shift,
                figures: oee::figures(&nanos[k], at(&parts, k), at(&good, k), ideal).into(),
            })
            .collect()
    });
    Ok(OeeAnswer {
        machine_id: machine,
        since,
        until,
        by: by.map(By::as_str),
        count: group.map(|g| g.count.clone()),
        ideal_rate: ideal,
        total,
        buckets,
    })
}

/// Availability, performance, quality and OEE over a range, by hour, day or shift.
#[utoipa::path(get, path = "/oee", tag = "states",
    params(
        ("machine_id" = String, Query, description = "The machine"),
        ("since" = Option<String>, Query, description = "From (RFC 3339, inclusive); default a day before until"),
        ("until" = Option<String>, Query, description = "To (RFC 3339, inclusive); default now; before since: an empty range at since"),
        ("by" = Option<String>, Query, description = "hour, day or shift (local to --timezone; shifts from --shifts); at most the newest 10000 buckets: a longer range starts later, and the answer's since says where"),
    ),
    responses(
        (status = 200, description = "The figures and what they came from", body = OeeAnswer),
        (status = 400, description = "A bad or missing parameter", body = super::ErrorBody),
        (status = 503, description = "The store is unavailable", body = super::ErrorBody),
    ))]
pub(crate) async fn get_oee(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<OeeAnswer>, ApiError> {
    let p: OeeParams = parse_query(raw.as_deref())?;
    let machine = required_machine(p.machine_id.as_deref())?;
    let (since, until) = range(p.since.as_deref(), p.until.as_deref())?;
    let by =
        p.by.as_deref()
            .map(By::parse)
            .transpose()
            .map_err(|e| ApiError::BadRequest(format!("by: {e}")))?;
    let since = match by {
        Some(b) => Timestamp::from_nanos(oee::newest_buckets_start(
            since.as_nanos(),
            until.as_nanos(),
            b,
            state.states.shifts.times().len(),
        )),
        None => since,
    };
    let store = state.service.store().clone();
    Ok(Json(
        oee_of(store.as_ref(), &state.states, machine, since, until, by).await?,
    ))
}
