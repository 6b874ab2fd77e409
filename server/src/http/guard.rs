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

/// Whether a request's Origin may use the API: no Origin (not a browser), the server's own
/// origin (same host as the Host header), or one of `--allowed-origin`.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else { return true };
    let origin = origin.trim_end_matches('/');
    if allowed.iter().any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin)) {
        return true;
    }
    let authority = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    host.is_some_and(|h| !authority.is_empty() && h.eq_ignore_ascii_case(authority))
}

/// For /api and /ws: refuses other origins with 403, answers allowed origins' preflights,
/// and adds the CORS headers for allowed cross-origin callers.
pub async fn check_origin(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let host = request.headers().get(header::HOST).and_then(|v| v.to_str().ok()).map(str::to_owned);
    if !origin_allowed(origin.as_deref(), host.as_deref(), &app.config.allowed_origins) {
        crate::metrics::inc(&app.metrics.sockets_refused);
        return HttpError::new(StatusCode::FORBIDDEN, ErrorCode::Unauthorized, "this origin may not use this server (see --allowed-origin)")
            .into_response();
    }
    let cross_origin = origin.filter(|o| !origin_allowed(Some(o), host.as_deref(), &[]));
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
/// year. Everything else of the app (index.html, the route fallback) is revalidated.
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
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
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
        assert!(origin_allowed(None, Some("h:1"), &[]), "no Origin: not a browser");
        assert!(origin_allowed(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080"), &[]), "same origin");
        assert!(!origin_allowed(Some("http://evil.example"), Some("127.0.0.1:8080"), &[]));
        assert!(origin_allowed(Some("https://app.example"), Some("127.0.0.1:8080"), &allowed));
        assert!(!origin_allowed(Some("https://app.example.evil"), Some("127.0.0.1:8080"), &allowed));
        assert!(!origin_allowed(Some("null"), Some("127.0.0.1:8080"), &[]));
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
