//! The three load scenarios, and what they share: talking to the target's
//! admin API, minting member tokens, the server's clock.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::Bytes;
use http::Method;
use rand::Rng;
use seckill_shared::api::{CreateProduct, ProductView, ResultStatus, ResultView};
use seckill_shared::token::{self, TokenSecret};
use seckill_shared::MemberId;
use serde::Serialize;

use crate::client::{Connection, Target};
use crate::load::{self, Call, Plan};
use crate::stats::{Recorder, Summary};

/// One reading of the server's clock, between sending and receiving.
#[derive(Debug, Clone, Copy)]
struct ClockSample {
    sent_ms: i64,
    server_ms: i64,
    received_ms: i64,
}

impl ClockSample {
    /// The server read its clock somewhere within the round trip, so the
    /// offset is taken at the midpoint and may be off by half the round
    /// trip: returns (offset, that bound).
    fn offset(self) -> (i64, i64) {
        let offset = self.server_ms - (self.sent_ms + self.received_ms) / 2;
        (offset, (self.received_ms - self.sent_ms) / 2 + 1)
    }

    /// The offset of the fastest round trip: a slow one (a busy server, a
    /// new connection) could put the estimate off by half of it.
    fn best_offset(samples: &[ClockSample]) -> (i64, i64) {
        samples
            .iter()
            .map(|sample| sample.offset())
            .min_by_key(|&(_, bound)| bound)
            .expect("at least one sample")
    }
}

/// The target and how to act on it.
#[derive(Clone)]
pub struct Session {
    pub base: String,
    pub target: Target,
    pub secret: TokenSecret,
    pub admin_token: Option<String>,
    pub concurrency: usize,
    pub progress: bool,
}

fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The target's clock minus this machine's, in milliseconds, and how far
/// off that may be (see [`ClockSample::offset`]), from the fastest of a
/// few round trips.
pub async fn clock_offset_ms(api: &seckill_client::Client) -> anyhow::Result<(i64, i64)> {
    let mut samples = Vec::new();
    for _ in 0..5 {
        let sent_ms = unix_ms();
        let time = api
            .time()
            .await
            .context("GET /api/time did not answer with a time")?;
        let received_ms = unix_ms();
        samples.push(ClockSample {
            sent_ms,
            server_ms: time.now_ms as i64,
            received_ms,
        });
    }
    Ok(ClockSample::best_offset(&samples))
}

impl Session {
    /// Tokens for members `first..first + count`, valid for a day: minted
    /// here, so no login round trip is part of what is measured.
    pub fn tokens(&self, first: i64, count: usize) -> Arc<Vec<String>> {
        let expires = unix_s() + 86_400;
        Arc::new(
            (0..count as i64)
                .map(|i| {
                    token::sign(
                        &self.secret,
                        MemberId::new(first + i).expect("positive"),
                        expires,
                    )
                })
                .collect(),
        )
    }

    /// The typed client of the target, as an operator (when the admin
    /// token was given): for set-up and results, never the measured load.
    pub fn api(&self) -> anyhow::Result<seckill_client::Client> {
        let client = seckill_client::Client::new(&self.base)?;
        Ok(match &self.admin_token {
            Some(token) => client.with_admin_token(token.clone()),
            None => client,
        })
    }

    /// The server's clock minus this machine's (see [`clock_offset_ms`]).
    pub async fn clock_offset_ms(&self) -> anyhow::Result<(i64, i64)> {
        clock_offset_ms(&self.api()?).await
    }

    /// Creates a sale through the admin API; it opens `start_in` from now
    /// on the server's clock and lasts an hour.
    pub async fn create_sale(
        &self,
        name: &str,
        stock: i64,
        start_in: Duration,
    ) -> anyhow::Result<(ProductView, Instant)> {
        let (mut products, start_at) = self.create_sales(name, stock, 1, start_in).await?;
        Ok((products.remove(0), start_at))
    }

