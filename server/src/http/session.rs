//! `POST /api/session`: sign in, registering a new username on its first sign-in.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use persona_chat_protocol::http::{SessionRequest, SessionResponse};
use persona_chat_protocol::ErrorCode;

use super::error::HttpError;
use crate::auth::{hash_password, verify_password};
use crate::AppState;

pub const USERNAME_MAX: usize = 32;
pub const PASSWORD_MIN: usize = 4;
pub const PASSWORD_MAX: usize = 256;

pub async fn create(
    State(app): State<AppState>,
    body: Result<Json<SessionRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<SessionResponse>, HttpError> {
    let Json(req) = body.map_err(|e| HttpError::bad_request(ErrorCode::InvalidField, e.body_text()))?;
    let username = req.username.trim().to_owned();
    check_username(&username)?;
    let n = req.password.chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
        return Err(HttpError::bad_request(
            ErrorCode::InvalidField,
            format!("a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters"),
        ));
    }
    let password = req.password;
    let user = app
        .db(move |store, _| {
            // Hashing is slow on purpose; it runs on this blocking thread.
            if let Some((user, hash)) = store.user_by_name(&username)? {
                return Ok(verify_password(&password, &hash).then_some(user));
            }
            let hash = hash_password(&password);
            Ok(Some(store.create_user(&username, &hash)?))
        })
        .await?
        .ok_or_else(|| HttpError::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidCredentials, "wrong username or password"))?;
    let token = app.tokens.issue(&user);
    Ok(Json(SessionResponse { token, user }))
}

fn check_username(name: &str) -> Result<(), HttpError> {
    let ok_len = (1..=USERNAME_MAX).contains(&name.chars().count());
    let ok_chars = name.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(HttpError::bad_request(
            ErrorCode::InvalidField,
            format!("a username has 1 to {USERNAME_MAX} letters, digits, '_', '-' or '.'"),
        ))
    }
}
