//! The HTTP side: the API under /api, the socket at /ws, health, and the built app.

pub mod conversations;
pub mod error;
pub mod events;
pub mod extractor;
pub mod guard;
pub mod session;

use axum::extract::State;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use tower_http::compression::CompressionLayer;
use tower_http::services::{ServeDir, ServeFile};

use crate::AppState;

pub fn router(state: AppState) -> Router {
    let index = state.config.static_dir.join("index.html");
    // Unknown paths get index.html, so the app's own routes survive a reload. The build
    // (scripts/build-app.sh) leaves a brotli (q11) and a gzip copy beside each file: they are
    // sent as they are to clients that accept them; the compression layer below then leaves
    // them alone (it only compresses what is not encoded yet: the API, files without a copy).
    let app_files = ServeDir::new(&state.config.static_dir)
        .precompressed_br()
        .precompressed_gzip()
        .fallback(ServeFile::new(index).precompressed_br().precompressed_gzip());
    // The API and the socket, behind the Origin check.
    let api = Router::new()
        .route("/api/users", get(conversations::users).post(session::sign_up))
        .route("/api/session", post(session::sign_in).delete(session::sign_out))
        .route("/api/session/refresh", post(session::refresh))
        .route("/api/sessions", axum::routing::delete(session::sign_out_everywhere))
        .route("/api/personas", get(conversations::personas))
        .route("/api/conversations", get(conversations::list).post(conversations::create))
        .route("/api/conversations/{id}/members", get(conversations::members).post(conversations::add_members))
        .route("/api/conversations/{id}/members/me", axum::routing::delete(conversations::leave))
        .route("/api/conversations/{id}/members/{user_id}", axum::routing::delete(conversations::remove_member))
        .route("/api/sync", post(conversations::sync))
        .route("/api/conversations/{id}/messages", get(conversations::messages).post(conversations::post_message))
        .route("/api/conversations/{id}/typing", post(conversations::typing))
        .route("/api/conversations/{id}/read", post(conversations::mark_read))
        .route("/api/conversations/{id}/stop", post(conversations::stop_response))
        .route("/api/events", get(events::poll))
        .route("/ws", get(crate::ws::upgrade))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard::check_origin));
    Router::new()
        .merge(api)
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .fallback_service(app_files)
        .layer(middleware::from_fn_with_state(state.clone(), guard::security_headers))
        .layer(middleware::from_fn(guard::cache_headers))
        .layer(CompressionLayer::new())
        .with_state(state)
}

/// `GET /metrics`: for loopback peers, or with `Authorization: Bearer --metrics-token`.
async fn metrics(State(app): State<AppState>, request: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let loopback = crate::net::peer(request.extensions()).is_some_and(|p| p.ip().is_loopback());
    let bearer = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let token_ok = match (&app.config.metrics_token, bearer) {
        (Some(expected), Some(given)) if !expected.is_empty() => {
            guard::constant_time_eq(expected.as_bytes(), given.as_bytes())
        }
        _ => false,
    };
    if !loopback && !token_ok {
        return error::HttpError::new(
            axum::http::StatusCode::FORBIDDEN,
            persona_chat_protocol::ErrorCode::Unauthorized,
            "/metrics answers loopback peers, or a request with the --metrics-token",
        )
        .into_response();
    }
    let body = app.metrics.render(app.hub.connection_count(), app.hub.online_users().len(), app.hub.events.len());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
