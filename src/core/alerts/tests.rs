//! Data-driven tests of rules and the state machine: a table of rule, series and expected
//! changes per condition, the `for` boundaries, validation errors, and a property test
//! against a naive evaluator written per run instead of per reading.

use proptest::prelude::*;
use serde_json::{Value as Json, json};

use super::*;
use crate::pipeline::ProcessedRecord;
use crate::reading::{Field, MachineId, ParamName, Value};
use crate::status::{JobStatus, StatusChange};
use crate::timestamp::Timestamp;

const S: i64 = 1_000_000_000;

fn at(secs: f64) -> Timestamp {
    Timestamp::from_nanos((secs * S as f64) as i64)
}

/// A record of `machine` at `secs` with `temperature` = value (and its average), if given.
fn record(machine: &str, secs: f64, value: Option<(f64, f64)>) -> ProcessedRecord {
    let mut fields = crate::reading::Fields::new();
    let mut averages = crate::pipeline::Averages::new();
    if let Some((v, avg)) = value {
        fields.push(Field {
            name: ParamName::parse("temperature").unwrap(),
            value: Value::Number(v),
        });
        averages.push(avg);
    }
    fields.push(Field {
        name: ParamName::parse("status").unwrap(),
        value: Value::State("RUNNING".into()),
    });
    ProcessedRecord {
        machine_id: MachineId::parse(machine).unwrap(),
        timestamp: at(secs),
        fields,
        averages,
    }
}

fn rule(v: Json) -> Rule {
    Rule::from_json(None, &v).unwrap_or_else(|e| panic!("{v}: {e}"))
}

/// Feeds (secs, Some((value, average)) or None for a reading without the parameter) and
/// gives back (kind, index of the reading that made the change).
fn run(r: &Rule, series: &[(f64, Option<(f64, f64)>)]) -> Vec<(ChangeKind, usize)> {
    let mut e = Engine::new(vec![r.clone()]);
    let mut got = Vec::new();
    for (i, (t, v)) in series.iter().enumerate() {
        let mut out = Vec::new();
        e.on_record(&record("press-01", *t, *v), at(*t), &mut out);
        got.extend(out.into_iter().map(|c| (c.kind, i)));
    }
    got
}

/// (secs, value and average) of readings; `None`: a reading without the parameter.
type Series = Vec<(f64, Option<(f64, f64)>)>;

/// (kind, index of the reading that made the change).
type Changes = Vec<(ChangeKind, usize)>;

/// Readings whose average equals their value.
fn plain(points: &[(f64, f64)]) -> Series {
    points.iter().map(|(t, v)| (*t, Some((*v, *v)))).collect()
}

use ChangeKind::{Cancelled, Fired, Pending, Resolved};

