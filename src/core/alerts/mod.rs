//! Alerts (SPEC §7), the pure part: rules and the per-(rule, machine) state machine. The
//! service feeds it records and status changes and stores what it gives back; notifying is
//! the job of `crate::notify`.

mod engine;
mod rule;
#[cfg(test)]
mod tests;

pub use engine::{Alert, Change, ChangeKind, Engine, State};
pub use rule::{Condition, Of, Rule, RuleError, RuleName, Severity, parse_rules_file};
