//! The operators' console over HTTP, for tests: a client that keeps
//! cookies and does not follow redirects, sign-in, pages.

use std::time::Duration;

use reqwest::redirect::Policy;

use crate::TestNode;

/// A client with a cookie store that does not follow redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .cookie_store(true)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The console URL of `path` at `node`.
pub fn url(node: &TestNode, path: &str) -> String {
    format!("http://{}{path}", node.console_addr)
}

/// Signs in; returns the status and the session cookie's `Set-Cookie`.
pub async fn sign_in(http: &reqwest::Client, node: &TestNode, token: &str) -> (u16, String) {
    let r = http
        .post(url(node, "/login"))
        .form(&[("token", token), ("lang", "it")])
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cookie = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, cookie)
}

/// A page's status and body.
pub async fn page(http: &reqwest::Client, node: &TestNode, path: &str) -> (u16, String) {
    let r = http.get(url(node, path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}
