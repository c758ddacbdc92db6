//! A typed client of the flash-sale HTTP contract, for programs that
//! embed it: one method per operation of `GET /api/openapi.json`, taking
//! and returning `seckill-shared`'s own bodies, so a client and the origin
//! cannot disagree on a field. An error answer comes back as
//! [`Error::Api`] with the contract's [`ErrorCode`] (and `Retry-After`
//! when the origin sent one); a lost connection as [`Error::Transport`],
//! which for a buy means the outcome is unknown (ask [`Client::result`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), seckill_client::Error> {
//! use seckill_client::{Client, ProductId};
//! let shop = Client::new("http://127.0.0.1:8080")?.with_member_token("v1.42.1999999999.sig");
//! let item = ProductId::new(7)?;
//! shop.buy(item).await?; // 202 queued, or Err(Error::Api { body.error: sold_out, .. })
//! println!("{:?}", shop.result(item).await?); // queued, then success with the order id
//! # Ok(()) }
//! ```

use std::time::Duration;

use reqwest::header::{HeaderMap, AUTHORIZATION, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode};
use seckill_shared::api::{
    AdminProductView, BuyAccepted, CreateProduct, ErrorBody, ItemHistory, OrderView, PayResponse,
    ProductView, ReconcileItem, ResultView, SessionRequest, SessionResponse, SoldOutSnapshot,
    TimeResponse, UpdateProduct,
};
use seckill_shared::token;
pub use seckill_shared::{ErrorCode, MemberId, OrderId, ProductId};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use seckill_shared::api;
pub use seckill_shared::ids::InvalidId;
pub use seckill_shared::token::TokenSecret;

