//! The one invariant audit, shared by `seckill-bench` (after a load, and
//! after the chaos soak) and the end-to-end tests. It reads the database
//! and Redis directly, never through the origin, and checks the mission's
//! five invariants plus what recovery promises: every 202 ended as an order
//! or an explicit `failed`, no unpaid order outlives its deadline, Redis
//! and the database count the same stock, and nothing with stock is listed
//! or flagged sold out.
//!
//! The system is only quiet after its queues drain and its deadlines are
//! settled, and a cancellation moves the database before Redis: so the
//! audit first waits for the order streams to drain, reads Redis before
//! the database, and reads again (up to `settle_timeout`) while a check
//! fails. A broken invariant stays broken; an audit that caught the
//! system mid-step passes on the next read.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use seckill_shared::keys::{DeadlineEntry, MemberState, RedisKeys, RegistryGroup, ORDER_GROUP};
use seckill_shared::ProductId;
use serde::Serialize;
use sqlx::AnyPool;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The design: stock in Redis, orders written from the queue.
    Reserve,
    /// The naive baseline (`SECKILL_MODE=sync-db`): no Redis at all.
    SyncDb,
}

/// A buy the origin answered `202 queued`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Accepted {
    pub product: i64,
    pub member: i64,
    /// Redis was restarted empty after this buy was answered: if it has
    /// neither an order nor a rejection, it is an expected loss (reported,
    /// not a failure).
    pub loss_expected: bool,
}

/// What one audit looks at.
#[derive(Debug, Clone)]
pub struct Scope {
    pub database_url: String,
    /// Redis and its key prefix; `None` for the sync-db baseline.
    pub redis: Option<(RedisAt, String)>,
    /// The products to check; `None`: every product in the database.
    pub products: Option<Vec<i64>>,
    pub accepted: Vec<Accepted>,
    /// Origin base URLs whose local sold-out flags are checked (from their
    /// `seckill_sold_out_flags` gauge).
    pub origins: Vec<String>,
    /// How long to wait for the order streams to drain.
    pub drain_timeout: Duration,
    /// How long a failing check is read again before it counts.
    pub settle_timeout: Duration,
    /// An unpaid order this far past its deadline should be cancelled.
    pub deadline_grace: Duration,
}

/// Where the audited Redis is.
#[derive(Debug, Clone)]
pub enum RedisAt {
    One(String),
    Cluster(Vec<String>),
}

impl Scope {
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            redis: None,
            products: None,
            accepted: Vec::new(),
            origins: Vec::new(),
            drain_timeout: Duration::from_secs(60),
            settle_timeout: Duration::from_secs(10),
            deadline_grace: Duration::from_secs(2),
        }
    }

    pub fn redis(mut self, url: impl Into<String>, key_prefix: impl Into<String>) -> Self {
        self.redis = Some((RedisAt::One(url.into()), key_prefix.into()));
        self
    }

    /// A Redis Cluster, from seed node URLs.
    pub fn redis_cluster(mut self, nodes: Vec<String>, key_prefix: impl Into<String>) -> Self {
        self.redis = Some((RedisAt::Cluster(nodes), key_prefix.into()));
        self
    }

    pub fn products(mut self, products: impl IntoIterator<Item = i64>) -> Self {
        self.products = Some(products.into_iter().collect());
        self
    }

    /// Members answered 202 for `product` (none of them an expected loss).
    pub fn accepted(mut self, product: i64, members: impl IntoIterator<Item = i64>) -> Self {
        self.accepted
            .extend(members.into_iter().map(|member| Accepted {
                product,
                member,
                loss_expected: false,
            }));
        self
    }

    pub fn origins(mut self, origins: impl IntoIterator<Item = String>) -> Self {
        self.origins = origins.into_iter().collect();
        self
    }

    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    pub fn settle_timeout(mut self, timeout: Duration) -> Self {
        self.settle_timeout = timeout;
        self
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub passed: bool,
    pub checks: Vec<Check>,
    /// Accepted buys with neither an order nor a rejection, excused because
    /// Redis lost its data after they were answered.
    pub expected_losses: Vec<Accepted>,
    /// How many times the state was read before the result stood.
    pub reads: u32,
}

