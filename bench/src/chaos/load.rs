//! The soak's mixed load: buyers rushing several items through every
//! origin, pollers following each accepted buy to its result and paying
//! for about half of the orders, and an operator editing the catalogue
//! through `PATCH /admin/products/{id}` and through plain SQL. Every answer
//! is counted by kind and status; every `202` is remembered for the audit,
//! with whether Redis was later restarted empty (its loss is then
//! expected).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use seckill_bench::audit::Accepted;
use seckill_shared::token::{self, TokenSecret};
use seckill_shared::MemberId;
use sqlx::PgPool;

use crate::client::{Connection, Target};

/// What the load and the fault scheduler share.
pub struct Shared {
    pub origins: Vec<String>,
    pub products: Vec<i64>,
    pub members: i64,
    pub secret: TokenSecret,
    pub admin_token: String,
    pub stop: AtomicBool,
    /// How many times Redis was restarted empty so far.
    pub wipes: AtomicU64,
    pub counts: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    /// Every `202`: `(product, member, wipes when the buy was sent)`.
    pub accepted: Mutex<Vec<(i64, i64, u64)>>,
    /// Accepted buys whose result is still to be asked.
    pending: Mutex<VecDeque<(i64, i64)>>,
}

impl Shared {
    pub fn new(
        origins: Vec<String>,
        products: Vec<i64>,
        members: i64,
        secret: TokenSecret,
        admin_token: String,
    ) -> Self {
        Self {
            origins,
            products,
            members,
            secret,
            admin_token,
            stop: AtomicBool::new(false),
            wipes: AtomicU64::new(0),
            counts: Mutex::new(BTreeMap::new()),
            accepted: Mutex::new(Vec::new()),
            pending: Mutex::new(VecDeque::new()),
        }
    }

    pub fn count(&self, kind: &str, outcome: impl Into<String>) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts
            .entry(kind.to_string())
            .or_default()
            .entry(outcome.into())
            .or_default() += 1;
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn token(&self, member: i64) -> String {
        let expires = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            + 86_400;
        token::sign(
            &self.secret,
            MemberId::new(member).expect("members are positive"),
            expires,
        )
    }

    /// The audit's view of the accepted buys.
    pub fn accepted_for_audit(&self) -> Vec<Accepted> {
        let wipes = self.wipes.load(Ordering::SeqCst);
        self.accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|&(product, member, sent_in)| Accepted {
                product,
                member,
                loss_expected: sent_in < wipes,
            })
            .collect()
    }
}

/// `"<status> <error code>"`, or `"<status>"`, of an answer.
fn outcome(status: u16, body: &[u8]) -> String {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string));
    match code {
        Some(code) => format!("{status} {code}"),
        None => status.to_string(),
    }
}

/// One connection per origin, reopened after an error.
struct Connections {
    targets: Vec<Target>,
    open: Vec<Connection>,
}

impl Connections {
    fn new(origins: &[String]) -> anyhow::Result<Self> {
        let targets: Vec<Target> = origins
            .iter()
            .map(|o| Target::parse(o))
            .collect::<anyhow::Result<_>>()?;
        let open = targets.iter().cloned().map(Connection::new).collect();
        Ok(Self { targets, open })
    }

    async fn send(
        &mut self,
        origin: usize,
        method: Method,
        path: &str,
        bearer: &str,
        body: Option<Bytes>,
    ) -> Option<(u16, Bytes)> {
        let call = self.open[origin].send(method, path, Some(bearer), body);
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Ok(answer)) => Some((answer.status.as_u16(), answer.body)),
            Ok(Err(_)) => None,
            Err(_) => {
                // A timed-out request leaves its connection mid-answer.
                self.open[origin] = Connection::new(self.targets[origin].clone());
                None
            }
        }
    }
}

/// A buyer: picks an item, a member and an origin, buys, and remembers a 202.
pub async fn buyer(shared: Arc<Shared>, seed: u64) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut conns = Connections::new(&shared.origins)?;
    while !shared.stopped() {
        let product = shared.products[rng.random_range(0..shared.products.len())];
        let member = rng.random_range(1..=shared.members);
        let origin = rng.random_range(0..shared.origins.len());
        let wipes = shared.wipes.load(Ordering::SeqCst);
        let path = format!("/api/seckill/{product}/orders");
        let answer = conns
            .send(origin, Method::POST, &path, &shared.token(member), None)
            .await;
        match answer {
            Some((status, body)) => {
                shared.count("buy", outcome(status, &body));
                if status == 202 {
                    shared
                        .accepted
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((product, member, wipes));
                    shared
                        .pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_back((product, member));
                }
            }
            None => {
                shared.count("buy", "no answer");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(2..12))).await;
    }
    Ok(())
}

