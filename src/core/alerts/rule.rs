//! Alert rules (SPEC §7): what a rule watches, read from a `[[rule]]` table of a rules file or
//! from the JSON body of `PUT /alerts/rules/{name}`, checked field by field so that an error
//! names the field that was wrong.

use std::fmt;

use serde_json::{Map, Value as Json, json};

use crate::reading::ParamName;
use crate::status::JobStatus;

/// Every field a rule may have; anything else is refused, naming it.
const FIELDS: [&str; 10] = [
    "name",
    "machines",
    "parameter",
    "when",
    "value",
    "of",
    "threshold",
    "statuses",
    "for",
    "severity",
];

/// Why a rule (or a rules file) was refused: the field, and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// One field of one rule was wrong or missing.
    #[error("{field}: {reason}")]
    Field {
        /// The field, such as `value` or `for`.
        field: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A rules file could not be read as TOML, or one of its rules was wrong.
    #[error("{at}: {source}")]
    InFile {
        /// Which rule of the file (its number and name when it has one), or the file itself.
        at: String,
        /// What was wrong.
        #[source]
        source: Box<RuleError>,
    },
    /// The text was not TOML.
    #[error("not a rules file: {0}")]
    Syntax(String),
}

impl RuleError {
    fn field(field: &str, reason: impl Into<String>) -> Self {
        RuleError::Field {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    /// The field the error names, when it names one.
    pub fn field_name(&self) -> Option<&str> {
        match self {
            RuleError::Field { field, .. } => Some(field),
            RuleError::InFile { source, .. } => source.field_name(),
            RuleError::Syntax(_) => None,
        }
    }
}

/// A rule's name: `[A-Za-z0-9_.-]{1,64}`, unique among the rules.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct RuleName(compact_str::CompactString);

impl RuleName {
    /// Checks the pattern; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 64 {
            return Err(format!(
                "{s:?} must be 1 to 64 characters of A-Z a-z 0-9 . _ -"
            ));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "{s:?} has {bad:?}, which is not allowed: use A-Z a-z 0-9 . _ -"
            ));
        }
        Ok(RuleName(s.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a rule holds each reading against.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The watched value is above the bound (strictly).
    Above(f64),
    /// The watched value is below the bound (strictly).
    Below(f64),
    /// The watched value is outside `[low, high]` (strictly below or above).
    Outside(f64, f64),
    /// `|value − moving average| > threshold × |moving average|` (SPEC §5's rule, live).
    Deviation(f64),
    /// No reading for the rule's `for`, on the wall clock.
    Stale,
    /// The machine's job status is one of these.
    Status(Vec<JobStatus>),
}

impl Condition {
    /// The `when` word of the condition.
    pub fn when(&self) -> &'static str {
        match self {
            Condition::Above(_) => "above",
            Condition::Below(_) => "below",
            Condition::Outside(..) => "outside",
            Condition::Deviation(_) => "deviation",
            Condition::Stale => "stale",
            Condition::Status(_) => "status",
        }
    }
}

/// Which number of a reading a bound is held against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Of {
    /// The raw value.
    Value,
    /// Its moving average.
    Average,
}

/// How bad a firing alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Worth a look soon (the default).
    Warning,
    /// Worth waking someone.
    Critical,
}

impl Severity {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its unique name.
    pub name: RuleName,
    /// The glob over machine ids as written (default `*`).
    pub machines: String,
    matcher: globset::GlobMatcher,
    /// The watched parameter: required by every condition but `stale` (optional there: then
    /// only readings that have it count) and `status` (which has none).
    pub parameter: Option<ParamName>,
    /// What it fires on.
    pub condition: Condition,
    /// Raw value or moving average (above, below, outside).
    pub of: Of,
    /// How long the condition must hold, in nanoseconds.
    pub for_nanos: i64,
    /// How bad it is.
    pub severity: Severity,
}

impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.to_json() == other.to_json()
    }
}

fn number(field: &str, v: &Json) -> Result<f64, RuleError> {
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(RuleError::field(
            field,
            format!("{v} is not a finite number"),
        )),
    }
}

fn text<'a>(field: &str, v: &'a Json) -> Result<&'a str, RuleError> {
    v.as_str()
        .ok_or_else(|| RuleError::field(field, format!("{v} is not a string")))
}

/// Reads a duration such as `30s`, `5m` or `1h 30m` (humantime's forms).
fn duration_nanos(field: &str, s: &str) -> Result<i64, RuleError> {
    let d = humantime::parse_duration(s).map_err(|e| {
        RuleError::field(
            field,
            format!("{s:?} is not a duration such as \"30s\": {e}"),
        )
    })?;
    i64::try_from(d.as_nanos()).map_err(|_| RuleError::field(field, format!("{s:?} is too long")))
}

