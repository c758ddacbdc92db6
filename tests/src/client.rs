//! An HTTP client speaking the contract, with member tokens minted from the
//! shared secret (as a load generator or a login service would). Typed
//! calls go through `seckill-client`, the client users embed; `send` and
//! the `Reply` helpers are for tests that look at raw statuses, headers and
//! malformed input.

use std::time::Duration;

use reqwest::Method;
use seckill_client::Client;
use seckill_shared::api::{CreateProduct, ProductView, ResultView};
use seckill_shared::token::{self, TokenSecret};
use seckill_shared::{MemberId, ProductId};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// The contract's error code, if this is an error answer.
    pub fn error(&self) -> Option<&str> {
        self.body.get("error").and_then(Value::as_str)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A flash sale to create through `POST /admin/products`.
#[derive(Debug, Clone)]
pub struct Sale {
    pub name: String,
    pub price_cents: i64,
    pub flash_price_cents: i64,
    pub stock: i64,
    pub starts_at: i64,
    pub ends_at: i64,
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

impl Sale {
    /// On sale now, for an hour.
    pub fn open(stock: i64) -> Self {
        let now = unix_now();
        Self::window(stock, now - 60, now + 3_600)
    }

    pub fn window(stock: i64, starts_at: i64, ends_at: i64) -> Self {
        Self {
            name: format!("Flash item {}", crate::unique_suffix()),
            price_cents: 19_900,
            flash_price_cents: 990,
            stock,
            starts_at,
            ends_at,
        }
    }

    /// The body `POST /admin/products` takes.
    pub fn create(&self) -> CreateProduct {
        CreateProduct {
            name: self.name.clone(),
            price_cents: self.price_cents,
            flash_price_cents: self.flash_price_cents,
            stock: self.stock,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
        }
    }

    pub fn body(&self) -> Value {
        json!({
            "name": self.name,
            "price_cents": self.price_cents,
            "flash_price_cents": self.flash_price_cents,
            "stock": self.stock,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    client: Client,
}

impl Api {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build()
            .expect("http client");
        let client = Client::with_http(base, http.clone()).expect("an http:// base URL");
        Self {
            base: base.trim_end_matches('/').to_string(),
            http,
            client,
        }
    }

    /// The typed client, as nobody in particular.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The typed client as the test operator.
    pub fn admin(&self) -> Client {
        self.client.clone().with_admin_token(crate::ADMIN_TOKEN)
    }

    /// The typed client as `member`, with a token good for an hour.
    pub fn member(&self, member: i64) -> Client {
        self.client.clone().with_member_token(Self::token(member))
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A valid token for `member`, good for an hour.
    pub fn token(member: i64) -> String {
        Self::token_expiring(member, super::client::unix_now() + 3_600)
    }

    pub fn token_expiring(member: i64, expires_at: i64) -> String {
        let secret = TokenSecret::new(crate::TOKEN_SECRET).unwrap();
        token::sign(&secret, MemberId::new(member).unwrap(), expires_at as u64)
    }

    /// Any request; `bearer` goes in `Authorization`, `body` is sent as JSON.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("request to {path} failed: {e}"));
        Self::reply(response).await
    }

    /// A request built by the caller (raw bodies, odd headers).
    pub async fn send_raw(&self, request: reqwest::RequestBuilder) -> Reply {
        Self::reply(request.send().await.expect("request failed")).await
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn reply(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            body,
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, None).await
    }

    pub async fn create_sale(&self, sale: &Sale) -> ProductView {
        self.admin()
            .create_sale(&sale.create())
            .await
            .unwrap_or_else(|err| panic!("create sale: {err}"))
    }

    pub async fn product(&self, product: i64) -> ProductView {
        self.client
            .product(pid_of(product))
            .await
            .unwrap_or_else(|err| panic!("product {product}: {err}"))
    }

    pub async fn buy(&self, product: i64, member: i64) -> Reply {
        let token = Self::token(member);
        self.send(
            Method::POST,
            &format!("/api/seckill/{product}/orders"),
            Some(&token),
            None,
        )
        .await
    }

    pub async fn result(&self, product: i64, member: i64) -> ResultView {
        self.member(member)
            .result(pid_of(product))
            .await
            .unwrap_or_else(|err| panic!("result: {err}"))
    }

    /// `GET /api/orders/{order}` as `member`.
    pub async fn order(&self, order: i64, member: i64) -> Reply {
        let token = Self::token(member);
        self.send(
            Method::GET,
            &format!("/api/orders/{order}"),
            Some(&token),
            None,
        )
        .await
    }

    /// `POST /api/orders/{order}/pay` as `member`.
    pub async fn pay(&self, order: i64, member: i64) -> Reply {
        let token = Self::token(member);
        self.send(
            Method::POST,
            &format!("/api/orders/{order}/pay"),
            Some(&token),
            None,
        )
        .await
    }

    /// The sum of every series of a Prometheus metric whose labels contain
    /// all of `labels` (e.g. `[("route", "/api/seckill/{product_id}/orders")]`).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self
            .client
            .metrics()
            .await
            .unwrap_or_else(|err| panic!("metrics: {err}"));
        seckill_bench::metrics_text::sum(&text, name, labels)
    }
}

fn pid_of(product: i64) -> ProductId {
    ProductId::new(product).expect("a positive product id")
}
