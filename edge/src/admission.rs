//! The admission gate's Workers glue: the Durable Object that keeps one
//! product's [`GateBook`] (or, sharded, a [`ShardBook`] leasing from it),
//! and the isolate's side that holds a lease, queues buyers, and reports
//! outcomes and renews the lease once per lease (the arithmetic is in
//! `gate`).
//!
//! One object per product (named `product-<id>`), plus `GATE_SHARDS`
//! shards (`product-<id>-shard-<k>`) when there is more than one, reached
//! through the `ADMISSION_GATE` binding. Books live in memory: an object
//! that is evicted or restarted forgets which admissions are unresolved and
//! reads the stock afresh, so it may admit one budget more once; the
//! origin's Redis script stays the authority on every unit.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use futures_util::future::{select, Either};
use seckill_shared::api::ProductView;
use seckill_shared::{MemberId, ProductId};
use worker::{
    durable_object, Date, Delay, Env, Headers, Method, Request, RequestInit, Response, Result,
    State,
};

use crate::config::EdgeConfig;
use crate::gate::{
    Admission, Arrival, Batch, GateBook, Outcomes, ShardBook, SyncAnswer, SyncRequest,
    ISOLATE_HOLDERS,
};
use crate::handler::{variable, with_state};
use crate::origin::OriginClient;

/// The Durable Object binding in `wrangler.toml`.
pub const BINDING: &str = "ADMISSION_GATE";

/// How often a waiting buyer looks whether its admission has arrived.
const POLL: Duration = Duration::from_millis(10);

fn now_ms() -> u64 {
    Date::now().as_millis()
}

/// Waits for `future` at most `limit`.
async fn within<T>(limit: Duration, future: impl std::future::Future<Output = T>) -> Option<T> {
    let future = std::pin::pin!(future);
    let timer = std::pin::pin!(Delay::from(limit));
    match select(future, timer).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}

/// True when buys go through the gate: it is switched on and bound.
pub fn enabled(env: &Env, config: &EdgeConfig) -> bool {
    config.gate_overbook > 0.0 && env.durable_object(BINDING).is_ok()
}

/// This buyer's admission: at once from the isolate's lease when it can,
/// otherwise it joins the isolate's queue for the product, and whichever
/// waiting request finds no call in flight makes the next one for
/// everybody queued.
pub async fn admit(
    env: &Env,
    config: &EdgeConfig,
    product: ProductId,
    member: MemberId,
) -> Admission {
    let ticket = match with_state(config, |s| s.gate(product).arrive(member, now_ms())) {
        Arrival::Decided(admission) => return admission,
        Arrival::Waiting(ticket) => ticket,
    };
    let started = now_ms();
    let stale_ms = stale_ms(config);
    loop {
        if let Some(admission) = with_state(config, |s| s.gate(product).take(ticket)) {
            return admission;
        }
        if let Some(batch) = start(config, product) {
            call(env, config, product, batch).await;
            continue;
        }
        if now_ms().saturating_sub(started) > stale_ms {
            return with_state(config, |s| s.gate(product).abandon(ticket))
                .unwrap_or(Admission::Busy);
        }
        Delay::from(POLL).await;
    }
}

/// How long a call may be out before another request takes over.
fn stale_ms(config: &EdgeConfig) -> u64 {
    config.origin_timeout.as_millis() as u64 + 1_000
}

fn start(config: &EdgeConfig, product: ProductId) -> Option<Batch> {
    let stale_ms = stale_ms(config);
    with_state(config, |s| {
        let holder = s.holder();
        s.gate(product).start(holder, product, now_ms(), stale_ms)
    })
}

/// Records an admitted buy's outcome; it goes to the object with the next
/// call (at the latest when the lease ends).
pub async fn report(env: Env, config: EdgeConfig, product: ProductId, outcome: Outcomes) {
    with_state(&config, |s| s.gate(product).record(outcome));
    settle(env, config, product).await;
}

/// The isolate's one task per product that, each time the lease ends,
/// returns what is unspent, reports outcomes and renews the lease while
/// buyers keep coming (run under `wait_until`; it ends when there is
/// nothing left to tell, and the next buyer starts another).
pub async fn settle(env: Env, config: EdgeConfig, product: ProductId) {
    if !with_state(&config, |s| s.gate(product).claim_settler()) {
        return;
    }
    while let Some(due_ms) = with_state(&config, |s| s.gate(product).settle_due(now_ms())) {
        let wait_ms = due_ms.saturating_sub(now_ms()).max(1);
        Delay::from(Duration::from_millis(wait_ms)).await;
        if let Some(batch) = start(&config, product) {
            call(&env, &config, product, batch).await;
        }
    }
}

