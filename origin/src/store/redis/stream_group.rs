//! Reading a Redis Stream as a consumer group: the mechanics shared by the
//! order streams (`order-writers`) and the change stream (`cache-refresh`).
//! New entries are read with `XREADGROUP`; entries a dead or stuck consumer
//! left pending are taken over with `XAUTOCLAIM`, with their delivery
//! counts (which `XAUTOCLAIM` does not report) read from `XPENDING`.

use std::collections::HashMap;
use std::time::Duration;

use super::Conn;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamClaimOptions, StreamId,
    StreamInfoGroupsReply, StreamPendingCountReply, StreamPendingReply, StreamReadOptions,
    StreamReadReply,
};
use redis::{AsyncCommands, RedisResult};

/// One entry as read, with how often it has been delivered (known for
/// entries taken over from another consumer).
#[derive(Debug, Clone)]
pub(super) struct Read {
    pub stream: String,
    pub entry: StreamId,
    pub delivered: Option<u64>,
}

/// Creates `group` on `stream` (and the stream) unless it exists.
pub(super) async fn ensure_group(conn: &mut Conn, stream: &str, group: &str) -> RedisResult<()> {
    let created: RedisResult<()> = conn.xgroup_create_mkstream(stream, group, "0").await;
    match created {
        Err(err) if err.code() != Some("BUSYGROUP") => Err(err),
        _ => Ok(()),
    }
}

/// Up to `count` entries never delivered to `group`, across `streams`,
/// waiting up to `block` when there are none (`None`: do not wait).
pub(super) async fn read_new(
    conn: &mut Conn,
    streams: &[String],
    group: &str,
    consumer: &str,
    count: usize,
    block: Option<Duration>,
) -> RedisResult<Vec<Read>> {
    if streams.is_empty() {
        return Ok(Vec::new());
    }
    let mut options = StreamReadOptions::default()
        .group(group, consumer)
        .count(count);
    if let Some(block) = block {
        options = options.block(block.as_millis() as usize);
    }
    let ids = vec![">"; streams.len()];
    let reply: Option<StreamReadReply> = conn.xread_options(streams, &ids, &options).await?;
    Ok(reply
        .map(|reply| reply.keys)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|stream| {
            let key = stream.key;
            stream.ids.into_iter().map(move |entry| Read {
                stream: key.clone(),
                entry,
                delivered: None,
            })
        })
        .collect())
}

/// Takes over up to `count` entries of `stream` idle for at least
/// `min_idle` (their consumer died or is stuck).
pub(super) async fn claim_idle(
    conn: &mut Conn,
    stream: &str,
    group: &str,
    consumer: &str,
    min_idle: Duration,
    count: usize,
) -> RedisResult<Vec<Read>> {
    let reply: StreamAutoClaimReply = conn
        .xautoclaim_options(
            stream,
            group,
            consumer,
            min_idle.as_millis() as u64,
            "0-0",
            StreamAutoClaimOptions::default().count(count),
        )
        .await?;
    let (Some(first), Some(last)) = (reply.claimed.first(), reply.claimed.last()) else {
        return Ok(Vec::new());
    };
    let pending: StreamPendingCountReply = conn
        .xpending_consumer_count(
            stream,
            group,
            &first.id,
            &last.id,
            reply.claimed.len() * 2 + 1,
            consumer,
        )
        .await?;
    let counts: HashMap<String, u64> = pending
        .ids
        .into_iter()
        .map(|p| (p.id, p.times_delivered as u64))
        .collect();
    Ok(reply
        .claimed
        .into_iter()
        .map(|entry| Read {
            stream: stream.to_string(),
            delivered: counts.get(&entry.id).copied(),
            entry,
        })
        .collect())
}

/// Resets the idle time of entries this consumer still holds (while it
/// waits for something), so others do not take them over meanwhile.
/// `JUSTID` leaves their delivery counts alone.
pub(super) async fn keep_claimed(
    conn: &mut Conn,
    stream: &str,
    group: &str,
    consumer: &str,
    entries: &[&str],
) -> RedisResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let _: redis::Value = conn
        .xclaim_options(
            stream,
            group,
            consumer,
            0,
            entries,
            StreamClaimOptions::default().with_justid(),
        )
        .await?;
    Ok(())
}

/// One group's position on a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct GroupPosition {
    /// Delivered and not yet acknowledged.
    pub pending: u64,
    /// Not yet delivered.
    pub lag: u64,
    pub last_delivered: String,
    /// The oldest entry still pending, if any.
    pub oldest_pending: Option<String>,
}

/// Where `group` stands on `stream` (`None`: no such stream or group).
pub(super) async fn position(
    conn: &mut Conn,
    stream: &str,
    group: &str,
) -> RedisResult<Option<GroupPosition>> {
    let groups: StreamInfoGroupsReply = match conn.xinfo_groups(stream).await {
        Ok(groups) => groups,
        Err(err) if err.code() == Some("ERR") => return Ok(None), // no such stream
        Err(err) => return Err(err),
    };
    let Some(info) = groups.groups.into_iter().find(|g| g.name == group) else {
        return Ok(None);
    };
    let oldest_pending = match conn.xpending(stream, group).await? {
        StreamPendingReply::Data(data) => Some(data.start_id),
        _ => None,
    };
    Ok(Some(GroupPosition {
        pending: info.pending as u64,
        lag: info.lag.unwrap_or(0) as u64,
        last_delivered: info.last_delivered_id,
        oldest_pending,
    }))
}
