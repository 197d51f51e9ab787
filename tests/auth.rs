//! Auth at the network boundary (docs/SECURITY.md), against the real binary.
//! "Remote" clients are played by loopback ones under `require = "always"`;
//! the loopback rule itself is unit-tested in src/auth.rs.

mod common;

use bosun_proto::{DeviceList, SessionList, TotpStatus};
use common::*;
use futures::SinkExt;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Output;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const ALWAYS: &str = "[auth]\nrequire = \"always\"\n";

fn options(config: &str) -> Options {
    Options { config: Some(config.to_string()), ..Options::default() }
}

/// The CLI's `--json` output, which must have succeeded, as `T`.
fn ok_json<T: serde::de::DeserializeOwned>(out: &Output) -> T {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

async fn call(
    d: &Daemon,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = d.http.request(method, format!("{}{}", d.url, path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn pair(d: &Daemon, home: &Path) -> String {
    let data_dir = d.data_dir.to_str().unwrap();
    // Raw: `pair --json` adds the URL to print to the daemon's answer.
    let out: Value = ok_json(&bosun(d, home, &["pair", "--json", "--data-dir", data_dir]));
    let code = out["code"].as_str().expect("code").to_string();
    assert_eq!(out["url"], format!("{}/#pair={code}", d.url), "{out}");
    assert!(out["expires_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{out}");
    code
}

async fn exchange(d: &Daemon, code: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({"pairing_code": code, "device_name": "test phone"});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    call(d, reqwest::Method::POST, "/auth/token", None, Some(body)).await
}

async fn ws_with(d: &Daemon, query: &str, origin: Option<&str>) -> Result<Ws, u16> {
    let mut request = format!("{}{query}", d.ws_url()).into_client_request().unwrap();
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("ws connect: {e}"),
    }
}

#[tokio::test]
async fn pairing_gives_a_token_that_works_until_revoked() {
    let dir = tempdir();
    let home = tempdir();
    let d = Daemon::start(&dir.path().join("data"), options(ALWAYS));
    let data_dir = d.data_dir.to_str().unwrap().to_string();

    // The admin credential is there, readable by its owner only.
    let admin_file = d.data_dir.join("admin.token");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&admin_file).unwrap().permissions().mode() & 0o777, 0o600);

    // No token: 401 in the API's error shape, with the security headers.
    let resp = d.http.get(format!("{}/api/v1/sessions", d.url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let headers = resp.headers().clone();
    assert!(headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    assert_eq!(call(&d, reqwest::Method::GET, "/health", None, None).await.0, 401);
    // The app's shell needs none, and carries the headers too.
    let resp = d.http.get(format!("{}/", d.url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");

    // A device exchanges a code once.
    let code = pair(&d, home.path());
    let (status, body) = exchange(&d, &code, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let device_id = body["device_id"].as_str().unwrap().to_string();
    let (status, body) = exchange(&d, &code, json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "reused code: {body}");

    // The token works on HTTP...
    let (status, body) = call(&d, reqwest::Method::GET, "/api/v1/sessions", Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(call(&d, reqwest::Method::GET, "/api/v1/sessions", Some("bsn_nope"), None).await.0, 401);
    // ...but is not the admin credential.
    let (status, _) = call(&d, reqwest::Method::POST, "/auth/pairing", Some(&token), Some(json!({}))).await;
    assert_eq!(status, 403);

    // ...and on the WebSocket, in the query...
    let mut ws_query = ws_with(&d, &format!("?token={token}"), None).await.expect("ws with ?token");
    ws_subscribe(&mut ws_query, &["*"], 0).await;
    // ...or as the first message.
    let mut ws_message = ws_with(&d, "", None).await.expect("ws upgrade");
    ws_send(&mut ws_message, json!({"op": "auth", "token": token})).await;
    let ack = ws_next(&mut ws_message, Duration::from_secs(10)).await.expect("auth answer");
    assert_eq!(ack["op"], "authenticated", "{ack}");
    ws_subscribe(&mut ws_message, &["*"], 0).await;
    // A bad token in the query is refused before the upgrade; none at all
    // gets an error frame and the close.
    assert_eq!(ws_with(&d, "?token=bsn_nope", None).await.err(), Some(401));
    let mut ws = ws_with(&d, "", None).await.expect("ws upgrade");
    ws_send(&mut ws, json!({"op": "subscribe", "topics": ["*"], "since": 0})).await;
    let refused = ws_error(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(refused.code, "unauthorized", "{refused:?}");
    assert!(ws_next(&mut ws, Duration::from_secs(10)).await.is_none(), "closed");

    // The CLI works with the admin credential from --data-dir, and not without it.
    let out = bosun(&d, home.path(), &["session", "ls", "--json", "--data-dir", &data_dir]);
    let _: SessionList = ok_json(&out);
    let out = bosun(&d, home.path(), &["status", "--json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"), "{out:?}");
    let out = bosun(&d, home.path(), &["pair", "--json"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin credential"), "{out:?}");
    // Live output over the WebSocket too.
    let out = bosun(&d, home.path(), &["session", "new", "--data-dir", &data_dir, "--policy", "full-access"]);
    assert!(out.status.success(), "{out:?}");
    let session = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = bosun(&d, home.path(), &["send", &session, "hello", "--wait", "--data-dir", &data_dir]);
    assert!(out.status.success(), "{out:?}");

    // devices ls shows the device, never its token or hash.
    let out = bosun(&d, home.path(), &["devices", "ls", "--json", "--data-dir", &data_dir]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let list: DeviceList = ok_json(&out);
    assert_eq!(list.devices[0].id, device_id, "{list:?}");
    assert_eq!(list.devices[0].name, "test phone");
    assert!(!text.contains(&token) && !text.contains("hash"), "{text}");
    let out = bosun(&d, home.path(), &["devices", "ls", "--data-dir", &data_dir]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&device_id), "{out:?}");

    // Revoked: refused at once.
    let out = bosun(&d, home.path(), &["devices", "revoke", &device_id, "--data-dir", &data_dir]);
    assert!(out.status.success(), "{out:?}");
    let (status, body) = call(&d, reqwest::Method::GET, "/api/v1/sessions", Some(&token), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{body}");
    // Its open WebSockets are told and closed, not left streaming.
    for (how, mut ws) in [("?token=", ws_query), ("first message", ws_message)] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let frame = ws_next_frame(&mut ws, left).await;
            let Some(frame) = frame else { panic!("{how}: the socket ended without saying the device was revoked") };
            if matches!(&frame, ServerFrame::Control(Control::Error { error }) if error.code == "unauthorized") {
                break;
            }
        }
        assert!(ws_next(&mut ws, Duration::from_secs(10)).await.is_none(), "{how}: closed after the revocation");
    }
    let out = bosun(&d, home.path(), &["devices", "revoke", &device_id, "--data-dir", &data_dir]);
    assert!(!out.status.success());
}

#[tokio::test]
async fn websocket_checks_origin_and_loopback_needs_no_token_by_default() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let host = d.url.trim_start_matches("http://").to_string();
    assert_eq!(ws_with(&d, "", Some("http://evil.example")).await.err(), Some(403));
    let mut ws = ws_with(&d, "", Some(&format!("http://{host}"))).await.expect("same origin");
    ws_subscribe(&mut ws, &["*"], 0).await;
    // Loopback under the default `require = "remote"`: no token needed...
    assert_eq!(call(&d, reqwest::Method::GET, "/api/v1/sessions", None, None).await.0, 200);
    // ...but the admin endpoints still want the admin credential.
    let (status, body) = call(&d, reqwest::Method::POST, "/auth/pairing", None, Some(json!({}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    let resp = d.http.get(format!("{}/health", d.url)).send().await.unwrap();
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let mut ws = ws_with(&d, "", None).await.expect("ws");
    ws.send(Message::text(json!({"op": "ping", "nonce": 1}).to_string())).await.unwrap();
    let pong = ws_next_frame(&mut ws, Duration::from_secs(10)).await.expect("pong");
    assert!(matches!(pong, ServerFrame::Control(Control::Pong { nonce: Some(1) })), "{pong:?}");
}

#[tokio::test]
async fn failed_attempts_are_rate_limited() {
    let dir = tempdir();
    let d = Daemon::start(&dir.path().join("data"), options(ALWAYS));
    for i in 0..10 {
        let (status, _) = exchange(&d, &format!("WRONGCODE{i}"), json!({})).await;
        assert_eq!(status, 401, "attempt {i}");
    }
    let resp = d.http.get(format!("{}/api/v1/sessions", d.url)).bearer_auth("bsn_guess").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(exchange(&d, "ANYTHING", json!({})).await.0, 429);
    assert_eq!(ws_with(&d, "?token=x", None).await.err(), Some(429));
}

#[tokio::test]
async fn totp_is_required_at_pairing_when_enabled() {
    let dir = tempdir();
    let home = tempdir();
    let d = Daemon::start(&dir.path().join("data"), options(ALWAYS));
    let data_dir = d.data_dir.to_str().unwrap().to_string();
    let out: TotpStatus = ok_json(&bosun(&d, home.path(), &["totp", "enable", "--json", "--data-dir", &data_dir]));
    assert!(out.enabled, "{out:?}");
    let url = out.otpauth_url.as_deref().expect("otpauth url");
    let totp = totp_rs::TOTP::from_url(url).expect("an RFC 6238 otpauth URL");
    // The human form draws a QR code of it.
    let out = bosun(&d, home.path(), &["totp", "status", "--data-dir", &data_dir]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "totp enabled");

    let code = pair(&d, home.path());
    let (status, body) = exchange(&d, &code, json!({})).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("totp"), "{body}");
    assert_eq!(exchange(&d, &code, json!({"totp": "000000x"})).await.0, 401);
    let (status, body) = exchange(&d, &code, json!({"totp": totp.generate_current().unwrap()})).await;
    assert_eq!(status, 200, "{body}");

    let out = bosun(&d, home.path(), &["totp", "disable", "--data-dir", &data_dir]);
    assert!(out.status.success(), "{out:?}");
    let code = pair(&d, home.path());
    assert_eq!(exchange(&d, &code, json!({})).await.0, 200);
}

#[test]
fn pair_prints_a_url_and_a_qr_code() {
    let dir = tempdir();
    let home = tempdir();
    let d = Daemon::start(&dir.path().join("data"), Options::default());
    let data_dir = d.data_dir.to_str().unwrap();
    let out = bosun(&d, home.path(), &["pair", "--data-dir", data_dir, "--url", "https://bosun.example.ts.net"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().next().unwrap().starts_with("https://bosun.example.ts.net/#pair="), "{text}");
    assert!(text.contains('█') || text.contains('▀') || text.contains('▄'), "a QR code: {text}");
}
