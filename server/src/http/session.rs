//! Accounts and sessions:
//! - `POST /api/users {username, password}`: sign up (creates the account and signs in), 201;
//! - `POST /api/session {username, password}`: sign in (never registers); an unknown name and
//!   a wrong password get the same answer, after the same work (a hash is verified either way);
//! - `POST /api/session/refresh`: a fresh token for the same session, for its refresh token
//!   (in the body) or its unexpired token;
//! - `DELETE /api/session`: sign out (this session); `DELETE /api/sessions`: every session.
//!
//! Hashing runs on a bounded pool ([`crate::auth::Hasher`]); sign-ins are throttled per address
//! and per username with exponential waits, sign-ups per address. Refusals for load are 429
//! with `Retry-After`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::Json;
use persona_chat_protocol::http::{RefreshRequest, SessionRequest, SessionResponse, PASSWORD_MAX, PASSWORD_MIN};
use persona_chat_protocol::{ErrorCode, User};

use super::error::HttpError;
use super::extractor::{AuthSession, JsonBody};
use crate::auth::{hash_password, verify_password};
use crate::clock::unix_now;
use crate::names;
use crate::AppState;

pub use crate::names::USERNAME_MAX;

fn invalid_name() -> HttpError {
    HttpError::bad_request(
        ErrorCode::InvalidField,
        format!("a username has 1 to {USERNAME_MAX} letters, digits, '_', '-' or '.'"),
    )
}

fn wrong_credentials() -> HttpError {
    HttpError::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidCredentials, "wrong username or password")
}

fn busy() -> HttpError {
    HttpError::rate_limited("the server is busy signing people in; try again shortly", Duration::from_secs(2))
}

/// `POST /api/users`.
pub async fn sign_up(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(req): JsonBody<SessionRequest>,
) -> Result<(StatusCode, Json<SessionResponse>), HttpError> {
    let username = names::display(&req.username);
    if !names::valid(&username) {
        return Err(invalid_name());
    }
    let n = req.password.chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&n) || req.password.trim().is_empty() {
        return Err(HttpError::bad_request(
            ErrorCode::InvalidField,
            format!("a password has {PASSWORD_MIN} to {PASSWORD_MAX} characters, not all spaces"),
        ));
    }
    let admission = app.hasher.admit().map_err(|_| busy())?;
    let name = username.clone();
    if !app.read(move |store| store.name_free(&name)).await? {
        return Err(taken());
    }
    if let Err(wait) = app.signups.take(&peer.ip().to_string(), Instant::now()) {
        crate::metrics::inc(&app.metrics.rate_limited);
        return Err(HttpError::rate_limited("too many new accounts from this address; try again later", wait));
    }
    let password = req.password;
    let hash = admission.run(move || hash_password(&password)).await.map_err(|_| busy())?;
    let name = username.clone();
    let created = app
        .db(move |store, shared| {
            let Some(user) = store.create_user(&name, &hash)? else { return Ok(None) };
            for (conversation, member) in store.user_memberships_of(&user.id)? {
                shared.hub.add_member(&conversation, &member);
            }
            Ok(Some(user))
        })
        .await?;
    let user = created.ok_or_else(taken)?;
    crate::metrics::inc(&app.metrics.sign_ins);
    Ok((StatusCode::CREATED, Json(start_session(&app, user).await?)))
}

fn taken() -> HttpError {
    HttpError::new(
        StatusCode::CONFLICT,
        ErrorCode::UsernameTaken,
        "that name is taken (or too close to an existing one)",
    )
}

