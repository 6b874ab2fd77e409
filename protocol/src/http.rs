//! Bodies of the HTTP routes (`Authorization: Bearer TOKEN` on all but `POST /api/users` and
//! `POST /api/session`).

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, LastMessage, Message, PersonaState, ServerFrame, User};

/// `POST /api/users` (sign up: creates the account and signs in, 201) and `POST /api/session`
/// (sign in; never registers). Passwords have [`PASSWORD_MIN`] to [`PASSWORD_MAX`] characters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRequest {
    pub username: String,
    pub password: String,
}

/// Shortest password `POST /api/users` accepts, in characters.
pub const PASSWORD_MIN: usize = 8;
/// Longest password, in characters.
pub const PASSWORD_MAX: usize = 256;

/// The answer of `POST /api/users`, `POST /api/session` and `POST /api/session/refresh`.
/// The token is short-lived (15 minutes by default): refresh it before `expires_at` with
/// `POST /api/session/refresh`, which answers a fresh token for the same session while the
/// session lives. `DELETE /api/session` ends this session, `DELETE /api/sessions` every
/// session of the user; their tokens are refused at once everywhere and their sockets close
/// with [`crate::CLOSE_SIGNED_OUT`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResponse {
    pub token: String,
    pub user: User,
    /// Unix seconds when this token stops working (0 from an older server: unknown). Read
    /// leniently: a value of another form (a string, null) reads as 0, unknown.
    #[serde(default, deserialize_with = "lenient_unix_seconds")]
    pub expires_at: i64,
    /// Trades for a fresh token with `POST /api/session/refresh {refresh_token}` while the
    /// session lives, even after the token expired (a computer that slept). Sent only in
    /// request bodies, never in URLs. Empty from an older server.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub refresh_token: String,
}

/// `POST /api/session/refresh` with a body: the session's refresh token. Without a body the
/// route takes the (unexpired) token in `Authorization: Bearer`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RefreshRequest {
    #[serde(default)]
    pub refresh_token: String,
}

fn lenient_unix_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("unix seconds")
        }
        fn visit_i64<E>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E>(self, v: u64) -> Result<i64, E> {
            Ok(i64::try_from(v).unwrap_or(i64::MAX))
        }
        fn visit_f64<E>(self, v: f64) -> Result<i64, E> {
            Ok(if v.is_finite() { v as i64 } else { 0 })
        }
        fn visit_str<E>(self, v: &str) -> Result<i64, E> {
            Ok(v.trim().parse().unwrap_or(0))
        }
        fn visit_bool<E>(self, _: bool) -> Result<i64, E> {
            Ok(0)
        }
        fn visit_unit<E>(self) -> Result<i64, E> {
            Ok(0)
        }
        fn visit_none<E>(self) -> Result<i64, E> {
            Ok(0)
        }
    }
    d.deserialize_any(V)
}

/// `GET /api/users?q=PREFIX&limit=N&offset=M`: at least [`USER_SEARCH_MIN_CHARS`] characters.
pub const USER_SEARCH_MIN_CHARS: usize = 2;

/// An AI persona, as `GET /api/personas` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Persona {
    pub id: String,
    pub name: String,
    /// One line about who they are.
    #[serde(default)]
    pub tagline: String,
    pub status: PersonaState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    /// One user and one persona.
    Direct,
    /// A group room of several users and personas (the Lobby is one).
    Room,
}

/// An entry of `GET /api/conversations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationSummary {
    pub id: String,
    pub kind: ConversationKind,
    pub title: String,
    /// The persona of a direct conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona: Option<Persona>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<LastMessage>,
    pub last_seq: i64,
    pub unread_count: i64,
}

/// `POST /api/conversations`: `{persona_id}` opens (or returns) the direct conversation with
/// that persona. `{title, member_ids, persona_ids}` creates a room (an extension).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateConversationRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub persona_ids: Vec<String>,
}

/// `GET /api/conversations/{id}/messages`: ascending by seq.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagesResponse {
    pub messages: Vec<Message>,
    /// More messages exist beyond the requested window in the direction asked.
    #[serde(default)]
    pub has_more: bool,
}

/// `POST /api/conversations/{id}/messages`, answered with an [`crate::Ack`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostMessageRequest {
    pub content: String,
    pub client_id: String,
}

/// An entry of `GET /api/conversations/{id}/members` (an extension): people online first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub name: String,
    /// `user` or `persona`.
    pub kind: String,
    pub online: bool,
}

/// `POST /api/conversations/{id}/read` (an extension): the user has seen the conversation up
/// to `seq`, so its unread count survives a reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadRequest {
    pub seq: i64,
}

/// `POST /api/conversations/{id}/typing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypingRequest {
    pub is_typing: bool,
}

/// One frame of the long poll, with its event id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub frame: ServerFrame,
}

/// `GET /api/events?after=EVENT_ID&timeout_ms=25000`. Either events (possibly none, at the
/// timeout) and the cursor to ask from next, or `resync: true` when `after` is older than
/// what the server keeps: reload the lists and fill each conversation from its last seq.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EventsResponse {
    #[serde(default)]
    pub resync: bool,
    #[serde(default)]
    pub events: Vec<Event>,
    pub next: u64,
}

/// By hand so that the two forms are exactly the contract's: `{events, next}` (the list
/// present even when empty) and `{resync: true, next}` (no list).
impl Serialize for EventsResponse {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let with_events = !self.resync || !self.events.is_empty();
        let len = 1 + usize::from(self.resync) + usize::from(with_events);
        let mut s = serializer.serialize_struct("EventsResponse", len)?;
        if self.resync {
            s.serialize_field("resync", &true)?;
        }
        if with_events {
            s.serialize_field("events", &self.events)?;
        }
        s.serialize_field("next", &self.next)?;
        s.end()
    }
}

/// `POST /api/sync`: the resync exchange over HTTP, answered with a [`crate::SyncState`]
/// (the same as the `sync` frame's answer).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    #[serde(default)]
    pub since: u64,
}

/// Every HTTP error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}
