//! A bounded run of the fault-injection soak: the built `seckill-bench
//! chaos` against the built `seckill-origin`, 75 seconds of mixed load on
//! three origins and a worker while every kind of fault is injected at
//! least once (the schedule of seed 7 covers them all), then the shared
//! invariant audit. The test fails when the audit does.

use seckill_tests::paths::{test_output_dir, workspace_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_chaos_soak_keeps_every_invariant() {
    let out = test_output_dir("chaos");
    let report = out.join("chaos-report.json");
    let _ = std::fs::remove_file(&report);
    let origin = workspace_binary("seckill-origin");
    let mut command = tokio::process::Command::new(workspace_binary("seckill-bench"));
    command.args([
        "chaos",
        "--duration",
        "75s",
        "--seed",
        "7",
        "--origins",
        "3",
        "--products",
        "4",
        "--stock",
        "100",
        "--concurrency",
        "8",
        "--pay-timeout-s",
        "4",
    ]);
    command
        .arg("--origin-bin")
        .arg(&origin)
        .arg("--output")
        .arg(&report);
    if let Ok(url) = std::env::var("SECKILL_TEST_PG_URL") {
        command.arg("--postgres-url").arg(url);
    } else {
        command
            .arg("--postgres-url")
            .arg(seckill_tests::database::DEFAULT_PG_ADMIN_URL);
    }
    let run = command.output().await.expect("run seckill-bench chaos");
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!("{stderr}");
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|_| panic!("no report was written; stderr:\n{stderr}"));
    let json: serde_json::Value = serde_json::from_str(&text).expect("the report is JSON");
    let failures: Vec<String> = json["audit"]["checks"]
        .as_array()
        .expect("audit checks")
        .iter()
        .filter(|c| c["passed"] != true)
        .map(|c| format!("{}: {}", c["name"], c["detail"]))
        .collect();
    assert!(
        run.status.success() && json["passed"] == true,
        "the chaos soak failed (seed 7, logs in {}):\n{}\n{stderr}",
        out.display(),
        failures.join("\n")
    );

    // It did what it says: every kind of fault, real load of every kind.
    let kinds = json["faults_by_kind"].as_object().expect("faults by kind");
    for kind in [
        "kill_origin",
        "kill_worker",
        "kill_deadline_poller",
        "redis_crash",
        "redis_empty",
        "database_cut",
        "database_slow",
        "row_lock",
        "pubsub_cut",
    ] {
        assert!(
            kinds.get(kind).and_then(|n| n.as_u64()).unwrap_or(0) >= 1,
            "{kind} was injected: {kinds:?}"
        );
    }
    let requests = &json["requests"];
    assert!(
        requests["buy"]["202"].as_u64().unwrap_or(0) > 100,
        "{requests}"
    );
    assert!(
        requests["pay"]["200"].as_u64().unwrap_or(0) > 10,
        "{requests}"
    );
    assert!(
        requests["result"]["success"].as_u64().unwrap_or(0) > 10,
        "{requests}"
    );
    let checks = json["audit"]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 11, "every invariant was checked");
}
