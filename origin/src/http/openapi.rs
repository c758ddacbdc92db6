//! The OpenAPI 3.1 document of the HTTP contract, served at
//! `GET /api/openapi.json`.
//!
//! It is generated from the code: operations from the `#[utoipa::path]`
//! annotations on the handlers, bodies from the `seckill-shared` types
//! themselves (their `openapi` feature), and each error status's codes from
//! `ErrorCode::status`, so a code added there shows up here on its own. A
//! unit test below compares the document's operations with the routes the
//! router declares, in both directions.

use std::sync::LazyLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use seckill_shared::api::{
    AdminProductView, BuyAccepted, BuySecond, BuyStatus, CreateProduct, ErrorBody, ItemHistory,
    LevelSample, OrderCounts, OrderStatus, OrderView, PayResponse, ProductView, QueueView,
    ReconcileItem, ResultStatus, ResultView, SessionRequest, SessionResponse, SoldOutSnapshot,
    TimeResponse, UpdateProduct,
};
use seckill_shared::{ErrorCode, MemberId, OrderId, ProductId};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToResponse};

use super::ops::{ClusterReadiness, Health, Readiness};

/// Security scheme names, as the annotations on the handlers use them.
pub const MEMBER_TOKEN: &str = "member_token";
pub const ADMIN_TOKEN: &str = "admin_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "seckill",
        description = "The flash-sale origin's HTTP contract. Every error is `{\"error\": code, \"message\": text}`; \
                       a code always comes with the same status (each error response lists its codes).",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        super::catalogue::time,
        super::catalogue::product,
        super::catalogue::sold_out,
        super::buy::buy,
        super::buy::result,
        super::orders::get,
        super::orders::pay,
        super::session::create,
        super::admin::create_product,
        super::admin::list_products,
        super::admin::update_product,
        super::admin::end_sale,
        super::admin::reconcile,
        super::admin::history,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        document,
    ),
    components(
        schemas(
            ErrorBody, ErrorCode, ProductId, MemberId, OrderId, SessionRequest, SessionResponse,
            TimeResponse, ProductView, SoldOutSnapshot, BuyStatus, BuyAccepted, ResultStatus,
            ResultView, OrderStatus, OrderView, PayResponse, QueueView, OrderCounts,
            AdminProductView, CreateProduct, UpdateProduct, ReconcileItem, Health, Readiness,
            ClusterReadiness, ItemHistory, BuySecond, LevelSample,
        ),
        responses(E400, E401, E403, E404, E405, E409, E413, E429, E500, E503),
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "storefront", description = "What buyers and the pages call"),
        (name = "admin", description = "Operator endpoints, behind `SECKILL_ADMIN_TOKEN`"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    ),
)]
pub struct ApiDoc;

/// The document, serialised once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    let doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serialises");
    serde_json::to_string_pretty(&with_links(doc)).expect("JSON serialises")
});

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object)),
)]
pub async fn document() -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}

/// One error response per status: the body's `error` is one of the codes
/// that `ErrorCode::status` gives that status, each with an example.
fn error_response(status: u16) -> Response {
    let codes: Vec<ErrorCode> = ErrorCode::ALL
        .into_iter()
        .filter(|code| code.status() == status)
        .collect();
    let names: Vec<&str> = codes.iter().map(|code| code.as_str()).collect();
    let schema = ObjectBuilder::new()
        .property(
            "error",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(names.clone())),
        )
        .required("error")
        .property("message", ObjectBuilder::new().schema_type(Type::String))
        .required("message");
    let examples = codes.iter().map(|code| {
        (
            code.as_str(),
            ExampleBuilder::new()
                .value(Some(serde_json::json!({
                    "error": code.as_str(),
                    "message": code.default_message(),
                })))
                .build(),
        )
    });
    let mut response = ResponseBuilder::new()
        .description(format!("error: {}", names.join(", ")))
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(schema))
                .examples_from_iter(examples)
                .build(),
        );
    if codes.contains(&ErrorCode::SaleBusy) {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::Integer))
                .description(Some(
                    "with `sale_busy`: seconds to wait before trying again",
                ))
                .build(),
        );
    }
    response.build()
}

