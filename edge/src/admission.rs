//! The admission gate's Workers glue: the Durable Object that keeps one
//! product's [`GateBook`], and the isolate's side that queues buyers and
//! reports outcomes to it (the arithmetic is in `gate`).
//!
//! One object per product (named `product-<id>`), reached through the
//! `ADMISSION_GATE` binding. Its book lives in memory: an object that is
//! evicted or restarted forgets which admissions are unresolved and reads
//! the stock afresh, so it may admit one budget more once; the origin's
//! Redis script stays the authority on every unit.

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
use crate::gate::{Admission, Arrival, Batch, GateBook, Outcomes, SyncAnswer, SyncRequest};
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
    let stub = env
        .durable_object(BINDING)?
        .id_from_name(&format!("product-{}", request.product))?
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

/// One product's admission gate.
#[durable_object(fetch)]
pub struct AdmissionGate {
    env: Env,
    book: RefCell<Option<GateBook>>,
    reading: Cell<bool>,
}

impl worker::DurableObject for AdmissionGate {
    fn new(_state: State, env: Env) -> Self {
        Self {
            env,
            book: RefCell::new(None),
            reading: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let config = EdgeConfig::from_vars(|name| variable(&self.env, name))
            .map_err(worker::Error::RustError)?;
        let request: SyncRequest = req.json().await?;
        if self.book.borrow().is_none() {
            *self.book.borrow_mut() = Some(GateBook::new(config.gate_settings()));
        }
        let blocked = self.with_book(|book| book.take_report(&request, now_ms()));
        self.read_stock(&config, request.product).await;
        let answer = self.with_book(|book| book.answer(&request, now_ms(), blocked));
        Response::from_json(&answer)
    }
}

impl AdmissionGate {
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
