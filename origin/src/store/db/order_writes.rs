//! What becomes of a reservation in the database: an order, written in a
//! batch, or a rejection. Exactly one of the two, ever.
//!
//! A batch is one transaction with one multi-row `INSERT … ON CONFLICT DO
//! NOTHING RETURNING`, not a round trip per order. The database's unique
//! keys decide duplicates: a request whose reservation is already an order
//! (a redelivered or replayed message) resolves to that existing order, so
//! a message delivered any number of times makes one order. Each product's
//! `stock_available` is lowered by the orders actually inserted, in the
//! same transaction, so the database never counts an order it does not hold.
//!
//! An order and a rejection of the same reservation exclude each other:
//! the writer and the rejecter both lock the product's row first (on
//! PostgreSQL; SQLite serialises writers and refuses a transaction whose
//! reads went stale), then look for the other's record in a statement of
//! their own. Whoever locks second sees what the first committed. So a
//! writer stalled behind someone's row lock and the consumer that took its
//! entries over and gave up on them cannot both win.
//!
//! Order times (`created_at_ms`, `pay_deadline_ms`) are the database's
//! clock, the one clock payments and cancellations are judged by.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use seckill_shared::records::OrderRequest;
use seckill_shared::ProductId;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{placeholders, Backend, Database};
use crate::clock::unix_ms;
use crate::store::StoreResult;

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The reservation is an order (inserted now, or found from an earlier
    /// delivery).
    Written {
        order: i64,
        inserted: bool,
        unpaid: bool,
        pay_deadline_ms: i64,
    },
    /// It can never become an order; its stock must be given back.
    Rejected { reason: String },
}

/// Writes `requests` in one transaction; outcomes are in request order.
pub async fn write_batch(
    db: &Database,
    requests: &[OrderRequest],
    pay_timeout_ms: i64,
) -> StoreResult<Vec<Outcome>> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = db.begin().await?;
    let products: Vec<ProductId> = requests
        .iter()
        .map(|r| r.product)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let known = lock_products(&mut tx, db.backend(), &products).await?;
    let rejected = rejections(&mut tx, requests).await?;

    let insertable: Vec<&OrderRequest> = requests
        .iter()
        .filter(|r| known.contains(&r.product.get()))
        .filter(|r| !rejected.contains_key(&(r.product.get(), r.seq)))
        .collect();
    let inserted = insert_orders(&mut tx, db.backend(), &insertable, pay_timeout_ms).await?;
    let missing: Vec<&OrderRequest> = insertable
        .iter()
        .copied()
        .filter(|r| !inserted.contains_key(&(r.product.get(), r.seq)))
        .collect();
    let existing = existing_orders(&mut tx, &missing).await?;

    let mut sold: BTreeMap<i64, i64> = BTreeMap::new();
    for order_key in inserted.keys() {
        *sold.entry(order_key.0).or_default() += 1;
    }
    for (product, count) in &sold {
        sqlx::query("UPDATE products SET stock_available = stock_available - $2, updated_at_ms = $3 WHERE id = $1")
            .bind(product)
            .bind(count)
            .bind(unix_ms() as i64)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;

    Ok(requests
        .iter()
        .map(|request| {
            let key = (request.product.get(), request.seq);
            if let Some(reason) = rejected.get(&key) {
                return Outcome::Rejected {
                    reason: format!("rejected before: {reason}"),
                };
            }
            if !known.contains(&request.product.get()) {
                return Outcome::Rejected {
                    reason: format!("unknown product {}", request.product),
                };
            }
            if let Some(&(order, pay_deadline_ms)) = inserted.get(&key) {
                return Outcome::Written {
                    order,
                    inserted: true,
                    unpaid: true,
                    pay_deadline_ms,
                };
            }
            match existing.get(&key) {
                Some(found) if found.member == request.member.get() => found.written(),
                Some(found) => Outcome::Rejected {
                    reason: format!(
                        "reservation {} of product {} is already order {} of another member",
                        request.seq, request.product, found.order
                    ),
                },
                None => Outcome::Rejected {
                    reason: format!(
                        "member {} already holds a live order for product {}",
                        request.member, request.product
                    ),
                },
            }
        })
        .collect())
}

/// Locks the rows of `products` (in id order, so two writers never wait on
/// each other in a circle) and returns the ids that exist.
async fn lock_products(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    products: &[ProductId],
) -> Result<HashSet<i64>, sqlx::Error> {
    if products.is_empty() {
        return Ok(HashSet::new());
    }
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE",
        // SQLite has one writer at a time, and refuses (SQLITE_BUSY_SNAPSHOT,
        // retried as transient) a write whose reads another writer overtook.
        Backend::Sqlite => "",
    };
    let sql = format!(
        "SELECT id FROM products WHERE id IN ({}) ORDER BY id{lock}",
        placeholders(1, products.len())
    );
    let mut query = sqlx::query(&sql);
    for product in products {
        query = query.bind(product.get());
    }
    let rows: Vec<AnyRow> = query.fetch_all(&mut **tx).await?;
    rows.iter().map(|row| row.try_get::<i64, _>(0)).collect()
}

/// The requests' reservation numbers, by product.
fn seqs_by_product<'a>(
    requests: impl IntoIterator<Item = &'a OrderRequest>,
) -> BTreeMap<i64, Vec<i64>> {
    let mut by_product: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for request in requests {
        by_product
            .entry(request.product.get())
            .or_default()
            .push(request.seq);
    }
    by_product
}

