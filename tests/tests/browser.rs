//! The storefront and the operations page in headless Chromium, against a
//! real origin, redis-server and database: a buyer at phone width using
//! the keyboard, a sold-out buyer, an order left unpaid, and an operator
//! watching a sale live. Screenshots of each step go to
//! `target/test-output/browser_*`.

use std::time::Duration;

use fantoccini::key::Key;
use seckill_tests::browser::Browser;
use seckill_tests::checks::{buy_all, orders};
use seckill_tests::client::unix_now;
use seckill_tests::proxy::TcpProxy;
use seckill_tests::{
    eventually, AppSettings, Backend, Edge, Origin, OriginOptions, RedisServer, Sale, TestApp,
    TestDatabase, ADMIN_TOKEN,
};

const SHORT: Duration = Duration::from_secs(10);

/// Signs in with the keyboard: type the member id, press Enter.
async fn sign_in(browser: &Browser, member: i64) {
    browser
        .type_into("#member-id", &format!("{member}{}", Key::Enter))
        .await;
    browser
        .wait_text("#member-label", &member.to_string(), SHORT)
        .await;
}

async fn sign_out(browser: &Browser) {
    browser.click("#sign-out").await;
    browser.wait_for("#sign-in-form:not([hidden])", SHORT).await;
}

