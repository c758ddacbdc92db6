//! The Wasm edge in real workerd, through `wrangler dev`, in front of a
//! test's origin. The bundle is built once by `scripts/test` (or
//! `scripts/build-edge`); each test runs its own wrangler on free ports with
//! its own state directory and variables.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::client::{Api, Reply};
use crate::paths::{test_output_dir, ScratchDir};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The admission gate's objects, bound as the repository's wrangler.toml
/// binds them.
const GATE_BINDING: &str = "
[[durable_objects.bindings]]
name = \"ADMISSION_GATE\"
class_name = \"AdmissionGate\"

[[migrations]]
tag = \"v1\"
new_sqlite_classes = [\"AdmissionGate\"]
";

pub struct Edge {
    child: Option<Child>,
    url: String,
    /// The worker's name, unique per test edge (wrangler dev's registry
    /// finds another edge's objects by it).
    name: String,
    _state: ScratchDir,
}

impl Edge {
    /// Starts the edge forwarding to `origin_url`, with the test token
    /// secret and `vars` on top of `wrangler.toml`'s defaults.
    pub async fn start(label: &str, origin_url: &str, vars: &[(&str, &str)]) -> Self {
        Self::launch(label, origin_url, vars, None).await
    }

    /// A second location: its own workerd, whose admission gate is `first`'s
    /// objects, as every location shares one object per product on
    /// Cloudflare (wrangler dev connects the two through its registry).
    pub async fn start_sharing_gate(
        label: &str,
        origin_url: &str,
        vars: &[(&str, &str)],
        first: &Edge,
    ) -> Self {
        Self::launch(label, origin_url, vars, Some(&first.name)).await
    }

    async fn launch(
        label: &str,
        origin_url: &str,
        vars: &[(&str, &str)],
        gate_of: Option<&str>,
    ) -> Self {
        let root = repo_root();
        let bundle = root.join("edge/build/index.js");
        let wrangler = root.join("node_modules/.bin/wrangler");
        assert!(
            bundle.exists(),
            "{} is missing: build the edge with scripts/build-edge (scripts/test does)",
            bundle.display()
        );
        assert!(
            wrangler.exists(),
            "wrangler is missing: run `npm ci` at the repository root (scripts/test does)"
        );
        let state = ScratchDir::new("edge");
        let config = state.path().join("wrangler.toml");
        let name = format!("seckill-edge-test-{}", crate::unique_suffix());
        let gate = match gate_of {
            None => GATE_BINDING.to_string(),
            Some(owner) => format!(
                "\n[[durable_objects.bindings]]\nname = \"ADMISSION_GATE\"\nclass_name = \"AdmissionGate\"\nscript_name = \"{owner}\"\n"
            ),
        };
        std::fs::write(
            &config,
            format!(
                "name = \"{name}\"\nmain = \"{}\"\ncompatibility_date = \"2026-04-01\"\n{gate}",
                bundle.canonicalize().unwrap().display()
            ),
        )
        .expect("write the test wrangler config");
        let port = crate::free_port();
        let log = test_output_dir(label).join(format!("edge-{}.log", crate::unique_suffix()));
        let mut command = Command::new(&wrangler);
        command
            .arg("dev")
            .arg("-c")
            .arg(&config)
            .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
            .args(["--inspector-port", &crate::free_port().to_string()])
            .arg("--persist-to")
            .arg(state.path().join("state"))
            .arg("--show-interactive-dev-session=false")
            .args(["--log-level", "warn"]);
        let mut all_vars = vec![
            ("ORIGIN_URL", origin_url.to_string()),
            ("SECKILL_TOKEN_SECRET", crate::TOKEN_SECRET.to_string()),
        ];
        all_vars.extend(vars.iter().map(|(k, v)| (*k, v.to_string())));
        for (name, value) in all_vars {
            command.arg("--var").arg(format!("{name}:{value}"));
        }
        command
            .current_dir(state.path())
            .env("WRANGLER_SEND_METRICS", "false")
            .env("WRANGLER_SEND_ERROR_REPORTS", "false")
            .env("WRANGLER_HIDE_BANNER", "true")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("CI", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::create(log.with_extension("err")).unwrap(),
            ))
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().expect("start wrangler dev");
        let edge = Self {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            name,
            _state: state,
        };
        let api = edge.api();
        let ready = tokio::time::timeout(Duration::from_secs(90), async {
            loop {
                if let Ok(response) = api
                    .http()
                    .get(format!("{}/api/time", api.base()))
                    .send()
                    .await
                {
                    if response.status().is_success() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        if ready.is_err() {
            panic!(
                "wrangler dev did not serve the edge within 90 s; its log:\n{}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default(),
                std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
            );
        }
        edge
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn api(&self) -> Api {
        Api::new(&self.url)
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        // wrangler runs workerd as a child: end the whole process group.
        if let Some(child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
            }
        }
    }
}

/// Buys as a patient buyer does through the edge: after `503 sale_busy` it
/// waits the answer's `Retry-After` and tries again, at most `tries` times;
/// returns the last answer.
pub async fn buy_patiently(api: &Api, product: i64, member: i64, tries: usize) -> Reply {
    let mut reply = api.buy(product, member).await;
    for _ in 1..tries {
        if reply.error() != Some("sale_busy") {
            break;
        }
        let wait_s: u64 = reply
            .header("retry-after")
            .and_then(|value| value.parse().ok())
            .expect("sale_busy comes with Retry-After");
        tokio::time::sleep(Duration::from_secs(wait_s)).await;
        reply = api.buy(product, member).await;
    }
    reply
}
