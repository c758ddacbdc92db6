//! The database: SQLite (the embedded default) or PostgreSQL, through sqlx.
//!
//! Both backends run the same SQL through sqlx's `Any` driver; the only
//! per-backend differences are the migration files (identity columns,
//! triggers) and connection set-up (SQLite's WAL journal and busy timeout).
//! Migrations run at start-up; PostgreSQL's advisory lock and SQLite's file
//! lock make two origins starting at once safe. Every query of the origin is
//! in this module's files; what a failure means is decided in
//! [`is_transient`].

pub mod changes;
pub mod order_writes;
pub mod orders;
pub mod products;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyQueryResult};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Executor, Transaction};

use super::{StoreError, StoreResult};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// The connection pool and which database it talks to.
#[derive(Debug, Clone)]
pub struct Database {
    pub(crate) pool: AnyPool,
    backend: Backend,
    url: String,
}

impl Database {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)
            .ok_or_else(|| anyhow::anyhow!("unsupported scheme (sqlite: or postgres://)"))?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(3))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Postgres {
                        // A row lock held elsewhere (someone's psql session)
                        // fails a statement after 5 s instead of holding it
                        // forever; that failure (55P03) is transient, so the
                        // order writer retries, keeping its entries claimed.
                        conn.execute("SET lock_timeout = '5s'").await?;
                    }
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the single writer; the
                        // busy timeout makes writers queue instead of failing.
                        // The busy timeout first: switching the journal
                        // mode waits for other processes' locks too.
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        match backend {
            // PostgreSQL migrations take an advisory lock themselves.
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
            Backend::Sqlite => {
                let _lock = MigrationLock::acquire(url).await?;
                SQLITE_MIGRATIONS.run(&pool).await?;
            }
        }
        Ok(Self {
            pool,
            backend,
            url: url.to_string(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL it was opened with (a `LISTEN` connection opens its own).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_: AnyQueryResult| ())
            .map_err(StoreError::from)
    }

    /// Opens a transaction. Not getting a connection at all always means
    /// "try again later", whatever code the server refused it with.
    pub(crate) async fn begin(&self) -> StoreResult<Transaction<'static, Any>> {
        self.pool
            .begin()
            .await
            .map_err(StoreError::DatabaseUnreachable)
    }
}

/// The database's clock in unix milliseconds, as an SQL expression: the one
/// clock that order times, payments and cancellations are judged by, so
/// origins whose clocks disagree still agree on whether a deadline passed.
pub(crate) fn now_ms_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "(EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT",
        Backend::Sqlite => "CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER)",
    }
}

/// `$start, $start+1, …` for `count` bound values.
pub(crate) fn placeholders(start: usize, count: usize) -> String {
    (start..start + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// PostgreSQL: connection exceptions (08*), transaction rollbacks such as
/// serialization failures and deadlocks (40*), shutdown and restart (57P*),
/// too many connections (53300), a lock not granted in time (55P03) and a
/// statement cancelled by its timeout (57014): a row lock held by someone's
/// `psql` session is waited out, not taken for a bad row. SQLite reports
/// extended result codes:
/// busy and locked (5, 6) come with variants such as 517
/// (SQLITE_BUSY_SNAPSHOT, a WAL snapshot gone stale under a concurrent
/// writer), whose low byte is still 5 or 6 — all mean "try again".
fn unavailable_code(code: &str) -> bool {
    let sqlite_busy = code.parse::<u32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6));
    ["08", "40", "57P"]
        .iter()
        .any(|class| code.starts_with(class))
        || matches!(code, "53300" | "55P03" | "57014")
        || sqlite_busy
}

/// Serialises SQLite migrations between processes starting at once (sqlx
/// takes no lock for SQLite): an exclusive advisory lock on a file beside
/// the database, held until dropped.
struct MigrationLock(Option<std::fs::File>);

impl MigrationLock {
    async fn acquire(url: &str) -> std::io::Result<Self> {
        let Some(path) = sqlite_path(url) else {
            return Ok(Self(None)); // in-memory: nothing to share
        };
        let lock_path = format!("{path}.migrate-lock");
        tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)?;
            file.lock()?;
            Ok(Self(Some(file)))
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

impl Drop for MigrationLock {
    fn drop(&mut self) {
        if let Some(file) = self.0.take() {
            let _ = file.unlock();
        }
    }
}

/// The file behind an SQLite URL (`sqlite://path?opts`, `sqlite:path`).
fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| path.to_string())
}

/// True when the error means "the database could not be reached or is
/// refusing work right now", as opposed to a bug or a bad row: callers answer
/// 503 and retry instead of giving up.
pub(super) fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            unavailable_code(code.as_deref().unwrap_or(""))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{placeholders, sqlite_path, unavailable_code};

    #[test]
    fn transient_database_codes() {
        for code in [
            "08006", "40001", "40P01", "57P01", "53300", "55P03", "57014", "5", "6", "517", "261",
            "262",
        ] {
            assert!(unavailable_code(code), "{code} is transient");
        }
        for code in ["23505", "23514", "19", "2067", "1", ""] {
            assert!(!unavailable_code(code), "{code} is not");
        }
    }

    #[test]
    fn placeholders_count_from_start() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(placeholders(1, 0), "");
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite://data/s.db?mode=rwc").as_deref(),
            Some("data/s.db")
        );
        assert_eq!(
            sqlite_path("sqlite:///tmp/s.db").as_deref(),
            Some("/tmp/s.db")
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://x/y"), None);
    }
}