impl AuditReport {
    /// The failing checks as one line each (for a test's panic message).
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("FAIL {}: {}", c.name, c.detail))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub async fn connect(database_url: &str) -> anyhow::Result<AnyPool> {
    sqlx::any::install_default_drivers();
    Ok(sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(database_url)
        .await?)
}

/// Drains, then reads and checks until every check passes or
/// `settle_timeout` has passed; the last read is the report.
pub async fn run(scope: &Scope) -> anyhow::Result<AuditReport> {
    let keys = match &scope.redis {
        Some((_, prefix)) => Some(RedisKeys::new(prefix.clone()).map_err(|e| anyhow::anyhow!(e))?),
        None => None,
    };
    match (&scope.redis, keys) {
        (Some((RedisAt::One(url), _)), Some(keys)) => {
            let conn = redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?;
            run_on(scope, Some((conn, keys))).await
        }
        (Some((RedisAt::Cluster(nodes), _)), Some(keys)) => {
            let conn = redis::cluster::ClusterClient::new(nodes.clone())?
                .get_async_connection()
                .await?;
            run_on(scope, Some((conn, keys))).await
        }
        _ => run_on::<redis::aio::MultiplexedConnection>(scope, None).await,
    }
}

async fn run_on<C>(scope: &Scope, mut redis: Option<(C, RedisKeys)>) -> anyhow::Result<AuditReport>
where
    C: redis::aio::ConnectionLike + Send + Sync,
{
    let pool = connect(&scope.database_url).await?;
    if let Some((conn, keys)) = redis.as_mut() {
        drain(conn, keys, &pool, scope).await?;
    }
    let started = Instant::now();
    let mut reads = 0;
    loop {
        reads += 1;
        let redis_view = match redis.as_mut() {
            Some((conn, keys)) => Some(read_redis(conn, keys, &pool, scope).await?),
            None => None,
        };
        let db_view = read_database(&pool, scope).await?;
        let flags = read_flags(&scope.origins).await;
        let (checks, expected_losses) = check(scope, &db_view, redis_view.as_ref(), &flags);
        let passed = checks.iter().all(|c| c.passed);
        if passed || started.elapsed() >= scope.settle_timeout {
            pool.close().await;
            return Ok(AuditReport {
                passed,
                checks,
                expected_losses,
                reads,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Prints the checks; true when all passed.
pub fn report(checks: &[Check]) -> bool {
    for check in checks {
        println!(
            "  {} {}: {}",
            if check.passed { "PASS" } else { "FAIL" },
            check.name,
            check.detail
        );
    }
    checks.iter().all(|c| c.passed)
}

/// The product ids in scope: the given ones, else every one in the database.
async fn product_ids(pool: &AnyPool, scope: &Scope) -> anyhow::Result<Vec<i64>> {
    if let Some(products) = &scope.products {
        return Ok(products.clone());
    }
    let rows: Vec<(i64,)> = sqlx::query_as("SELECT id FROM products ORDER BY id")
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

fn pid(id: i64) -> anyhow::Result<ProductId> {
    ProductId::new(id).map_err(|_| anyhow::anyhow!("product ids are positive: {id}"))
}

/// (pending, not yet delivered) entries of a product's order stream.
async fn queued<C: redis::aio::ConnectionLike + Send + Sync>(
    conn: &mut C,
    stream: &str,
) -> anyhow::Result<(u64, u64)> {
    let exists: bool = conn.exists(stream).await?;
    if !exists {
        return Ok((0, 0));
    }
    let groups: redis::streams::StreamInfoGroupsReply = conn.xinfo_groups(stream).await?;
    let group = groups.groups.into_iter().find(|g| g.name == ORDER_GROUP);
    Ok(group
        .map(|g| (g.pending as u64, g.lag.unwrap_or(0) as u64))
        .unwrap_or((0, 0)))
}

/// Waits until no product in scope has an entry pending or undelivered.
async fn drain<C: redis::aio::ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &RedisKeys,
    pool: &AnyPool,
    scope: &Scope,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let products = product_ids(pool, scope).await?;
    loop {
        let mut left = 0;
        for product in &products {
            let (pending, lag) = queued(conn, &keys.orders(pid(*product)?)).await?;
            left += pending + lag;
        }
        if left == 0 || started.elapsed() >= scope.drain_timeout {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One product as Redis holds it.
#[derive(Debug, Default)]
struct RedisItem {
    /// `None`: the item is not live in Redis.
    stock: Option<i64>,
    pending: u64,
    lag: u64,
    members: HashMap<i64, MemberState>,
    /// Member states that do not parse.
    garbled: Vec<(String, String)>,
    returned: HashSet<i64>,
}

#[derive(Debug, Default)]
struct RedisView {
    items: BTreeMap<i64, RedisItem>,
    /// `(product, order)` of every payment deadline.
    deadlines: HashSet<(i64, i64)>,
    sold_out: BTreeSet<i64>,
}

async fn read_redis<C: redis::aio::ConnectionLike + Send + Sync>(
    conn: &mut C,
    keys: &RedisKeys,
    pool: &AnyPool,
    scope: &Scope,
) -> anyhow::Result<RedisView> {
    let mut view = RedisView::default();
    for product in product_ids(pool, scope).await? {
        let id = pid(product)?;
        let stock: Option<i64> = conn.hget(keys.item(id), "stock").await?;
        let (pending, lag) = queued(conn, &keys.orders(id)).await?;
        let raw: HashMap<String, String> = conn.hgetall(keys.members(id)).await?;
        let mut item = RedisItem {
            stock,
            pending,
            lag,
            ..RedisItem::default()
        };
        for (member, state) in raw {
            match (member.parse::<i64>(), MemberState::decode(&state)) {
                (Ok(member), Some(state)) => {
                    item.members.insert(member, state);
                }
                _ => item.garbled.push((member, state)),
            }
        }
        let returned: Vec<i64> = conn.smembers(keys.returned(id)).await?;
        item.returned = returned.into_iter().collect();
        view.items.insert(product, item);
    }
    // Deadlines and the sold-out registry are spread over slot groups.
    for group in RegistryGroup::all() {
        let deadlines: Vec<String> = conn.zrange(keys.pay_deadlines(group), 0, -1).await?;
        view.deadlines.extend(
            deadlines
                .iter()
                .filter_map(|d| DeadlineEntry::decode(d))
                .map(|d| (d.product.get(), d.order)),
        );
        let sold_out: Vec<i64> = conn.smembers(keys.sold_out(group)).await?;
        view.sold_out.extend(sold_out);
    }
    Ok(view)
}

/// A change-log row: product, op, old and new stock total, stock applied,
/// relayed at (ms).
type ChangeRow = (
    i64,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

#[derive(Debug)]
struct ProductRow {
    stock_total: i64,
    stock_available: i64,
    /// The units the sale was created with plus every stock edit's units as
    /// applied: what may be sold.
    capacity: i64,
    /// A captured change is not yet relayed, or a stock edit not yet
    /// applied to the database: the stock figures are mid-step.
    change_in_flight: bool,
}

#[derive(Debug)]
struct OrderRow {
    id: i64,
    product: i64,
    member: i64,
    seq: i64,
    status: String,
    pay_deadline_ms: i64,
    paid: bool,
    cancelled: bool,
}

#[derive(Debug, Default)]
struct DbView {
    now_ms: i64,
    products: BTreeMap<i64, ProductRow>,
    orders: Vec<OrderRow>,
    /// `(product, reservation seq, member)` of every rejected reservation.
    rejected: Vec<(i64, i64, i64)>,
}

/// The database's own clock in unix ms (the clock deadlines are set on).
async fn database_now_ms(pool: &AnyPool, database_url: &str) -> anyhow::Result<i64> {
    let sql = if database_url.starts_with("sqlite") {
        "SELECT CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER)"
    } else {
        "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT"
    };
    let (now,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await?;
    Ok(now)
}

async fn read_database(pool: &AnyPool, scope: &Scope) -> anyhow::Result<DbView> {
    let wanted: Option<HashSet<i64>> = scope.products.as_ref().map(|p| p.iter().copied().collect());
    let in_scope = |product: i64| wanted.as_ref().is_none_or(|w| w.contains(&product));
    let mut view = DbView {
        now_ms: database_now_ms(pool, &scope.database_url).await?,
        ..DbView::default()
    };
    let products: Vec<(i64, i64, i64)> =
        sqlx::query_as("SELECT id, stock_total, stock_available FROM products")
            .fetch_all(pool)
            .await?;
    let changes: Vec<ChangeRow> = sqlx::query_as(
        "SELECT product_id, op, old_stock_total, new_stock_total, stock_applied, relayed_at_ms \
             FROM product_changes ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    // Only the reserve design relays and applies the change log; the
    // sync-db baseline sells the row's stock as it stands.
    let relayed = scope.redis.is_some();
    for (id, stock_total, stock_available) in products {
        if !in_scope(id) {
            continue;
        }
        if !relayed {
            view.products.insert(
                id,
                ProductRow {
                    stock_total,
                    stock_available,
                    capacity: stock_total,
                    change_in_flight: false,
                },
            );
            continue;
        }
        let mut capacity = None;
        let mut in_flight = false;
        for (_, op, old, new, applied, relayed) in changes.iter().filter(|c| c.0 == id) {
            match op.as_str() {
                "insert" => capacity = *new,
                "update" => {
                    *capacity.get_or_insert(0) += applied.unwrap_or(0);
                    if applied.is_none() && old != new {
                        in_flight = true;
                    }
                }
                _ => {}
            }
            if relayed.is_none() {
                in_flight = true;
            }
        }
        view.products.insert(
            id,
            ProductRow {
                stock_total,
                stock_available,
                capacity: capacity.unwrap_or(stock_total),
                change_in_flight: in_flight,
            },
        );
    }
    type Row = (i64, i64, i64, i64, String, i64, Option<i64>, Option<i64>);
    let orders: Vec<Row> = sqlx::query_as(
        "SELECT id, product_id, member_id, reservation_seq, status, pay_deadline_ms, \
         paid_at_ms, cancelled_at_ms FROM orders ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    view.orders = orders
        .into_iter()
        .filter(|o| in_scope(o.1))
        .map(
            |(id, product, member, seq, status, pay_deadline_ms, paid, cancelled)| OrderRow {
                id,
                product,
                member,
                seq,
                status,
                pay_deadline_ms,
                paid: paid.is_some(),
                cancelled: cancelled.is_some(),
            },
        )
        .collect();
    let rejected: Vec<(i64, i64, i64)> =
        sqlx::query_as("SELECT product_id, reservation_seq, member_id FROM rejected_reservations")
            .fetch_all(pool)
            .await?;
    view.rejected = rejected.into_iter().filter(|r| in_scope(r.0)).collect();
    Ok(view)
}

/// `(origin, local sold-out flags)` from each origin's metrics; `None`
/// when the origin did not answer.
async fn read_flags(origins: &[String]) -> Vec<(String, Option<u64>)> {
    let mut flags = Vec::new();
    for origin in origins {
        let count = metric(origin, "seckill_sold_out_flags")
            .await
            .ok()
            .flatten();
        flags.push((origin.clone(), count.map(|v| v as u64)));
    }
    flags
}

/// One unlabelled metric of an origin's `GET /metrics`, over plain HTTP/1.0.
pub async fn metric(origin: &str, name: &str) -> anyhow::Result<Option<f64>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = origin
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut stream = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(&authority),
    )
    .await??;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut text)).await??;
    Ok(text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    }))
}

/// At most a few examples, for a check's detail.
fn examples<T: std::fmt::Debug>(items: &[T]) -> String {
    format!("{:?}", &items[..items.len().min(5)])
}

fn check_of<T: std::fmt::Debug>(
    name: &'static str,
    bad: Vec<T>,
    what_bad: &str,
    ok: String,
) -> Check {
    Check {
        name,
        passed: bad.is_empty(),
        detail: if bad.is_empty() {
            ok
        } else {
            format!("{} {what_bad}, e.g. {}", bad.len(), examples(&bad))
        },
    }
}

fn check(
    scope: &Scope,
    db: &DbView,
    redis: Option<&RedisView>,
    flags: &[(String, Option<u64>)],
) -> (Vec<Check>, Vec<Accepted>) {
    let live = |o: &&OrderRow| o.status != "cancelled";
    let mut live_by_product: BTreeMap<i64, i64> = BTreeMap::new();
    for order in db.orders.iter().filter(live) {
        *live_by_product.entry(order.product).or_default() += 1;
    }
    let live_of = |product: i64| live_by_product.get(&product).copied().unwrap_or(0);
    let mut checks = Vec::new();

    // 1. No oversell.
    let oversold: Vec<String> = db
        .products
        .iter()
        .filter(|(id, p)| live_of(**id) > p.capacity)
        .map(|(id, p)| {
            format!(
                "product {id}: {} live orders, stock {}",
                live_of(*id),
                p.capacity
            )
        })
        .collect();
    let live_total: i64 = live_by_product.values().sum();
    let capacity: i64 = db.products.values().map(|p| p.capacity).sum();
    checks.push(check_of(
        "no oversell",
        oversold,
        "products oversold",
        format!("{live_total} live orders for a stock of {capacity}"),
    ));

    // The database's own bookkeeping: units sold are the live orders.
    let unbalanced: Vec<String> = db
        .products
        .iter()
        .filter(|(id, p)| !p.change_in_flight && p.capacity - p.stock_available != live_of(**id))
        .map(|(id, p)| {
            format!(
                "product {id}: {} units sold, {} live orders",
                p.capacity - p.stock_available,
                live_of(*id)
            )
        })
        .chain(
            db.products
                .iter()
                .filter(|(_, p)| p.change_in_flight)
                .map(|(id, _)| format!("product {id}: a catalogue change is still being applied")),
        )
        .collect();
    let sold: i64 = db
        .products
        .values()
        .map(|p| p.capacity - p.stock_available)
        .sum();
    checks.push(check_of(
        "orders equal the stock sold",
        unbalanced,
        "products out of balance",
        format!("{sold} units sold, {live_total} live orders"),
    ));

    // 2. One live order per member and item.
    let mut seen = HashSet::new();
    let twice: Vec<(i64, i64)> = db
        .orders
        .iter()
        .filter(live)
        .map(|o| (o.product, o.member))
        .filter(|key| !seen.insert(*key))
        .collect();
    checks.push(check_of(
        "no member twice",
        twice,
        "(product, member) pairs with two live orders",
        format!("{} members, one live order each", seen.len()),
    ));

    // 4. Paid or cancelled, never both.
    let muddled: Vec<i64> = db
        .orders
        .iter()
        .filter(|o| match o.status.as_str() {
            "paid" => !o.paid || o.cancelled,
            "cancelled" => !o.cancelled || o.paid,
            "unpaid" => o.paid || o.cancelled,
            _ => true,
        })
        .map(|o| o.id)
        .collect();
    let count = |status: &str| db.orders.iter().filter(|o| o.status == status).count();
    checks.push(check_of(
        "paid or cancelled, never both",
        muddled,
        "orders both or neither",
        format!(
            "{} paid, {} cancelled, {} unpaid",
            count("paid"),
            count("cancelled"),
            count("unpaid")
        ),
    ));

    // Every unpaid order past its deadline is cancelled.
    let grace = scope.deadline_grace.as_millis() as i64;
    let overdue: Vec<i64> = db
        .orders
        .iter()
        .filter(|o| o.status == "unpaid" && o.pay_deadline_ms < db.now_ms - grace)
        .map(|o| o.id)
        .collect();
    checks.push(check_of(
        "every unpaid order past its deadline is cancelled",
        overdue,
        "unpaid orders overdue",
        format!("{} unpaid orders, none overdue", count("unpaid")),
    ));

    // 3. Every 202 ended as an order or an explicit failed.
    let ordered: HashSet<(i64, i64)> = db.orders.iter().map(|o| (o.product, o.member)).collect();
    let rejected: HashSet<(i64, i64)> = db.rejected.iter().map(|r| (r.0, r.2)).collect();
    let failed_in_redis = |a: &Accepted| {
        redis
            .and_then(|r| r.items.get(&a.product))
            .and_then(|item| item.members.get(&a.member))
            .is_some_and(|s| matches!(s, MemberState::Failed { .. }))
    };
    let accepted: BTreeSet<Accepted> = scope.accepted.iter().copied().collect();
    let (mut lost, mut expected_losses) = (Vec::new(), Vec::new());
    for a in &accepted {
        let key = (a.product, a.member);
        if ordered.contains(&key) || rejected.contains(&key) || failed_in_redis(a) {
            continue;
        }
        if a.loss_expected {
            expected_losses.push(*a);
        } else {
            lost.push(key);
        }
    }
    checks.push(check_of(
        "every 202 has an order or an explicit failed",
        lost,
        "accepted buys without an order",
        format!(
            "{} accepted buys accounted for ({} lost with Redis' data, as expected)",
            accepted.len(),
            expected_losses.len()
        ),
    ));

    let Some(redis) = redis else {
        return (checks, expected_losses);
    };

    // 5. Redis stock + live reservations = database stock, for every item.
    let mut drift = Vec::new();
    let (mut redis_stock, mut reservations, mut db_stock) = (0, 0, 0);
    for (id, p) in &db.products {
        let Some(item) = redis.items.get(id) else {
            continue;
        };
        let queued = (item.pending + item.lag) as i64;
        match item.stock {
            Some(stock) if stock + queued == p.stock_available && !p.change_in_flight => {
                redis_stock += stock;
                reservations += queued;
                db_stock += p.stock_available;
            }
            Some(stock) => drift.push(format!(
                "product {id}: {stock} + {queued} vs {}{}",
                p.stock_available,
                if p.change_in_flight {
                    " (a change in flight)"
                } else {
                    ""
                }
            )),
            None => drift.push(format!(
                "product {id}: not live in redis (database: {} of {})",
                p.stock_available, p.stock_total
            )),
        }
    }
    checks.push(check_of(
        "redis stock + live reservations = database stock",
        drift,
        "items drifted",
        format!("{redis_stock} + {reservations} vs {db_stock}"),
    ));

    // Member states say what the database says.
    let mut disagree = Vec::new();
    let orders_by_id: HashMap<i64, &OrderRow> = db.orders.iter().map(|o| (o.id, o)).collect();
    let rejected_seqs: HashSet<(i64, i64)> = db.rejected.iter().map(|r| (r.0, r.1)).collect();
    let order_seqs: HashMap<(i64, i64), i64> = db
        .orders
        .iter()
        .map(|o| ((o.product, o.seq), o.member))
        .collect();
    let mut states = 0;
    for (product, item) in &redis.items {
        if item.stock.is_none() && item.members.is_empty() {
            continue;
        }
        for (member, state) in &item.garbled {
            disagree.push(format!("product {product} member {member}: {state:?}"));
        }
        for (member, state) in &item.members {
            states += 1;
            let order = |id: i64| orders_by_id.get(&id).filter(|o| o.product == *product);
            let fine =
                match state {
                    MemberState::Queued { .. } => false,
                    MemberState::Ordered { order: id } => order(id.get())
                        .is_some_and(|o| o.member == *member && o.status != "cancelled"),
                    MemberState::Cancelled { order: id } => order(id.get())
                        .is_some_and(|o| o.member == *member && o.status == "cancelled"),
                    // Rejected in the database, or a reservation number handed
                    // out again after Redis lost its data that the database
                    // already holds as another member's order (the consumer
                    // fails it without a rejection record: the number is taken).
                    MemberState::Failed { seq } => {
                        rejected_seqs.contains(&(*product, *seq))
                            || order_seqs
                                .get(&(*product, *seq))
                                .is_some_and(|owner| owner != member)
                    }
                };
            if !fine {
                let db_says = match state {
                    MemberState::Ordered { order: id } | MemberState::Cancelled { order: id } => {
                        order(id.get())
                            .map(|o| o.status.clone())
                            .unwrap_or_else(|| "no such order".into())
                    }
                    _ => String::new(),
                };
                disagree.push(format!(
                    "product {product} member {member}: redis {} database {db_says}",
                    state.encode()
                ));
            }
        }
    }
    for order in db.orders.iter().filter(live) {
        let Some(item) = redis.items.get(&order.product) else {
            continue;
        };
        if item.stock.is_none() {
            continue;
        }
        let expected = MemberState::Ordered {
            order: seckill_shared::OrderId::new(order.id).expect("order ids are positive"),
        };
        if item.members.get(&order.member) != Some(&expected) {
            disagree.push(format!(
                "order {} ({}) of member {} on product {}: redis {:?}",
                order.id,
                order.status,
                order.member,
                order.product,
                item.members.get(&order.member).map(|s| s.encode())
            ));
        }
    }
    checks.push(check_of(
        "redis member states agree with the database",
        disagree,
        "member states disagree",
        format!("{states} member states, each as the database has it"),
    ));

    // A cancelled order's (or rejected reservation's) unit went back once,
    // and no other unit did.
    let mut wrong_returns = Vec::new();
    let mut returned_total = 0;
    for (product, item) in &redis.items {
        if item.stock.is_none() {
            continue;
        }
        let mut due: HashSet<i64> = db
            .orders
            .iter()
            .filter(|o| o.product == *product && o.status == "cancelled")
            .map(|o| o.seq)
            .collect();
        due.extend(db.rejected.iter().filter(|r| r.0 == *product).map(|r| r.1));
        returned_total += item.returned.len();
        for seq in due.difference(&item.returned) {
            wrong_returns.push(format!(
                "product {product}: reservation {seq} never given back"
            ));
        }
        for seq in item.returned.difference(&due) {
            wrong_returns.push(format!(
                "product {product}: reservation {seq} given back but neither cancelled nor rejected"
            ));
        }
    }
    checks.push(check_of(
        "a cancelled order's stock is returned exactly once",
        wrong_returns,
        "reservations returned wrongly",
        format!("{returned_total} reservations given back, each cancelled or rejected"),
    ));

    // Every unpaid order has its deadline in Redis (else only the
    // backstop sweep would cancel it).
    let undated: Vec<i64> = db
        .orders
        .iter()
        .filter(|o| o.status == "unpaid")
        .filter(|o| {
            redis
                .items
                .get(&o.product)
                .is_some_and(|i| i.stock.is_some())
        })
        .filter(|o| !redis.deadlines.contains(&(o.product, o.id)))
        .map(|o| o.id)
        .collect();
    checks.push(check_of(
        "every unpaid order has a payment deadline in redis",
        undated,
        "unpaid orders without a deadline",
        format!("{} deadlines", redis.deadlines.len()),
    ));

    // No item with stock is listed or flagged sold out.
    let listed: Vec<i64> = redis
        .sold_out
        .iter()
        .copied()
        .filter(|id| redis.items.get(id).and_then(|i| i.stock).unwrap_or(0) > 0)
        .collect();
    let empty = redis
        .items
        .values()
        .filter(|i| i.stock.is_some_and(|s| s <= 0))
        .count() as u64;
    let mut bad: Vec<String> = listed
        .iter()
        .map(|id| format!("product {id} listed with stock"))
        .collect();
    for (origin, count) in flags {
        match count {
            Some(count) if *count <= empty => {}
            Some(count) => bad.push(format!(
                "{origin} holds {count} sold-out flags, {empty} items are sold out"
            )),
            None => bad.push(format!("{origin} did not answer /metrics")),
        }
    }
    checks.push(check_of(
        "no item with stock is listed or flagged sold out",
        bad,
        "sold-out marks on items with stock",
        format!(
            "{} listed, {empty} items without stock, {} origins' flags checked",
            redis.sold_out.len(),
            flags.len()
        ),
    ));
    (checks, expected_losses)
}

/// The audit of the products of a `rush` or `mixed` run, as the
/// `seckill-bench` commands call it.
pub struct AuditInput {
    pub database_url: String,
    /// The deployment's Redis (one, or a cluster's seed nodes).
    pub redis: RedisAt,
    pub key_prefix: String,
    /// Each product, with the members the load was answered 202 for.
    pub products: Vec<(i64, Vec<i64>)>,
    pub mode: Mode,
    pub drain_timeout: Duration,
}

pub async fn audit(input: &AuditInput) -> anyhow::Result<Vec<Check>> {
    let mut scope = Scope::new(input.database_url.clone())
        .products(input.products.iter().map(|(product, _)| *product))
        .drain_timeout(input.drain_timeout);
    for (product, members) in &input.products {
        scope = scope.accepted(*product, members.iter().copied());
    }
    if input.mode == Mode::Reserve {
        scope.redis = Some((input.redis.clone(), input.key_prefix.clone()));
    }
    Ok(run(&scope).await?.checks)
}
