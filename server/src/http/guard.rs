//! Browser-facing protections: the Origin check (CORS for the API, and the upgrade's Origin),
//! and cache headers for the app's files.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use persona_chat_protocol::ErrorCode;

use super::error::HttpError;
use crate::AppState;

/// Whether a request's Origin may use the API: no Origin (not a browser), one of the public
/// origins the app is served at, or one of `--allowed-origin`. Only when no public origin is
/// known (listening on every interface without --public-origin) is it compared with Host.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, public: &[String], allowed: &[String]) -> bool {
    let Some(origin) = origin else { return true };
    let origin = origin.trim_end_matches('/');
    if public.iter().chain(allowed).any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
        return true;
    }
    if !public.is_empty() {
        return false;
    }
    let authority = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    host.is_some_and(|h| !authority.is_empty() && h.eq_ignore_ascii_case(authority))
}

/// For /api and /ws: refuses other origins with 403, answers allowed origins' preflights,
/// and adds the CORS headers for allowed cross-origin callers.
pub async fn check_origin(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let host = request.headers().get(header::HOST).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if !origin_allowed(origin.as_deref(), host.as_deref(), &app.public_origins, &app.config.allowed_origins) {
        crate::metrics::inc(&app.metrics.sockets_refused);
        return HttpError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Unauthorized,
            "this origin may not use this server (see --public-origin and --allowed-origin)",
        )
        .into_response();
    }
    let cross_origin = origin.filter(|o| !origin_allowed(Some(o), host.as_deref(), &app.public_origins, &[]));
    if request.method() == Method::OPTIONS {
        let mut response = StatusCode::NO_CONTENT.into_response();
        if let Some(o) = &cross_origin {
            add_cors(&mut response, o);
        }
        return response;
    }
    let mut response = next.run(request).await;
    if let Some(o) = &cross_origin {
        add_cors(&mut response, o);
    }
    response
}

/// Compares secrets without revealing where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `X-Content-Type-Options` and `Referrer-Policy` on everything; the app's pages also get the
/// Content-Security-Policy (see [`csp`]) and may not be framed.
pub async fn security_headers(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !(path.starts_with("/api/") || path == "/ws" || path == "/metrics" || path == "/healthz") {
        let policy = csp(&app);
        if let Ok(v) = HeaderValue::from_str(&policy) {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

/// The app's Content-Security-Policy: its own files and the wasm, nothing inline except the
/// inline scripts of the served index.html (Trunk's loader), allowed by their SHA-256; the API
/// and sockets of this origin and of each --allowed-origin.
pub fn csp(app: &crate::Shared) -> String {
    let mut connect = vec!["'self'".to_owned()];
    for origin in app.public_origins.iter().chain(&app.config.allowed_origins) {
        let origin = origin.trim_end_matches('/');
        connect.push(origin.to_owned());
        if let Some(rest) = origin.strip_prefix("https://") {
            connect.push(format!("wss://{rest}"));
        } else if let Some(rest) = origin.strip_prefix("http://") {
            connect.push(format!("ws://{rest}"));
        }
    }
    connect.dedup();
    let mut script = "'self' 'wasm-unsafe-eval'".to_owned();
    for hash in inline_script_hashes(&app.config.static_dir.join("index.html")) {
        script.push_str(&format!(" 'sha256-{hash}'"));
    }
    format!(
        "default-src 'self'; script-src {script}; style-src 'self'; img-src 'self' data:; connect-src {}; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
        connect.join(" ")
    )
}

/// SHA-256 (base64) of each inline `<script>` of a page, cached while the file is unchanged.
fn inline_script_hashes(path: &std::path::Path) -> Vec<String> {
    use std::sync::Mutex;
    type Cache = Option<(std::path::PathBuf, Option<std::time::SystemTime>, Vec<String>)>;
    static CACHE: Mutex<Cache> = Mutex::new(None);
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((p, m, hashes)) = cache.as_ref() {
        if p == path && *m == modified {
            return hashes.clone();
        }
    }
    let hashes = std::fs::read_to_string(path).map(|html| hash_inline_scripts(&html)).unwrap_or_default();
    *cache = Some((path.to_owned(), modified, hashes.clone()));
    hashes
}

pub fn hash_inline_scripts(html: &str) -> Vec<String> {
    use base64::Engine;
    use sha2::Digest;
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<script") {
        let after = &rest[start..];
        let Some(open_end) = after.find('>') else { break };
        let tag = &after[..open_end];
        let body_start = open_end + 1;
        let Some(close) = after[body_start..].find("</script>") else { break };
        let body = &after[body_start..body_start + close];
        if !tag.contains(" src=") && !body.trim().is_empty() {
            out.push(base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body.as_bytes())));
        }
        rest = &after[body_start + close..];
    }
    out
}

