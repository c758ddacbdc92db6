//! The OpenAPI document (`GET /api/openapi.json`) against the live origin:
//! every operation it lists is routed, and every error body the origin
//! sends names a code the document lists under that status; the typed
//! client (`seckill-client`) speaks it end to end.

use std::time::Duration;

use reqwest::Method;
use seckill_tests::{AppSettings, Backend, RedisServer, Sale, TestApp, TestDatabase};
use serde_json::Value;

/// `(method, path)` of every operation in `doc`.
fn operations(doc: &Value) -> Vec<(Method, String)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            found.push((method.to_uppercase().parse().unwrap(), path.clone()));
        }
    }
    found
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_answers_documented_codes() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let app = TestApp::start(redis.url(), &db, AppSettings::new().quiet()).await;
    let api = app.api();

    let reply = api.get("/api/openapi.json").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let doc = reply.body;
    assert_eq!(doc["openapi"], "3.1.0");
    let operations = operations(&doc);
    assert!(operations.len() >= 17, "{operations:?}");

    for (method, path) in operations {
        // Id 1 names nothing and no token is sent: every answer is the
        // operation's own (401, unknown_product, …), never the router's
        // "no such path" or "no such method".
        let concrete = path.replace("{product_id}", "1").replace("{order_id}", "1");
        let reply = api.send(method.clone(), &concrete, None, None).await;
        let operation = &doc["paths"][&path][method.as_str().to_lowercase()];
        let documented = &operation["responses"][reply.status.to_string()];
        assert!(
            !documented.is_null(),
            "{method} {path}: status {} is not documented",
            reply.status
        );
        if let Some(code) = reply.error() {
            assert_ne!(code, "not_found", "{method} {path} is not routed");
            assert_ne!(code, "method_not_allowed", "{method} {path}");
            let listed = &doc["components"]["responses"][format!("Error{}", reply.status)]
                ["content"]["application/json"]["schema"]["properties"]["error"]["enum"];
            assert!(
                listed
                    .as_array()
                    .is_some_and(|codes| codes.contains(&Value::from(code))),
                "{method} {path}: {code} not listed under {}",
                reply.status
            );
        }
    }
}

/// The typed client users embed walks a sale from creation to payment and
/// hands back the contract's codes as values.
#[tokio::test]
async fn the_typed_client_walks_a_sale_to_payment() {
    use seckill_client::{Error, ErrorCode};
    use seckill_shared::api::{OrderStatus, ResultStatus};

    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Postgres).await;
    let app = TestApp::start(redis.url(), &db, AppSettings::new()).await;
    let api = app.api();

    let sale = api
        .admin()
        .create_sale(&Sale::open(1).create())
        .await
        .unwrap();
    let item = sale.product_id;
    let buyer = api.member(11);
    buyer.buy(item).await.unwrap();
    let refused = api.member(12).buy(item).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::SoldOut), "{refused}");
    assert!(matches!(refused, Error::Api { status: 409, .. }));

    let order = seckill_tests::eventually(Duration::from_secs(10), "the order", || async {
        let result = buyer.result(item).await.unwrap();
        (result.status == ResultStatus::Success).then_some(result.order_id)?
    })
    .await;
    assert_eq!(
        buyer.order(order).await.unwrap().status,
        OrderStatus::Unpaid
    );
    assert_eq!(buyer.pay(order).await.unwrap().status, OrderStatus::Paid);
    let stranger = api.member(12).order(order).await.unwrap_err();
    assert_eq!(stranger.code(), Some(ErrorCode::UnknownOrder));

    let listed = api.admin().list_sales().await.unwrap();
    let line = listed
        .iter()
        .find(|line| line.product.product_id == item)
        .unwrap();
    assert_eq!((line.orders.paid, line.product.stock_left), (1, 0));
    let unauthorized = api.client().list_sales().await.unwrap_err();
    assert_eq!(unauthorized.code(), Some(ErrorCode::Unauthorized));
}

/// The pinned schemathesis `scripts/test` installs (scripts/lib/setup.sh).
const SCHEMATHESIS: &str = "schemathesis";
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// Runs schemathesis against the document served at `base`: every
/// operation, valid and invalid input, every check, the stateful phase
/// following the document's links. Panics with its report on a failure.
async fn schemathesis(label: &str, base: &str, extra: &[&str]) {
    let version = std::process::Command::new(SCHEMATHESIS)
        .arg("--version")
        .output();
    match version {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains(SCHEMATHESIS_VERSION) => {}
        _ => panic!(
            "schemathesis {SCHEMATHESIS_VERSION} is required: pip install schemathesis=={SCHEMATHESIS_VERSION} \
             (scripts/test installs it)"
        ),
    }
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/contract/schemathesis.toml");
    let reports = seckill_tests::paths::test_output_dir(&format!("schemathesis-{label}"));
    let mut command = tokio::process::Command::new(SCHEMATHESIS);
    command
        .arg("--config-file")
        .arg(config)
        .arg("run")
        .arg(format!("{base}/api/openapi.json"))
        .args(["--url", base])
        .args(["--max-examples", "40"])
        .args(["--seed", "18"])
        .args(["--workers", "2"])
        .args(["--generation-database", "none"])
        .args(["--request-timeout", "10"])
        .args(["--report", "junit"])
        .arg("--report-dir")
        .arg(&reports)
        .arg("--no-color")
        .args(extra)
        // Its cache of found crashes goes with the reports, not the tree.
        .current_dir(&reports)
        .env("SECKILL_MEMBER_TOKEN", seckill_tests::Api::token(77))
        .env("SECKILL_ADMIN_TOKEN", seckill_tests::ADMIN_TOKEN)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(480), command.output())
        .await
        .expect("schemathesis ran for over 8 minutes")
        .expect("schemathesis starts");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(reports.join("output.txt"), &report).unwrap();
    assert!(
        out.status.success(),
        "schemathesis found problems ({label}; report in {}):\n{report}",
        reports.display()
    );
    // It ran the operations, not nothing.
    assert!(report.contains("API Operations"), "{report}");
}

#[tokio::test]
async fn schemathesis_finds_nothing_against_the_origin() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let app = TestApp::start(redis.url(), &db, AppSettings::new()).await;
    schemathesis("origin", &app.url(), &[]).await;
    // The stateful phase followed the links to the end: sales it created
    // were bought, their orders written, and paid.
    let paid: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status = 'paid'")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert!(
        paid >= 1,
        "no order was paid: the stateful walk did not reach pay"
    );
}

#[tokio::test]
async fn schemathesis_finds_nothing_through_the_edge() {
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let app = TestApp::start(redis.url(), &db, AppSettings::new()).await;
    let edge = seckill_tests::Edge::start("contract_edge", &app.url(), &[]).await;
    // The edge forwards the document itself.
    let served = edge.api().get("/api/openapi.json").await;
    assert_eq!(served.status, 200);
    assert_eq!(served.body["openapi"], "3.1.0");
    schemathesis("edge", edge.url(), &[]).await;
    let paid: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status = 'paid'")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert!(paid >= 1, "no order was paid through the edge");
}
