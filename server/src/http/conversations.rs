//! Personas, conversations and their messages.

use axum::extract::{Path, Query, State};
use axum::Json;
use axum::http::StatusCode;
use persona_chat_protocol::http::{
    ConversationKind, ConversationSummary, CreateConversationRequest, Member, MessagesResponse, Persona, PostMessageRequest,
    ReadRequest,
};
use persona_chat_protocol::{Ack, ErrorCode, ServerFrame, User};
use serde::Deserialize;

use super::error::HttpError;
use super::extractor::{AuthUser, JsonBody};
use crate::chat;
use crate::AppState;

/// The personas with their live status (online, busy, responding or offline).
pub async fn personas(State(app): State<AppState>, _user: AuthUser) -> Result<Json<Vec<Persona>>, HttpError> {
    let mut personas = app.db(|store, _| store.personas()).await?;
    personas.iter_mut().for_each(|p| app.personas.overlay(p));
    Ok(Json(personas))
}

pub async fn list(State(app): State<AppState>, AuthUser(user): AuthUser) -> Result<Json<Vec<ConversationSummary>>, HttpError> {
    let mut list = app.db(move |store, _| store.conversations_of(&user.id)).await?;
    list.iter_mut().filter_map(|c| c.persona.as_mut()).for_each(|p| app.personas.overlay(p));
    Ok(Json(list))
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
    JsonBody(req): JsonBody<PostMessageRequest>,
) -> Result<Json<Ack>, HttpError> {
    chat::send_message(&app, &user, id, &req.content, Some(req.client_id), None, None)
        .await
        .map(Json)
        .map_err(|r| HttpError::from_code(r.code, r.message))
}

pub const TITLE_MAX: usize = 80;
pub const MEMBERS_MAX: usize = 100;

/// `POST /api/conversations`: `{persona_id}` opens (or returns) the direct conversation with
/// that persona; `{title, member_ids, persona_ids}` creates a room. Answers the summary.
pub async fn create(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    JsonBody(req): JsonBody<CreateConversationRequest>,
) -> Result<Json<ConversationSummary>, HttpError> {
    if let Some(persona_id) = req.persona_id {
        let me = user.clone();
        let summary = app
            .db(move |store, shared| {
                let id = store.direct_conversation(&me, &persona_id)?;
                shared.hub.add_member(&id, &me.id);
                store.conversation_of(&me.id, &id)
            })
            .await
            .map_err(|e| match e {
                crate::store::StoreError::NotFound => HttpError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such persona"),
                e => e.into(),
            })?;
        return summary.map(Json).ok_or_else(|| HttpError::from_code(ErrorCode::Internal, "conversation vanished"));
    }
    let title = req.title.as_deref().map(str::trim).unwrap_or_default().to_owned();
    if title.is_empty() || title.chars().count() > TITLE_MAX {
        return Err(HttpError::bad_request(
            ErrorCode::InvalidField,
            format!("give either persona_id, or a room title of 1 to {TITLE_MAX} characters"),
        ));
    }
    if req.member_ids.len() + req.persona_ids.len() > MEMBERS_MAX {
        return Err(HttpError::bad_request(ErrorCode::InvalidField, format!("at most {MEMBERS_MAX} members at once")));
    }
    let me = user.clone();
    let summary = app
        .db(move |store, shared| {
            let id = store.create_room(&me, &title, &req.member_ids, &req.persona_ids)?;
            announce_joins(store, shared, &id, &[me.clone()])?;
            store.conversation_of(&me.id, &id)
        })
        .await?;
    summary.map(Json).ok_or_else(|| HttpError::from_code(ErrorCode::Internal, "conversation vanished"))
}

/// Tells every member of a conversation who is in it now (`user_joined` for each of
/// `joined`, and for every other member too when the conversation is new to them). Keeps the
/// hub's membership cache in step.
fn announce_joins(store: &crate::store::Store, shared: &crate::Shared, conversation_id: &str, joined: &[User]) -> Result<(), crate::store::StoreError> {
    let members = store.user_members(conversation_id)?;
    for member in &members {
        shared.hub.add_member(conversation_id, member);
    }
    for user in joined {
        shared.hub.send_to_users(
            members.iter().map(String::as_str),
            &ServerFrame::UserJoined { conversation_id: conversation_id.to_owned(), user_id: user.id.clone(), username: user.username.clone() },
        );
    }
    Ok(())
}

#[derive(serde::Deserialize)]
pub struct AddMembers {
    #[serde(default)]
    user_ids: Vec<String>,
    #[serde(default)]
    persona_ids: Vec<String>,
}

