//! The gateways to what the origin keeps: the database (`db`), the source
//! of truth for everything durable, and Redis (`redis`), the fast, losable
//! copy that decides buys. Nothing above this layer sends a query or a
//! Redis command itself.
//!
//! Both report failures as one type, [`StoreError`], which keeps its cause
//! and says, in one place, whether a failure is transient (the store is
//! away or refusing work: retry, answer 503) or permanent (a defect or a
//! bad row).

pub mod db;
pub mod redis;

/// A call to a store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis call failed")]
    Redis(#[from] ::redis::RedisError),
    #[error("database call failed")]
    Database(#[from] sqlx::Error),
    /// No connection to the database could be had: whatever the server
    /// answered, it is not taking this work now.
    #[error("no database connection")]
    DatabaseUnreachable(#[source] sqlx::Error),
    /// The write was made on the primary, but fewer of its replicas than
    /// required confirmed it in time: a failover now could lose it.
    #[error("{acked} of {wanted} replicas confirmed the write in time")]
    Unreplicated { wanted: u16, acked: u16 },
    /// The item's shard changed hands again while the item was being
    /// checked against the database (a failover or slot move on a
    /// cluster): nothing was reserved, and a later try can succeed.
    #[error("the item's shard changed hands while it was being checked")]
    ShardMoved,
}

impl StoreError {
    /// True when retrying later can succeed: the store is down, restarting,
    /// overloaded, or a lock or timeout got in the way.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Redis(err) => redis::is_transient(err),
            Self::Database(err) => db::is_transient(err),
            Self::DatabaseUnreachable(_) => true,
            Self::Unreplicated { .. } => true,
            Self::ShardMoved => true,
        }
    }

    /// True when the request may have been carried out although no answer
    /// came back (it was sent, then the connection broke or timed out).
    pub fn outcome_may_be_unknown(&self) -> bool {
        match self {
            Self::Redis(err) => redis::may_have_run(err),
            Self::Unreplicated { .. } => true,
            _ => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
