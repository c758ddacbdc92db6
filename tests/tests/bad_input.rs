//! Malformed requests for every route, generated: wrong methods, mangled
//! paths and ids, odd or missing headers, bodies that are not JSON, are the
//! wrong JSON, are nested thousands deep or are larger than any request
//! the contract has. Whatever comes, the origin answers with the
//! contract's error body and a 4xx, never a 5xx, and nothing is reserved.
//! The generator is seeded: a failure names its seed and request, and the
//! same seed replays the same requests.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::AsyncCommands;
use reqwest::Method;
use seckill_shared::ErrorCode;
use seckill_tests::checks::{keys, pid};
use seckill_tests::{Api, AppSettings, Backend, RedisServer, Sale, TestApp, TestDatabase};
use serde_json::{json, Value};

/// Requests generated per run.
const REQUESTS: usize = 1_500;

/// The routes of the contract (`{}` where an id goes) with their method.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/time"),
    ("GET", "/api/products/{}"),
    ("GET", "/api/soldout"),
    ("POST", "/api/seckill/{}/orders"),
    ("GET", "/api/seckill/{}/result"),
    ("GET", "/api/orders/{}"),
    ("POST", "/api/orders/{}/pay"),
    ("POST", "/api/session"),
    ("POST", "/admin/products"),
    ("GET", "/admin/products"),
    ("PATCH", "/admin/products/{}"),
    ("DELETE", "/admin/products/{}"),
    ("POST", "/admin/reconcile"),
    ("GET", "/admin/history"),
    ("GET", "/api/openapi.json"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
];

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE",
];

/// What can stand where an id goes: mostly not an id.
fn id_text(rng: &mut StdRng, product: i64) -> String {
    match rng.random_range(0..14) {
        0 => product.to_string(),
        1 => "0".into(),
        2 => "-1".into(),
        3 => "1.5".into(),
        4 => "1e3".into(),
        5 => "99999999999999999999".into(),
        6 => "%FF%FE".into(),
        7 => "%00".into(),
        8 => "abc".into(),
        9 => "٣".into(),
        10 => "+7".into(),
        11 => " 7".replace(' ', "%20"),
        12 => "x".repeat(rng.random_range(100..3_000)),
        _ => rng.random_range(1..1_000_000_000i64).to_string(),
    }
}

/// A route's method most of the time, any method otherwise, and its path.
fn target(rng: &mut StdRng, product: i64) -> (Method, String) {
    let (own, template) = ROUTES[rng.random_range(0..ROUTES.len())];
    let method = if rng.random_bool(0.6) {
        own
    } else {
        METHODS[rng.random_range(0..METHODS.len())]
    };
    let mut path = template.replace("{}", &id_text(rng, product));
    match rng.random_range(0..10) {
        0 => path.push('/'),
        1 => path = path.replacen('/', "//", 1),
        2 => path.push_str("?x=%ZZ&&=="),
        3 => path = path.to_uppercase(),
        4 => path.push_str("/../../etc/passwd"),
        _ => {}
    }
    (Method::from_bytes(method.as_bytes()).unwrap(), path)
}

