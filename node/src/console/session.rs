//! Console sessions: a random id in an HttpOnly, SameSite=Strict cookie
//! (Secure when the console is reached over TLS), the operator's Desk token
//! kept server-side only (never in a URL, a page or a log), a CSRF token per
//! session checked on every form, an idle and an absolute expiry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore as _;

/// The cookie's name.
pub const COOKIE: &str = "urp_session";

/// One signed-in operator.
#[derive(Clone)]
pub struct Session {
    /// The Desk token it signed in with (re-checked on every request, so a
    /// revoked token ends the session).
    pub token: String,
    /// The form token.
    pub csrf: String,
    /// "it" or "en".
    pub lang: &'static str,
    created: Instant,
    seen: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("lang", &self.lang)
            .finish_non_exhaustive()
    }
}

/// Random hex of `bytes` bytes.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The sessions of one console.
#[derive(Debug)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
    idle: Duration,
    max: Duration,
}

impl Sessions {
    /// Sessions ending after `idle` without a request, or `max` after login.
    pub fn new(idle: Duration, max: Duration) -> Self {
        Self {
            by_id: Mutex::new(HashMap::new()),
            idle,
            max,
        }
    }

    /// Opens a session for `token`; returns its id.
    pub fn open(&self, token: String, lang: &'static str) -> String {
        let id = random_hex(32);
        let now = Instant::now();
        let mut map = self.by_id.lock().expect("sessions");
        let (idle, max) = (self.idle, self.max);
        map.retain(|_, s| s.seen.elapsed() < idle && s.created.elapsed() < max);
        map.insert(
            id.clone(),
            Session {
                token,
                csrf: random_hex(32),
                lang,
                created: now,
                seen: now,
            },
        );
        metrics::gauge!("urpnet_console_sessions").set(map.len() as f64);
        id
    }

    /// The live session `id`, its last use now; `None` when unknown or
    /// expired (an expired one is dropped).
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut map = self.by_id.lock().expect("sessions");
        let live = map
            .get(id)
            .is_some_and(|s| s.seen.elapsed() < self.idle && s.created.elapsed() < self.max);
        if !live {
            map.remove(id);
            return None;
        }
        let s = map.get_mut(id)?;
        s.seen = Instant::now();
        Some(s.clone())
    }

    /// Changes a session's language.
    pub fn set_lang(&self, id: &str, lang: &'static str) {
        if let Some(s) = self.by_id.lock().expect("sessions").get_mut(id) {
            s.lang = lang;
        }
    }

    /// Ends a session.
    pub fn close(&self, id: &str) {
        let mut map = self.by_id.lock().expect("sessions");
        map.remove(id);
        metrics::gauge!("urpnet_console_sessions").set(map.len() as f64);
    }
}

/// The session id in a `Cookie` header.
pub fn cookie_of(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` value of a session (or of its removal, `id` empty).
pub fn set_cookie(id: &str, secure: bool, max_age: Duration) -> String {
    let secure = if secure { "; Secure" } else { "" };
    if id.is_empty() {
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
    } else {
        format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            max_age.as_secs()
        )
    }
}

/// Whether two tokens are equal, in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_cookies_are_strict() {
        let s = Sessions::new(Duration::from_millis(0), Duration::from_secs(60));
        let id = s.open("t".into(), "it");
        assert!(s.get(&id).is_none(), "idle at once");
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(60));
        let id = s.open("t".into(), "it");
        assert_eq!(s.get(&id).unwrap().token, "t");
        s.close(&id);
        assert!(s.get(&id).is_none());
        let c = set_cookie(&id, true, Duration::from_secs(60));
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            format!("a=b; {COOKIE}={id}").parse().unwrap(),
        );
        assert_eq!(cookie_of(&h).as_deref(), Some(id.as_str()));
        h.insert(
            axum::http::header::COOKIE,
            format!("{COOKIE}=../../etc").parse().unwrap(),
        );
        assert_eq!(cookie_of(&h), None);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