/// One call to the product's object; its answer (or failure) decides the
/// batch's buyers and sets the next lease.
async fn call(env: &Env, config: &EdgeConfig, product: ProductId, batch: Batch) {
    let request = &batch.request;
    let answer = match within(config.origin_timeout, send(env, request)).await {
        Some(Ok(answer)) if answer.admissions.len() == request.members.len() => Some(answer),
        Some(Ok(_)) => {
            worker::console_error!("admission gate for {product}: answer of the wrong length");
            None
        }
        Some(Err(err)) => {
            worker::console_error!("admission gate for {product}: {err}");
            None
        }
        None => {
            worker::console_error!("admission gate for {product}: no answer in time");
            None
        }
    };
    with_state(config, |s| {
        s.gate(product).finish(batch, answer.as_ref(), now_ms())
    });
}

async fn send(env: &Env, request: &SyncRequest) -> Result<SyncAnswer> {
    let name = match request.shard {
        None => format!("product-{}", request.product),
        Some(shard) => format!("product-{}-shard-{shard}", request.product),
    };
    let stub = env
        .durable_object(BINDING)?
        .id_from_name(&name)?
        .get_stub()?;
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(serde_json::to_string(request)?.into()));
    let call = Request::new_with_init("https://admission-gate/sync", &init)?;
    let mut answer = stub.fetch_with_request(call).await?;
    if answer.status_code() != 200 {
        return Err(worker::Error::RustError(format!(
            "the gate answered {}: {}",
            answer.status_code(),
            answer.text().await.unwrap_or_default()
        )));
    }
    answer.json().await
}

/// One product's admission gate: the product's root object (it reads the
/// stock and keeps the book), or with `GATE_SHARDS` > 1 one of its shards
/// (it leases from the root and serves the isolates that pick it).
#[durable_object(alarm)]
pub struct AdmissionGate {
    state: State,
    env: Env,
    book: RefCell<Option<GateBook>>,
    shard_book: RefCell<Option<ShardBook>>,
    reading: Cell<bool>,
    /// A shard's call to the root is out.
    syncing: Cell<bool>,
    /// The shard this object is, once a call said so.
    shard: Cell<Option<(u32, ProductId)>>,
    /// A shard's alarm is set (kept here: no storage call per request).
    alarm_set: Cell<bool>,
}

impl worker::DurableObject for AdmissionGate {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            book: RefCell::new(None),
            shard_book: RefCell::new(None),
            reading: Cell::new(false),
            syncing: Cell::new(false),
            shard: Cell::new(None),
            alarm_set: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let config = EdgeConfig::from_vars(|name| variable(&self.env, name))
            .map_err(worker::Error::RustError)?;
        let request: SyncRequest = req.json().await?;
        if let Some(shard) = request.shard {
            return Response::from_json(&self.serve_as_shard(&config, shard, &request).await);
        }
        if self.book.borrow().is_none() {
            *self.book.borrow_mut() = Some(GateBook::new(config.gate_settings()));
        }
        let blocked = self.with_book(|book| book.take_report(&request, now_ms()));
        self.read_stock(&config, request.product).await;
        let answer = self.with_book(|book| book.answer(&request, now_ms(), blocked));
        Response::from_json(&answer)
    }

    /// A shard whose isolates went quiet still owes the root their
    /// outcomes and returns: it reports them when its lease ends.
    async fn alarm(&self) -> Result<Response> {
        let config = EdgeConfig::from_vars(|name| variable(&self.env, name))
            .map_err(worker::Error::RustError)?;
        self.alarm_set.set(false);
        if let Some((shard, product)) = self.shard.get() {
            if !self.syncing.get() && self.with_shard(|book| book.owes_root()) {
                self.sync_with_root(&config, shard, product, Vec::new())
                    .await;
            }
            self.schedule_report().await;
        }
        Response::empty()
    }
}

impl AdmissionGate {
    fn with_shard<T>(&self, f: impl FnOnce(&mut ShardBook) -> T) -> T {
        f(self
            .shard_book
            .borrow_mut()
            .as_mut()
            .expect("the shard's book exists"))
    }

    /// An isolate's call to this shard: like the root's, except that the
    /// supply comes from the root, asked when the shard's lease is over or
    /// spent (carrying the waiting buyers, which the root decides).
    async fn serve_as_shard(
        &self,
        config: &EdgeConfig,
        shard: u32,
        request: &SyncRequest,
    ) -> SyncAnswer {
        if self.shard_book.borrow().is_none() {
            let incarnation = (worker::js_sys::Math::random() * ISOLATE_HOLDERS as f64) as u64;
            *self.shard_book.borrow_mut() =
                Some(ShardBook::new(config.gate_settings(), incarnation));
        }
        self.shard.set(Some((shard, request.product)));
        let blocked = self.with_shard(|book| book.take_report(request, now_ms()));
        // While another call is out to the root, wait for its answer, then
        // see again whether this one must ask the root itself (the supply
        // it brought may not cover these buyers).
        let mut decided = None;
        let started = now_ms();
        loop {
            if !self.syncing.get() {
                if self.with_shard(|book| book.root_due(request, now_ms())) {
                    decided = self
                        .sync_with_root(config, shard, request.product, request.members.clone())
                        .await;
                }
                break;
            }
            if now_ms().saturating_sub(started) >= config.origin_timeout.as_millis() as u64 {
                break;
            }
            Delay::from(Duration::from_millis(5)).await;
        }
        let answer =
            self.with_shard(|book| book.answer(request, now_ms(), blocked, decided.as_deref()));
        self.schedule_report().await;
        answer
    }

