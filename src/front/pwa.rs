//! The phone-first web app, served at `/` from assets embedded in the binary so
//! running it needs no build step and no files next to the daemon.
//!
//! The assets hold no data, so they are served without a token; everything the
//! app shows comes from the API and the WebSocket, which follow the auth rule.

use warp::http::{HeaderValue, StatusCode};
use warp::reply::{Reply, Response};

/// The policy every page carries: nothing inline, nothing from elsewhere, never framed.
/// `ws:`/`wss:` are listed because some browsers do not match `'self'` against WebSocket URLs.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; frame-ancestors 'none'";

/// How long a browser may keep an asset without asking again.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Caching {
    /// Revalidate every time: the page, the script and the service worker must
    /// change together when the binary changes.
    Revalidate,
    /// Icons change rarely and a stale one harms nobody.
    Day,
}

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    caching: Caching,
}

const INDEX: &str = include_str!("pwa/index.html");

const ASSETS: &[Asset] = &[
    Asset { path: "/", content_type: "text/html; charset=utf-8", body: INDEX.as_bytes(), caching: Caching::Revalidate },
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        body: INDEX.as_bytes(),
        caching: Caching::Revalidate,
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("pwa/app.js").as_bytes(),
        caching: Caching::Revalidate,
    },
    Asset {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("pwa/app.css").as_bytes(),
        caching: Caching::Revalidate,
    },
    Asset {
        path: "/sw.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("pwa/sw.js").as_bytes(),
        caching: Caching::Revalidate,
    },
    Asset {
        path: "/manifest.webmanifest",
        content_type: "application/manifest+json",
        body: include_str!("pwa/manifest.webmanifest").as_bytes(),
        caching: Caching::Revalidate,
    },
    Asset {
        path: "/icon.svg",
        content_type: "image/svg+xml",
        body: include_str!("pwa/icon.svg").as_bytes(),
        caching: Caching::Day,
    },
    Asset {
        path: "/icon-192.png",
        content_type: "image/png",
        body: include_bytes!("pwa/icon-192.png"),
        caching: Caching::Day,
    },
    Asset {
        path: "/icon-512.png",
        content_type: "image/png",
        body: include_bytes!("pwa/icon-512.png"),
        caching: Caching::Day,
    },
    Asset {
        path: "/apple-touch-icon.png",
        content_type: "image/png",
        body: include_bytes!("pwa/icon-180.png"),
        caching: Caching::Day,
    },
];

/// The app's asset at `path` (`/`, `/app.js`, ...), if there is one.
pub fn asset(path: &str) -> Option<Response> {
    let asset = ASSETS.iter().find(|a| a.path == path)?;
    let mut response = warp::reply::with_status(asset.body, StatusCode::OK).into_response();
    let headers = response.headers_mut();
    let cache = match asset.caching {
        Caching::Revalidate => "no-cache",
        Caching::Day => "public, max-age=86400",
    };
    headers.insert("content-type", HeaderValue::from_static(asset.content_type));
    headers.insert("cache-control", HeaderValue::from_static(cache));
    headers.insert("content-security-policy", HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(response: &Response, name: &str) -> String {
        response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    }

    #[test]
    fn each_asset_is_served_with_its_type_and_the_security_headers() {
        let expected = [
            ("/", "text/html; charset=utf-8"),
            ("/index.html", "text/html; charset=utf-8"),
            ("/app.js", "text/javascript; charset=utf-8"),
            ("/app.css", "text/css; charset=utf-8"),
            ("/sw.js", "text/javascript; charset=utf-8"),
            ("/manifest.webmanifest", "application/manifest+json"),
            ("/icon.svg", "image/svg+xml"),
            ("/icon-192.png", "image/png"),
            ("/icon-512.png", "image/png"),
            ("/apple-touch-icon.png", "image/png"),
        ];
        assert_eq!(expected.len(), ASSETS.len(), "an asset without a test line");
        for (path, content_type) in expected {
            let response = asset(path).unwrap_or_else(|| panic!("{path} is not served"));
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(header(&response, "content-type"), content_type, "{path}");
            assert_eq!(header(&response, "content-security-policy"), CONTENT_SECURITY_POLICY, "{path}");
            assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
            assert_eq!(header(&response, "x-content-type-options"), "nosniff", "{path}");
        }
        for path in ["/", "/index.html", "/sw.js"] {
            assert_eq!(header(&asset(path).unwrap(), "cache-control"), "no-cache", "{path}");
        }
        assert!(asset("/api/v1/sessions").is_none());
        assert!(asset("/nope.js").is_none());
    }

    #[test]
    fn pngs_are_pngs() {
        for asset in ASSETS.iter().filter(|a| a.content_type == "image/png") {
            assert!(asset.body.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", asset.path);
        }
    }

    #[test]
    fn index_links_the_manifest_and_registers_the_service_worker() {
        assert!(INDEX.contains(r#"<link rel="manifest" href="/manifest.webmanifest">"#));
        assert!(INDEX.contains(r#"<meta name="viewport""#));
        assert!(INDEX.contains(r#"<meta name="theme-color""#));
        assert!(INDEX.contains(r#"<script src="/app.js" defer></script>"#));
        // The CSP forbids inline code and styles: the page must hold none.
        assert!(!INDEX.contains("<script>") && !INDEX.contains("<style") && !INDEX.contains("style="));
        let app = include_str!("pwa/app.js");
        assert!(app.contains("navigator.serviceWorker.register('/sw.js'"));
        let manifest: serde_json::Value =
            serde_json::from_str(include_str!("pwa/manifest.webmanifest")).expect("the manifest is JSON");
        assert_eq!(manifest["start_url"], "/");
        assert_eq!(manifest["display"], "standalone");
        let icons = manifest["icons"].as_array().expect("icons");
        for icon in icons {
            let src = icon["src"].as_str().expect("src");
            assert!(asset(src).is_some(), "manifest icon {src} is not served");
        }
        // The service worker caches only what is served here, never the API.
        let sw = include_str!("pwa/sw.js");
        assert!(sw.contains("'/api/'"));
    }
}