fn add_cors(response: &mut Response<Body>, origin: &str) {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, DELETE, OPTIONS"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
}

/// Hashed asset names (Trunk's `name-0123456789abcdef.ext`) never change: cache them for a
/// year. Everything else of the app (index.html, the route fallback) is revalidated. Every
/// app file varies by Accept-Encoding.
pub async fn cache_headers(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    if path.starts_with("/api/") || path == "/ws" || path == "/metrics" || path == "/healthz" {
        return response;
    }
    let value = if response.status().is_success() && is_hashed_asset(&path) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    // The same URL is sent as brotli, gzip or plain (precompressed files): caches must key on
    // Accept-Encoding, also when the compression layer left the response alone.
    let varies = h
        .get_all(header::VARY)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.to_ascii_lowercase().contains("accept-encoding")));
    if !varies {
        h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

fn is_hashed_asset(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    let stem = name.split('.').next().unwrap_or("");
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    stem.rsplit_once('-').is_some_and(|(_, hash)| hash.len() >= 15 && hash.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example".to_owned()];
        let public = vec!["http://127.0.0.1:8080".to_owned()];
        assert!(origin_allowed(None, Some("h:1"), &public, &[]), "no Origin: not a browser");
        assert!(origin_allowed(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080"), &public, &[]), "same origin");
        assert!(!origin_allowed(Some("http://evil.example"), Some("127.0.0.1:8080"), &public, &[]));
        assert!(
            !origin_allowed(Some("http://evil.example"), Some("evil.example"), &public, &[]),
            "Host is not trusted"
        );
        assert!(origin_allowed(Some("https://app.example"), Some("127.0.0.1:8080"), &public, &allowed));
        assert!(!origin_allowed(Some("https://app.example.evil"), Some("127.0.0.1:8080"), &public, &allowed));
        assert!(!origin_allowed(Some("null"), Some("127.0.0.1:8080"), &public, &[]));
        assert!(
            origin_allowed(Some("http://10.0.0.5:9000"), Some("10.0.0.5:9000"), &[], &[]),
            "no public origin known: Host"
        );
    }

    #[test]
    fn inline_scripts_are_hashed_and_external_ones_not() {
        let html = r#"<head><script src="/a.js"></script><script type="module">import init from '/x.js';await init();</script></head>"#;
        let hashes = hash_inline_scripts(html);
        assert_eq!(hashes.len(), 1);
        use base64::Engine;
        use sha2::Digest;
        let expected = base64::engine::general_purpose::STANDARD
            .encode(sha2::Sha256::digest(b"import init from '/x.js';await init();"));
        assert_eq!(hashes[0], expected);
    }

    #[test]
    fn hashed_assets() {
        assert!(is_hashed_asset("/persona-chat-1086dbc866125cb5_bg.wasm"));
        assert!(is_hashed_asset("/persona-chat-1086dbc866125cb5.js"));
        assert!(is_hashed_asset("/main-fdc3425526985e2.css"));
        assert!(!is_hashed_asset("/index.html"));
        assert!(!is_hashed_asset("/login"));
        assert!(!is_hashed_asset("/c/some-conversation"));
    }
}