impl Rule {
    /// Checks one rule given as a JSON object. `name` from outside (the path of `PUT
    /// /alerts/rules/{name}`) wins over a `name` field, which must then agree with it.
    pub fn from_json(name: Option<&str>, v: &Json) -> Result<Rule, RuleError> {
        let Some(obj) = v.as_object() else {
            return Err(RuleError::field("rule", "must be an object"));
        };
        if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(RuleError::field(
                k,
                format!("is not a field of a rule: use {}", FIELDS.join(", ")),
            ));
        }
        let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
        let name = match (name, get("name")) {
            (Some(outer), Some(inner)) => {
                let inner = text("name", inner)?;
                if inner != outer {
                    return Err(RuleError::field(
                        "name",
                        format!("{inner:?} differs from the name in the path, {outer:?}"),
                    ));
                }
                outer
            }
            (Some(outer), None) => outer,
            (None, Some(inner)) => text("name", inner)?,
            (None, None) => return Err(RuleError::field("name", "is required")),
        };
        let name = RuleName::parse(name).map_err(|e| RuleError::field("name", e))?;
        let machines = match get("machines") {
            Some(m) => text("machines", m)?.to_owned(),
            None => "*".to_owned(),
        };
        let matcher = globset::GlobBuilder::new(&machines)
            .literal_separator(false)
            .build()
            .map_err(|e| RuleError::field("machines", format!("{machines:?}: {e}")))?
            .compile_matcher();
        let when = text(
            "when",
            get("when").ok_or_else(|| {
                RuleError::field(
                    "when",
                    "is required: above, below, outside, deviation, stale or status",
                )
            })?,
        )?;
        let parameter = match get("parameter") {
            Some(p) => Some(
                ParamName::parse(text("parameter", p)?)
                    .map_err(|e| RuleError::field("parameter", e))?,
            ),
            None => None,
        };
        // Which optional fields the condition takes; any other one given is a mistake that
        // would otherwise pass in silence (a threshold on an `above` rule, say).
        let (condition, takes): (Condition, &[&str]) = match when {
            "above" | "below" => {
                let v = get("value").ok_or_else(|| {
                    RuleError::field("value", format!("is required by when = \"{when}\""))
                })?;
                let bound = number("value", v)?;
                let c = if when == "above" {
                    Condition::Above(bound)
                } else {
                    Condition::Below(bound)
                };
                (c, &["value", "of"])
            }
            "outside" => {
                let v = get("value").ok_or_else(|| {
                    RuleError::field("value", "is required by when = \"outside\": [low, high]")
                })?;
                let pair = v.as_array().filter(|a| a.len() == 2).ok_or_else(|| {
                    RuleError::field(
                        "value",
                        format!("{v} is not a range [low, high] of two numbers"),
                    )
                })?;
                let (lo, hi) = (number("value", &pair[0])?, number("value", &pair[1])?);
                if lo > hi {
                    return Err(RuleError::field(
                        "value",
                        format!("[{lo}, {hi}]: low must not exceed high"),
                    ));
                }
                (Condition::Outside(lo, hi), &["value", "of"])
            }
            "deviation" => {
                let t = get("threshold").ok_or_else(|| {
                    RuleError::field("threshold", "is required by when = \"deviation\"")
                })?;
                let t = number("threshold", t)?;
                if t < 0.0 {
                    return Err(RuleError::field(
                        "threshold",
                        format!("{t} must not be negative"),
                    ));
                }
                (Condition::Deviation(t), &["threshold"])
            }
            "stale" => (Condition::Stale, &[]),
            "status" => {
                let v = get("statuses").ok_or_else(|| {
                    RuleError::field("statuses", "is required by when = \"status\"")
                })?;
                let list = v.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
                    RuleError::field("statuses", format!("{v} is not a non-empty list"))
                })?;
                let mut statuses = Vec::new();
                for s in list {
                    let s = JobStatus::parse(text("statuses", s)?)
                        .map_err(|e| RuleError::field("statuses", e))?;
                    if !statuses.contains(&s) {
                        statuses.push(s);
                    }
                }
                statuses.sort();
                (Condition::Status(statuses), &["statuses"])
            }
            other => {
                return Err(RuleError::field(
                    "when",
                    format!(
                        "{other:?} is not a condition: use above, below, outside, deviation, stale or status"
                    ),
                ));
            }
        };
        for k in ["value", "of", "threshold", "statuses"] {
            if get(k).is_some() && !takes.contains(&k) {
                return Err(RuleError::field(
                    k,
                    format!("is not taken by when = \"{when}\""),
                ));
            }
        }
        match (&condition, &parameter) {
            (Condition::Status(_), Some(_)) => {
                return Err(RuleError::field(
                    "parameter",
                    "is not taken by when = \"status\", which watches the job status",
                ));
            }
            (Condition::Stale | Condition::Status(_), _) | (_, Some(_)) => {}
            (_, None) => {
                return Err(RuleError::field(
                    "parameter",
                    format!("is required by when = \"{when}\""),
                ));
            }
        }
        let of = match get("of") {
            None => Of::Value,
            Some(v) => match text("of", v)? {
                "value" => Of::Value,
                "average" => Of::Average,
                other => {
                    return Err(RuleError::field(
                        "of",
                        format!("{other:?} is not one of value, average"),
                    ));
                }
            },
        };
        let for_nanos = match get("for") {
            None => 0,
            Some(v) => duration_nanos("for", text("for", v)?)?,
        };
        if matches!(condition, Condition::Stale) && for_nanos == 0 {
            return Err(RuleError::field(
                "for",
                "is required by when = \"stale\": how long without a reading, such as \"5m\"",
            ));
        }
        let severity = match get("severity") {
            None => Severity::Warning,
            Some(v) => match text("severity", v)? {
                "info" => Severity::Info,
                "warning" => Severity::Warning,
                "critical" => Severity::Critical,
                other => {
                    return Err(RuleError::field(
                        "severity",
                        format!("{other:?} is not one of info, warning, critical"),
                    ));
                }
            },
        };
        Ok(Rule {
            name,
            machines,
            matcher,
            parameter,
            condition,
            of,
            for_nanos,
            severity,
        })
    }

    /// The rule as JSON, in the shape it is read from (what `GET /alerts/rules` shows and
    /// what a store keeps).
    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name.as_str()));
        m.insert("machines".into(), json!(self.machines));
        if let Some(p) = &self.parameter {
            m.insert("parameter".into(), json!(p.as_str()));
        }
        m.insert("when".into(), json!(self.condition.when()));
        match &self.condition {
            Condition::Above(v) | Condition::Below(v) => {
                m.insert("value".into(), json!(v));
            }
            Condition::Outside(lo, hi) => {
                m.insert("value".into(), json!([lo, hi]));
            }
            Condition::Deviation(t) => {
                m.insert("threshold".into(), json!(t));
            }
            Condition::Stale => {}
            Condition::Status(s) => {
                m.insert("statuses".into(), json!(s));
            }
        }
        if matches!(
            self.condition,
            Condition::Above(_) | Condition::Below(_) | Condition::Outside(..)
        ) {
            let of = match self.of {
                Of::Value => "value",
                Of::Average => "average",
            };
            m.insert("of".into(), json!(of));
        }
        let d = std::time::Duration::from_nanos(self.for_nanos.max(0) as u64);
        m.insert(
            "for".into(),
            json!(humantime::format_duration(d).to_string()),
        );
        m.insert("severity".into(), json!(self.severity.as_str()));
        Json::Object(m)
    }

    /// Whether the rule watches `machine`.
    pub fn matches(&self, machine: &str) -> bool {
        self.matcher.is_match(machine)
    }
}