/// What can go wrong with a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with the contract's error body.
    #[error("{status}: {} ({})", body.error, body.message)]
    Api {
        status: u16,
        body: ErrorBody,
        /// Seconds, when the answer said when to try again (`sale_busy`).
        retry_after: Option<u64>,
    },
    /// No answer (refused, timed out, cut mid-way). For a buy this means
    /// the outcome is unknown.
    #[error("no answer: {0}")]
    Transport(#[from] reqwest::Error),
    /// An answer that is not what the contract says for its status.
    #[error("unexpected answer {status}: {text}")]
    Unexpected { status: u16, text: String },
    #[error("{0}")]
    InvalidId(#[from] InvalidId),
    #[error("not a base URL: {0}")]
    BaseUrl(String),
}

impl Error {
    /// The contract's code, when the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { body, .. } => Some(body.error),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A client of one deployment (origin or edge); cheap to clone, and the
/// clones share connections.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    member_token: Option<String>,
    admin_token: Option<String>,
}

impl Client {
    /// A client of the deployment at `base` (`http://host:port`, or
    /// `https://…`), with a 30 s timeout per call.
    pub fn new(base: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Self::with_http(base, http)
    }

    /// The same, on a `reqwest::Client` of the caller's (pool, timeouts).
    pub fn with_http(base: &str, http: reqwest::Client) -> Result<Self> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::BaseUrl(base.to_string()));
        }
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http,
            member_token: None,
            admin_token: None,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// This client acting as the member whose token this is.
    pub fn with_member_token(mut self, token: impl Into<String>) -> Self {
        self.member_token = Some(token.into());
        self
    }

    /// This client acting as `member`, with a token signed here from the
    /// shared secret, valid until `expires_at` (unix seconds): what a login
    /// service or a load generator does.
    pub fn as_member(&self, secret: &TokenSecret, member: MemberId, expires_at: u64) -> Self {
        self.clone()
            .with_member_token(token::sign(secret, member, expires_at))
    }

    /// This client with the operator's token, for `/admin`.
    pub fn with_admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    // The storefront.

    pub async fn time(&self) -> Result<TimeResponse> {
        self.call(Method::GET, "/api/time", None, None::<&()>).await
    }

    pub async fn product(&self, product: ProductId) -> Result<ProductView> {
        let path = format!("/api/products/{product}");
        self.call(Method::GET, &path, None, None::<&()>).await
    }

    pub async fn sold_out(&self) -> Result<SoldOutSnapshot> {
        self.call(Method::GET, "/api/soldout", None, None::<&()>)
            .await
    }

    /// `POST /api/seckill/{id}/orders` as the member: `Ok` is `202 queued`.
    pub async fn buy(&self, product: ProductId) -> Result<BuyAccepted> {
        let path = format!("/api/seckill/{product}/orders");
        let token = self.member_token.as_deref();
        self.call(Method::POST, &path, token, None::<&()>).await
    }

    pub async fn result(&self, product: ProductId) -> Result<ResultView> {
        let path = format!("/api/seckill/{product}/result");
        let token = self.member_token.as_deref();
        self.call(Method::GET, &path, token, None::<&()>).await
    }

    pub async fn order(&self, order: OrderId) -> Result<OrderView> {
        let path = format!("/api/orders/{order}");
        let token = self.member_token.as_deref();
        self.call(Method::GET, &path, token, None::<&()>).await
    }

    pub async fn pay(&self, order: OrderId) -> Result<PayResponse> {
        let path = format!("/api/orders/{order}/pay");
        let token = self.member_token.as_deref();
        self.call(Method::POST, &path, token, None::<&()>).await
    }

    /// The demo login (`SECKILL_DEMO_LOGIN=1` only).
    pub async fn session(&self, member: MemberId) -> Result<SessionResponse> {
        let body = SessionRequest { member_id: member };
        self.call(Method::POST, "/api/session", None, Some(&body))
            .await
    }

    // Operators.

    pub async fn create_sale(&self, sale: &CreateProduct) -> Result<ProductView> {
        let token = self.admin_token.as_deref();
        self.call(Method::POST, "/admin/products", token, Some(sale))
            .await
    }

    pub async fn list_sales(&self) -> Result<Vec<AdminProductView>> {
        let token = self.admin_token.as_deref();
        self.call(Method::GET, "/admin/products", token, None::<&()>)
            .await
    }

    pub async fn update_sale(
        &self,
        product: ProductId,
        change: &UpdateProduct,
    ) -> Result<ProductView> {
        let path = format!("/admin/products/{product}");
        let token = self.admin_token.as_deref();
        self.call(Method::PATCH, &path, token, Some(change)).await
    }

    pub async fn end_sale(&self, product: ProductId) -> Result<ProductView> {
        let path = format!("/admin/products/{product}");
        let token = self.admin_token.as_deref();
        self.call(Method::DELETE, &path, token, None::<&()>).await
    }

    pub async fn reconcile(&self) -> Result<Vec<ReconcileItem>> {
        let token = self.admin_token.as_deref();
        self.call(Method::POST, "/admin/reconcile", token, None::<&()>)
            .await
    }

    /// The last minutes of the newest items, as this origin saw them.
    pub async fn history(&self) -> Result<Vec<ItemHistory>> {
        let token = self.admin_token.as_deref();
        self.call(Method::GET, "/admin/history", token, None::<&()>)
            .await
    }

    /// `GET /readyz`: `Ok` when Redis and the database both answer.
    pub async fn ready(&self) -> Result<()> {
        self.call::<serde_json::Value>(Method::GET, "/readyz", None, None::<&()>)
            .await
            .map(drop)
    }

    /// `GET /metrics`, the Prometheus text.
    pub async fn metrics(&self) -> Result<String> {
        let response = self.request(Method::GET, "/metrics", None).send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(api_error(status, &headers, text))
        }
    }

    /// The OpenAPI document this client follows, as served.
    pub async fn openapi(&self) -> Result<serde_json::Value> {
        self.call(Method::GET, "/api/openapi.json", None, None::<&()>)
            .await
    }

    fn request(&self, method: Method, path: &str, bearer: Option<&str>) -> RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        request
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let mut request = self.request(method, path, bearer);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await?;
        if !status.is_success() {
            return Err(api_error(status, &headers, text));
        }
        serde_json::from_str(&text).map_err(|_| Error::Unexpected {
            status: status.as_u16(),
            text,
        })
    }
}

fn api_error(status: StatusCode, headers: &HeaderMap, text: String) -> Error {
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => Error::Api {
            status: status.as_u16(),
            body,
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse().ok()),
        },
        Err(_) => Error::Unexpected {
            status: status.as_u16(),
            text,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked_and_trimmed() {
        assert!(matches!(
            Client::new("127.0.0.1:8080"),
            Err(Error::BaseUrl(_))
        ));
        assert_eq!(
            Client::new("http://127.0.0.1:8080/").unwrap().base(),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn error_bodies_become_codes() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "2".parse().unwrap());
        let err = api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &headers,
            r#"{"error":"sale_busy","message":"busy"}"#.into(),
        );
        assert_eq!(err.code(), Some(ErrorCode::SaleBusy));
        assert!(matches!(
            err,
            Error::Api {
                retry_after: Some(2),
                ..
            }
        ));
        let odd = api_error(StatusCode::BAD_GATEWAY, &HeaderMap::new(), "<html>".into());
        assert!(matches!(odd, Error::Unexpected { status: 502, .. }));
    }
}
