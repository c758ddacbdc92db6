//! Request coalescing for the reserve script.
//!
//! In a rush, thousands of buys for the same item arrive at once. Each buy
//! hands its member to this batcher and waits; the batcher sends whatever
//! is waiting for an item as one call of the reserve script, which decides
//! every member exactly as if alone. When the origin is quiet a batch is a
//! single buy and nothing waits; under load, while a few calls are in
//! flight, the next buys gather into the following call, so the per-call
//! cost (dispatch, syscalls, entering Lua) is paid once per batch, not once
//! per buyer. Each buy still costs at most one Redis round trip (two with
//! `SECKILL_REDIS_REPLICA_ACKS`: the call, then one `WAIT` on the item's
//! shard for the whole batch).
//!
//! Every call carries an id of its own, and the script keeps a reply that
//! reserved anything under it for [`REPLY_KEEP`]: a call resent after an
//! I/O error (the client cannot know whether it ran) answers the first
//! run's reply instead of refusing the buyers as already holding one.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Conn;
use redis::{RedisError, RedisResult, Script, Value};
use seckill_shared::keys::RedisKeys;
use seckill_shared::{MemberId, ProductId};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::stock::ReserveOutcome;
use super::unexpected;

/// The reserve script's source; public so the benchmark runs the very same
/// script under `redis-benchmark`.
pub const RESERVE_LUA: &str = include_str!("scripts/reserve.lua");

/// Most members in one script call.
const MAX_BATCH: usize = 256;
/// Script calls in flight at once; further buys gather meanwhile.
const IN_FLIGHT: usize = 4;
/// How long a call's reply is kept for a resent copy of the call: longer
/// than any client waits for one answer.
const REPLY_KEEP: std::time::Duration = std::time::Duration::from_secs(30);

/// How many replicas of the item's shard must confirm a batch's writes
/// before its reservations are promised (`WAIT replicas timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicaAcks {
    pub replicas: u16,
    pub timeout: std::time::Duration,
}

/// Ids of reserve calls: unique per process run and call.
struct CallIds {
    run: u64,
    next: std::sync::atomic::AtomicU64,
}

impl CallIds {
    fn next(&self) -> String {
        let call = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{:016x}-{call:x}", self.run)
    }
}

/// One buy waiting for its batch's answer. A failure answers every buy of
/// the batch, so each gets a clone of the error.
struct Waiting {
    product: ProductId,
    member: MemberId,
    reply: oneshot::Sender<RedisResult<ReserveOutcome>>,
}

#[derive(Clone)]
pub(super) struct ReserveBatcher {
    queue: mpsc::UnboundedSender<Waiting>,
}

