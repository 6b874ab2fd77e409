//! Personas, conversations and their messages.

use axum::extract::{Path, Query, State};
use axum::Json;
use persona_chat_protocol::http::{ConversationSummary, MessagesResponse, Persona, PostMessageRequest};
use persona_chat_protocol::{Ack, ErrorCode};
use serde::Deserialize;

use super::error::HttpError;
use super::extractor::AuthUser;
use crate::chat;
use crate::AppState;

pub async fn personas(State(app): State<AppState>, _user: AuthUser) -> Result<Json<Vec<Persona>>, HttpError> {
    Ok(Json(app.db(|store, _| store.personas()).await?))
}

pub async fn list(State(app): State<AppState>, AuthUser(user): AuthUser) -> Result<Json<Vec<ConversationSummary>>, HttpError> {
    Ok(Json(app.db(move |store, _| store.conversations_of(&user.id)).await?))
}

#[derive(Deserialize)]
pub struct MessagesQuery {
    after_seq: Option<i64>,
    before_seq: Option<i64>,
    limit: Option<usize>,
}

pub const PAGE_DEFAULT: usize = 50;
pub const PAGE_MAX: usize = 500;

pub async fn messages(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    query: Result<Query<MessagesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<MessagesResponse>, HttpError> {
    let Query(q) = query.map_err(|e| HttpError::bad_request(ErrorCode::InvalidField, e.body_text()))?;
    let limit = q.limit.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX);
    let page = app
        .db(move |store, _| {
            if !store.is_member(&id, &user.id)? {
                return Ok(None);
            }
            Ok(Some(store.messages(&id, q.after_seq, q.before_seq, limit)?))
        })
        .await?;
    let (messages, has_more) = page.ok_or_else(HttpError::not_member)?;
    Ok(Json(MessagesResponse { messages, has_more }))
}

pub async fn post_message(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    body: Result<Json<PostMessageRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Ack>, HttpError> {
    let Json(req) = body.map_err(|e| HttpError::bad_request(ErrorCode::InvalidField, e.body_text()))?;
    chat::send_message(&app, &user, id, &req.content, Some(req.client_id), None)
        .await
        .map(Json)
        .map_err(|r| HttpError::from_code(r.code, r.message))
}
