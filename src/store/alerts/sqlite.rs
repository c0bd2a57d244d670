//! The SQLite store's alert tables. Writes run on the store's writer thread inside the
//! group's transaction; reads on a reader connection.

use rusqlite::{Connection, params};

use super::{AlertWrite, HistoryQuery, HistoryRow, Notification};
use crate::store::StoreError;

/// The migration that creates the history and outbox tables (after [`super::TABLES`]).
pub(crate) const MIGRATION: &str = "CREATE TABLE alert_history (
        id INTEGER PRIMARY KEY,
        rule TEXT NOT NULL,
        machine_id TEXT NOT NULL,
        since INTEGER NOT NULL,
        fired_at INTEGER NOT NULL,
        body TEXT NOT NULL,
        UNIQUE (rule, machine_id, since)
    );
    CREATE INDEX alert_history_fired ON alert_history (fired_at);
    CREATE TABLE alert_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        target TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX alert_outbox_target ON alert_outbox (target, id);";

fn failed(e: rusqlite::Error) -> StoreError {
    StoreError::classify(e)
}

/// Applies one write inside the caller's transaction.
pub(crate) fn apply(tx: &Connection, w: &AlertWrite) -> Result<(), StoreError> {
    for (name, body) in &w.rules {
        match body {
            Some(b) => tx
                .prepare_cached(
                    "INSERT INTO alert_rules (name, body) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET body = excluded.body",
                )
                .and_then(|mut s| s.execute(params![name, b])),
            None => tx
                .prepare_cached("DELETE FROM alert_rules WHERE name = ?1")
                .and_then(|mut s| s.execute(params![name])),
        }
        .map_err(failed)?;
    }
    for s in &w.states {
        match &s.body {
            Some(b) => tx
                .prepare_cached(
                    "INSERT INTO alert_states (rule, machine_id, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (rule, machine_id) DO UPDATE SET body = excluded.body",
                )
                .and_then(|mut st| st.execute(params![s.rule, s.machine_id, b])),
            None => tx
                .prepare_cached("DELETE FROM alert_states WHERE rule = ?1 AND machine_id = ?2")
                .and_then(|mut st| st.execute(params![s.rule, s.machine_id])),
        }
        .map_err(failed)?;
    }
    for h in &w.history {
        tx.prepare_cached(
            "INSERT INTO alert_history (rule, machine_id, since, fired_at, body)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (rule, machine_id, since) DO UPDATE SET body = excluded.body",
        )
        .and_then(|mut st| st.execute(params![h.rule, h.machine_id, h.since, h.fired_at, h.body]))
        .map_err(failed)?;
    }
    for (target, body) in &w.outbox {
        tx.prepare_cached("INSERT INTO alert_outbox (target, body) VALUES (?1, ?2)")
            .and_then(|mut st| st.execute(params![target, body]))
            .map_err(failed)?;
    }
    for id in &w.delivered {
        tx.prepare_cached("DELETE FROM alert_outbox WHERE id = ?1")
            .and_then(|mut st| st.execute(params![id]))
            .map_err(failed)?;
    }
    Ok(())
}

/// Rules stored through the API: (name, JSON).
pub(crate) fn rules(conn: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    let mut st = conn
        .prepare_cached("SELECT name, body FROM alert_rules ORDER BY name")
        .map_err(failed)?;
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect())
        .map_err(failed)
}

/// Every pending or firing alert's JSON.
pub(crate) fn states(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut st = conn
        .prepare_cached("SELECT body FROM alert_states ORDER BY machine_id, rule")
        .map_err(failed)?;
    st.query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(failed)
}

/// Past firings as `q` asks, oldest first.
pub(crate) fn history(conn: &Connection, q: &HistoryQuery) -> Result<Vec<HistoryRow>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT rule, machine_id, since, fired_at, body FROM alert_history
             WHERE (?1 IS NULL OR machine_id = ?1) AND (?2 IS NULL OR rule = ?2)
               AND fired_at >= ?3 AND fired_at <= ?4
             ORDER BY fired_at DESC, rule DESC, machine_id DESC LIMIT ?5",
        )
        .map_err(failed)?;
    let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
    let mut rows: Vec<HistoryRow> = st
        .query_map(
            params![
                q.machine_id,
                q.rule,
                q.since.unwrap_or(i64::MIN),
                q.until.unwrap_or(i64::MAX),
                limit
            ],
            |r| {
                Ok(HistoryRow {
                    rule: r.get(0)?,
                    machine_id: r.get(1)?,
                    since: r.get(2)?,
                    fired_at: r.get(3)?,
                    body: r.get(4)?,
                })
            },
        )
        .and_then(|rows| rows.collect())
        .map_err(failed)?;
    rows.reverse();
    Ok(rows)
}

/// The oldest `limit` notifications waiting for `target`.
pub(crate) fn outbox(
    conn: &Connection,
    target: &str,
    limit: usize,
) -> Result<Vec<Notification>, StoreError> {
    let mut st = conn
        .prepare_cached(
            "SELECT id, target, body FROM alert_outbox WHERE target = ?1 ORDER BY id LIMIT ?2",
        )
        .map_err(failed)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    st.query_map(params![target, limit], |r| {
        Ok(Notification {
            id: r.get(0)?,
            target: r.get(1)?,
            body: r.get(2)?,
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(failed)
}
