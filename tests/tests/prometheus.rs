//! The Prometheus kit of docs/ops/ against the real thing: a Prometheus
//! server (Debian's `prometheus` package) scrapes a live origin with the
//! kit's rules loaded, and the series an operator charts — reservations,
//! the latency histogram's p99 by route, stock left, every query of the
//! Grafana dashboard — are read back through Prometheus' HTTP API.

use std::process::Stdio;
use std::time::Duration;

use seckill_tests::paths::ScratchDir;
use seckill_tests::{
    eventually, free_port, AppSettings, Backend, RedisServer, Sale, TestApp, TestDatabase,
};
use serde_json::Value;

const OPS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ops");

/// The values of an instant query's result, by the series' labels.
async fn query(http: &reqwest::Client, prometheus: &str, promql: &str) -> Vec<(Value, f64)> {
    let reply: Value = http
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", promql)])
        .send()
        .await
        .expect("Prometheus answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(reply["status"], "success", "{promql}: {reply}");
    reply["data"]["result"]
        .as_array()
        .expect("a vector")
        .iter()
        .filter_map(|series| {
            let value = series["value"][1].as_str()?.parse::<f64>().ok()?;
            Some((series["metric"].clone(), value))
        })
        .collect()
}

#[tokio::test]
async fn prometheus_scrapes_the_origin_and_evaluates_the_kit() {
    if std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("prometheus is required: apt-get install prometheus (scripts/test installs it)");
    }
    let redis = RedisServer::start().await;
    let db = TestDatabase::create(Backend::Sqlite).await;
    let app = TestApp::start(redis.url(), &db, AppSettings::new()).await;
    let api = app.api();
    let sale = api.create_sale(&Sale::open(5)).await;
    let product = sale.product_id.get();

    // The kit's own configuration, pointed at this origin.
    let dir = ScratchDir::new("prometheus");
    let config = std::fs::read_to_string(format!("{OPS}/prometheus.yml"))
        .unwrap()
        .replace("127.0.0.1:8080", app.url().trim_start_matches("http://"));
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    std::fs::copy(format!("{OPS}/alerts.yml"), dir.path().join("alerts.yml")).unwrap();
    let port = free_port();
    let _prometheus = tokio::process::Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");
    let prometheus = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    eventually(Duration::from_secs(30), "a first scrape", || async {
        let found = http
            .get(format!("{prometheus}/-/ready"))
            .send()
            .await
            .ok()?;
        if !found.status().is_success() {
            return None;
        }
        let up = query(&http, &prometheus, "up{job=\"seckill\"}").await;
        (up.first().map(|(_, v)| *v) == Some(1.0)).then_some(())
    })
    .await;
    // Bought after the first scrape, so the histogram's increase shows.
    for member in 1..=3 {
        assert_eq!(api.buy(product, member).await.status, 202);
    }
    let reservations = eventually(Duration::from_secs(30), "scraped reservations", || async {
        let series = query(&http, &prometheus, "seckill_reservations_total").await;
        series
            .first()
            .map(|(_, value)| *value)
            .filter(|v| *v >= 3.0)
    })
    .await;
    assert_eq!(reservations, 3.0);

    let stock = query(
        &http,
        &prometheus,
        &format!("seckill_stock_left{{product=\"{product}\"}}"),
    )
    .await;
    assert_eq!(stock.first().map(|(_, v)| *v), Some(2.0), "{stock:?}");
    let ready = query(&http, &prometheus, "min(seckill_ready)").await;
    assert_eq!(ready.first().map(|(_, v)| *v), Some(1.0));

    // p99 by route from the latency histogram, as the dashboard computes it.
    // A series is born with its first value, so its increase shows only
    // from buys after that: keep buying (sold out soon: 409s count too).
    let next_member = std::sync::atomic::AtomicI64::new(100);
    let p99 = eventually(Duration::from_secs(20), "a p99 of the buy route", || async {
        let member = next_member.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        api.buy(product, member).await;
        let series = query(
            &http,
            &prometheus,
            "histogram_quantile(0.99, sum by (le, route) (increase(http_request_duration_seconds_bucket[1m])))",
        )
        .await;
        series
            .into_iter()
            .find(|(labels, value)| {
                labels["route"] == "/api/seckill/{product_id}/orders" && value.is_finite()
            })
            .map(|(_, value)| value)
    })
    .await;
    assert!(p99 > 0.0 && p99 <= 10.0, "p99 {p99}");

    // Every query of the dashboard is PromQL this Prometheus evaluates, and
    // the panels an operator watches during a sale have data.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{OPS}/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut with_data = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$product", ".*");
            if !query(&http, &prometheus, &expr).await.is_empty() {
                with_data += 1;
            }
        }
    }
    assert!(
        with_data >= 10,
        "only {with_data} dashboard queries have data"
    );

    // Every rule of the kit loaded and evaluated without error; none fires
    // on a healthy origin.
    let rules = eventually(Duration::from_secs(20), "evaluated rules", || async {
        let reply: Value = http
            .get(format!("{prometheus}/api/v1/rules"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let rules: Vec<Value> = reply["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        rules
            .iter()
            .all(|rule| {
                rule["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            })
            .then_some(rules)
    })
    .await;
    // Every rule of the file loaded: as many as it declares.
    let declared = std::fs::read_to_string(format!("{OPS}/alerts.yml"))
        .unwrap()
        .lines()
        .filter(|line| line.trim_start().starts_with("- alert:"))
        .count();
    assert!(declared >= 10, "alerts.yml declares {declared} alerts");
    assert_eq!(rules.len(), declared);
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
        assert_eq!(rule["state"], "inactive", "{rule}");
    }
}