#[test]
fn each_condition_fires_and_resolves_as_its_table_says() {
    let hot = json!({"name": "hot", "parameter": "temperature", "when": "above", "value": 90});
    let cases: Vec<(&str, Json, Series, Changes)> = vec![
        (
            "above, for 0s: fires on the first reading above, resolves on the first not",
            hot.clone(),
            plain(&[(0., 80.), (1., 95.), (2., 96.), (3., 85.)]),
            vec![(Fired, 1), (Resolved, 3)],
        ),
        (
            "above is strict: the bound itself is not above",
            hot.clone(),
            plain(&[(0., 90.), (1., 90.)]),
            vec![],
        ),
        (
            "below",
            json!({"name": "cold", "parameter": "temperature", "when": "below", "value": 10}),
            plain(&[(0., 12.), (1., 9.), (2., 11.)]),
            vec![(Fired, 1), (Resolved, 2)],
        ),
        (
            "outside a range, either side; the ends are inside",
            json!({"name": "band", "parameter": "temperature", "when": "outside", "value": [10, 20]}),
            plain(&[(0., 15.), (1., 21.), (2., 20.), (3., 9.), (4., 10.)]),
            vec![(Fired, 1), (Resolved, 2), (Fired, 3), (Resolved, 4)],
        ),
        (
            "of = average holds the moving average against the bound, not the value",
            json!({"name": "hot-avg", "parameter": "temperature", "when": "above", "value": 90, "of": "average"}),
            vec![
                (0., Some((99., 85.))),
                (1., Some((80., 91.))),
                (2., Some((99., 89.))),
            ],
            vec![(Fired, 1), (Resolved, 2)],
        ),
        (
            "deviation: |value - average| > threshold x |average| (the seed's 50 against 34.4)",
            json!({"name": "dev", "parameter": "temperature", "when": "deviation", "threshold": 0.2}),
            vec![
                (0., Some((30., 30.))),
                (1., Some((50., 34.4))),
                (2., Some((41.0, 34.4))),
                (3., Some((41.5, 34.4))),
            ],
            vec![(Fired, 1), (Resolved, 2), (Fired, 3)],
        ),
        (
            "deviation from an average of 0: any non-zero value",
            json!({"name": "dev0", "parameter": "temperature", "when": "deviation", "threshold": 0.2}),
            vec![
                (0., Some((0., 0.))),
                (1., Some((1., 0.))),
                (2., Some((0., 0.))),
            ],
            vec![(Fired, 1), (Resolved, 2)],
        ),
        (
            "for = 30s held exactly 30 s: fires on the reading 30 s after the run's first",
            json!({"name": "hot30", "parameter": "temperature", "when": "above", "value": 90, "for": "30s"}),
            plain(&[
                (0., 95.),
                (10., 95.),
                (20., 95.),
                (30., 95.),
                (40., 95.),
                (50., 80.),
            ]),
            vec![(Pending, 0), (Fired, 3), (Resolved, 5)],
        ),
        (
            "for = 30s held one reading short (29.999 s): pending, then cancelled, never fired",
            json!({"name": "hot30", "parameter": "temperature", "when": "above", "value": 90, "for": "30s"}),
            plain(&[(0., 95.), (10., 95.), (20., 95.), (29.999, 95.), (31., 80.)]),
            vec![(Pending, 0), (Cancelled, 4)],
        ),
        (
            "flapping: each reading that breaks the run starts the clock again",
            json!({"name": "hot20", "parameter": "temperature", "when": "above", "value": 90, "for": "20s"}),
            plain(&[
                (0., 95.),
                (10., 80.),
                (20., 95.),
                (30., 95.),
                (35., 80.),
                (40., 95.),
                (50., 95.),
                (60., 95.),
            ]),
            vec![
                (Pending, 0),
                (Cancelled, 1),
                (Pending, 2),
                (Cancelled, 4),
                (Pending, 5),
                (Fired, 7),
            ],
        ),
        (
            "a reading without the parameter neither continues nor breaks the run",
            json!({"name": "hot20", "parameter": "temperature", "when": "above", "value": 90, "for": "20s"}),
            vec![
                (0., Some((95., 95.))),
                (10., None),
                (20., Some((95., 95.))),
                (30., None),
                (40., Some((80., 80.))),
            ],
            vec![(Pending, 0), (Fired, 2), (Resolved, 4)],
        ),
    ];
    for (what, r, series, want) in cases {
        assert_eq!(run(&rule(r), &series), want, "{what}");
    }
}

#[test]
fn a_firing_alert_says_what_it_held_against() {
    let r = rule(
        json!({"name": "band", "parameter": "temperature", "when": "outside", "value": [10, 20], "severity": "critical"}),
    );
    let mut e = Engine::new(vec![r]);
    let mut out = Vec::new();
    e.on_record(
        &record("press-01", 5.0, Some((25.0, 18.0))),
        at(100.0),
        &mut out,
    );
    let a = &out[0].alert;
    let j = serde_json::to_value(a).unwrap();
    assert_eq!(
        j,
        json!({"rule": "band", "machine_id": "press-01", "parameter": "temperature", "state": "firing",
               "severity": "critical", "value": 25, "bound": [10.0, 20.0], "since": "1970-01-01T00:00:05Z",
               "fired_at": "1970-01-01T00:00:05Z", "resolved_at": null})
    );
    assert_eq!(Alert::from_json(&j).as_ref(), Some(a));
    assert_eq!(e.alerts(), vec![a.clone()]);
    assert_eq!(e.counts(), (0, 1));
}

#[test]
fn machine_globs_choose_the_machines_a_rule_watches() {
    let cases = [
        ("press-*", "press-01", true),
        ("press-*", "lathe-01", false),
        ("*", "anything", true),
        ("press-0[12]", "press-02", true),
        ("press-0[12]", "press-03", false),
        ("{press,lathe}-*", "lathe-7", true),
        ("press-01", "press-010", false),
    ];
    for (glob, machine, fires) in cases {
        let r = rule(
            json!({"name": "hot", "machines": glob, "parameter": "temperature", "when": "above", "value": 90}),
        );
        assert_eq!(r.matches(machine), fires, "{glob} against {machine}");
        let mut e = Engine::new(vec![r]);
        let mut out = Vec::new();
        e.on_record(&record(machine, 0.0, Some((95.0, 95.0))), at(0.0), &mut out);
        assert_eq!(out.len(), usize::from(fires), "{glob} against {machine}");
    }
}