/// `POST /api/session`.
pub async fn sign_in(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonBody(req): JsonBody<SessionRequest>,
) -> Result<Json<SessionResponse>, HttpError> {
    let username = names::display(&req.username);
    if !names::valid(&username) {
        return Err(invalid_name());
    }
    if req.password.chars().count() > PASSWORD_MAX {
        return Err(HttpError::bad_request(
            ErrorCode::InvalidField,
            format!("a password has at most {PASSWORD_MAX} characters"),
        ));
    }
    let address = format!("ip:{}", peer.ip());
    let account = format!("name:{}", names::canonical(&username));
    let now = Instant::now();
    for (throttle, key) in [(&app.address_failures, &address), (&app.name_failures, &account)] {
        if let Err(wait) = throttle.check(key, now) {
            crate::metrics::inc(&app.metrics.rate_limited);
            return Err(HttpError::rate_limited("too many failed sign-ins; wait before trying again", wait));
        }
    }
    let admission = app.hasher.admit().map_err(|_| busy())?;
    let name = username.clone();
    let found = app.read(move |store| store.user_by_name(&name)).await?;
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), hash),
        None => (None, app.hasher.dummy_hash()),
    };
    let password = req.password;
    let ok = admission.run(move || verify_password(&password, &hash)).await.map_err(|_| busy())?;
    let now = Instant::now();
    match user.filter(|_| ok) {
        Some(user) => {
            app.name_failures.succeed(&account);
            crate::metrics::inc(&app.metrics.sign_ins);
            Ok(Json(start_session(&app, user).await?))
        }
        None => {
            app.address_failures.fail(&address, now);
            app.name_failures.fail(&account, now);
            crate::metrics::inc(&app.metrics.sign_in_failures);
            Err(wrong_credentials())
        }
    }
}

/// A new session for `user`, stored, and its first token.
async fn start_session(app: &AppState, user: User) -> Result<SessionResponse, HttpError> {
    let session_id = crate::store::new_id();
    let now = unix_now();
    let expires_at = now.saturating_add(app.config.session_ttl_secs.max(1));
    let (sid, uid) = (session_id.clone(), user.id.clone());
    app.db(move |store, _| store.create_session(&sid, &uid, now, expires_at)).await?;
    app.sessions.insert(&session_id, &user.id, expires_at);
    let (token, expires_at) = app.tokens.issue(&user, &session_id, expires_at);
    let refresh_token = app.tokens.refresh_token(&user, &session_id);
    Ok(SessionResponse { token, user, expires_at, refresh_token })
}

/// `POST /api/session/refresh`: with a body `{refresh_token}` (good while the session lives,
/// even after the token expired), else with the unexpired token in `Authorization: Bearer`.
pub async fn refresh(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<SessionResponse>, HttpError> {
    let req: RefreshRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RefreshRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            HttpError::bad_request(
                ErrorCode::InvalidField,
                format!("a refresh takes {{refresh_token}} or nothing: {e}"),
            )
        })?
    };
    let (user, session_id) = if req.refresh_token.trim().is_empty() {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(HttpError::unauthorized)?;
        let verified = app.authenticate(token.trim()).ok_or_else(HttpError::unauthorized)?;
        (verified.user, verified.session_id)
    } else {
        app.tokens.verify_refresh(req.refresh_token.trim()).ok_or_else(HttpError::unauthorized)?
    };
    let ends = app.sessions.expires_at(&session_id, &user.id).ok_or_else(HttpError::unauthorized)?;
    let (token, expires_at) = app.tokens.issue(&user, &session_id, ends);
    let refresh_token = app.tokens.refresh_token(&user, &session_id);
    Ok(Json(SessionResponse { token, user, expires_at, refresh_token }))
}

/// `DELETE /api/session`.
pub async fn sign_out(State(app): State<AppState>, session: AuthSession) -> Result<StatusCode, HttpError> {
    let sid = session.session_id.clone();
    app.db(move |store, _| store.revoke_session(&sid, unix_now())).await?;
    app.sessions.revoke(&session.session_id);
    app.hub.close_sessions(&[session.session_id], persona_chat_protocol::CLOSE_SIGNED_OUT, "signed out");
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/sessions`: sign out everywhere.
pub async fn sign_out_everywhere(State(app): State<AppState>, session: AuthSession) -> Result<StatusCode, HttpError> {
    let uid = session.user.id.clone();
    app.db(move |store, _| store.revoke_sessions_of(&uid, unix_now())).await?;
    let ids = app.sessions.revoke_user(&session.user.id);
    app.hub.close_sessions(&ids, persona_chat_protocol::CLOSE_SIGNED_OUT, "signed out");
    Ok(StatusCode::NO_CONTENT)
}
