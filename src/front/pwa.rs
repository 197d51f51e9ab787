//! The phone-first web app, served at `/` from assets embedded in the binary so
//! running it needs no build step and no files next to the daemon.
//!
//! The assets hold no data, so they are served without a token; everything the
//! app shows comes from the API and the WebSocket, which follow the auth rule.

use warp::http::{HeaderValue, StatusCode};
use warp::reply::{Reply, Response};

/// The policy every page carries: no inline script, nothing from elsewhere, never framed.
/// `ws:`/`wss:` are listed because some browsers do not match `'self'` against WebSocket URLs.
/// `style-src-elem 'unsafe-inline'` is for xterm.js alone, which writes its theme, cell
/// size and scrollbar colours into `<style>` elements it makes at run time (no nonce or
/// hash can name that text); style *attributes* stay refused (`style-src-attr` falls back
/// to `style-src 'self'`) and so does every inline script (docs/SECURITY.md).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
     style-src 'self'; style-src-elem 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'";

/// How long a browser may keep an asset without asking again.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Caching {
    /// Revalidate every time: the page, the modules and the service worker must
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

/// One of the app's ES modules. The service worker's shell list (sw.js) names
/// each too, so that an offline reload finds the whole module graph.
/// (`pwa/types/` and `pwa/tsconfig.json` are for type-checking only and are
/// not served.)
const fn module(path: &'static str, body: &'static str) -> Asset {
    Asset { path, content_type: "text/javascript; charset=utf-8", body: body.as_bytes(), caching: Caching::Revalidate }
}