fn change(machine: &str, from: JobStatus, to: JobStatus, secs: f64) -> StatusChange {
    StatusChange {
        machine_id: MachineId::parse(machine).unwrap(),
        status: to,
        previous: from,
        since: at(secs),
        reason: None,
    }
}

#[test]
fn status_rules_fire_on_a_trouble_status_and_after_their_for_on_the_tick() {
    use JobStatus::*;
    let now = rule(json!({"name": "failed", "when": "status", "statuses": ["FAILED"]}));
    let held = rule(
        json!({"name": "paused-long", "when": "status", "statuses": ["PAUSED", "FAILED"], "for": "1m"}),
    );
    let mut e = Engine::new(vec![now, held]);
    let mut out = Vec::new();
    e.on_status(&change("press-01", Idle, Running, 0.0), &mut out);
    assert!(out.is_empty(), "{out:?}");
    e.on_status(&change("press-01", Running, Paused, 10.0), &mut out);
    assert_eq!(
        out.iter()
            .map(|c| (c.kind, c.alert.rule.as_str()))
            .collect::<Vec<_>>(),
        [(Pending, "paused-long")]
    );
    out.clear();
    e.tick(at(69.0), &mut out);
    assert!(out.is_empty(), "59 s paused is short of 1m: {out:?}");
    e.on_status(&change("press-01", Paused, Failed, 69.5), &mut out);
    assert_eq!(
        out.iter()
            .map(|c| (c.kind, c.alert.rule.as_str()))
            .collect::<Vec<_>>(),
        [(Fired, "failed")],
        "PAUSED -> FAILED keeps the run of paused-long"
    );
    out.clear();
    e.tick(at(70.0), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].kind, out[0].alert.rule.as_str()),
        (Fired, "paused-long")
    );
    assert_eq!(out[0].alert.since, at(10.0));
    assert_eq!(out[0].alert.value, Some(Value::State("FAILED".into())));
    out.clear();
    e.on_status(&change("press-01", Failed, Idle, 80.0), &mut out);
    assert_eq!(
        out.iter().map(|c| c.kind).collect::<Vec<_>>(),
        [Resolved, Resolved]
    );
}