/// A poller: asks an accepted buy's result until it is settled, and pays
/// for about half of the orders.
pub async fn poller(shared: Arc<Shared>, seed: u64) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut conns = Connections::new(&shared.origins)?;
    while !shared.stopped() {
        let next = shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        let Some((product, member)) = next else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let origin = rng.random_range(0..shared.origins.len());
        let token = shared.token(member);
        let path = format!("/api/seckill/{product}/result");
        let Some((status, body)) = conns.send(origin, Method::GET, &path, &token, None).await
        else {
            shared.count("result", "no answer");
            shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back((product, member));
            continue;
        };
        let result: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let state = result["status"].as_str().unwrap_or("").to_string();
        shared.count(
            "result",
            if status == 200 {
                state.clone()
            } else {
                outcome(status, &body)
            },
        );
        match (status, state.as_str()) {
            (200, "success") => {
                let Some(order) = result["order_id"].as_i64() else {
                    continue;
                };
                if rng.random_bool(0.5) {
                    // Pay at a random moment of the deadline, sometimes late.
                    tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
                    let path = format!("/api/orders/{order}/pay");
                    let origin = rng.random_range(0..shared.origins.len());
                    match conns.send(origin, Method::POST, &path, &token, None).await {
                        Some((status, body)) => shared.count("pay", outcome(status, &body)),
                        None => shared.count("pay", "no answer"),
                    }
                }
            }
            (200, "queued") | (503, _) => {
                shared
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back((product, member));
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The operator: every second or two, a price or stock edit through the
/// admin API or plain SQL on the database.
pub async fn operator(shared: Arc<Shared>, db: PgPool, seed: u64) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut conns = Connections::new(&shared.origins)?;
    while !shared.stopped() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(800..2_000))).await;
        let product = shared.products[rng.random_range(0..shared.products.len())];
        let (stock_total,): (i64,) =
            match sqlx::query_as("SELECT stock_total FROM products WHERE id = $1")
                .bind(product)
                .fetch_one(&db)
                .await
            {
                Ok(row) => row,
                Err(_) => continue,
            };
        // Mostly restocks (sold-out flags clear), sometimes a removal.
        let delta: i64 = if rng.random_bool(0.8) {
            rng.random_range(5..=25)
        } else {
            -rng.random_range(1..=10)
        };
        let new_total = (stock_total + delta).max(0);
        let price = rng.random_range(100..2_000);
        match rng.random_range(0..4) {
            0 => {
                let body = serde_json::json!({ "stock": new_total });
                patch(&shared, &mut conns, &mut rng, product, body, "patch stock").await;
            }
            1 => {
                let body = serde_json::json!({ "flash_price_cents": price });
                patch(&shared, &mut conns, &mut rng, product, body, "patch price").await;
            }
            2 => {
                let done = sqlx::query("UPDATE products SET stock_total = $2 WHERE id = $1")
                    .bind(product)
                    .bind(new_total)
                    .execute(&db)
                    .await;
                shared.count("sql edit", if done.is_ok() { "stock" } else { "error" });
            }
            _ => {
                let done = sqlx::query("UPDATE products SET flash_price_cents = $2 WHERE id = $1")
                    .bind(product)
                    .bind(price)
                    .execute(&db)
                    .await;
                shared.count("sql edit", if done.is_ok() { "price" } else { "error" });
            }
        }
    }
    Ok(())
}

async fn patch(
    shared: &Shared,
    conns: &mut Connections,
    rng: &mut StdRng,
    product: i64,
    body: serde_json::Value,
    kind: &str,
) {
    let origin = rng.random_range(0..shared.origins.len());
    let path = format!("/admin/products/{product}");
    let body = Bytes::from(serde_json::to_vec(&body).expect("JSON"));
    match conns
        .send(
            origin,
            Method::PATCH,
            &path,
            &shared.admin_token,
            Some(body),
        )
        .await
    {
        Some((status, body)) => shared.count(kind, outcome(status, &body)),
        None => shared.count(kind, "no answer"),
    }
}
