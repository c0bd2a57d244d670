//! The PostgreSQL store's alert tables. Writes ride on the writer's group transaction;
//! reads take a pooled connection.

use tokio_postgres::Transaction;

use super::{AlertWrite, HistoryQuery, HistoryRow, Notification};
use crate::store::StoreError;

/// The migration that creates the history and outbox tables (after [`super::TABLES`]).
pub(crate) const MIGRATION: &str = "CREATE TABLE alert_history (
        id BIGSERIAL PRIMARY KEY,
        rule TEXT NOT NULL,
        machine_id TEXT NOT NULL,
        since BIGINT NOT NULL,
        fired_at BIGINT NOT NULL,
        body TEXT NOT NULL,
        UNIQUE (rule, machine_id, since)
    );
    CREATE INDEX alert_history_fired ON alert_history (fired_at);
    CREATE TABLE alert_outbox (
        id BIGSERIAL PRIMARY KEY,
        target TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX alert_outbox_target ON alert_outbox (target, id);";

fn failed(e: tokio_postgres::Error) -> StoreError {
    super::super::postgres::db_error(e)
}

/// Applies one write inside the writer's transaction.
pub(crate) async fn apply(tx: &Transaction<'_>, w: &AlertWrite) -> Result<(), StoreError> {
    for (name, body) in &w.rules {
        match body {
            Some(b) => tx
                .execute(
                    "INSERT INTO alert_rules (name, body) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET body = excluded.body",
                    &[name, b],
                )
                .await
                .map_err(failed)?,
            None => tx
                .execute("DELETE FROM alert_rules WHERE name = $1", &[name])
                .await
                .map_err(failed)?,
        };
    }
    for s in &w.states {
        match &s.body {
            Some(b) => tx
                .execute(
                    "INSERT INTO alert_states (rule, machine_id, body) VALUES ($1, $2, $3)
                     ON CONFLICT (rule, machine_id) DO UPDATE SET body = excluded.body",
                    &[&s.rule, &s.machine_id, b],
                )
                .await
                .map_err(failed)?,
            None => tx
                .execute(
                    "DELETE FROM alert_states WHERE rule = $1 AND machine_id = $2",
                    &[&s.rule, &s.machine_id],
                )
                .await
                .map_err(failed)?,
        };
    }
    for h in &w.history {
        tx.execute(
            "INSERT INTO alert_history (rule, machine_id, since, fired_at, body)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (rule, machine_id, since) DO UPDATE SET body = excluded.body",
            &[&h.rule, &h.machine_id, &h.since, &h.fired_at, &h.body],
        )
        .await
        .map_err(failed)?;
    }
    for (target, body) in &w.outbox {
        tx.execute(
            "INSERT INTO alert_outbox (target, body) VALUES ($1, $2)",
            &[target, body],
        )
        .await
        .map_err(failed)?;
    }
    if !w.delivered.is_empty() {
        tx.execute(
            "DELETE FROM alert_outbox WHERE id = ANY($1)",
            &[&w.delivered],
        )
        .await
        .map_err(failed)?;
    }
    Ok(())
}

/// Rules stored through the API: (name, JSON).
pub(crate) async fn rules(c: &tokio_postgres::Client) -> Result<Vec<(String, String)>, StoreError> {
    let rows = c
        .query("SELECT name, body FROM alert_rules ORDER BY name", &[])
        .await
        .map_err(failed)?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Every pending or firing alert's JSON.
pub(crate) async fn states(c: &tokio_postgres::Client) -> Result<Vec<String>, StoreError> {
    let rows = c
        .query(
            "SELECT body FROM alert_states ORDER BY machine_id, rule",
            &[],
        )
        .await
        .map_err(failed)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Past firings as `q` asks, oldest first.
pub(crate) async fn history(
    c: &tokio_postgres::Client,
    q: &HistoryQuery,
) -> Result<Vec<HistoryRow>, StoreError> {
    let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
    let rows = c
        .query(
            "SELECT rule, machine_id, since, fired_at, body FROM alert_history
             WHERE ($1::text IS NULL OR machine_id = $1) AND ($2::text IS NULL OR rule = $2)
               AND fired_at >= $3 AND fired_at <= $4
             ORDER BY fired_at DESC, rule DESC, machine_id DESC LIMIT $5",
            &[
                &q.machine_id,
                &q.rule,
                &q.since.unwrap_or(i64::MIN),
                &q.until.unwrap_or(i64::MAX),
                &limit,
            ],
        )
        .await
        .map_err(failed)?;
    let mut out: Vec<HistoryRow> = rows
        .iter()
        .map(|r| HistoryRow {
            rule: r.get(0),
            machine_id: r.get(1),
            since: r.get(2),
            fired_at: r.get(3),
            body: r.get(4),
        })
        .collect();
    out.reverse();
    Ok(out)
}

/// The oldest `limit` notifications waiting for `target`.
pub(crate) async fn outbox(
    c: &tokio_postgres::Client,
    target: &str,
    limit: usize,
) -> Result<Vec<Notification>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = c
        .query(
            "SELECT id, target, body FROM alert_outbox WHERE target = $1 ORDER BY id LIMIT $2",
            &[&target, &limit],
        )
        .await
        .map_err(failed)?;
    Ok(rows
        .iter()
        .map(|r| Notification {
            id: r.get(0),
            target: r.get(1),
            body: r.get(2),
        })
        .collect())
}