#[test]
fn stale_fires_on_the_tick_after_silence_and_resolves_on_the_next_reading() {
    let r = rule(json!({"name": "silent", "when": "stale", "for": "5m"}));
    let mut e = Engine::new(vec![r]);
    let mut out = Vec::new();
    e.on_record(
        &record("press-01", 0.0, Some((1.0, 1.0))),
        at(1000.0),
        &mut out,
    );
    e.tick(at(1299.0), &mut out);
    assert!(out.is_empty());
    e.tick(at(1300.0), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, Fired);
    assert_eq!(
        (out[0].alert.since, out[0].alert.fired_at),
        (at(1000.0), Some(at(1300.0)))
    );
    e.tick(at(1400.0), &mut out);
    assert_eq!(out.len(), 1, "fires once");
    e.on_record(&record("press-01", 1.0, None), at(1500.0), &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(
        (out[1].kind, out[1].alert.resolved_at),
        (Resolved, Some(at(1500.0)))
    );
}

#[test]
fn a_changed_or_removed_rule_ends_its_alerts_and_others_go_on() {
    let hot =
        rule(json!({"name": "hot", "parameter": "temperature", "when": "above", "value": 90}));
    let cold = rule(
        json!({"name": "cold", "parameter": "temperature", "when": "below", "value": 100, "for": "1h"}),
    );
    let mut e = Engine::new(vec![hot.clone(), cold.clone()]);
    let mut out = Vec::new();
    e.on_record(
        &record("press-01", 0.0, Some((95.0, 95.0))),
        at(0.0),
        &mut out,
    );
    assert_eq!(
        out.iter().map(|c| c.kind).collect::<Vec<_>>(),
        [Pending, Fired]
    );
    out = e.set_rules(vec![cold.clone(), hot.clone()], at(5.0));
    assert!(out.is_empty(), "same rules: nothing changes: {out:?}");
    let hotter =
        rule(json!({"name": "hot", "parameter": "temperature", "when": "above", "value": 99}));
    out = e.set_rules(vec![hotter], at(6.0));
    let kinds: Vec<_> = out
        .iter()
        .map(|c| (c.kind, c.alert.rule.as_str()))
        .collect();
    assert_eq!(kinds, [(Cancelled, "cold"), (Resolved, "hot")]);
    assert_eq!(out[1].alert.resolved_at, Some(at(6.0)));
    assert!(e.alerts().is_empty());
}

#[test]
fn replaying_the_same_series_twice_gives_the_same_output() {
    let rules = parse_rules_file(
        r#"
[[rule]]
name = "hot"
parameter = "temperature"
when = "above"
value = 50
for = "3s"
[[rule]]
name = "dev"
machines = "press-*"
parameter = "temperature"
when = "deviation"
threshold = 0.1
[[rule]]
name = "silent"
when = "stale"
for = "4s"
"#,
    )
    .unwrap();
    let replay = || {
        let mut e = Engine::new(rules.clone());
        let mut out = Vec::new();
        let mut rng = fastrand::Rng::with_seed(7);
        for i in 0..2000 {
            let machine = ["press-01", "press-02", "lathe-01"][rng.usize(0..3)];
            let t = i as f64 * 0.5 + rng.f64();
            let v = rng.f64() * 100.0;
            e.tick(at(t), &mut out);
            e.on_record(&record(machine, t, Some((v, 50.0))), at(t), &mut out);
        }
        serde_json::to_string(&out).unwrap()
    };
    let first = replay();
    assert!(
        first.contains("\"fired\"") && first.contains("\"resolved\""),
        "the series exercises the rules"
    );
    assert_eq!(first, replay());
}

#[test]
fn restored_alerts_go_on_as_if_nothing_happened() {
    let r = rule(
        json!({"name": "hot", "parameter": "temperature", "when": "above", "value": 90, "for": "20s"}),
    );
    let series = plain(&[(0., 95.), (10., 95.), (20., 95.), (30., 95.), (40., 80.)]);
    let whole = run(&r, &series);
    for cut in 1..series.len() {
        let mut e = Engine::new(vec![r.clone()]);
        let mut got = Vec::new();
        for (i, (t, v)) in series[..cut].iter().enumerate() {
            let mut out = Vec::new();
            e.on_record(&record("press-01", *t, *v), at(*t), &mut out);
            got.extend(out.into_iter().map(|c| (c.kind, i)));
        }
        let mut again = Engine::new(vec![r.clone()]);
        for a in e.alerts() {
            let json = serde_json::to_value(&a).unwrap();
            assert!(again.restore(Alert::from_json(&json).unwrap()));
        }
        for (i, (t, v)) in series.iter().enumerate().skip(cut) {
            let mut out = Vec::new();
            again.on_record(&record("press-01", *t, *v), at(*t), &mut out);
            got.extend(out.into_iter().map(|c| (c.kind, i)));
        }
        assert_eq!(got, whole, "cut before reading {cut}");
    }
}

#[test]
fn bad_rules_are_refused_naming_the_field() {
    let base = json!({"name": "hot", "parameter": "temperature", "when": "above", "value": 90});
    let with = |k: &str, v: Json| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let cases = [
        (with("name", json!("bad name")), "name"),
        (with("name", json!("x".repeat(65))), "name"),
        (without("name"), "name"),
        (without("when"), "when"),
        (with("when", json!("hotter")), "when"),
        (without("value"), "value"),
        (with("value", json!("ninety")), "value"),
        (with("value", json!([1, 2])), "value"),
        (
            json!({"name": "b", "parameter": "temperature", "when": "outside", "value": 3}),
            "value",
        ),
        (
            json!({"name": "b", "parameter": "temperature", "when": "outside", "value": [5, 1]}),
            "value",
        ),
        (without("parameter"), "parameter"),
        (with("parameter", json!("temperature_avg")), "parameter"),
        (with("of", json!("median")), "of"),
        (with("for", json!("soon")), "for"),
        (with("for", json!(30)), "for"),
        (with("severity", json!("dire")), "severity"),
        (with("machines", json!("press-[")), "machines"),
        (with("threshold", json!(0.2)), "threshold"),
        (with("colour", json!("red")), "colour"),
        (
            json!({"name": "d", "parameter": "temperature", "when": "deviation"}),
            "threshold",
        ),
        (
            json!({"name": "d", "parameter": "temperature", "when": "deviation", "threshold": -1}),
            "threshold",
        ),
        (json!({"name": "s", "when": "status"}), "statuses"),
        (
            json!({"name": "s", "when": "status", "statuses": ["BROKEN"]}),
            "statuses",
        ),
        (
            json!({"name": "s", "when": "status", "statuses": []}),
            "statuses",
        ),
        (
            json!({"name": "s", "when": "status", "statuses": ["FAILED"], "parameter": "temperature"}),
            "parameter",
        ),
        (json!({"name": "s", "when": "stale"}), "for"),
    ];
    for (body, field) in cases {
        let err = Rule::from_json(None, &body).expect_err(&body.to_string());
        assert_eq!(err.field_name(), Some(field), "{body}: {err}");
        assert!(err.to_string().starts_with(field), "{err}");
    }
    let err = Rule::from_json(Some("other"), &base).unwrap_err();
    assert_eq!(err.field_name(), Some("name"));
    assert_eq!(
        Rule::from_json(Some("hot"), &without("name"))
            .unwrap()
            .name
            .as_str(),
        "hot"
    );
}

#[test]
fn rules_files_read_every_field_and_name_the_rule_at_fault() {
    let rules = parse_rules_file(
        r#"
[[rule]]
name = "spindle-hot"
machines = "press-*"
parameter = "temperature"
when = "above"
value = 90.0
of = "average"
for = "30s"
severity = "critical"
"#,
    )
    .unwrap();
    assert_eq!(
        rules[0].to_json(),
        json!({"name": "spindle-hot", "machines": "press-*", "parameter": "temperature", "when": "above",
               "value": 90.0, "of": "average", "for": "30s", "severity": "critical"})
    );
    assert_eq!(rules[0].for_nanos, 30 * S);
    // What to_json writes reads back as the same rule.
    assert_eq!(
        Rule::from_json(None, &rules[0].to_json()).unwrap(),
        rules[0]
    );
    let err = parse_rules_file("[[rule]]\nname = \"a\"\nwhen = \"stale\"\nfor = \"1m\"\n[[rule]]\nname = \"b\"\nwhen = \"above\"\nparameter = \"t\"\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "[[rule]] #2 (b): value: is required by when = \"above\""
    );
    let err = parse_rules_file("[[rule]]\nname = \"a\"\nwhen = \"stale\"\nfor = \"1m\"\n[[rule]]\nname = \"a\"\nwhen = \"stale\"\nfor = \"2m\"\n").unwrap_err();
    assert_eq!(err.field_name(), Some("name"));
    assert!(matches!(
        parse_rules_file("[[rule]\n"),
        Err(RuleError::Syntax(_))
    ));
    assert!(parse_rules_file("").unwrap().is_empty());
}

/// The naive evaluator: splits the readings that have the parameter into maximal runs that
/// meet the condition; a run fires at its first reading at least `for` after its first,
/// and a run that fired resolves at the reading that ends it.
fn naive(bound: f64, for_s: i64, series: &[(i64, Option<f64>)]) -> Vec<(ChangeKind, usize)> {
    let with: Vec<(usize, i64, f64)> = series
        .iter()
        .enumerate()
        .filter_map(|(i, (t, v))| v.map(|v| (i, *t, v)))
        .collect();
    let mut out = Vec::new();
    let mut k = 0;
    while k < with.len() {
        if with[k].2 <= bound {
            k += 1;
            continue;
        }
        let start = k;
        while k < with.len() && with[k].2 > bound {
            k += 1;
        }
        let run = &with[start..k];
        let fired = run.iter().find(|(_, t, _)| t - run[0].1 >= for_s);
        if for_s > 0 {
            out.push((Pending, run[0].0));
        }
        match (fired, with.get(k)) {
            (Some(f), end) => {
                out.push((Fired, f.0));
                if let Some(e) = end {
                    out.push((Resolved, e.0));
                }
            }
            (None, Some(e)) => out.push((Cancelled, e.0)),
            (None, None) => {}
        }
    }
    out
}

proptest! {
    #[test]
    fn the_engine_agrees_with_a_naive_evaluator(
        for_s in prop::sample::select(vec![0i64, 1, 5, 10, 30]),
        steps in prop::collection::vec((0i64..8, prop::option::weighted(0.85, 0u8..10)), 0..80),
    ) {
        let mut t = 0;
        let series: Vec<(i64, Option<f64>)> = steps
            .iter()
            .map(|(dt, v)| { t += dt; (t, v.map(f64::from)) })
            .collect();
        let r = rule(json!({"name": "p", "parameter": "temperature", "when": "above", "value": 5, "for": format!("{for_s}s")}));
        let fed: Vec<(f64, Option<(f64, f64)>)> =
            series.iter().map(|(t, v)| (*t as f64, v.map(|v| (v, 0.0)))).collect();
        prop_assert_eq!(run(&r, &fed), naive(5.0, for_s, &series));
    }
}
