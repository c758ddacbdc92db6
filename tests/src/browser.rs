//! Headless Chromium driven through ChromeDriver (WebDriver), for tests of
//! the pages as a buyer and an operator use them. Every step can be saved
//! as a screenshot under `target/test-output/<label>/`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::process::{Child, Command};

use crate::paths::{test_output_dir, ScratchDir};

const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Browser {
    client: Client,
    _driver: Child,
    _profile: ScratchDir,
    shots: PathBuf,
    shot: usize,
}

fn require(tool: &str) {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is not installed: apt-get install chromium chromium-driver (scripts/test does this as root)"
    );
}

impl Browser {
    /// A fresh browser (its own profile: its own local storage) showing
    /// pages at `width` × `height` CSS pixels. Below 500 px the viewport is
    /// emulated as a phone's: a headless window is never narrower than that.
    pub async fn open(label: &str, width: u32, height: u32) -> Self {
        require(CHROMIUM);
        require("chromedriver");
        let port = crate::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let webdriver = format!("http://127.0.0.1:{port}");
        let status = format!("{webdriver}/status");
        crate::eventually(Duration::from_secs(20), "chromedriver to start", || {
            let status = status.clone();
            async move {
                reqwest::get(&status)
                    .await
                    .ok()?
                    .status()
                    .is_success()
                    .then_some(())
            }
        })
        .await;

        let profile = ScratchDir::new("chromium");
        let mut capabilities = serde_json::Map::new();
        let mut chrome_options = json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                format!("--user-data-dir={}", profile.path().display()),
                format!("--window-size={width},{height}"),
            ],
        });
        if width < 500 {
            chrome_options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1.0, "mobile": true, "touch": true }
            });
        }
        capabilities.insert("goog:chromeOptions".into(), chrome_options);
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&webdriver)
            .await
            .expect("open a Chromium session");
        Self {
            client,
            _driver: driver,
            _profile: profile,
            shots: test_output_dir(label),
            shot: 0,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Saves the page as `<nn>-<name>.png` in the test's output folder.
    pub async fn screenshot(&mut self, name: &str) {
        self.shot += 1;
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.shots.join(format!("{:02}-{name}.png", self.shot));
        std::fs::write(&path, png).expect("write screenshot");
    }

    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the element's visible text contains `wanted`.
    pub async fn wait_text(&self, css: &str, wanted: &str, timeout: Duration) -> String {
        crate::eventually(timeout, &format!("{css} to show {wanted:?}"), || async {
            let text = self.text(css).await;
            text.contains(wanted).then_some(text)
        })
        .await
    }

    pub async fn is_enabled(&self, css: &str) -> bool {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.is_enabled().await.unwrap_or(false),
            Err(_) => false,
        }
    }

    pub async fn wait_enabled(&self, css: &str, timeout: Duration) {
        crate::eventually(timeout, &format!("{css} to be enabled"), || async {
            self.is_enabled(css).await.then_some(())
        })
        .await;
    }

    /// Waits for an element matching `css` to exist.
    pub async fn wait_for(&self, css: &str, timeout: Duration) {
        crate::eventually(timeout, &format!("{css} to appear"), || async {
            self.client.find(Locator::Css(css)).await.ok().map(|_| ())
        })
        .await;
    }

    pub async fn click(&self, css: &str) {
        let element = self.client.find(Locator::Css(css)).await.expect(css);
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Focuses the field (with the keyboard's Tab order untouched) and types.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.client.find(Locator::Css(css)).await.expect(css);
        element.clear().await.expect("clear");
        element.send_keys(text).await.expect("type");
    }

    /// Sends one key to the element (focusing it), as a keyboard user would.
    pub async fn press(&self, css: &str, key: fantoccini::key::Key) {
        let element = self.client.find(Locator::Css(css)).await.expect(css);
        element
            .send_keys(&key.to_string())
            .await
            .expect("press a key");
    }

    /// Runs JavaScript in the page and returns its result.
    pub async fn script(&self, source: &str) -> serde_json::Value {
        self.client
            .execute(source, vec![])
            .await
            .expect("run script")
    }

    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    /// A test that fails before `close` leaves Chromium running once
    /// ChromeDriver is killed: end the processes of this browser's own
    /// profile, and only those.
    fn drop(&mut self) {
        let profile = format!("--user-data-dir={}", self._profile.path().display());
        let _ = std::process::Command::new("pkill")
            .arg("-f")
            // `--` or pkill would read the pattern as one of its own options.
            .arg("--")
            .arg(profile)
            .status();
    }
}
