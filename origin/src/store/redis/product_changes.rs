//! The stream of captured catalogue changes (`product-changes`): the change
//! relay publishes to it, the CDC leader applies it through the
//! `cache-refresh` consumer group (a new leader takes over what a dead one
//! left pending), and every origin tails it to drop its in-memory copies.

use std::time::Duration;

use super::Conn;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, RedisResult};
use seckill_shared::keys::REFRESH_GROUP;
use seckill_shared::records::{ChangeRecord, InvalidRecord};

use super::stream_group;
use super::Redis;

/// Entries kept in the stream (approximately): enough to follow, bounded.
const MAX_LENGTH: usize = 100_000;

/// A change entry as the refresh group received it.
pub type ChangeEntry = (String, Result<ChangeRecord, InvalidRecord>);

#[derive(Clone)]
pub struct ChangeStream {
    redis: Redis,
}

impl ChangeStream {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    /// Publishes records in order, in one round trip.
    pub async fn publish(&self, records: &[ChangeRecord]) -> RedisResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let stream = self.redis.keys.product_changes();
        let mut pipe = redis::pipe();
        for record in records {
            pipe.xadd_maxlen(
                &stream,
                redis::streams::StreamMaxlen::Approx(MAX_LENGTH),
                "*",
                &record.fields(),
            );
        }
        pipe.query_async::<redis::Value>(&mut self.redis.connection())
            .await
            .map(|_| ())
    }

    /// The refresh group's reader for one consumer, on its own connection.
    pub fn refresher(&self, consumer: String) -> RedisResult<ChangeRefresher> {
        Ok(ChangeRefresher {
            conn: self.redis.dedicated()?,
            stream: self.redis.keys.product_changes(),
            consumer,
        })
    }

    /// A follower that sees changes published from now on.
    pub fn tail(&self) -> RedisResult<ChangeTail> {
        Ok(ChangeTail {
            conn: self.redis.dedicated()?,
            stream: self.redis.keys.product_changes(),
            last: "$".to_string(),
        })
    }
}

pub struct ChangeRefresher {
    conn: Conn,
    stream: String,
    consumer: String,
}

impl ChangeRefresher {
    /// Entries to apply: first any left pending by a consumer idle for
    /// `idle` (a dead leader), else new ones; at most `count`.
    pub async fn next_batch(
        &mut self,
        idle: Duration,
        count: usize,
    ) -> RedisResult<Vec<ChangeEntry>> {
        stream_group::ensure_group(&mut self.conn, &self.stream, REFRESH_GROUP).await?;
        let mut read = stream_group::claim_idle(
            &mut self.conn,
            &self.stream,
            REFRESH_GROUP,
            &self.consumer,
            idle,
            count,
        )
        .await?;
        if read.is_empty() {
            read = stream_group::read_new(
                &mut self.conn,
                std::slice::from_ref(&self.stream),
                REFRESH_GROUP,
                &self.consumer,
                count,
                None,
            )
            .await?;
        }
        Ok(read
            .into_iter()
            .map(|read| (read.entry.id.clone(), record(&read.entry)))
            .collect())
    }

    /// Acknowledges one applied entry.
    pub async fn ack(&mut self, entry: &str) -> RedisResult<()> {
        self.conn.xack(&self.stream, REFRESH_GROUP, &[entry]).await
    }
}

pub struct ChangeTail {
    conn: Conn,
    stream: String,
    last: String,
}

impl ChangeTail {
    /// The next changes, waiting up to `block` for some.
    pub async fn next(&mut self, block: Duration) -> RedisResult<Vec<ChangeRecord>> {
        let options = StreamReadOptions::default()
            .count(100)
            .block(block.as_millis() as usize);
        let reply: Option<StreamReadReply> = self
            .conn
            .xread_options(&[&self.stream], &[&self.last], &options)
            .await?;
        let mut records = Vec::new();
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            if let Ok(change) = record(&entry) {
                records.push(change);
            }
            self.last = entry.id;
        }
        Ok(records)
    }
}

fn record(entry: &redis::streams::StreamId) -> Result<ChangeRecord, InvalidRecord> {
    ChangeRecord::parse(|name| {
        entry
            .map
            .get(name)
            .and_then(|value| redis::from_redis_value_ref::<String>(value).ok())
    })
}
