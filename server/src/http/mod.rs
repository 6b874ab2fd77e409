//! The HTTP side: the API under /api, the socket at /ws, health, and the built app.

pub mod conversations;
pub mod error;
pub mod extractor;
pub mod session;

use axum::routing::{get, post};
use axum::Router;
use tower_http::compression::CompressionLayer;
use tower_http::services::{ServeDir, ServeFile};

use crate::AppState;

pub fn router(state: AppState) -> Router {
    let index = state.config.static_dir.join("index.html");
    // Unknown paths get index.html, so the app's own routes survive a reload.
    let app_files = ServeDir::new(&state.config.static_dir).fallback(ServeFile::new(index));
    Router::new()
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
        .route("/healthz", get(|| async { "ok" }))
        .route("/ws", get(crate::ws::upgrade))
        .fallback_service(app_files)
        .layer(CompressionLayer::new())
        .with_state(state)
}