/// Reads a rules file: `[[rule]]` tables, names unique; an error names the rule and field.
pub fn parse_rules_file(text: &str) -> Result<Vec<Rule>, RuleError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| RuleError::Syntax(e.to_string()))?;
    if let Some(k) = table.keys().find(|k| k.as_str() != "rule") {
        return Err(RuleError::Syntax(format!(
            "{k:?} is not a table of a rules file: use [[rule]]"
        )));
    }
    let rules = match table.get("rule") {
        None => return Ok(Vec::new()),
        Some(toml::Value::Array(a)) => a.clone(),
        Some(_) => {
            return Err(RuleError::Syntax(
                "rule must be an array of tables: write [[rule]]".into(),
            ));
        }
    };
    let mut out: Vec<Rule> = Vec::new();
    for (i, r) in rules.into_iter().enumerate() {
        let json = serde_json::to_value(&r).map_err(|e| RuleError::Syntax(e.to_string()))?;
        let label = match json.get("name").and_then(Json::as_str) {
            Some(n) => format!("[[rule]] #{} ({n})", i + 1),
            None => format!("[[rule]] #{}", i + 1),
        };
        let rule = Rule::from_json(None, &json).map_err(|e| RuleError::InFile {
            at: label.clone(),
            source: Box::new(e),
        })?;
        if out.iter().any(|o| o.name == rule.name) {
            return Err(RuleError::InFile {
                at: label,
                source: Box::new(RuleError::field(
                    "name",
                    format!("{} is given to another rule already", rule.name),
                )),
            });
        }
        out.push(rule);
    }
    Ok(out)
}