async fn order_status(db: &TestDatabase, product: i64) -> Vec<String> {
    orders(&db.pool().await, product)
        .await
        .into_iter()
        .map(|(_, _, s)| s)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_on_a_phone_buys_pays_and_others_see_why_not() {
    let label = "browser_storefront";
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin =
        Origin::start(OriginOptions::new(label, &redis, &db).env("SECKILL_PAY_TIMEOUT_S", 6)).await;
    let api = origin.api();
    // Chromium first: on a loaded machine it can take many seconds to
    // start, and the countdown must still be running when the page shows.
    let mut browser = Browser::open(label, 360, 740).await;
    let now = unix_now();
    let soon = api
        .create_sale(&Sale::window(1, now + 20, now + 3_600))
        .await
        .product_id
        .get();
    let open = api.create_sale(&Sale::open(5)).await.product_id.get();

    browser
        .goto(&format!("{}/?product={soon}", origin.url()))
        .await;
    sign_in(&browser, 101).await;

    // The countdown runs on the shop's clock; the button waits for it.
    browser.wait_text("#countdown", "Starts in", SHORT).await;
    assert!(
        !browser.is_enabled("#buy").await,
        "no buying before the start"
    );
    let width = browser
        .script("return [window.innerWidth, document.documentElement.scrollWidth];")
        .await;
    assert_eq!(
        width,
        serde_json::json!([360, 360]),
        "a 360 px phone screen, and nothing wider"
    );
    browser.screenshot("countdown").await;
    browser.wait_enabled("#buy", Duration::from_secs(30)).await;
    browser.wait_text("#countdown", "On sale", SHORT).await;
    browser.screenshot("sale-open").await;

    // Bought with the keyboard: Enter on the focused button.
    browser.press("#buy", Key::Enter).await;
    browser
        .wait_for("#timeline li[data-step=queued]", SHORT)
        .await;
    let order = browser.wait_text("#order-number", "#", SHORT).await;
    let steps = browser
        .script("return [...document.querySelectorAll('#timeline li')].map(li => li.dataset.step);")
        .await;
    assert_eq!(
        steps,
        serde_json::json!(["queued", "ordered"]),
        "queued, then the order"
    );
    browser
        .wait_text("#pay-countdown", "Pay within", SHORT)
        .await;
    browser.screenshot("order").await;
    browser.click("#pay").await;
    browser.wait_text("#order-status", "Paid", SHORT).await;
    browser.screenshot("paid").await;
    assert_eq!(order_status(&db, soon).await, vec!["paid".to_string()]);
    assert!(order.starts_with('#'));

    // A second member finds it sold out.
    sign_out(&browser).await;
    sign_in(&browser, 102).await;
    browser.wait_text("#status", "Sold out", SHORT).await;
    assert!(!browser.is_enabled("#buy").await);
    browser.screenshot("sold-out").await;

    // A third member buys another item and does not pay.
    sign_out(&browser).await;
    browser
        .goto(&format!("{}/?product={open}", origin.url()))
        .await;
    sign_in(&browser, 103).await;
    browser.wait_enabled("#buy", SHORT).await;
    browser.click("#buy").await;
    browser.wait_text("#order-number", "#", SHORT).await;
    browser.screenshot("unpaid").await;
    browser
        .wait_text("#order-status", "Cancelled", Duration::from_secs(20))
        .await;
    browser.screenshot("cancelled").await;
    assert_eq!(order_status(&db, open).await, vec!["cancelled".to_string()]);
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operations_page_follows_a_sale_live() {
    let label = "browser_operations";
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let origin = Origin::start(OriginOptions::new(label, &redis, &db)).await;
    let mut browser = Browser::open(label, 1280, 900).await;
    browser.goto(&format!("{}/ops.html", origin.url())).await;
    browser
        .type_into("#admin-token", &format!("{ADMIN_TOKEN}{}", Key::Enter))
        .await;
    browser.wait_for("#admin-ready:not([hidden])", SHORT).await;

    // The operator creates the sale from the page.
    browser
        .type_into("#create-form [name=name]", "Ops test sale")
        .await;
    browser.type_into("#create-form [name=stock]", "100").await;
    browser
        .type_into("#create-form [name=starts_in]", "0")
        .await;
    browser.click("#create").await;
    let created = browser.wait_text("#created", "Created item #", SHORT).await;
    let product: i64 = created
        .trim_start_matches("Created item #")
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let row = format!("#items tr[data-product=\"{product}\"]");
    let stock_cell = format!("{row} td[data-label=\"Stock left\"]");
    let orders_cell = format!("{row} td[data-label=\"Orders written\"]");
    browser.wait_text(&stock_cell, "100 / 100", SHORT).await;
    browser.screenshot("before-load").await;

    // A small load runs; the page's figures move by themselves.
    let buyers = buy_all(&origin.api(), product, 1..=30).await;
    assert_eq!(buyers.len(), 30);
    browser.wait_text(&stock_cell, "70 / 100", SHORT).await;
    browser
        .wait_text(&orders_cell, "30", Duration::from_secs(20))
        .await;
    browser.screenshot("after-load").await;
    for column in ["Queue", "Pending"] {
        let figure = browser
            .text(&format!("{row} td[data-label=\"{column}\"]"))
            .await;
        assert_eq!(figure, "0", "{column}: every reservation written");
    }
    assert_eq!(orders(&db.pool().await, product).await.len(), 30);

    // The rush goes on: buyers who hold a unit try again (refused), and
    // 100 more buyers come for the 70 units left (30 sold out).
    let again = buy_all(&origin.api(), product, 1..=10).await;
    assert!(again.is_empty(), "repeat buys were refused: {again:?}");
    let mut late = Vec::new();
    for wave in 0..4 {
        let first = 31 + wave * 25;
        late.extend(buy_all(&origin.api(), product, first..first + 25).await);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(late.len(), 70);
    browser.wait_text(&stock_cell, "0 / 100", SHORT).await;

    // The charts of the item: buys/s by outcome, stock left, queue depth,
    // drawn in the page from the origin's own figures.
    let charts = format!("#charts figure[data-product=\"{product}\"]");
    browser
        .wait_for(
            &format!("{charts} svg[data-chart=\"buys\"] polyline[data-series=\"already_ordered\"]"),
            SHORT,
        )
        .await;
    let drawn = eventually(SHORT, "charts with the load on them", || async {
        let drawn = browser
            .script(&format!(
                r#"const figure = document.querySelector('{}');
                   const chart = (kind) => figure.querySelector(`svg[data-chart="${{kind}}"]`);
                   const points = (kind, series) => {{
                     const line = chart(kind).querySelector(`polyline[data-series="${{series}}"]`);
                     return line ? line.getAttribute("points").trim().split(" ").map((p) => p.split(",").map(Number)) : [];
                   }};
                   const base = (kind) => Number(chart(kind).querySelector("line.axis").getAttribute("y1"));
                   return {{
                     queued: points("buys", "queued"), again: points("buys", "already_ordered"),
                     stock: points("stock", "stock_left"), queue: points("queue", "queue"),
                     buysBase: base("buys"), stockBase: base("stock"),
                     legend: figure.querySelector(".legend").textContent,
                   }};"#,
                charts
            ))
            .await;
        let stock = drawn["stock"].as_array()?;
        let base = drawn["buysBase"].as_f64()?;
        let above = |series: &str| {
            drawn[series]
                .as_array()
                .is_some_and(|points| points.iter().any(|p| p[1].as_f64() < Some(base)))
        };
        (stock.len() >= 2
            && stock.last()?[1].as_f64()? > stock.first()?[1].as_f64()?
            && above("queued")
            && above("again")
            && drawn["legend"].as_str()?.contains("queued 100"))
        .then_some(drawn)
    })
    .await;
    // Stock fell from 100 (drawn lower); the legend counts the window.
    let legend = drawn["legend"].as_str().unwrap();
    for wanted in [
        "queued 100",
        "already ordered 10",
        "sold out 30",
        "rate limited 0",
    ] {
        assert!(legend.contains(wanted), "{wanted}: {legend}");
    }
    assert!(!drawn["queue"].as_array().unwrap().is_empty(), "{drawn}");
    // Nothing in the page comes from elsewhere: every script is the origin's.
    let foreign = browser
        .script("return [...document.scripts].filter((s) => s.src && !s.src.startsWith(location.origin)).length")
        .await;
    assert_eq!(foreign, 0);
    browser
        .wait_text(&orders_cell, "100", Duration::from_secs(20))
        .await;
    browser.screenshot("rush-charted").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_sale_makes_the_storefront_wait_and_retry_by_itself() {
    let label = "browser_sale_busy";
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let app = TestApp::start(redis.url(), &db, AppSettings::new()).await;
    let port: u16 = app.url().rsplit(':').next().unwrap().parse().unwrap();
    let path = TcpProxy::start(port).await;
    // One unresolved buy per unit left: a single slow buy fills the gate.
    let edge = Edge::start(
        label,
        &path.http_url(),
        &[
            ("GATE_OVERBOOK", "1"),
            ("ORIGIN_TIMEOUT_MS", "10000"),
            // Only the buy crosses the slow path below.
            ("PRODUCT_TTL_MS", "600000"),
            ("SOLDOUT_REFRESH_MS", "600000"),
        ],
    )
    .await;
    let product = app.api().create_sale(&Sale::open(2)).await.product_id.get();
    // Member 1 holds one unit; one is left.
    assert_eq!(edge.api().buy(product, 1).await.status, 202);

    let mut browser = Browser::open(label, 1280, 900).await;
    browser
        .goto(&format!("{}/?product={product}", edge.url()))
        .await;
    sign_in(&browser, 202).await;
    browser.wait_enabled("#buy", SHORT).await;

    // Member 1 tries again over a slow path: admitted, and unresolved for
    // a few seconds (the origin will refuse it: already ordered).
    let forwarded_before = app
        .api()
        .metric(
            "http_requests_total",
            &[("route", "/api/seckill/{product_id}/orders")],
        )
        .await;
    path.set_delay(Duration::from_millis(1_500));
    let held = tokio::spawn({
        let api = edge.api();
        async move { api.buy(product, 1).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    browser.click("#buy").await;
    browser
        .wait_text("#status", "The sale is busy", SHORT)
        .await;
    browser.screenshot("sale-busy").await;
    assert!(
        !browser.is_enabled("#buy").await,
        "no second buy while waiting"
    );
    path.set_delay(Duration::ZERO);
    assert_eq!(held.await.unwrap().error(), Some("already_ordered"));

    // Without a click, the page tries again and gets the unit.
    browser
        .wait_for("#timeline li[data-step=queued]", Duration::from_secs(20))
        .await;
    browser.wait_text("#order-number", "#", SHORT).await;
    browser.screenshot("bought-after-waiting").await;
    let members: Vec<i64> = orders(&db.pool().await, product)
        .await
        .into_iter()
        .map(|(_, member, _)| member)
        .collect();
    assert_eq!(members.iter().filter(|m| **m == 202).count(), 1);
    let forwarded = app
        .api()
        .metric(
            "http_requests_total",
            &[("route", "/api/seckill/{product_id}/orders")],
        )
        .await
        - forwarded_before;
    assert_eq!(
        forwarded, 2.0,
        "member 1's retry and the page's one buy reached the origin; its busy answers did not"
    );
    browser.close().await;
}