/// Reservations of the batch already rejected, with their reasons.
async fn rejections(
    tx: &mut Transaction<'_, Any>,
    requests: &[OrderRequest],
) -> Result<HashMap<(i64, i64), String>, sqlx::Error> {
    let mut found = HashMap::new();
    for (product, seqs) in seqs_by_product(requests) {
        let sql = format!(
            "SELECT reservation_seq, reason FROM rejected_reservations \
             WHERE product_id = $1 AND reservation_seq IN ({})",
            placeholders(2, seqs.len())
        );
        let mut query = sqlx::query_as::<_, (i64, String)>(&sql).bind(product);
        for seq in &seqs {
            query = query.bind(seq);
        }
        for (seq, reason) in query.fetch_all(&mut **tx).await? {
            found.insert((product, seq), reason);
        }
    }
    Ok(found)
}

/// Inserts what it can; returns (product, reservation) -> (new order id,
/// its payment deadline).
async fn insert_orders(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    requests: &[&OrderRequest],
    pay_timeout_ms: i64,
) -> Result<HashMap<(i64, i64), (i64, i64)>, sqlx::Error> {
    if requests.is_empty() {
        return Ok(HashMap::new());
    }
    const COLUMNS_PER_ROW: usize = 4;
    let now = super::now_ms_sql(backend);
    // The timeout is the last parameter, shared by every row.
    let timeout = requests.len() * COLUMNS_PER_ROW + 1;
    let rows: Vec<String> = (0..requests.len())
        .map(|i| {
            let first = i * COLUMNS_PER_ROW + 1;
            format!(
                "(${}, ${}, ${}, ${}, 'unpaid', {now}, {now} + ${timeout})",
                first,
                first + 1,
                first + 2,
                first + 3,
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO orders (product_id, member_id, reservation_seq, price_cents, status, created_at_ms, pay_deadline_ms) \
         VALUES {} ON CONFLICT DO NOTHING RETURNING id, product_id, reservation_seq, pay_deadline_ms",
        rows.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for request in requests {
        query = query
            .bind(request.product.get())
            .bind(request.member.get())
            .bind(request.seq)
            .bind(request.price_cents);
    }
    query = query.bind(pay_timeout_ms);
    let rows: Vec<AnyRow> = query.fetch_all(&mut **tx).await?;
    rows.iter()
        .map(|row| {
            Ok((
                (row.try_get(1)?, row.try_get(2)?),
                (row.try_get(0)?, row.try_get(3)?),
            ))
        })
        .collect()
}

/// An order already holding a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExistingOrder {
    pub order: i64,
    pub member: i64,
    pub unpaid: bool,
    pub pay_deadline_ms: i64,
}

impl ExistingOrder {
    fn written(&self) -> Outcome {
        Outcome::Written {
            order: self.order,
            inserted: false,
            unpaid: self.unpaid,
            pay_deadline_ms: self.pay_deadline_ms,
        }
    }
}

/// Orders already holding these reservations, by (product, reservation).
async fn existing_orders(
    tx: &mut Transaction<'_, Any>,
    requests: &[&OrderRequest],
) -> Result<HashMap<(i64, i64), ExistingOrder>, sqlx::Error> {
    let mut found = HashMap::new();
    for (product, seqs) in seqs_by_product(requests.iter().copied()) {
        let sql = format!(
            "SELECT id, member_id, status, pay_deadline_ms, reservation_seq FROM orders \
             WHERE product_id = $1 AND reservation_seq IN ({})",
            placeholders(2, seqs.len())
        );
        let mut query = sqlx::query(&sql).bind(product);
        for seq in &seqs {
            query = query.bind(seq);
        }
        for row in query.fetch_all(&mut **tx).await? {
            let status: String = row.try_get(2)?;
            found.insert(
                (product, row.try_get::<i64, _>(4)?),
                ExistingOrder {
                    order: row.try_get(0)?,
                    member: row.try_get(1)?,
                    unpaid: status == "unpaid",
                    pay_deadline_ms: row.try_get(3)?,
                },
            );
        }
    }
    Ok(found)
}

/// What rejecting a reservation decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Recorded (now or before): the reservation will never be an order.
    Rejected,
    /// An order holds the reservation: it was written after all.
    Ordered(Outcome),
    /// An order of another member holds this reservation number (handed out
    /// twice after Redis lost data): nothing can be recorded for it, and it
    /// will never be an order.
    Taken,
}

/// Rejects one reservation unless an order already holds it; see the
/// module's opening for why this and `write_batch` cannot both win.
pub async fn reject(db: &Database, request: &OrderRequest, reason: &str) -> StoreResult<Rejection> {
    let mut tx = db.begin().await?;
    lock_products(&mut tx, db.backend(), &[request.product]).await?;
    let key = (request.product.get(), request.seq);
    let existing = existing_orders(&mut tx, &[request]).await?;
    if let Some(found) = existing.get(&key) {
        return Ok(if found.member == request.member.get() {
            Rejection::Ordered(found.written())
        } else {
            Rejection::Taken
        });
    }
    sqlx::query(
        "INSERT INTO rejected_reservations (product_id, reservation_seq, member_id, reason, rejected_at_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(request.product.get())
    .bind(request.seq)
    .bind(request.member.get())
    .bind(reason)
    .bind(unix_ms() as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Rejection::Rejected)
}
