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
    // Unknown paths get index.html, so the app's own routes survive a reload.
    let app_files = ServeDir::new(&state.config.static_dir).fallback(ServeFile::new(index));
    // The API and the socket, behind the Origin check.
    let api = Router::new()
        .route("/api/session", post(session::create))
        .route("/api/personas", get(conversations::personas))
        .route("/api/conversations", get(conversations::list).post(conversations::create))
        .route("/api/conversations/{id}/members", get(conversations::members).post(conversations::add_members))
        .route("/api/conversations/{id}/members/me", axum::routing::delete(conversations::leave))
        .route("/api/users", get(conversations::users))
        .route(
            "/api/conversations/{id}/messages",
            get(conversations::messages).post(conversations::post_message),
        )
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
        .layer(middleware::from_fn(guard::cache_headers))
        .layer(CompressionLayer::new())
        .with_state(state)
}

async fn metrics(State(app): State<AppState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let body = app.metrics.render(app.hub.connection_count(), app.hub.online_users().len(), app.hub.events.len());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