const ASSETS: &[Asset] = &[
    Asset { path: "/", content_type: "text/html; charset=utf-8", body: INDEX.as_bytes(), caching: Caching::Revalidate },
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        body: INDEX.as_bytes(),
        caching: Caching::Revalidate,
    },
    module("/main.js", include_str!("pwa/main.js")),
    module("/api.js", include_str!("pwa/api.js")),
    module("/approvals.js", include_str!("pwa/approvals.js")),
    module("/connection.js", include_str!("pwa/connection.js")),
    module("/dom.js", include_str!("pwa/dom.js")),
    module("/pairing.js", include_str!("pwa/pairing.js")),
    module("/sessions.js", include_str!("pwa/sessions.js")),
    module("/store.js", include_str!("pwa/store.js")),
    module("/transcript.js", include_str!("pwa/transcript.js")),
    module("/workflows.js", include_str!("pwa/workflows.js")),
    module("/terminal.js", include_str!("pwa/terminal.js")),
    module("/bridge.js", include_str!("pwa/bridge.js")),
    // xterm.js at the version tests/browser/package.json pins, byte for byte
    // (tests/pwa_types.rs checks them against the npm packages).
    module("/vendor/xterm.mjs", include_str!("pwa/vendor/xterm.mjs")),
    module("/vendor/addon-fit.mjs", include_str!("pwa/vendor/addon-fit.mjs")),
    Asset {
        path: "/vendor/xterm.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("pwa/vendor/xterm.css").as_bytes(),
        caching: Caching::Revalidate,
    },
    Asset {
        path: "/vendor/xterm.LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_str!("pwa/vendor/xterm.LICENSE").as_bytes(),
        caching: Caching::Day,
    },
    Asset {
        path: "/vendor/addon-fit.LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_str!("pwa/vendor/addon-fit.LICENSE").as_bytes(),
        caching: Caching::Day,
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

/// The app's asset at `path` (`/`, `/main.js`, ...), if there is one.
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
            ("/main.js", "text/javascript; charset=utf-8"),
            ("/api.js", "text/javascript; charset=utf-8"),
            ("/approvals.js", "text/javascript; charset=utf-8"),
            ("/connection.js", "text/javascript; charset=utf-8"),
            ("/dom.js", "text/javascript; charset=utf-8"),
            ("/pairing.js", "text/javascript; charset=utf-8"),
            ("/sessions.js", "text/javascript; charset=utf-8"),
            ("/store.js", "text/javascript; charset=utf-8"),
            ("/transcript.js", "text/javascript; charset=utf-8"),
            ("/workflows.js", "text/javascript; charset=utf-8"),
            ("/terminal.js", "text/javascript; charset=utf-8"),
            ("/bridge.js", "text/javascript; charset=utf-8"),
            ("/vendor/xterm.mjs", "text/javascript; charset=utf-8"),
            ("/vendor/addon-fit.mjs", "text/javascript; charset=utf-8"),
            ("/vendor/xterm.css", "text/css; charset=utf-8"),
            ("/vendor/xterm.LICENSE", "text/plain; charset=utf-8"),
            ("/vendor/addon-fit.LICENSE", "text/plain; charset=utf-8"),
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
            assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self';"), "no inline script, ever");
            assert!(CONTENT_SECURITY_POLICY.contains("style-src 'self';"), "no style attribute");
            assert_eq!(header(&response, "x-content-type-options"), "nosniff", "{path}");
        }
        for path in ["/", "/index.html", "/sw.js", "/main.js", "/store.js"] {
            assert_eq!(header(&asset(path).unwrap(), "cache-control"), "no-cache", "{path}");
        }
        assert!(asset("/api/v1/sessions").is_none());
        assert!(asset("/nope.js").is_none());
        assert!(asset("/app.js").is_none(), "the old single script is gone");
        assert!(asset("/types/events.d.ts").is_none() && asset("/tsconfig.json").is_none());
        assert!(asset("/vendor/xterm.d.ts").is_none() && asset("/vendor/xterm.d.mts").is_none());
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
        assert!(INDEX.contains(r#"<script type="module" src="/main.js"></script>"#));
        // The CSP forbids inline code and styles: the page must hold none.
        assert!(!INDEX.contains("<script>") && !INDEX.contains("<style") && !INDEX.contains("style="));
        let main = include_str!("pwa/main.js");
        assert!(main.contains("navigator.serviceWorker.register('/sw.js'"));
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

    fn modules() -> impl Iterator<Item = &'static Asset> {
        ASSETS.iter().filter(|a| (a.path.ends_with(".js") || a.path.ends_with(".mjs")) && a.path != "/sw.js")
    }

    /// The paths a module imports (`import { a } from './x.js'`, the last
    /// line of a longer one, or `import './x.js'`), as served.
    fn imports(source: &str) -> Vec<String> {
        source
            .lines()
            .map(str::trim_start)
            .filter(|line| line.starts_with("import ") || line.starts_with("} from "))
            .filter_map(|line| {
                let (_, from) = line.rsplit_once("'./")?;
                let name = from.split('\'').next()?;
                Some(format!("/{name}"))
            })
            .collect()
    }

    #[test]
    fn every_module_is_served_cached_offline_and_type_checked() {
        let sw = include_str!("pwa/sw.js");
        let mut reached = vec!["/main.js".to_string()];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(path) = reached.pop() {
            if !seen.insert(path.clone()) {
                continue;
            }
            let module = asset_entry(&path).unwrap_or_else(|| panic!("{path} is imported but not served"));
            assert_eq!(module.content_type, "text/javascript; charset=utf-8", "{path}");
            assert!(
                sw.contains(&format!("'{path}'")),
                "{path} is not in sw.js's shell list: offline reloads would fail"
            );
            let source = std::str::from_utf8(module.body).expect("UTF-8");
            if path.starts_with("/vendor/") {
                // Vendored as published (its types: vendor/*.d.mts); it imports nothing of ours.
                assert!(imports(source).is_empty(), "{path} imports {:?}", imports(source));
                continue;
            }
            assert!(source.starts_with("// @ts-check\n"), "{path} does not start with // @ts-check");
            assert!(!source.contains("window.bosun"), "{path} carries a test hook");
            reached.extend(imports(source));
        }
        let served: std::collections::BTreeSet<String> = modules().map(|a| a.path.to_string()).collect();
        assert_eq!(served, seen, "modules served that main.js never imports");
        assert!(seen.len() >= 7, "{seen:?}");
        // Every .js file next to them is one of them (or the service worker).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/front/pwa");
        for entry in std::fs::read_dir(&dir).expect("src/front/pwa") {
            let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
            if name.ends_with(".js") && name != "sw.js" {
                assert!(seen.contains(&format!("/{name}")), "src/front/pwa/{name} is neither served nor imported");
            }
        }
    }

    fn asset_entry(path: &str) -> Option<&'static Asset> {
        ASSETS.iter().find(|a| a.path == path)
    }
}