    /// One call to the root; returns its admissions for `members`.
    async fn sync_with_root(
        &self,
        config: &EdgeConfig,
        shard: u32,
        product: ProductId,
        members: Vec<MemberId>,
    ) -> Option<Vec<Admission>> {
        self.syncing.set(true);
        let sent_ms = now_ms();
        let up = self.with_shard(|book| book.root_request(shard, product, sent_ms, members));
        let answer = match within(config.origin_timeout, send(&self.env, &up)).await {
            Some(Ok(answer)) if answer.admissions.len() == up.members.len() => Some(answer),
            Some(Ok(_)) => None,
            Some(Err(err)) => {
                worker::console_error!("admission gate shard {shard} of {product}: {err}");
                None
            }
            None => {
                worker::console_error!(
                    "admission gate shard {shard} of {product}: no answer in time"
                );
                None
            }
        };
        self.syncing.set(false);
        let decided = answer.as_ref().map(|answer| answer.admissions.clone());
        self.with_shard(|book| book.apply_root(up, answer.as_ref(), sent_ms, now_ms()));
        decided
    }

    /// Wakes the shard when its lease ends while it owes the root.
    async fn schedule_report(&self) {
        let Some(due_ms) = self
            .shard_book
            .borrow()
            .as_ref()
            .and_then(|book| book.owes_root().then(|| book.supply_until_ms()))
        else {
            return;
        };
        if self.alarm_set.replace(true) {
            return;
        }
        let offset_ms = due_ms.saturating_sub(now_ms()).max(1);
        if let Err(err) = self.state.storage().set_alarm(offset_ms as i64).await {
            self.alarm_set.set(false);
            worker::console_error!("admission gate shard: alarm: {err}");
        }
    }

    fn with_book<T>(&self, f: impl FnOnce(&mut GateBook) -> T) -> T {
        f(self.book.borrow_mut().as_mut().expect("the book exists"))
    }

    /// Reads `stock_left` from the origin when the book wants it. Other
    /// calls go on with the book as it is while a read is out, except the
    /// first ones, which wait for it.
    async fn read_stock(&self, config: &EdgeConfig, product: ProductId) {
        if !self.reading.get() && self.with_book(|book| book.read_due(now_ms())) {
            self.reading.set(true);
            let sent = self.with_book(|book| book.read_sent(now_ms()));
            let stock = self.fetch_stock(config, product).await;
            self.reading.set(false);
            match stock {
                Ok(stock_left) => {
                    // The object's load, where an operator (or a test) can
                    // read it: calls answered so far.
                    let calls = self.with_book(|book| {
                        book.apply_read(stock_left, sent);
                        book.calls()
                    });
                    worker::console_log!(
                        "admission gate for {product}: stock left {stock_left}, {calls} calls answered"
                    );
                }
                Err(err) => {
                    worker::console_error!("admission gate for {product}: stock read: {err}")
                }
            }
            return;
        }
        let started = now_ms();
        while self.reading.get()
            && !self.with_book(|book| book.has_reading())
            && now_ms().saturating_sub(started) < config.origin_timeout.as_millis() as u64
        {
            Delay::from(Duration::from_millis(5)).await;
        }
    }

    async fn fetch_stock(
        &self,
        config: &EdgeConfig,
        product: ProductId,
    ) -> std::result::Result<i64, String> {
        let headers = Headers::new();
        headers
            .set("x-request-id", &format!("gate-{product}-{}", now_ms()))
            .map_err(|e| e.to_string())?;
        let mut answer = OriginClient {
            base: &config.origin_url,
            timeout: config.origin_timeout,
        }
        .get(&format!("/api/products/{product}"), headers)
        .await
        .map_err(|down| format!("{down:?}"))?;
        match answer.status_code() {
            200 => answer
                .json::<ProductView>()
                .await
                .map(|view| view.stock_left)
                .map_err(|e| e.to_string()),
            // No such product: nothing to admit.
            404 => Ok(0),
            status => Err(format!("the origin answered {status}")),
        }
    }
}
