//! `POST /api/session`: sign in, registering a new username on its first sign-in.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use persona_chat_protocol::http::{SessionRequest, SessionResponse};
use persona_chat_protocol::{ErrorCode, User};

use super::error::HttpError;
use super::extractor::JsonBody;
use crate::auth::{hash_password, verify_password};
use crate::store::StoreError;
use crate::AppState;

pub const USERNAME_MAX: usize = 32;
pub const PASSWORD_MIN: usize = 4;
pub const PASSWORD_MAX: usize = 256;

pub async fn create(
    State(app): State<AppState>,
    JsonBody(req): JsonBody<SessionRequest>,
) -> Result<Json<SessionResponse>, HttpError> {
    let username = req.username.trim().to_owned();
    check_username(&username)?;
    let n = req.password.chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
        return Err(HttpError::bad_request(
            ErrorCode::InvalidField,
            format!("a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters"),
        ));
    }
    let user = sign_in_or_register(&app, username, req.password)
        .await?
        .ok_or_else(|| {
            crate::metrics::inc(&app.metrics.sign_in_failures);
        })
        .map_err(|()| HttpError::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidCredentials, "wrong username or password"))?;
    crate::metrics::inc(&app.metrics.sign_ins);
    let token = app.tokens.issue(&user);
    Ok(Json(SessionResponse { token, user, expires_at: 0 }))
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

/// The user if the password is theirs, registering a new username. The slow hashing runs on
/// a blocking thread of its own, never while holding the store, so sign-ins do not stall
/// everyone's messages.
async fn sign_in_or_register(app: &AppState, username: String, password: String) -> Result<Option<User>, HttpError> {
    let name = username.clone();
    let existing = app.db(move |store, _| store.user_by_name(&name)).await?;
    let (user_and_hash, password) = match existing {
        Some(found) => (Some(found), password),
        None => {
            let (hash, password) = blocking(move || (hash_password(&password), password)).await;
            let name = username.clone();
            let created = app
                .db(move |store, shared| {
                    let user = store.create_user(&name, &hash)?;
                    for (conversation, member) in store.user_memberships_of(&user.id)? {
                        shared.hub.add_member(&conversation, &member);
                    }
                    Ok(user)
                })
                .await;
            match created {
                Ok(user) => return Ok(Some(user)),
                // Registered by a concurrent first sign-in of the same name: check against it.
                Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    let name = username.clone();
                    (app.db(move |store, _| store.user_by_name(&name)).await?, password)
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let Some((user, hash)) = user_and_hash else { return Ok(None) };
    let ok = blocking(move || verify_password(&password, &hash)).await;
    Ok(ok.then_some(user))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|join_error| std::panic::resume_unwind(join_error.into_panic()))
}
