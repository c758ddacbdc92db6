//! Writes a batch of order requests to the database in one transaction.
//!
//! One multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING` per batch, not
//! a round trip per order. The database's unique keys decide duplicates: a
//! request whose reservation is already an order (a redelivered or replayed
//! message) resolves to that existing order, so a message delivered any
//! number of times makes one order. Each product's `stock_available` is
//! lowered by the orders actually inserted, in the same transaction, so the
//! database never counts an order it does not hold.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use seckill_shared::records::OrderRequest;
use seckill_shared::ProductId;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{placeholders, Database};
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
    now_ms: i64,
    pay_timeout_ms: i64,
) -> StoreResult<Vec<Outcome>> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = db.begin().await?;
    let known = known_products(&mut tx, requests).await?;
    let deadline_ms = now_ms + pay_timeout_ms;

    let insertable: Vec<&OrderRequest> = requests
        .iter()
        .filter(|r| known.contains(&r.product.get()))
        .collect();
    let inserted = insert_orders(&mut tx, &insertable, now_ms, deadline_ms).await?;
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
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;

    Ok(requests
        .iter()
        .map(|request| {
            let key = (request.product.get(), request.seq);
            if !known.contains(&request.product.get()) {
                return Outcome::Rejected {
                    reason: format!("unknown product {}", request.product),
                };
            }
            if let Some(&order) = inserted.get(&key) {
                return Outcome::Written {
                    order,
                    inserted: true,
                    unpaid: true,
                    pay_deadline_ms: deadline_ms,
                };
            }
            match existing.get(&key) {
                Some(found) if found.member == request.member.get() => Outcome::Written {
                    order: found.order,
                    inserted: false,
                    unpaid: found.unpaid,
                    pay_deadline_ms: found.pay_deadline_ms,
                },
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

async fn known_products(
    tx: &mut Transaction<'_, Any>,
    requests: &[OrderRequest],
) -> Result<HashSet<i64>, sqlx::Error> {
    let ids: Vec<i64> = requests
        .iter()
        .map(|r| r.product.get())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let sql = format!(
        "SELECT id FROM products WHERE id IN ({})",
        placeholders(1, ids.len())
    );
    let mut query = sqlx::query(&sql);
    for id in &ids {
        query = query.bind(id);
    }
    let rows: Vec<AnyRow> = query.fetch_all(&mut **tx).await?;
    rows.iter().map(|row| row.try_get::<i64, _>(0)).collect()
}

/// Inserts what it can; returns (product, reservation) -> new order id.
async fn insert_orders(
    tx: &mut Transaction<'_, Any>,
    requests: &[&OrderRequest],
    now_ms: i64,
    deadline_ms: i64,
) -> Result<HashMap<(i64, i64), i64>, sqlx::Error> {
    if requests.is_empty() {
        return Ok(HashMap::new());
    }
    const COLUMNS_PER_ROW: usize = 6;
    let rows: Vec<String> = (0..requests.len())
        .map(|i| {
            let first = i * COLUMNS_PER_ROW + 1;
            format!(
                "(${}, ${}, ${}, ${}, 'unpaid', ${}, ${})",
                first,
                first + 1,
                first + 2,
                first + 3,
                first + 4,
                first + 5
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO orders (product_id, member_id, reservation_seq, price_cents, status, created_at_ms, pay_deadline_ms) \
         VALUES {} ON CONFLICT DO NOTHING RETURNING id, product_id, reservation_seq",
        rows.join(", ")
    );
    let mut query = sqlx::query(&sql);
    for request in requests {
        query = query
            .bind(request.product.get())
            .bind(request.member.get())
            .bind(request.seq)
            .bind(request.price_cents)
            .bind(now_ms)
            .bind(deadline_ms);
    }
    let rows: Vec<AnyRow> = query.fetch_all(&mut **tx).await?;
    rows.iter()
        .map(|row| Ok(((row.try_get(1)?, row.try_get(2)?), row.try_get(0)?)))
        .collect()
}

struct ExistingOrder {
    order: i64,
    member: i64,
    unpaid: bool,
    pay_deadline_ms: i64,
}

/// Orders already holding these reservations, by (product, reservation).
async fn existing_orders(
    tx: &mut Transaction<'_, Any>,
    requests: &[&OrderRequest],
) -> Result<HashMap<(i64, i64), ExistingOrder>, sqlx::Error> {
    let mut by_product: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for request in requests {
        by_product
            .entry(request.product.get())
            .or_default()
            .push(request.seq);
    }
    let mut found = HashMap::new();
    for (product, seqs) in by_product {
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

/// The order holding this reservation, if one was committed.
pub async fn existing_order(
    db: &Database,
    product: ProductId,
    seq: i64,
) -> StoreResult<Option<i64>> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT id FROM orders WHERE product_id = $1 AND reservation_seq = $2")
            .bind(product.get())
            .bind(seq)
            .fetch_optional(&db.pool)
            .await?;
    Ok(row.map(|(id,)| id))
}
