//! The cross-site rule: a request that changes state must show that no other
//! web page sent it.
//!
//! A page on another origin can make a browser send a "simple" request to the
//! daemon — a form POST, or a `no-cors` fetch, with `text/plain` or no body
//! at all — and on loopback under `require = "remote"` such a request needs
//! no token. It cannot read the answer, but it does not need to: an
//! interrupt or an approval is done by the time it is sent. What it cannot
//! send without a CORS preflight (which the daemon never approves) is a
//! `content-type: application/json` or a custom header; so one of those
//! proves the request was not forced on a browser. `Origin` and
//! `Sec-Fetch-Site`, when the browser sends them, are checked too, so that a
//! browser's own say-so refuses a foreign page whatever it managed to send.

use super::error::ApiError;
use crate::auth::Auth;
use warp::http::{HeaderMap, Method};

/// The header our own clients (CLI, web app, bench) send with every request.
pub const CLIENT_HEADER: &str = "x-bosun-client";

/// Whether `method` may change state: anything but the safe methods.
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// Refuses a state-changing request that a foreign page could have sent:
/// 403 `forbidden` when the browser says it is cross-site (`Origin` not the
/// daemon's own as reached, i.e. `http(s)://<authority>`, nor in
/// `[auth] allowed_origins`; `Sec-Fetch-Site` other than `same-origin` or
/// `none`), 415 `unsupported_media_type` when it carries neither JSON nor
/// `X-Bosun-Client`.
pub fn check(auth: &Auth, method: &Method, headers: &HeaderMap, authority: &str) -> Result<(), ApiError> {
    if !changes_state(method) {
        return Ok(());
    }
    let single = |name: &str| -> Result<Option<&str>, ApiError> {
        let mut values = headers.get_all(name).iter();
        let Some(first) = values.next() else { return Ok(None) };
        if values.next().is_some() {
            return Err(ApiError::Forbidden(format!("more than one {name} header")));
        }
        first.to_str().map(Some).map_err(|_| ApiError::Forbidden(format!("an unreadable {name} header")))
    };
    // `same-site` is refused too: another port on localhost is the same site.
    if let Some(site) = single("sec-fetch-site")? {
        if !matches!(site.trim().to_ascii_lowercase().as_str(), "same-origin" | "none") {
            return Err(ApiError::Forbidden(format!(
                "a cross-site request (Sec-Fetch-Site: {site}) may not change anything"
            )));
        }
    }
    if let Some(origin) = single("origin")? {
        if !auth.origin_allowed(Some(origin), Some(authority)) {
            return Err(ApiError::Forbidden(format!(
                "a request from the origin {origin:?} may not change anything (not the daemon's own origin, nor in [auth] allowed_origins)"
            )));
        }
    }
    let json = headers
        .get_all(warp::http::header::CONTENT_TYPE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"));
    let marked = headers.get_all(CLIENT_HEADER).iter().any(|v| !v.as_bytes().iter().all(u8::is_ascii_whitespace));
    if json || marked {
        Ok(())
    } else {
        Err(ApiError::NotOurClient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthConfig, AuthRequire};
    use bosun_state::{Store, StoreConfig};
    use warp::http::HeaderValue;

    fn auth() -> (Auth, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path().join("store"))).unwrap();
        let config = AuthConfig {
            require: AuthRequire::Remote,
            allowed_origins: vec!["https://bosun.example.ts.net".into()],
            trusted_proxies: vec![],
        };
        (Auth::new(&config, "admin", store).unwrap(), dir)
    }

    fn post(pairs: &[(&'static str, &'static str)]) -> Result<(), u16> {
        let (auth, _dir) = auth();
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(*k, HeaderValue::from_static(v));
        }
        check(&auth, &Method::POST, &headers, "127.0.0.1:7878").map_err(|e| e.status().as_u16())
    }

    #[test]
    fn our_clients_pass() {
        assert_eq!(post(&[("x-bosun-client", "bosun-cli/0.1.0")]), Ok(()));
        assert_eq!(post(&[("content-type", "application/json; charset=utf-8")]), Ok(()));
        assert_eq!(post(&[("content-type", "Application/JSON")]), Ok(()));
        let app =
            [("x-bosun-client", "bosun-web"), ("origin", "http://127.0.0.1:7878"), ("sec-fetch-site", "same-origin")];
        assert_eq!(post(&app), Ok(()));
        assert_eq!(post(&[("x-bosun-client", "x"), ("origin", "https://bosun.example.ts.net")]), Ok(()));
        assert_eq!(post(&[("x-bosun-client", "x"), ("sec-fetch-site", "none")]), Ok(()));
    }

    #[test]
    fn what_a_foreign_page_can_send_is_refused() {
        assert_eq!(post(&[("content-type", "text/plain")]), Err(415));
        assert_eq!(post(&[("content-type", "application/x-www-form-urlencoded")]), Err(415));
        assert_eq!(post(&[("content-type", "multipart/form-data; boundary=x")]), Err(415));
        assert_eq!(post(&[]), Err(415), "a bodiless POST");
        assert_eq!(post(&[("x-bosun-client", " ")]), Err(415));
        assert_eq!(post(&[("content-type", "text/plain; x=application/json")]), Err(415));
        let form =
            [("content-type", "text/plain"), ("origin", "http://evil.example"), ("sec-fetch-site", "cross-site")];
        assert_eq!(post(&form), Err(403));
        assert_eq!(post(&[("x-bosun-client", "x"), ("origin", "http://evil.example")]), Err(403));
        assert_eq!(post(&[("x-bosun-client", "x"), ("origin", "null")]), Err(403));
        assert_eq!(post(&[("x-bosun-client", "x"), ("origin", "http://127.0.0.1:7879")]), Err(403));
        assert_eq!(post(&[("x-bosun-client", "x"), ("origin", "http://127.0.0.1:7878.evil.example")]), Err(403));
        assert_eq!(post(&[("x-bosun-client", "x"), ("sec-fetch-site", "same-site")]), Err(403));
        assert_eq!(post(&[("x-bosun-client", "x"), ("sec-fetch-site", "cross-site")]), Err(403));
        let two = [("x-bosun-client", "x"), ("origin", "http://127.0.0.1:7878"), ("origin", "http://evil.example")];
        assert_eq!(post(&two), Err(403));
    }

    #[test]
    fn reads_are_not_checked() {
        let (auth, _dir) = auth();
        let mut headers = HeaderMap::new();
        headers.insert("origin", HeaderValue::from_static("http://evil.example"));
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(check(&auth, &method, &headers, "127.0.0.1:7878").is_ok(), "{method}");
        }
        for method in [Method::PUT, Method::PATCH, Method::DELETE, Method::from_bytes(b"PURGE").unwrap()] {
            assert!(check(&auth, &method, &headers, "127.0.0.1:7878").is_err(), "{method}");
        }
    }
}
