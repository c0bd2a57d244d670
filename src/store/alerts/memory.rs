//! The memory store's alert tables: maps behind the store's lock.

use std::collections::BTreeMap;

use super::{AlertWrite, HistoryQuery, HistoryRow, Notification};

/// Everything the memory store keeps of alerts.
#[derive(Debug, Default)]
pub(crate) struct AlertTables {
    rules: BTreeMap<String, String>,
    states: BTreeMap<(String, String), String>,
    /// Keyed by (rule, machine, since); ordered for answers by `fired_at` on reading.
    history: BTreeMap<(String, String, i64), HistoryRow>,
    outbox: BTreeMap<i64, Notification>,
    next_id: i64,
}

impl AlertTables {
    /// Applies one write.
    pub(crate) fn apply(&mut self, w: AlertWrite) {
        for (name, body) in w.rules {
            match body {
                Some(b) => self.rules.insert(name, b),
                None => self.rules.remove(&name),
            };
        }
        for s in w.states {
            let key = (s.rule, s.machine_id);
            match s.body {
                Some(b) => self.states.insert(key, b),
                None => self.states.remove(&key),
            };
        }
        for h in w.history {
            self.history
                .insert((h.rule.clone(), h.machine_id.clone(), h.since), h);
        }
        for (target, body) in w.outbox {
            self.next_id += 1;
            let id = self.next_id;
            self.outbox.insert(id, Notification { id, target, body });
        }
        for id in w.delivered {
            self.outbox.remove(&id);
        }
    }

    /// Rules stored through the API: (name, JSON).
    pub(crate) fn rules(&self) -> Vec<(String, String)> {
        self.rules
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Every pending or firing alert's JSON.
    pub(crate) fn states(&self) -> Vec<String> {
        self.states.values().cloned().collect()
    }

    /// Past firings as `q` asks.
    pub(crate) fn history(&self, q: &HistoryQuery) -> Vec<HistoryRow> {
        let mut rows: Vec<HistoryRow> = self
            .history
            .values()
            .filter(|h| q.admits(h))
            .cloned()
            .collect();
        rows.sort_by(|a, b| {
            (a.fired_at, &a.rule, &a.machine_id).cmp(&(b.fired_at, &b.rule, &b.machine_id))
        });
        let skip = rows.len().saturating_sub(q.limit);
        rows.split_off(skip)
    }

    /// The oldest `limit` notifications waiting for `target`.
    pub(crate) fn outbox(&self, target: &str, limit: usize) -> Vec<Notification> {
        self.outbox
            .values()
            .filter(|n| n.target == target)
            .take(limit)
            .cloned()
            .collect()
    }
}
