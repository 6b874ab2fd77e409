//! The signed-in user of a request, from `Authorization: Bearer TOKEN`: a token signed by this
//! server, unexpired, of a live session.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use persona_chat_protocol::User;

use super::error::HttpError;
use crate::AppState;

pub struct AuthUser(pub User);

/// The signed-in user and their session.
pub struct AuthSession {
    pub user: User,
    pub session_id: String,
}

impl FromRequestParts<AppState> for AuthSession {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(HttpError::unauthorized)?;
        let v = state.authenticate(token.trim()).ok_or_else(HttpError::unauthorized)?;
        Ok(AuthSession { user: v.user, session_id: v.session_id })
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        AuthSession::from_request_parts(parts, state).await.map(|s| AuthUser(s.user))
    }
}

/// A JSON body whose rejection (bad JSON, wrong types, wrong content type) is answered like
/// every other error: 400 `{code: "invalid_field", message}`.
pub struct JsonBody<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(request, state)
            .await
            .map(|axum::Json(v)| JsonBody(v))
            .map_err(|e| HttpError::bad_request(persona_chat_protocol::ErrorCode::InvalidField, e.body_text()))
    }
}
