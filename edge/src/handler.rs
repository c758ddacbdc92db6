//! What the edge does with each route: answer itself where it can decide
//! alone (always marked `x-served-by: edge`), forward the rest.

use std::cell::RefCell;

use futures_util::StreamExt;
use seckill_shared::api::{ErrorBody, ProductView, SoldOutSnapshot, TimeResponse, MAX_BODY_BYTES};
use seckill_shared::{ErrorCode, MemberId, ProductId};
use worker::{Context, Date, Env, Headers, Method, Request, Response, Result};

use crate::admission;
use crate::config::{EdgeConfig, MemberLimits};
use crate::decide::{self, Refusal};
use crate::gate::{self, Admission, Outcomes};
use crate::origin::{OriginClient, OriginDown};
use crate::route::{self, Route};
use crate::state::EdgeState;

/// The header that marks an answer the edge produced without the origin.
pub const SERVED_BY: &str = "x-served-by";

thread_local! {
    /// One isolate's memory, kept between requests.
    static STATE: RefCell<Option<EdgeState>> = const { RefCell::new(None) };
}

/// Runs `f` on the isolate's state (created on first use, when the
/// isolate also says how it limits members). Never held across an
/// `await`: requests interleave there.
pub(crate) fn with_state<T>(config: &EdgeConfig, f: impl FnOnce(&mut EdgeState) -> T) -> T {
    STATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        f(slot.get_or_insert_with(|| {
            let holder = (worker::js_sys::Math::random() * gate::ISOLATE_HOLDERS as f64) as u64;
            EdgeState::new(config, holder)
        }))
    })
}