    /// Creates `count` sales of `stock` units each that all open at the
    /// same second, `start_in` from now on the server's clock (see
    /// [`Self::create_sale`]).
    pub async fn create_sales(
        &self,
        name: &str,
        stock: i64,
        count: usize,
        start_in: Duration,
    ) -> anyhow::Result<(Vec<ProductView>, Instant)> {
        if self.admin_token.is_none() {
            bail!("creating the sale needs the admin token: --admin-token or SECKILL_ADMIN_TOKEN");
        }
        let (offset, uncertainty) = self.clock_offset_ms().await?;
        let server_now_ms = unix_ms() + offset;
        // Whole seconds: the sale opens at the next second boundary after start_in.
        let starts_at = (server_now_ms + start_in.as_millis() as i64 + 999) / 1_000;
        let body = CreateProduct {
            name: name.to_string(),
            price_cents: 19_900,
            flash_price_cents: 990,
            stock,
            starts_at,
            ends_at: starts_at + 3_600,
        };
        let api = self.api()?;
        let mut products = Vec::with_capacity(count);
        for _ in 0..count.max(1) {
            products.push(match api.create_sale(&body).await {
                Ok(product) => product,
                Err(err @ seckill_client::Error::Api { .. }) => {
                    bail!("creating the sale was answered {err}: check --admin-token")
                }
                Err(err) => return Err(err.into()),
            });
        }
        // Late by the clock's uncertainty rather than early: a buyer who
        // fires before the sale opens on the server's clock is refused.
        let opens_in_ms = (starts_at * 1_000 - server_now_ms + uncertainty).max(0) as u64;
        Ok((
            products,
            Instant::now() + Duration::from_millis(opens_in_ms),
        ))
    }

    fn plan(&self, label: &str, total: usize, rate: Option<f64>, start_at: Instant) -> Plan {
        Plan {
            target: self.target.clone(),
            concurrency: self.concurrency,
            total,
            rate,
            start_at,
            progress: self.progress,
            label: label.to_string(),
        }
    }
}

fn buy_call(product: i64, tokens: Arc<Vec<String>>) -> Arc<dyn Fn(usize) -> Call + Send + Sync> {
    buy_calls(&[product], tokens)
}

/// Buy `i` goes to `products[i % products.len()]`, so every product gets
/// an equal share of the buyers, interleaved in time.
fn buy_calls(
    products: &[i64],
    tokens: Arc<Vec<String>>,
) -> Arc<dyn Fn(usize) -> Call + Send + Sync> {
    let paths: Vec<String> = products
        .iter()
        .map(|product| format!("/api/seckill/{product}/orders"))
        .collect();
    Arc::new(move |i| Call {
        method: Method::POST,
        path: paths[i % paths.len()].clone(),
        token: Some(tokens[i % tokens.len()].clone()),
        body: None,
    })
}

/// A load run's figures plus the members it got 202 for.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub scenario: &'static str,
    pub target: String,
    /// The product loaded (the first one of a rush over several).
    pub product_id: i64,
    /// Units the run's sale had (none when the tail loaded a product it was
    /// given).
    pub stock: Option<i64>,
    pub concurrency: usize,
    pub rate_limit: Option<f64>,
    pub summary: Summary,
    /// Members answered 202 for `product_id`.
    pub accepted_members: Vec<i64>,
    /// A rush over several products (`rush --products`): every product,
    /// `product_id` first, each with its members answered 202.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<ProductSold>,
}

/// One product of a rush over several, and the members answered 202 for it.
#[derive(Debug, Clone, Serialize)]
pub struct ProductSold {
    pub product_id: i64,
    pub accepted_members: Vec<i64>,
}

