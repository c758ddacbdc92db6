//! Change data capture: catalogue edits reach every cache, including edits
//! made with plain SQL outside the application.
//!
//! 1. **Capture** — database triggers write every insert, delete and edit of
//!    a flash item to `product_changes`, in the edit's own transaction.
//! 2. **Relay** — one origin at a time (the CDC leader, elected by a Redis
//!    lease) moves unrelayed rows, in order, to the change stream and marks
//!    them relayed; at least once. On PostgreSQL it wakes on `NOTIFY`, and
//!    polls anyway because notifications are lost across disconnects.
//! 3. **Refresh** — the leader applies each change through the
//!    `cache-refresh` consumer group (a new leader takes over what a dead one
//!    left pending): the item's description in Redis is reloaded from the
//!    database row as it is now (so a duplicated or late event cannot roll
//!    anything back), and a stock edit is applied to live stock and to the
//!    database's `stock_available` at most once each, keyed by the change id.
//!    Every origin also tails the stream to drop its in-memory copy of the
//!    item (`tail`).

pub mod leader;
pub mod tail;