/// Says once per isolate where buys are admitted and members limited.
fn announce(env: &Env, config: &EdgeConfig) {
    thread_local! {
        static ANNOUNCED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if ANNOUNCED.with(|done| done.replace(true)) {
        return;
    }
    let gate = admission::enabled(env, config);
    let gate_text = if gate {
        format!("admission gate on ({}x stock left)", config.gate_overbook)
    } else if config.gate_overbook > 0.0 {
        format!("admission gate off (no {} binding)", admission::BINDING)
    } else {
        "admission gate off (GATE_OVERBOOK=0)".to_string()
    };
    let limits = if gate && config.member_limits == MemberLimits::Gate {
        "member rate limits across isolates, through the admission gate"
    } else {
        "member rate limits per isolate only (the isolate's own limiter)"
    };
    worker::console_log!("seckill edge: {gate_text}; {limits}");
}

fn now_ms() -> u64 {
    Date::now().as_millis()
}

/// Reads a Worker variable or secret by name.
pub fn variable(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .map(|v| v.to_string())
        .or_else(|_| env.secret(name).map(|s| s.to_string()))
        .ok()
}

pub async fn handle(
    mut req: Request,
    env: &Env,
    ctx: &Context,
    config: &EdgeConfig,
) -> Result<Response> {
    announce(env, config);
    let request_id = request_id(&req)?;
    let mut response = answer(&mut req, env, ctx, config, &request_id).await?;
    // Every answer names its request, so a buyer's report can be traced
    // through the edge and the origin logs. The origin echoes the id itself
    // (and its answers arrive with headers that cannot be changed).
    if response.headers().get("x-request-id")?.is_none() {
        response.headers_mut().set("x-request-id", &request_id)?;
    }
    Ok(response)
}

async fn answer(
    req: &mut Request,
    env: &Env,
    ctx: &Context,
    config: &EdgeConfig,
    request_id: &str,
) -> Result<Response> {
    match route::route(&req.inner().method(), &req.path()) {
        Route::Buy(product) => buy(req, env, ctx, config, product, request_id).await,
        Route::Result(_) | Route::Order(_) => {
            let now_s = now_ms() / 1_000;
            match decide::member(config, authorization(req)?.as_deref(), now_s) {
                Ok(member) => forward(req, config, request_id, Some(member)).await,
                Err(refusal) => edge_error(&refusal),
            }
        }
        Route::Product(product) => product_read(config, product, request_id).await,
        Route::SoldOut => sold_out(config, &site(req)?, request_id).await,
        Route::Time => edge_json(&TimeResponse { now_ms: now_ms() }, 200),
        Route::Forward => forward(req, config, request_id, None).await,
        Route::Page(path) => page(req, &path),
        Route::BadId(id) => edge_error(&Refusal::with_message(
            ErrorCode::BadRequest,
            format!("{id:?} is not a valid id (a positive whole number)"),
        )),
        Route::WrongMethod { allow } => {
            let mut response = edge_error(&Refusal::new(ErrorCode::MethodNotAllowed))?;
            response.headers_mut().set("allow", allow)?;
            Ok(response)
        }
        Route::NotFound => edge_error(&Refusal::new(ErrorCode::NotFound)),
    }
}

/// The buy path: everything hopeless is answered here; only a verified,
/// rate-allowed member buying a product that is on sale, not known to be
/// sold out, and admitted by the product's gate reaches the origin. An
/// origin that cannot be reached means `503` (fail closed: the edge never
/// guesses a buy succeeded).
async fn buy(
    req: &mut Request,
    env: &Env,
    ctx: &Context,
    config: &EdgeConfig,
    product: ProductId,
    request_id: &str,
) -> Result<Response> {
    let now = now_ms();
    let member = match decide::member(config, authorization(req)?.as_deref(), now / 1_000) {
        Ok(member) => member,
        Err(refusal) => return edge_error(&refusal),
    };
    refresh_sold_out(config, &site(req)?, request_id).await;
    if with_state(config, |s| s.is_sold_out(product, now_ms())) {
        return edge_error(&Refusal::new(ErrorCode::SoldOut));
    }
    if !with_state(config, |s| s.allow(member, now_ms())) || !binding_allows(env, member).await {
        return edge_error(&Refusal::new(ErrorCode::RateLimited));
    }
    match product_copy(config, product, request_id).await {
        Ok(Some(view)) => {
            if let Some(refusal) = decide::outside_window(&view, (now_ms() / 1_000) as i64) {
                return edge_error(&refusal);
            }
        }
        Ok(None) => return edge_error(&Refusal::new(ErrorCode::UnknownProduct)),
        Err(_) => return edge_error(&Refusal::new(ErrorCode::Unavailable)),
    }

    let body = match request_body(req).await? {
        Ok(body) => body,
        Err(refusal) => return edge_error(&refusal),
    };
    let gated = admission::enabled(env, config);
    if gated {
        let admission = admission::admit(env, config, product, member).await;
        // Whatever the answer, the isolate's lease is reported and renewed
        // when it ends (this starts the settling task if none runs).
        ctx.wait_until(admission::settle(env.clone(), config.clone(), product));
        match admission {
            Admission::Admit => {}
            Admission::Busy => return sale_busy(),
            Admission::SoldOut => return edge_error(&Refusal::new(ErrorCode::SoldOut)),
            Admission::RateLimited => return edge_error(&Refusal::new(ErrorCode::RateLimited)),
            Admission::Unavailable => return edge_error(&Refusal::new(ErrorCode::Unavailable)),
        }
    }
    // An admitted buy's outcome goes back to the gate after the answer.
    let report = |outcome: Outcomes| {
        if gated {
            ctx.wait_until(admission::report(
                env.clone(),
                config.clone(),
                product,
                outcome,
            ));
        }
    };
    let forwarded = forward_raw(req, config, request_id, Some(member), body).await;
    if let Err(down) = &forwarded {
        worker::console_warn!("buy {request_id}: the origin failed: {down:?}");
    }
    let mut answer = match forwarded {
        Ok(answer) => answer,
        // The buy went out and may have been carried out (no answer in
        // time, or the connection broke after sending): say so, so the
        // buyer asks for the result instead of buying again.
        Err(down) if down.may_have_happened() => {
            report(Outcomes::of(None, false));
            return edge_error(&Refusal::new(ErrorCode::OutcomeUnknown));
        }
        Err(_) => {
            report(Outcomes {
                refused: 1,
                ..Outcomes::default()
            });
            return edge_error(&Refusal::new(ErrorCode::Unavailable));
        }
    };
    let status = answer.status_code();
    if status != 409 {
        report(Outcomes::of(Some(status), false));
        return Ok(answer);
    }
    // Learn from the origin's refusal: a sold-out answer raises the flag.
    // The body was read to learn it, so the answer is rebuilt with the
    // origin's own headers.
    let text = answer.text().await?;
    let sold_out =
        serde_json::from_str::<ErrorBody>(&text).is_ok_and(|body| body.error == ErrorCode::SoldOut);
    if sold_out {
        with_state(config, |s| s.learn_sold_out(product, now_ms()));
    }
    report(Outcomes::of(Some(status), sold_out));
    let headers = Headers::new();
    for (name, value) in answer.headers().entries() {
        headers.set(&name, &value)?;
    }
    Ok(Response::ok(text)?
        .with_status(status)
        .with_headers(headers))
}

/// The Workers rate-limiting binding, where one is configured as
/// `RATE_LIMITER`; without it the isolate's own limiter is the only one.
async fn binding_allows(env: &Env, member: MemberId) -> bool {
    match env.rate_limiter("RATE_LIMITER") {
        Ok(limiter) => limiter
            .limit(member.to_string())
            .await
            .map(|outcome| outcome.success)
            .unwrap_or(true),
        Err(_) => true,
    }
}

/// Keeps the sold-out flags current, sharing one snapshot per location.
///
/// Each isolate looks every half `SOLDOUT_REFRESH_MS`; it takes the copy
/// another isolate of its location put in the Workers Cache while that copy
/// is younger than `SOLDOUT_REFRESH_MS`, and otherwise fetches it from the
/// origin itself — unless another isolate has claimed that fetch (a claim
/// in the cache, good for one origin timeout). So the origin is asked about
/// once per refresh interval per location, whatever the number of isolates,
/// and a flag reflects the origin at most one interval and a half late.
/// A failure leaves the flags as they are (they expire by themselves).
async fn refresh_sold_out(config: &EdgeConfig, site: &str, request_id: &str) {
    let refresh_ms = config.sold_out_refresh.as_millis() as u64;
    let looked_ms = now_ms();
    let due = with_state(config, |s| {
        let due = s.sold_out_snapshot_due(looked_ms, (refresh_ms / 2).max(1));
        if due {
            s.sold_out_snapshot_started(looked_ms);
        }
        due
    });
    if !due {
        return;
    }
    let cache = worker::Cache::default();
    let key = format!("{site}/__seckill/soldout-snapshot");
    if let Some((snapshot, fetched_ms)) = cached_snapshot(&cache, &key).await {
        if now_ms().saturating_sub(fetched_ms) < refresh_ms {
            with_state(config, |s| {
                s.apply_sold_out_snapshot(&snapshot, fetched_ms, now_ms())
            });
            return;
        }
    }
    let claim = format!("{key}-claim");
    let timeout_ms = config.origin_timeout.as_millis() as u64;
    if let Ok(Some(held)) = cache.get(&claim, false).await {
        if stamp(&held, "x-claimed-ms").is_some_and(|at| now_ms().saturating_sub(at) < timeout_ms) {
            return;
        }
    }
    let _ = cache
        .put(&claim, stamped("", "x-claimed-ms", now_ms()))
        .await;
    let asked_ms = now_ms();
    let Ok(headers) = origin_headers(request_id, None) else {
        return;
    };
    let client = OriginClient {
        base: &config.origin_url,
        timeout: config.origin_timeout,
    };
    if let Ok(mut response) = client.get("/api/soldout", headers).await {
        if let Ok(snapshot) = response.json::<SoldOutSnapshot>().await {
            with_state(config, |s| {
                s.apply_sold_out_snapshot(&snapshot, asked_ms, now_ms())
            });
            if let Ok(body) = serde_json::to_string(&snapshot) {
                let _ = cache
                    .put(&key, stamped(&body, "x-fetched-ms", asked_ms))
                    .await;
            }
        }
    }
    let _ = cache.delete(&claim, false).await;
}

/// The location's shared snapshot and when it was asked of the origin.
async fn cached_snapshot(cache: &worker::Cache, key: &str) -> Option<(SoldOutSnapshot, u64)> {
    let mut copy = cache.get(key, false).await.ok()??;
    let fetched_ms = stamp(&copy, "x-fetched-ms")?;
    let snapshot = copy.json::<SoldOutSnapshot>().await.ok()?;
    Some((snapshot, fetched_ms))
}

/// A cache entry carrying a time in milliseconds; the cache may keep it a
/// few seconds, the readers judge its age by the stamp.
fn stamped(body: &str, header: &str, at_ms: u64) -> Response {
    let headers = Headers::new();
    let _ = headers.set("cache-control", "max-age=10");
    let _ = headers.set("content-type", "application/json");
    let _ = headers.set(header, &at_ms.to_string());
    Response::ok(body)
        .map(|response| response.with_headers(headers))
        .unwrap_or_else(|_| Response::empty().expect("an empty response"))
}

fn stamp(response: &Response, header: &str) -> Option<u64> {
    response.headers().get(header).ok()??.parse().ok()
}

/// The scheme and host the request came to: the cache's keys live there.
fn site(req: &Request) -> Result<String> {
    Ok(req.url()?.origin().ascii_serialization())
}

/// The product as the edge knows it: a copy younger than
/// `PRODUCT_TTL_MS`, else a fresh read from the origin (`Ok(None)`: no
/// such product).
async fn product_copy(
    config: &EdgeConfig,
    product: ProductId,
    request_id: &str,
) -> std::result::Result<Option<ProductView>, OriginDown> {
    let ttl = config.product_ttl.as_millis() as u64;
    if let Some(copy) = with_state(config, |s| s.product(product, now_ms(), ttl)) {
        return Ok(copy);
    }
    // One read at a time per product: while it is out, buyers use the
    // copy they have (younger than PRODUCT_STALE_MS), so a crowd does not
    // turn into as many product reads at the origin.
    let stale = config.product_stale.as_millis() as u64;
    let timeout = config.origin_timeout.as_millis() as u64;
    let (copy, mine) = with_state(config, |s| {
        let copy = s.product(product, now_ms(), stale);
        (copy, s.start_product_read(product, now_ms(), timeout))
    });
    match (copy, mine) {
        (Some(copy), false) => Ok(copy),
        (copy, _) => {
            let read = fetch_product(config, product, request_id).await;
            with_state(config, |s| s.finish_product_read(product));
            match (read, copy) {
                (Ok((view, _)), _) => Ok(view),
                // The origin did not answer the read: the copy still says
                // whether the sale is on (the buy itself will tell more).
                (Err(_), Some(copy)) => Ok(copy),
                (Err(down), None) => Err(down),
            }
        }
    }
}

/// Reads a product from the origin and remembers the answer. Returns the
/// view and the origin's status, or `OriginDown` when there was no usable
/// answer.
async fn fetch_product(
    config: &EdgeConfig,
    product: ProductId,
    request_id: &str,
) -> std::result::Result<(Option<ProductView>, u16), OriginDown> {
    let client = OriginClient {
        base: &config.origin_url,
        timeout: config.origin_timeout,
    };
    let headers =
        origin_headers(request_id, None).map_err(|e| OriginDown::Unreachable(e.to_string()))?;
    let mut response = client
        .get(&format!("/api/products/{product}"), headers)
        .await?;
    match response.status_code() {
        200 => {
            let view: ProductView = response
                .json()
                .await
                .map_err(|e| OriginDown::Unreachable(e.to_string()))?;
            with_state(config, |s| {
                s.remember_product(product, Some(view.clone()), now_ms())
            });
            Ok((Some(view), 200))
        }
        404 => {
            with_state(config, |s| s.remember_product(product, None, now_ms()));
            Ok((None, 404))
        }
        status => Err(OriginDown::Unreachable(format!("origin answered {status}"))),
    }
}

/// `GET /api/products/{id}`: a copy younger than `PRODUCT_TTL_MS` is served
/// by the edge; otherwise the origin is asked; if it cannot be reached, a
/// copy younger than `PRODUCT_STALE_MS` is served rather than an error.
async fn product_read(
    config: &EdgeConfig,
    product: ProductId,
    request_id: &str,
) -> Result<Response> {
    let ttl = config.product_ttl.as_millis() as u64;
    if let Some(copy) = with_state(config, |s| s.product(product, now_ms(), ttl)) {
        return product_answer(copy, true);
    }
    match fetch_product(config, product, request_id).await {
        Ok((view, _)) => product_answer(view, false),
        Err(_) => {
            let stale = config.product_stale.as_millis() as u64;
            match with_state(config, |s| s.product(product, now_ms(), stale)) {
                Some(copy) => product_answer(copy, true),
                None => edge_error(&Refusal::new(ErrorCode::Unavailable)),
            }
        }
    }
}

fn product_answer(view: Option<ProductView>, from_edge: bool) -> Result<Response> {
    match (view, from_edge) {
        (Some(view), true) => edge_json(&view, 200),
        (Some(view), false) => Response::from_json(&view),
        (None, true) => edge_error(&Refusal::new(ErrorCode::UnknownProduct)),
        (None, false) => {
            let body = ErrorBody {
                error: ErrorCode::UnknownProduct,
                message: ErrorCode::UnknownProduct.default_message().into(),
            };
            Ok(Response::from_json(&body)?.with_status(404))
        }
    }
}

/// `GET /api/soldout`, from the edge's own snapshot once it has one.
async fn sold_out(config: &EdgeConfig, site: &str, request_id: &str) -> Result<Response> {
    refresh_sold_out(config, site, request_id).await;
    let snapshot = with_state(config, |s| s.sold_out_snapshot(now_ms()));
    let mut response = edge_json(&snapshot, 200)?;
    response
        .headers_mut()
        .set("cache-control", seckill_shared::api::SOLDOUT_CACHE_CONTROL)?;
    Ok(response)
}

/// Sends the request on to the origin, as it came, plus the request id and
/// the member the edge verified. The origin verifies the token again and
/// never trusts `x-seckill-member`: it is for its logs.
async fn forward(
    req: &mut Request,
    config: &EdgeConfig,
    request_id: &str,
    member: Option<MemberId>,
) -> Result<Response> {
    let body = match request_body(req).await? {
        Ok(body) => body,
        Err(refusal) => return edge_error(&refusal),
    };
    match forward_raw(req, config, request_id, member, body).await {
        Ok(response) => Ok(response),
        Err(_) => edge_error(&Refusal::new(ErrorCode::Unavailable)),
    }
}

/// The request's body, read up to the contract's limit: a body over
/// `MAX_BODY_BYTES` is refused `413` as the origin would, without being
/// buffered whole (a declared length is checked before anything is read).
async fn request_body(req: &mut Request) -> Result<std::result::Result<Option<Vec<u8>>, Refusal>> {
    if matches!(req.method(), Method::Get | Method::Head) {
        return Ok(Ok(None));
    }
    let too_large = || {
        Refusal::with_message(
            ErrorCode::PayloadTooLarge,
            format!("the request body is over {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = req.headers().get("content-length")?;
    if declared
        .and_then(|length| length.trim().parse::<u64>().ok())
        .is_some_and(|length| length > MAX_BODY_BYTES as u64)
    {
        return Ok(Err(too_large()));
    }
    let mut body = Vec::new();
    // A request without a body has no stream to read.
    let Ok(mut stream) = req.stream() else {
        return Ok(Ok(Some(body)));
    };
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk?);
        if body.len() > MAX_BODY_BYTES {
            return Ok(Err(too_large()));
        }
    }
    Ok(Ok(Some(body)))
}

async fn forward_raw(
    req: &mut Request,
    config: &EdgeConfig,
    request_id: &str,
    member: Option<MemberId>,
    body: Option<Vec<u8>>,
) -> std::result::Result<Response, OriginDown> {
    let fail = |e: worker::Error| OriginDown::Unreachable(e.to_string());
    let headers = origin_headers(request_id, member).map_err(fail)?;
    for name in ["authorization", "content-type", "accept"] {
        if let Some(value) = req.headers().get(name).map_err(fail)? {
            headers.set(name, &value).map_err(fail)?;
        }
    }
    let method = req.method();
    let url = req.url().map_err(fail)?;
    let path_and_query = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    };
    OriginClient {
        base: &config.origin_url,
        timeout: config.origin_timeout,
    }
    .send(method, &path_and_query, headers, body)
    .await
}

fn origin_headers(request_id: &str, member: Option<MemberId>) -> Result<Headers> {
    let headers = Headers::new();
    headers.set("x-request-id", request_id)?;
    if let Some(member) = member {
        headers.set("x-seckill-member", &member.to_string())?;
    }
    Ok(headers)
}

fn authorization(req: &Request) -> Result<Option<String>> {
    req.headers().get("authorization")
}

/// The request's own id if it has one, else a new one.
fn request_id(req: &Request) -> Result<String> {
    if let Some(id) = req.headers().get("x-request-id")? {
        if !id.is_empty() && id.len() <= 128 {
            return Ok(id);
        }
    }
    let random = (worker::js_sys::Math::random() * 4_294_967_296.0) as u64;
    Ok(format!("edge-{:x}-{random:08x}", now_ms()))
}

/// A storefront file from the bundle (304 when the browser's copy is current).
fn page(req: &Request, path: &str) -> Result<Response> {
    let Some(asset) = seckill_shared::assets::lookup(path) else {
        return edge_error(&Refusal::new(ErrorCode::NotFound));
    };
    let headers = Headers::new();
    headers.set("cache-control", seckill_shared::assets::CACHE_CONTROL)?;
    headers.set("etag", &asset.etag_header())?;
    headers.set(SERVED_BY, "edge")?;
    if req
        .headers()
        .get("if-none-match")?
        .is_some_and(|value| asset.matches(&value))
    {
        return Ok(Response::empty()?.with_status(304).with_headers(headers));
    }
    headers.set("content-type", asset.content_type)?;
    Ok(Response::from_bytes(asset.body.to_vec())?.with_headers(headers))
}

fn edge_json<T: serde::Serialize>(body: &T, status: u16) -> Result<Response> {
    let mut response = Response::from_json(body)?.with_status(status);
    response.headers_mut().set(SERVED_BY, "edge")?;
    Ok(response)
}

/// `503 sale_busy`: the gate's budget is held by buys the origin has not
/// answered yet; nothing was reserved, and `Retry-After` says when to try.
fn sale_busy() -> Result<Response> {
    let mut response = edge_error(&Refusal::new(ErrorCode::SaleBusy))?;
    response
        .headers_mut()
        .set("retry-after", &gate::RETRY_AFTER_S.to_string())?;
    Ok(response)
}

/// The contract's error answer, given by the edge.
pub fn edge_error(refusal: &Refusal) -> Result<Response> {
    edge_json(
        &ErrorBody {
            error: refusal.code,
            message: refusal.message.clone(),
        },
        refusal.code.status(),
    )
}