macro_rules! error_responses {
    ($($name:ident = $status:literal),* $(,)?) => {$(
        #[doc = concat!("The contract's ", stringify!($status), " answer.")]
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (concat!("Error", stringify!($status)), error_response($status).into())
            }
        }
    )*};
}

error_responses!(
    E400 = 400,
    E401 = 401,
    E403 = 403,
    E404 = 404,
    E405 = 405,
    E409 = 409,
    E413 = 413,
    E429 = 429,
    E500 = 500,
    E503 = 503,
);

/// The two bearer schemes.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            MEMBER_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("v1.<member_id>.<expires_unix_s>.<base64url HMAC-SHA256>")
                    .description(Some(
                        "A member token, signed with SECKILL_TOKEN_SECRET (see the README)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            ADMIN_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("SECKILL_ADMIN_TOKEN"))
                    .build(),
            ),
        );
    }
}

/// The links that make the sale's life one walk through the document:
/// create → buy → result → order → pay. Written into the JSON, because
/// utoipa 5.5's `Link` serialises its fields in snake_case
/// (`operation_id`), which no OpenAPI tool reads.
fn with_links(mut doc: serde_json::Value) -> serde_json::Value {
    let product_from_body = ("product_id", "$response.body#/product_id");
    let product_from_request = ("product_id", "$request.path.product_id");
    let order_from_body = ("order_id", "$response.body#/order_id");
    let order_from_request = ("order_id", "$request.path.order_id");
    for (path, method, status, name, target, (param, value)) in [
        (
            "/admin/products",
            "post",
            "201",
            "Buy",
            "buy",
            product_from_body,
        ),
        (
            "/admin/products",
            "post",
            "201",
            "GetProduct",
            "product",
            product_from_body,
        ),
        (
            "/admin/products",
            "post",
            "201",
            "EditSale",
            "update_product",
            product_from_body,
        ),
        (
            "/admin/products",
            "post",
            "201",
            "EndSale",
            "end_sale",
            product_from_body,
        ),
        (
            "/api/seckill/{product_id}/orders",
            "post",
            "202",
            "GetResult",
            "result",
            product_from_request,
        ),
        (
            "/api/seckill/{product_id}/result",
            "get",
            "200",
            "GetOrder",
            "order",
            order_from_body,
        ),
        (
            "/api/seckill/{product_id}/result",
            "get",
            "200",
            "PayOrder",
            "pay",
            order_from_body,
        ),
        (
            "/api/orders/{order_id}",
            "get",
            "200",
            "PayOrder",
            "pay",
            order_from_request,
        ),
        (
            "/api/orders/{order_id}/pay",
            "post",
            "200",
            "GetOrder",
            "order",
            order_from_request,
        ),
    ] {
        let response = doc
            .pointer_mut(&format!(
                "/paths/{}/{method}/responses/{status}",
                path.replace('~', "~0").replace('/', "~1")
            ))
            .and_then(serde_json::Value::as_object_mut)
            .unwrap_or_else(|| panic!("no {status} response of {method} {path} to link from"));
        let links = response
            .entry("links")
            .or_insert_with(|| serde_json::json!({}));
        links[name] = serde_json::json!({
            "operationId": target,
            "parameters": { param: value },
        });
    }
    doc
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `(METHOD, path)` of every operation in the document.
    fn documented() -> BTreeSet<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        let mut found = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
        found
    }

    /// `(METHOD, path)` of every `.route(...)` in the router's source: the
    /// path literal and each method function (`get(`, `.post(`, …) called
    /// inside the same `.route(` call.
    fn routed() -> BTreeSet<(String, String)> {
        let source = include_str!("mod.rs");
        let mut found = BTreeSet::new();
        for call in source.split(".route(").skip(1) {
            let call = call.trim_start();
            let path = call
                .strip_prefix('"')
                .and_then(|rest| rest.split_once('"'))
                .map(|(path, _)| path)
                .expect("a route's path is a string literal");
            // The call ends where its parentheses balance.
            let mut depth = 1;
            let end = call
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map(|(at, _)| at)
                .expect("a route call closes");
            let body = &call[..end];
            for method in ["get", "post", "patch", "delete", "put"] {
                let called = body.match_indices(&format!("{method}(")).any(|(at, _)| {
                    at == 0 || !body[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if called {
                    found.insert((method.to_uppercase(), path.to_string()));
                }
            }
        }
        found
    }

    #[test]
    fn the_document_and_the_router_have_the_same_operations() {
        let documented = documented();
        let routed = routed();
        assert!(routed.len() >= 17, "too few routes parsed: {routed:?}");
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "routed but not documented: {undocumented:?}; documented but not routed: {unrouted:?}"
        );
    }

    #[test]
    fn every_error_code_is_documented_under_its_status() {
        let doc: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for code in ErrorCode::ALL {
            let response = &doc["components"]["responses"][format!("Error{}", code.status())];
            let listed =
                &response["content"]["application/json"]["schema"]["properties"]["error"]["enum"];
            assert!(
                listed
                    .as_array()
                    .is_some_and(|codes| codes.contains(&code.as_str().into())),
                "{code} missing from the {} response: {response}",
                code.status()
            );
        }
        let buy = &doc["paths"]["/api/seckill/{product_id}/orders"]["post"]["responses"];
        for status in ["202", "400", "401", "403", "404", "409", "429", "503"] {
            assert!(buy.get(status).is_some(), "buy lacks {status}");
        }
    }

    /// The schema's ranges are literals (utoipa wants them so): they must
    /// be the limits the validation enforces.
    #[test]
    fn body_ranges_are_the_validation_limits() {
        use seckill_shared::api::{MAX_PRICE_CENTS, MAX_STOCK, MAX_UNIX_S};
        let doc: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        for body in ["CreateProduct", "UpdateProduct"] {
            let fields = &doc["components"]["schemas"][body]["properties"];
            for (field, max) in [
                ("price_cents", MAX_PRICE_CENTS),
                ("flash_price_cents", MAX_PRICE_CENTS),
                ("stock", MAX_STOCK),
                ("starts_at", MAX_UNIX_S),
                ("ends_at", MAX_UNIX_S),
            ] {
                assert_eq!(fields[field]["maximum"], max, "{body}.{field}");
            }
        }
    }

    #[test]
    fn the_sale_is_linked_from_creation_to_payment() {
        let doc: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        let created = &doc["paths"]["/admin/products"]["post"]["responses"]["201"]["links"];
        assert_eq!(created["Buy"]["operationId"], "buy");
        assert_eq!(
            created["Buy"]["parameters"]["product_id"],
            "$response.body#/product_id"
        );
        let result = &doc["paths"]["/api/seckill/{product_id}/result"]["get"]["responses"]["200"];
        assert_eq!(result["links"]["PayOrder"]["operationId"], "pay");
    }

    #[test]
    fn both_bearer_schemes_are_declared_and_used() {
        let doc: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        for scheme in [MEMBER_TOKEN, ADMIN_TOKEN] {
            assert_eq!(
                doc["components"]["securitySchemes"][scheme]["scheme"],
                "bearer"
            );
        }
        assert_eq!(
            doc["paths"]["/api/orders/{order_id}/pay"]["post"]["security"][0][MEMBER_TOKEN],
            serde_json::json!([])
        );
        assert_eq!(
            doc["paths"]["/admin/products"]["post"]["security"][0][ADMIN_TOKEN],
            serde_json::json!([])
        );
    }
}
