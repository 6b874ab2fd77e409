//! Personas, conversations and their messages.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use persona_chat_protocol::http::SyncRequest;
use persona_chat_protocol::http::{
    ConversationKind, ConversationSummary, CreateConversationRequest, Member, MessagesResponse, Persona,
    PostMessageRequest, ReadRequest,
};
use persona_chat_protocol::{Ack, ErrorCode, RemovalReason, ServerFrame, SyncState, User};
use serde::Deserialize;
use std::time::Duration;

use super::error::HttpError;
use super::extractor::{AuthUser, JsonBody};
use crate::chat;
use crate::AppState;

/// The personas with their live status (online, busy, responding or offline).
pub async fn personas(State(app): State<AppState>, _user: AuthUser) -> Result<Json<Vec<Persona>>, HttpError> {
    let mut personas = app.read(|store| store.personas()).await?;
    personas.iter_mut().for_each(|p| app.personas.overlay(p));
    Ok(Json(personas))
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
    offset: Option<usize>,
}

/// Most conversations in one page of `GET /api/conversations` (and the default page).
pub const LIST_PAGE_MAX: usize = 1000;

pub async fn list(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<ConversationSummary>>, HttpError> {
    let Query(q) = query.map_err(|e| HttpError::bad_request(ErrorCode::InvalidField, e.body_text()))?;
    let limit = q.limit.unwrap_or(LIST_PAGE_MAX).clamp(1, LIST_PAGE_MAX);
    let offset = q.offset.unwrap_or(0);
    let mut list = app.read(move |store| store.conversations_page(&user.id, None, limit, offset)).await?;
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
        .read(move |store| {
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
                let (id, created) = store.direct_conversation(&me, &persona_id)?;
                shared.hub.add_member(&id, &me.id);
                if let Some(version) = created {
                    crate::list::upsert(store, shared, &id, std::slice::from_ref(&me.id), version)?;
                }
                store.conversation_of(&me.id, &id)
            })
            .await
            .map_err(|e| match e {
                crate::store::StoreError::NotFound => {
                    HttpError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such persona")
                }
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
    if let Err(wait) = app.room_quota.take(&user.id, std::time::Instant::now()) {
        crate::metrics::inc(&app.metrics.rate_limited);
        return Err(HttpError::rate_limited(
            format!("too many new rooms: at most {} an hour; nothing was created", app.config.rooms_per_hour),
            wait,
        ));
    }
    let me = user.clone();
    let max_rooms = app.config.max_rooms_per_user;
    let summary = app
        .db(move |store, shared| {
            if store.rooms_owned(&me.id)? >= max_rooms {
                return Ok(Err(HttpError::bad_request(
                    ErrorCode::InvalidField,
                    format!("you have created {max_rooms} rooms, the most one person may; nothing was created"),
                )));
            }
            let id = store.create_room(&me, &title, &req.member_ids, &req.persona_ids)?;
            announce_joins(store, shared, &id, std::slice::from_ref(&me))?;
            Ok(Ok(store.conversation_of(&me.id, &id)?))
        })
        .await??;
    summary.map(Json).ok_or_else(|| HttpError::from_code(ErrorCode::Internal, "conversation vanished"))
}

/// Tells every member of a conversation who is in it now (`user_joined` for each of
/// `joined`), and sends every member the conversation (`conversation_upserted`: new to those
/// who joined, changed members for the others). Keeps the hub's membership cache in step.
fn announce_joins(
    store: &crate::store::Store,
    shared: &crate::Shared,
    conversation_id: &str,
    joined: &[User],
) -> Result<(), crate::store::StoreError> {
    let members = store.user_members(conversation_id)?;
    for member in &members {
        shared.hub.add_member(conversation_id, member);
    }
    // The list first (the conversation is known), then who joined it.
    if !joined.is_empty() {
        let version = store.conversation_version(conversation_id)?;
        crate::list::upsert(store, shared, conversation_id, &members, version)?;
    }
    for user in joined {
        shared.hub.send_to_users(
            members.iter().map(String::as_str),
            &ServerFrame::UserJoined {
                conversation_id: conversation_id.to_owned(),
                user_id: user.id.clone(),
                username: user.username.clone(),
            },
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
    if let Err(wait) = app.member_add_quota.take(&user.id, std::time::Instant::now()) {
        crate::metrics::inc(&app.metrics.rate_limited);
        return Err(HttpError::rate_limited(
            format!("too many additions: at most {} an hour; nobody was added", app.config.member_adds_per_hour),
            wait,
        ));
    }
    let max_members = app.config.max_room_members;
    let outcome = app
        .db(move |store, shared| {
            if !store.is_member(&id, &user.id)? {
                return Ok(Err(HttpError::not_member()));
            }
            if store.conversation_kind(&id)? != Some((ConversationKind::Room, false)) {
                return Ok(Err(HttpError::bad_request(ErrorCode::InvalidField, "members can be added to rooms only")));
            }
            let asked = (req.user_ids.len() + req.persona_ids.len()) as i64;
            if store.member_count(&id)? + asked > max_members {
                return Ok(Err(HttpError::bad_request(
                    ErrorCode::InvalidField,
                    format!("a room has at most {max_members} members; nobody was added"),
                )));
            }
            let added = store.add_members(&id, &req.user_ids, &req.persona_ids)?;
            announce_joins(store, shared, &id, &added)?;
            Ok(Ok(store.conversation_of(&user.id, &id)?))
        })
        .await??;
    outcome.map(Json).ok_or_else(|| HttpError::from_code(ErrorCode::Internal, "conversation vanished"))
}

/// `DELETE /api/conversations/{id}/members/me`: leave a room (not the Lobby). Every tab of
/// the user gets `conversation_removed {reason: left}`.
pub async fn leave(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, HttpError> {
    app.db(move |store, shared| {
        if !store.is_member(&id, &user.id)? {
            return Ok(Err(HttpError::not_member()));
        }
        if store.conversation_kind(&id)? != Some((ConversationKind::Room, false)) {
            return Ok(Err(HttpError::bad_request(
                ErrorCode::InvalidField,
                "only rooms other than the Lobby can be left",
            )));
        }
        crate::list::end_membership(store, shared, &id, &user, RemovalReason::Left)?;
        Ok(Ok(StatusCode::NO_CONTENT))
    })
    .await?
}

/// `DELETE /api/conversations/{id}/members/{user_id}`: the room's creator removes a member
/// (themselves: as leaving). The removed user's tabs get `conversation_removed {reason:
/// removed}` and no more of the room's frames. 404: no such conversation, or that user is not
/// a member; 403 `not_member`: the caller is not a member; 403 `invalid_field`: the caller did
/// not create the room; 400: not a room (direct conversations and the Lobby).
pub async fn remove_member(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    Path((id, member_id)): Path<(String, String)>,
) -> Result<StatusCode, HttpError> {
    app.db(move |store, shared| {
        let Some(owner) = store.conversation_owner(&id)? else {
            return Ok(Err(HttpError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such conversation")));
        };
        if !store.is_member(&id, &user.id)? {
            return Ok(Err(HttpError::not_member()));
        }
        if store.conversation_kind(&id)? != Some((ConversationKind::Room, false)) {
            return Ok(Err(HttpError::bad_request(
                ErrorCode::InvalidField,
                "members can be removed from rooms other than the Lobby only",
            )));
        }
        if owner.as_deref() != Some(user.id.as_str()) {
            return Ok(Err(HttpError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::InvalidField,
                "only the room's creator can remove its members",
            )));
        }
        let reason = if member_id == user.id { RemovalReason::Left } else { RemovalReason::Removed };
        let Some(member) = store.user_by_id(&member_id)? else {
            return Ok(Err(HttpError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such member")));
        };
        if !crate::list::end_membership(store, shared, &id, &member, reason)? {
            return Ok(Err(HttpError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such member")));
        }
        Ok(Ok(StatusCode::NO_CONTENT))
    })
    .await?
}

/// `GET /api/conversations/{id}/members`: who is in a conversation, people online first.
pub async fn members(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Vec<Member>>, HttpError> {
    let rows = app
        .read(move |store| {
            if !store.is_member(&id, &user.id)? {
                return Ok(None);
            }
            Ok(Some(store.members(&id)?))
        })
        .await?
        .ok_or_else(HttpError::not_member)?;
    let mut out: Vec<Member> = rows
        .into_iter()
        .map(|(id, name, is_persona)| Member {
            online: !is_persona && app.hub.is_online(&id),
            kind: if is_persona { "persona" } else { "user" }.to_owned(),
            id,
            name,
        })
        .collect();
    out.sort_by(|a, b| {
        b.online.cmp(&a.online).then(a.kind.cmp(&b.kind)).then(a.name.to_lowercase().cmp(&b.name.to_lowercase()))
    });
    Ok(Json(out))
}

#[derive(Deserialize)]
pub struct UsersQuery {
    #[serde(default)]
    q: String,
    limit: Option<usize>,
    offset: Option<usize>,
}

/// Most users in one page of `GET /api/users`.
pub const USERS_PAGE_MAX: usize = 50;

/// `GET /api/users?q=prefix&limit=20&offset=0`: people to add to a room, by name, a page at a
/// time; the prefix needs at least 2 characters.
pub async fn users(
    State(app): State<AppState>,
    _user: AuthUser,
    query: Result<Query<UsersQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<User>>, HttpError> {
    let Query(q) = query.map_err(|e| HttpError::bad_request(ErrorCode::InvalidField, e.body_text()))?;
    let prefix: String = q.q.trim().chars().take(32).collect();
    let min = persona_chat_protocol::http::USER_SEARCH_MIN_CHARS;
    if prefix.chars().count() < min {
        return Err(HttpError::bad_request(
            ErrorCode::InvalidField,
            format!("type at least {min} characters of a name to search"),
        ));
    }
    let limit = q.limit.unwrap_or(20).clamp(1, USERS_PAGE_MAX);
    let offset = q.offset.unwrap_or(0).min(100_000);
    Ok(Json(app.read(move |store| store.users(&prefix, limit, offset)).await?))
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
    app.db(move |store, shared| {
        let last = store.last_seq(&id)?;
        if let Some(version) = store.mark_read(&id, &user.id, req.seq.min(last))? {
            crate::list::read_moved(store, shared, &id, &user.id, version)?;
        }
        Ok(())
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

/// `POST /api/sync {since}`: the resync exchange over HTTP (the polling transport), the same
/// answer as the `sync` frame's; 429 beyond the per-user sync rate.
pub async fn sync(
    State(app): State<AppState>,
    AuthUser(user): AuthUser,
    JsonBody(req): JsonBody<SyncRequest>,
) -> Result<Json<SyncState>, HttpError> {
    match crate::ws::sync(&app, &user, req.since).await {
        Ok(state) => Ok(Json(state)),
        Err(r) if r.code == ErrorCode::RateLimited => Err(HttpError::rate_limited(r.message, Duration::from_secs(1))),
        Err(r) => Err(HttpError::from_code(r.code, r.message)),
    }
}