/// The sell-out rush: `members` members (one buy each) rush `stock` units
/// of each of `products` sales, all firing at the start time; member `i`
/// (from 1) buys product `(i - 1) % products`.
pub async fn rush(
    session: &Session,
    stock: i64,
    members: usize,
    products: usize,
    rate: Option<f64>,
) -> anyhow::Result<RunReport> {
    let (sales, start_at) = session
        .create_sales("bench rush", stock, products, Duration::from_secs(2))
        .await?;
    let ids: Vec<i64> = sales.iter().map(|sale| sale.product_id.get()).collect();
    let tokens = session.tokens(1, members);
    let outcome = load::run(
        session.plan("rush", members, rate, start_at),
        buy_calls(&ids, tokens),
    )
    .await;
    let mut sold: Vec<ProductSold> = ids
        .iter()
        .map(|&product_id| ProductSold {
            product_id,
            accepted_members: Vec::new(),
        })
        .collect();
    for (i, status) in outcome.statuses.iter().enumerate() {
        if *status == 202 {
            sold[i % ids.len()].accepted_members.push(i as i64 + 1);
        }
    }
    let accepted_members = sold[0].accepted_members.clone();
    Ok(RunReport {
        scenario: "rush",
        target: session.base.clone(),
        product_id: ids[0],
        // Per product: a rush over several sells this many of each.
        stock: Some(stock),
        concurrency: session.concurrency,
        rate_limit: rate,
        summary: outcome.recorder.summary(),
        accepted_members,
        products: if ids.len() > 1 { sold } else { Vec::new() },
    })
}

/// The sold-out tail: `requests` buyers, each once, for a sale that is
/// already sold out: `product` if given, else a one-unit sale created and
/// bought out here.
pub async fn tail(
    session: &Session,
    requests: usize,
    product: Option<i64>,
) -> anyhow::Result<RunReport> {
    let (product_id, stock, accepted_members) = match product {
        Some(product_id) => (product_id, None, Vec::new()),
        None => (sell_out_one_unit(session).await?, Some(1), vec![1]),
    };
    let tokens = session.tokens(3, requests);
    let outcome = load::run(
        session.plan("tail", requests, None, Instant::now()),
        buy_call(product_id, tokens),
    )
    .await;
    Ok(RunReport {
        scenario: "tail",
        target: session.base.clone(),
        product_id,
        stock,
        concurrency: session.concurrency,
        rate_limit: None,
        summary: outcome.recorder.summary(),
        accepted_members,
        products: Vec::new(),
    })
}

/// A one-unit sale, bought by member 1; member 2 is refused, so the target
/// has learnt the sell-out before the tail starts. Returns the product id.
async fn sell_out_one_unit(session: &Session) -> anyhow::Result<i64> {
    let (product, start_at) = session.create_sale("bench tail", 1, Duration::ZERO).await?;
    let product_id = product.product_id.get();
    tokio::time::sleep_until(start_at.into()).await;
    let first = session.tokens(1, 2);
    let api = session.api()?;
    let item = product.product_id;
    if let Err(err) = api
        .clone()
        .with_member_token(first[0].clone())
        .buy(item)
        .await
    {
        bail!("the one unit of the tail's sale could not be bought ({err})");
    }
    match api.with_member_token(first[1].clone()).buy(item).await {
        Ok(_) | Err(seckill_client::Error::Api { .. }) => {}
        Err(err) => return Err(err.into()),
    }
    Ok(product_id)
}

/// The mixed scenario's figures, by kind of request.
#[derive(Debug, Clone, Serialize)]
pub struct MixedReport {
    pub scenario: &'static str,
    pub target: String,
    pub product_id: i64,
    pub buys: Summary,
    pub result_polls: Summary,
    pub payments: Summary,
    pub accepted_members: Vec<i64>,
    pub paid: usize,
}

