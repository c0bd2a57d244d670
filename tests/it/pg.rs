//! Access to the local PostgreSQL for tests: a fresh schema per test, or a clear failure when
//! the server is missing (a skip only with MILLWATCH_SKIP_SERVICES=1).

/// The server tests use; override with MILLWATCH_TEST_POSTGRES.
pub fn base_url() -> String {
    std::env::var("MILLWATCH_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Creates a fresh schema and returns a URL whose connections use it, or None to skip.
pub async fn fresh_schema(tag: &str) -> Option<String> {
    let base = base_url();
    let conn = tokio_postgres::connect(&base, tokio_postgres::NoTls).await;
    let (client, connection) = match conn {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("MILLWATCH_SKIP_SERVICES").as_deref() == Ok("1") {
                eprintln!("skipping: PostgreSQL at {base} is unreachable ({e})");
                return None;
            }
            panic!(
                "PostgreSQL at {base} is unreachable ({e}). Start it (scripts/test.sh does), point \
                 MILLWATCH_TEST_POSTGRES at one, or set MILLWATCH_SKIP_SERVICES=1 to skip these tests."
            );
        }
    };
    tokio::spawn(connection);
    let schema = format!("mw_{tag}_{}", fastrand::u64(..));
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!(
        "{base}{sep}options=-csearch_path%3D{schema}&application_name={schema}"
    ))
}

/// Terminates every connection with this application name; returns how many there were.
pub async fn terminate(application_name: &str) -> usize {
    terminate_where("application_name", application_name).await
}

/// Ends every connection to a database, so that it can be dropped.
pub async fn terminate_database(name: &str) {
    terminate_where("datname", name).await;
}

/// Terminates the connections whose `pg_stat_activity` column (a fixed name) equals `value`.
async fn terminate_where(column: &str, value: &str) -> usize {
    let (client, connection) = tokio_postgres::connect(&base_url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .query(
            &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {column} = $1"),
            &[&value],
        )
        .await
        .expect("terminate")
        .len()
}