/// A JSON value nested `depth` arrays deep.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn body(rng: &mut StdRng) -> Option<(String, Option<&'static str>)> {
    let json = Some("application/json");
    Some(match rng.random_range(0..14) {
        0 => return None,
        1 => (String::new(), json),
        2 => ("{nope".into(), json),
        3 => ("null".into(), json),
        4 => ("[1, 2, 3]".into(), json),
        5 => (nested(rng.random_range(200..20_000)), json),
        6 => (json!({"name": "x".repeat(40_000)}).to_string(), json),
        7 => (json!({"member_id": "7"}).to_string(), json),
        8 => (r#"{"member_id": 1e300}"#.to_string(), json),
        9 => (
            json!({"name": "n", "price_cents": -1, "flash_price_cents": 0, "stock": 1,
                   "starts_at": 0, "ends_at": 1, "extra": true})
            .to_string(),
            json,
        ),
        10 => (r#"{"stock": 99999999999999999999}"#.to_string(), json),
        11 => (
            "member_id=1".into(),
            Some("application/x-www-form-urlencoded"),
        ),
        12 => ("\u{0}\u{1}\u{2}".into(), Some("text/plain")),
        _ => (json!({"member_id": 7, "stock": 0}).to_string(), None),
    })
}

fn authorization(rng: &mut StdRng) -> Option<String> {
    let forged_member = format!("v1.7.{}.AAAA", i64::MAX);
    match rng.random_range(0..9) {
        0 | 1 => None,
        2 => Some("Bearer".into()),
        3 => Some("Bearer not-a-token".into()),
        4 => Some(format!("Bearer {forged_member}")),
        5 => Some(format!("Bearer {}", Api::token_expiring(7, 1))),
        6 => Some("Basic dXNlcjpwYXNz".into()),
        7 => Some(format!("Bearer {}", "v1.".repeat(200))),
        // The admin token is not a member token.
        _ => Some(format!("Bearer {}", seckill_tests::ADMIN_TOKEN)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_malformed_requests_never_get_a_5xx_or_reserve_anything() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin = TestApp::start(redis.url(), &db, AppSettings::new().quiet()).await;
    let api = origin.api();
    let product = api.create_sale(&Sale::open(10)).await.product_id.get();

    let seed: u64 = std::env::var("SECKILL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let mut rng = StdRng::seed_from_u64(seed);
    let known: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let mut statuses = std::collections::BTreeMap::new();
    let mut previous = String::new();
    for n in 0..REQUESTS {
        let (method, path) = target(&mut rng, product);
        let mut request = api
            .http()
            .request(method.clone(), format!("{}{}", api.base(), path));
        if let Some(value) = authorization(&mut rng) {
            request = request.header("authorization", value);
        }
        if rng.random_bool(0.1) {
            request = request.header("x-request-id", "r".repeat(rng.random_range(1..4_000)));
        }
        if rng.random_bool(0.05) {
            request = request.header("content-length-ish", "\u{1}".repeat(10));
        }
        let sent_body = body(&mut rng);
        if let Some((text, content_type)) = &sent_body {
            if let Some(content_type) = content_type {
                request = request.header("content-type", *content_type);
            }
            request = request.body(text.clone());
        }
        let what = format!(
            "seed {seed}, request {n}: {method} {path} body {:?}",
            sent_body
                .as_ref()
                .map(|(b, t)| (b.chars().take(60).collect::<String>(), t))
        );
        let reply = match request.send().await {
            Ok(reply) => reply,
            // A request the client itself refuses to build (an invalid
            // header value) never reached the origin.
            Err(err) if err.is_builder() => continue,
            Err(err) => panic!("{what}: no answer: {err:?} (after {previous})"),
        };
        let status = reply.status().as_u16();
        previous = format!("{what} → {status} {:?}", reply.headers().get("connection"));
        *statuses.entry(status).or_insert(0usize) += 1;
        let is_head = method == Method::HEAD;
        let text = reply.text().await.unwrap_or_default();
        assert!(status < 500, "{what}: {status} {text}");
        if status >= 400 && !is_head {
            let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
                panic!("{what}: {status} is not the contract's body: {text:?}")
            });
            let code = body["error"].as_str().unwrap_or_default();
            assert!(known.contains(&code), "{what}: unknown code {body}");
            assert!(
                body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{what}: {body}"
            );
            let expected = ErrorCode::ALL
                .iter()
                .find(|c| c.as_str() == code)
                .unwrap()
                .status();
            assert_eq!(
                status, expected,
                "{what}: {code} always comes with {expected}"
            );
        }
    }
    eprintln!("seed {seed}: statuses {statuses:?}");

    let mut conn = redis.connection().await;
    let stock: i64 = conn.hget(keys().item(pid(product)), "stock").await.unwrap();
    assert_eq!(stock, 10, "seed {seed}: nothing was reserved");
    let members: u64 = conn.hlen(keys().members(pid(product))).await.unwrap();
    assert_eq!(members, 0, "seed {seed}: no member holds anything");
    let errors = api
        .metric("http_requests_total", &[("status", "500")])
        .await;
    assert_eq!(errors, 0.0);
}