/// Members buy, poll their result until the order is written, and a share
/// of them pay.
pub async fn mixed(
    session: &Session,
    stock: i64,
    members: usize,
    pay_share: f64,
) -> anyhow::Result<MixedReport> {
    let (product, start_at) = session
        .create_sale("bench mixed", stock, Duration::from_secs(2))
        .await?;
    let product_id = product.product_id.get();
    let tokens = session.tokens(1, members);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..session.concurrency.max(1) {
        let (tokens, next, target) = (tokens.clone(), next.clone(), session.target.clone());
        workers.spawn(async move {
            let mut connection = Connection::new(target);
            let mut recorders = [
                Recorder::new(start_at),
                Recorder::new(start_at),
                Recorder::new(start_at),
            ];
            let mut accepted = Vec::new();
            let mut paid = 0;
            tokio::time::sleep_until(start_at.into()).await;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= tokens.len() {
                    break;
                }
                let token = tokens[i].as_str();
                let member = i as i64 + 1;
                let Some(status) = timed(
                    &mut connection,
                    &mut recorders[0],
                    Method::POST,
                    &format!("/api/seckill/{product_id}/orders"),
                    token,
                )
                .await
                else {
                    continue;
                };
                if status.0 != 202 {
                    continue;
                }
                accepted.push(member);
                let mut delay = Duration::from_millis(50);
                let order = loop {
                    let Some((_, body)) = timed(
                        &mut connection,
                        &mut recorders[1],
                        Method::GET,
                        &format!("/api/seckill/{product_id}/result"),
                        token,
                    )
                    .await
                    else {
                        break None;
                    };
                    match serde_json::from_slice::<ResultView>(&body) {
                        Ok(ResultView {
                            status: ResultStatus::Success,
                            order_id: Some(order),
                        }) => break Some(order),
                        Ok(ResultView {
                            status: ResultStatus::Queued,
                            ..
                        }) => {}
                        _ => break None,
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                };
                if let Some(order) = order {
                    if rand::rng().random_bool(pay_share.clamp(0.0, 1.0)) {
                        if let Some((200, _)) = timed(
                            &mut connection,
                            &mut recorders[2],
                            Method::POST,
                            &format!("/api/orders/{order}/pay"),
                            token,
                        )
                        .await
                        {
                            paid += 1;
                        }
                    }
                }
            }
            (recorders, accepted, paid)
        });
    }
    let mut totals = [
        Recorder::new(start_at),
        Recorder::new(start_at),
        Recorder::new(start_at),
    ];
    let (mut accepted_members, mut paid) = (Vec::new(), 0);
    while let Some(done) = workers.join_next().await {
        let (recorders, accepted, worker_paid) = done?;
        for (total, recorder) in totals.iter_mut().zip(&recorders) {
            total.merge(recorder);
        }
        accepted_members.extend(accepted);
        paid += worker_paid;
    }
    accepted_members.sort();
    Ok(MixedReport {
        scenario: "mixed",
        target: session.base.clone(),
        product_id,
        buys: totals[0].summary(),
        result_polls: totals[1].summary(),
        payments: totals[2].summary(),
        accepted_members,
        paid,
    })
}

/// Sends one request and records it; `None` when there was no answer.
async fn timed(
    connection: &mut Connection,
    recorder: &mut Recorder,
    method: Method,
    path: &str,
    token: &str,
) -> Option<(u16, Bytes)> {
    let sent = Instant::now();
    let answer = connection.send(method, path, Some(token), None).await;
    let latency = sent.elapsed();
    match answer {
        Ok(answer) => {
            recorder.record(answer.status.as_u16(), answer.served_by_edge, sent, latency);
            Some((answer.status.as_u16(), answer.body))
        }
        Err(_) => {
            recorder.record(0, false, sent, latency);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ClockSample;

    #[test]
    fn the_fastest_round_trip_sets_the_clock_offset() {
        // The server's clock equals ours. The first request waited 300 ms
        // before the server read its clock (a busy server), which alone
        // would make the server look 150 ms ahead.
        let slow = ClockSample {
            sent_ms: 1_000,
            server_ms: 1_300,
            received_ms: 1_302,
        };
        let fast = ClockSample {
            sent_ms: 2_000,
            server_ms: 2_001,
            received_ms: 2_002,
        };
        assert_eq!(slow.offset(), (149, 152));
        assert_eq!(ClockSample::best_offset(&[slow, fast]), (0, 2));
    }

    #[test]
    fn aiming_late_by_the_bound_never_fires_before_the_opening() {
        // Whatever the server did within the round trip, its true offset
        // (0 here) lies within offset ± bound, so waiting until
        // opening - (now + offset) + bound is never early.
        for server_ms in 1_000..=1_300 {
            let (offset, bound) = ClockSample {
                sent_ms: 1_000,
                server_ms,
                received_ms: 1_300,
            }
            .offset();
            assert!(offset - bound <= 0 && 0 <= offset + bound, "{server_ms}");
        }
    }
}