/// `POST /api/conversations/{id}/members {user_ids, persona_ids}`: a member adds people and
/// personas to a room.
pub async fn add_members(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<AddMembers>,
) -> Result<Json<ConversationSummary>, HttpError> {
    if req.user_ids.len() + req.persona_ids.len() > MEMBERS_MAX {
        return Err(HttpError::bad_request(ErrorCode::InvalidField, format!("at most {MEMBERS_MAX} members at once")));
    }
    let outcome = app
        .db(move |store, shared| {
            if !store.is_member(&id, &user.id)? {
                return Ok(Err(HttpError::not_member()));
            }
            if store.conversation_kind(&id)? != Some((ConversationKind::Room, false)) {
                return Ok(Err(HttpError::bad_request(ErrorCode::InvalidField, "members can be added to rooms only")));
            }
            let added = store.add_members(&id, &req.user_ids, &req.persona_ids)?;
            announce_joins(store, shared, &id, &added)?;
            Ok(Ok(store.conversation_of(&user.id, &id)?))
        })
        .await??;
    outcome.map(Json).ok_or_else(|| HttpError::from_code(ErrorCode::Internal, "conversation vanished"))
}

/// `DELETE /api/conversations/{id}/members/me`: leave a room (not the Lobby).
pub async fn leave(State(app): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<String>) -> Result<StatusCode, HttpError> {
    app.db(move |store, shared| {
        if !store.is_member(&id, &user.id)? {
            return Ok(Err(HttpError::not_member()));
        }
        if store.conversation_kind(&id)? != Some((ConversationKind::Room, false)) {
            return Ok(Err(HttpError::bad_request(ErrorCode::InvalidField, "only rooms other than the Lobby can be left")));
        }
        let members = store.user_members(&id)?;
        store.remove_member(&id, &user.id)?;
        shared.hub.remove_member(&id, &user.id);
        shared.hub.send_to_users(
            members.iter().map(String::as_str),
            &ServerFrame::UserLeft { conversation_id: id.clone(), user_id: user.id.clone(), username: user.username.clone() },
        );
        Ok(Ok(StatusCode::NO_CONTENT))
    })
    .await?
}

/// `GET /api/conversations/{id}/members`: who is in a conversation, people online first.
pub async fn members(State(app): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<String>) -> Result<Json<Vec<Member>>, HttpError> {
    let rows = app
        .db(move |store, _| {
            if !store.is_member(&id, &user.id)? {
                return Ok(None);
            }
            Ok(Some(store.members(&id)?))
        })
        .await?
        .ok_or_else(HttpError::not_member)?;
    let mut out: Vec<Member> = rows
        .into_iter()
        .map(|(id, name, is_persona)| Member { online: !is_persona && app.hub.is_online(&id), kind: if is_persona { "persona" } else { "user" }.to_owned(), id, name })
        .collect();
    out.sort_by(|a, b| b.online.cmp(&a.online).then(a.kind.cmp(&b.kind)).then(a.name.to_lowercase().cmp(&b.name.to_lowercase())));
    Ok(Json(out))
}

#[derive(Deserialize)]
pub struct UsersQuery {
    #[serde(default)]
    q: String,
}

/// `GET /api/users?q=prefix`: people to add to a room.
pub async fn users(State(app): State<AppState>, _user: AuthUser, Query(q): Query<UsersQuery>) -> Result<Json<Vec<User>>, HttpError> {
    let prefix: String = q.q.trim().chars().take(32).collect();
    Ok(Json(app.db(move |store, _| store.users(&prefix, 20)).await?))
}

#[derive(Deserialize)]
pub struct TypingBody {
    is_typing: bool,
}

/// `POST /api/conversations/{id}/typing {is_typing}`: typing over HTTP (polling clients).
pub async fn typing(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<TypingBody>,
) -> Result<StatusCode, HttpError> {
    if !app.hub.is_member(&id, &user.id) {
        return Err(HttpError::not_member());
    }
    chat::set_typing(&app, &user, &id, req.is_typing, None);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/conversations/{id}/read {seq}`: the user has seen the conversation up to `seq`
/// (never moves back; a seq beyond the conversation's last is clamped).
pub async fn mark_read(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ReadRequest>,
) -> Result<StatusCode, HttpError> {
    if req.seq < 0 {
        return Err(HttpError::from_code(ErrorCode::InvalidField, "seq must not be negative"));
    }
    if !app.hub.is_member(&id, &user.id) {
        return Err(HttpError::not_member());
    }
    app.db(move |store, _| {
        let last = store.last_seq(&id)?;
        store.mark_read(&id, &user.id, req.seq.min(last))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct StopBody {
    message_id: String,
}

/// `POST /api/conversations/{id}/stop {message_id}`: the HTTP twin of `stop_response`.
pub async fn stop_response(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<StopBody>,
) -> Result<StatusCode, HttpError> {
    crate::personas::stop_response(&app, &user, &id, &req.message_id)
        .map(|()| StatusCode::NO_CONTENT)
        .map_err(|r| HttpError::from_code(r.code, r.message))
}