impl ReserveBatcher {
    /// Starts the batching task (inside the Tokio runtime).
    pub(super) fn start(conn: Conn, keys: RedisKeys, replicas: ReplicaAcks) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        let calls = Calls {
            script: Script::new(RESERVE_LUA),
            keys,
            replicas,
            ids: CallIds {
                run: rand::random(),
                next: Default::default(),
            },
        };
        tokio::spawn(run(waiting, conn, Arc::new(calls)));
        Self { queue }
    }

    pub(super) async fn reserve(
        &self,
        product: ProductId,
        member: MemberId,
    ) -> RedisResult<ReserveOutcome> {
        let (reply, answer) = oneshot::channel();
        let gone =
            || RedisError::from((redis::ErrorKind::Client, "the reserve batcher has stopped"));
        self.queue
            .send(Waiting {
                product,
                member,
                reply,
            })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// What every call needs.
struct Calls {
    script: Script,
    keys: RedisKeys,
    replicas: ReplicaAcks,
    ids: CallIds,
}

async fn run(mut waiting: mpsc::UnboundedReceiver<Waiting>, conn: Conn, calls: Arc<Calls>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = waiting.recv().await {
        // Waiting for a free slot is what lets a batch grow under load.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut by_product: BTreeMap<ProductId, Vec<Waiting>> = BTreeMap::new();
        by_product.entry(first.product).or_default().push(first);
        let mut taken = 1;
        while taken < MAX_BATCH * 4 {
            match waiting.try_recv() {
                Ok(next) => {
                    by_product.entry(next.product).or_default().push(next);
                    taken += 1;
                }
                Err(_) => break,
            }
        }
        let (conn, calls) = (conn.clone(), calls.clone());
        tokio::spawn(async move {
            let batches = by_product.into_iter().flat_map(|(product, buys)| {
                let mut chunks = Vec::new();
                let mut buys = buys.into_iter().peekable();
                while buys.peek().is_some() {
                    chunks.push((product, buys.by_ref().take(MAX_BATCH).collect::<Vec<_>>()));
                }
                chunks
            });
            futures::future::join_all(
                batches.map(|(product, buys)| call(conn.clone(), &calls, product, buys)),
            )
            .await;
            drop(slot);
        });
    }
}

/// One script call for one item's waiting buys; answers each of them.
async fn call(mut conn: Conn, calls: &Calls, product: ProductId, buys: Vec<Waiting>) {
    let keys = &calls.keys;
    let mut invocation = calls.script.prepare_invoke();
    invocation
        .key(keys.item(product))
        .key(keys.members(product))
        .key(keys.orders(product))
        .key(keys.reserve_reply(product, &calls.ids.next()))
        .arg(product.get())
        .arg(REPLY_KEEP.as_millis() as u64);
    for buy in &buys {
        invocation.arg(buy.member.get());
    }
    let reply: RedisResult<Vec<Value>> = invocation.invoke_async(&mut conn).await;
    let mut outcomes = reply.and_then(|reply| parse(reply, buys.len()));
    if let Ok(decided) = &mut outcomes {
        confirm_replicated(&mut conn, calls, product, decided).await;
    }
    match outcomes {
        Ok(outcomes) => {
            for (buy, outcome) in buys.into_iter().zip(outcomes) {
                let _ = buy.reply.send(Ok(outcome));
            }
        }
        Err(err) => {
            for buy in buys {
                let _ = buy.reply.send(Err(err.clone()));
            }
        }
    }
}

/// With `SECKILL_REDIS_REPLICA_ACKS`, waits (once for the batch) until
/// that many replicas of the item's shard have the writes; if they do not
/// in time, or the wait fails, the batch's reservations become
/// [`ReserveOutcome::Unreplicated`]: they exist, but cannot be promised.
async fn confirm_replicated(
    conn: &mut Conn,
    calls: &Calls,
    product: ProductId,
    outcomes: &mut [ReserveOutcome],
) {
    let wanted = calls.replicas.replicas;
    if wanted == 0
        || !outcomes
            .iter()
            .any(|o| matches!(o, ReserveOutcome::Queued { .. }))
    {
        return;
    }
    let acked = conn
        .wait_for_replicas(&calls.keys.item(product), wanted, calls.replicas.timeout)
        .await
        .unwrap_or_else(|err| {
            tracing::warn!(error = %err, "WAIT for replicas failed");
            0
        });
    if acked < i64::from(wanted) {
        let acked = u16::try_from(acked.max(0)).unwrap_or(0);
        for outcome in outcomes.iter_mut() {
            if matches!(outcome, ReserveOutcome::Queued { .. }) {
                *outcome = ReserveOutcome::Unreplicated { wanted, acked };
            }
        }
    }
}

/// Reads the script's reply for `count` members.
fn parse(reply: Vec<Value>, count: usize) -> RedisResult<Vec<ReserveOutcome>> {
    let mut parts = reply.into_iter();
    let verdict: String = redis::from_redis_value(parts.next().unwrap_or(Value::Nil))?;
    let whole = match verdict.as_str() {
        "each" => None,
        "unknown_product" => Some(ReserveOutcome::UnknownProduct),
        "unchecked" => Some(ReserveOutcome::Unchecked),
        "not_started" => Some(ReserveOutcome::NotStarted),
        "ended" => Some(ReserveOutcome::Ended),
        _ => return Err(unexpected_reply()),
    };
    if let Some(outcome) = whole {
        return Ok(vec![outcome; count]);
    }
    let outcomes: Vec<ReserveOutcome> = parts
        .map(|part| {
            let text: String = redis::from_redis_value(part)?;
            Ok(match text.as_str() {
                "a" => ReserveOutcome::AlreadyOrdered,
                "x" => ReserveOutcome::SoldOut,
                queued => {
                    let mut fields = queued
                        .strip_prefix("q:")
                        .ok_or_else(unexpected_reply)?
                        .split(':');
                    let seq = fields
                        .next()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(unexpected_reply)?;
                    let stock_left = fields
                        .next()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(unexpected_reply)?;
                    ReserveOutcome::Queued { stock_left, seq }
                }
            })
        })
        .collect::<RedisResult<_>>()?;
    if outcomes.len() != count {
        return Err(unexpected_reply());
    }
    Ok(outcomes)
}

fn unexpected_reply() -> RedisError {
    unexpected("unexpected reply from the reserve script")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn replies_are_read_per_member() {
        let reply = vec![text("each"), text("q:7:2"), text("a"), text("x")];
        assert_eq!(
            parse(reply, 3).unwrap(),
            vec![
                ReserveOutcome::Queued {
                    stock_left: 2,
                    seq: 7
                },
                ReserveOutcome::AlreadyOrdered,
                ReserveOutcome::SoldOut
            ]
        );
        assert_eq!(
            parse(vec![text("ended")], 2).unwrap(),
            vec![ReserveOutcome::Ended; 2]
        );
        assert_eq!(
            parse(vec![text("unchecked")], 2).unwrap(),
            vec![ReserveOutcome::Unchecked; 2],
            "an item to check again refuses the whole batch"
        );
        assert!(parse(vec![text("each"), text("q:7")], 1).is_err());
        assert!(
            parse(vec![text("each")], 1).is_err(),
            "one answer per member"
        );
        assert!(parse(vec![text("maybe")], 1).is_err());
    }
}
