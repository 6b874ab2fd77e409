//! The signed-in user of a request, from `Authorization: Bearer TOKEN`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use persona_chat_protocol::User;

use super::error::HttpError;
use crate::AppState;

pub struct AuthUser(pub User);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(HttpError::unauthorized)?;
        state.tokens.verify(token.trim()).map(AuthUser).ok_or_else(HttpError::unauthorized)
    }
}
