//! A real headless browser for the web tests: Debian's `chromium` driven by
//! `chromedriver` over WebDriver (fantoccini), each in a fresh profile, with
//! axe-core (vendored in `tests/assets/`, MPL-2.0) for the accessibility
//! checks. `.ci/run` installs both packages when missing; elsewhere a test
//! without them says it was skipped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};
use tempfile::TempDir;

const AXE: &str = include_str!("../assets/axe.min.js");

/// A browser session and the driver behind it.
pub struct Browser {
    /// The WebDriver client.
    pub client: Client,
    driver: tokio::process::Child,
    _profile: TempDir,
}

/// `chromedriver`, if installed.
fn driver_path() -> Option<PathBuf> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium `width` × 900; `None`
    /// (the test then says it was skipped) when they are not installed,
    /// except under CI, where that is a failure.
    pub async fn start(width: u32) -> Option<Browser> {
        let Some(driver) = driver_path() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have chromium and chromium-driver (.ci/run installs them)"
            );
            return None;
        };
        let port = urpnet_examples::smtp::free_port();
        let child = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        // Narrow widths are emulated as a phone's viewport (a headless
        // window is never narrower than 500 px).
        let mobile = (width < 500).then(
            || json!({ "deviceMetrics": { "width": width, "height": 800, "pixelRatio": 1.0 } }),
        );
        let mut options = json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},900"),
                    "--lang=it-IT",
                ],
        });
        if let Some(m) = mobile {
            options["mobileEmulation"] = m;
        }
        caps.insert("goog:chromeOptions".into(), options);
        let url = format!("http://127.0.0.1:{port}");
        let client = crate::wait_for("chromedriver", Duration::from_secs(30), || {
            let caps = caps.clone();
            let url = url.clone();
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&url)
                    .await
                    .ok()
            }
        })
        .await;
        Some(Browser {
            client,
            driver: child,
            _profile: profile,
        })
    }

    /// Saves a PNG of the page as `<name>.png` in `$URPNET_SCREENSHOTS`
    /// (when set; `docs/screenshots` keeps the ones in the docs), and
    /// returns its size.
    pub async fn screenshot(&self, name: &str) -> usize {
        let png = self.client.screenshot().await.expect("screenshot");
        if let Some(dir) = std::env::var_os("URPNET_SCREENSHOTS") {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).expect("screenshot dir");
            std::fs::write(dir.join(format!("{name}.png")), &png).expect("write screenshot");
        }
        png.len()
    }

    /// The page's serious and critical WCAG 2.1 A/AA violations by axe-core:
    /// (rule, impact, help, how many elements).
    pub async fn axe(&self) -> Vec<(String, String, String, u64)> {
        self.client.execute(AXE, vec![]).await.expect("axe loads");
        let result = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] })
                   .then(r => done(r.violations.map(v => [v.id, v.impact, v.help, v.nodes.length])))
                   .catch(e => done([['axe-error', 'critical', String(e), 0]]));",
                vec![],
            )
            .await
            .expect("axe runs");
        result
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|v| {
                (
                    v[0].as_str().unwrap_or_default().to_string(),
                    v[1].as_str().unwrap_or_default().to_string(),
                    v[2].as_str().unwrap_or_default().to_string(),
                    v[3].as_u64().unwrap_or_default(),
                )
            })
            .filter(|(_, impact, _, _)| impact == "serious" || impact == "critical")
            .collect()
    }

    /// Runs a script and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.expect("script")
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}

/// The element `css` names, once the page shows it (after a click that
/// navigates, the next page may not be there yet).
pub async fn element(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(fantoccini::Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
}

/// Clicks the element `css` names.
pub async fn click(c: &Client, css: &str) {
    element(c, css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Types `text` into the field `css` names.
pub async fn type_into(c: &Client, css: &str, text: &str) {
    element(c, css)
        .await
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("type into {css}: {e}"));
}

/// Waits until the page's source contains `text`.
pub async fn page_has(c: &Client, what: &str, text: &str) {
    crate::wait_for(what, Duration::from_secs(30), || async {
        c.source().await.ok()?.contains(text).then_some(())
    })
    .await;
}
