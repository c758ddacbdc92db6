//! A fresh database per test: an SQLite file in a scratch directory, or a
//! uniquely named database on the machine's PostgreSQL (dropped afterwards).

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Connection, Executor, PgConnection, SqliteConnection};

use crate::paths::ScratchDir;

/// Where PostgreSQL test databases are created; override with
/// `SECKILL_TEST_PG_URL`.
pub const DEFAULT_PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestDatabase {
    backend: Backend,
    url: String,
    pg_name: Option<String>,
    _dir: Option<ScratchDir>,
}

fn pg_admin_url() -> String {
    std::env::var("SECKILL_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_ADMIN_URL.to_string())
}

/// `postgres://user@host:port/db` with the database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (base, _) = url
        .rsplit_once('/')
        .expect("a PostgreSQL URL ends in /<database>");
    format!("{base}/{name}")
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = ScratchDir::new("sqlite");
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("seckill.db").display()
                );
                Self {
                    backend,
                    url,
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin_url = pg_admin_url();
                let name = format!("seckill_test_{}", crate::unique_suffix());
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|err| {
                        panic!(
                        "PostgreSQL is not reachable at {admin_url} ({err}): install and start it \
                         (`apt-get install postgresql`), or point SECKILL_TEST_PG_URL at a server \
                         where this user may create databases"
                    )
                    });
                admin
                    .execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("CREATE DATABASE for the test");
                let _ = admin.close().await;
                Self {
                    backend,
                    url: with_database(&admin_url, &name),
                    pg_name: Some(name),
                    _dir: None,
                }
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A pool for the test's own checks (counting orders and the like).
    pub async fn pool(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&self.url)
            .await
            .expect("connect to the test database")
    }

    /// PostgreSQL only: refuse new connections and end existing ones, as if
    /// the server went away for this database. Undo with [`Self::allow_connections`].
    pub async fn refuse_connections(&self) {
        let name = self
            .pg_name
            .as_deref()
            .expect("only PostgreSQL databases can refuse connections");
        let mut admin = PgConnection::connect(&pg_admin_url())
            .await
            .expect("admin connection");
        admin
            .execute(format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false").as_str())
            .await
            .expect("ALTER DATABASE ... ALLOW_CONNECTIONS false");
        admin
            .execute(
                format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'").as_str(),
            )
            .await
            .expect("terminate the database's connections");
        let _ = admin.close().await;
    }

    pub async fn allow_connections(&self) {
        let name = self
            .pg_name
            .as_deref()
            .expect("only PostgreSQL databases can refuse connections");
        let mut admin = PgConnection::connect(&pg_admin_url())
            .await
            .expect("admin connection");
        admin
            .execute(format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true").as_str())
            .await
            .expect("ALTER DATABASE ... ALLOW_CONNECTIONS true");
        let _ = admin.close().await;
    }
}

/// The database made unusable for the origin until [`Outage::end`].
pub enum Outage<'a> {
    /// PostgreSQL refuses new connections and has ended the existing ones.
    Postgres(&'a TestDatabase),
    /// SQLite has no connections to refuse: its write lock is held, so
    /// every writer times out as busy.
    Sqlite(WriteLock),
}

impl TestDatabase {
    /// Takes the database away from the origin (see [`Outage`]).
    pub async fn outage(&self) -> Outage<'_> {
        match self.backend {
            Backend::Postgres => {
                self.refuse_connections().await;
                Outage::Postgres(self)
            }
            Backend::Sqlite => Outage::Sqlite(self.lock_writes().await),
        }
    }
}

/// The database's write lock held by the test: writers wait (PostgreSQL)
/// or time out as busy (SQLite) until [`WriteLock::release`].
pub enum WriteLock {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

impl TestDatabase {
    /// Holds the lock every order write needs: PostgreSQL `LOCK TABLE
    /// products IN EXCLUSIVE MODE` (reads go on; inserting an order, whose
    /// foreign key locks its product row, waits), SQLite `BEGIN EXCLUSIVE`.
    pub async fn lock_writes(&self) -> WriteLock {
        match self.backend {
            Backend::Postgres => {
                let mut conn = PgConnection::connect(&self.url).await.expect("connect");
                conn.execute("BEGIN").await.expect("begin");
                conn.execute("LOCK TABLE products IN EXCLUSIVE MODE")
                    .await
                    .expect("lock products");
                WriteLock::Postgres(conn)
            }
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(&self.url)
                    .await
                    .expect("open the SQLite file");
                conn.execute("PRAGMA busy_timeout = 10000")
                    .await
                    .expect("busy timeout");
                conn.execute("BEGIN EXCLUSIVE")
                    .await
                    .expect("take the write lock");
                WriteLock::Sqlite(conn)
            }
        }
    }
}

impl WriteLock {
    pub async fn release(self) {
        match self {
            WriteLock::Postgres(mut conn) => {
                conn.execute("COMMIT").await.expect("release the lock");
                let _ = conn.close().await;
            }
            WriteLock::Sqlite(mut conn) => {
                conn.execute("COMMIT")
                    .await
                    .expect("release the write lock");
                let _ = conn.close().await;
            }
        }
    }
}

impl Outage<'_> {
    pub async fn end(self) {
        match self {
            Outage::Postgres(db) => db.allow_connections().await,
            Outage::Sqlite(lock) => lock.release().await,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs outside any runtime we may block: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let mut admin = PgConnection::connect(&pg_admin_url()).await.ok()?;
                admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .ok()?;
                admin.close().await.ok()
            })
        })
        .join();
    }
}
