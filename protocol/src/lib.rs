//! The wire protocol of persona-chat, the executable form of `shared/design/protocol.md`.
//!
//! One enum per direction ([`ClientFrame`], [`ServerFrame`]), each frame a JSON object with a
//! snake_case `type`. The frames of the "Gator" design keep their names and fields exactly;
//! everything else is an extension. The HTTP bodies live in [`http`].
//!
//! Timestamps are RFC 3339 UTC strings and ids are strings: the crate stays free of time and
//! uuid libraries so the browser app does not pay for them.

use serde::{Deserialize, Serialize};

use crate::http::ConversationSummary;

pub mod http;

/// The protocol version announced in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest message content, in characters, after trimming.
pub const MAX_CONTENT_CHARS: usize = 5000;
/// Largest frame the server reads, in bytes.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Heartbeat interval the server announces unless configured otherwise.
pub const DEFAULT_HEARTBEAT_MS: u64 = 30_000;
/// Typing indicators, the one home of their timings (both sides read these).
pub mod typing {
    /// A client typing sends `typing_start` at most this often while the draft changes.
    pub const START_EVERY_MS: u64 = 3_000;
    /// A client whose draft is unchanged this long sends `typing_stop`.
    pub const IDLE_STOP_MS: u64 = 2_000;
    /// The server drops a typist (and says `is_typing: false`) after this long without a
    /// `typing_start`: longer than [`START_EVERY_MS`], so a steady typist never flickers.
    pub const TIMEOUT_MS: u64 = 5_000;
    /// The server relays a typist's `typing_start` at most this often per conversation; the
    /// ones between only keep the state alive.
    pub const RELAY_EVERY_MS: u64 = 2_500;
    /// A client shows an incoming typist this long after their last typing frame even if no
    /// stop arrives: longer than [`RELAY_EVERY_MS`] and [`TIMEOUT_MS`], so the server's stop
    /// normally comes first.
    pub const SHOWN_FOR_MS: u64 = 6_000;

    // How they fit together, checked when the crate compiles: a steady typist's starts arrive
    // before the server drops them; the others hear a relayed start before their display of
    // the last one runs out; the server's stop normally comes before a client gives up.
    const _: () = assert!(START_EVERY_MS < TIMEOUT_MS);
    const _: () = assert!(RELAY_EVERY_MS < SHOWN_FOR_MS);
    const _: () = assert!(TIMEOUT_MS < SHOWN_FOR_MS);
}

/// Close code of a socket whose session was signed out (`DELETE /api/session` or
/// `DELETE /api/sessions`): the app goes back to the sign-in page and does not reconnect.
pub const CLOSE_SIGNED_OUT: u16 = 4001;

/// A frame the browser (or any client) sends to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Gator. Answered by `conversation_joined`, then every stored message with seq > after_seq.
    JoinConversation {
        conversation_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_seq: Option<i64>,
    },
    /// Gator. Answered by `conversation_left`.
    LeaveConversation { conversation_id: String },
    /// Gator (client_id and persona_id are extensions; Gator clients send neither).
    SendMessage {
        conversation_id: String,
        content: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        persona_id: Option<String>,
    },
    /// Gator.
    TypingStart { conversation_id: String },
    /// Gator.
    TypingStop { conversation_id: String },
    /// Gator. Answered by `online_users` restricted to these ids.
    GetOnlineStatus { user_ids: Vec<String> },
    /// Heartbeat; `ts` is the client's clock, echoed in `pong`.
    Ping { ts: f64 },
    /// Interrupts a persona's streaming reply. Any member may stop it, from any tab.
    StopResponse { conversation_id: String, message_id: String },
    /// The resync exchange (see [`SyncState`]), sent each time a transport comes up: the
    /// client names the `version` of the last `sync_state` it applied (0: none) and the server
    /// answers one `sync_state` with only what changed since. Also `POST /api/sync`.
    Sync { since: u64 },
}

/// Every `type` a client may send, for telling `unknown_type` from `invalid_field`.
pub const CLIENT_FRAME_TYPES: &[&str] = &[
    "join_conversation",
    "leave_conversation",
    "send_message",
    "typing_start",
    "typing_stop",
    "get_online_status",
    "ping",
    "stop_response",
    "sync",
];

/// A stored message as it travels in `new_message` and `stream_end`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub seq: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub sender_id: String,
    pub sender_name: String,
    pub content: String,
    pub timestamp: String,
    pub is_ai: bool,
    /// A persona's reply cut short (stopped, the responder failing midway, the server
    /// stopping): the text is what was streamed. An extension; absent means false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// The short form of a conversation's newest message, for conversation lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastMessage {
    pub id: String,
    pub seq: i64,
    pub sender_name: String,
    pub content: String,
    pub timestamp: String,
}

impl From<&Message> for LastMessage {
    fn from(m: &Message) -> Self {
        LastMessage {
            id: m.id.clone(),
            seq: m.seq,
            sender_name: m.sender_name.clone(),
            content: m.content.clone(),
            timestamp: m.timestamp.clone(),
        }
    }
}

/// A signed-in person.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub username: String,
}

/// An entry of `online_users`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OnlineUser {
    pub user_id: String,
    pub username: String,
}

/// What a persona is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersonaState {
    Online,
    Busy,
    Responding,
    Offline,
}

impl PersonaState {
    pub fn as_str(self) -> &'static str {
        match self {
            PersonaState::Online => "online",
            PersonaState::Busy => "busy",
            PersonaState::Responding => "responding",
            PersonaState::Offline => "offline",
        }
    }
}

/// Error codes of `error` frames and HTTP error bodies. The first nine are the contract's
/// frame codes; the rest are used by HTTP routes. Codes this build does not know parse as
/// `Unknown`, so an older app keeps working against a newer server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidJson,
    UnknownType,
    InvalidField,
    TooLong,
    EmptyContent,
    NotMember,
    NotFound,
    RateLimited,
    TooLarge,
    /// HTTP 401: missing, forged or expired token.
    Unauthorized,
    /// HTTP 401 from `POST /api/session`: unknown username or wrong password (one answer for both).
    InvalidCredentials,
    /// HTTP 409 from `POST /api/users`: the name is taken, or too close to an existing one
    /// (equal after NFKC and case folding, or a lookalike such as a Cyrillic `а` for `a`).
    UsernameTaken,
    /// HTTP 500.
    Internal,
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::TooLong => "too_long",
            ErrorCode::EmptyContent => "empty_content",
            ErrorCode::NotMember => "not_member",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::UsernameTaken => "username_taken",
            ErrorCode::Internal => "internal",
            ErrorCode::Unknown => "unknown",
        }
    }
}

/// The body of `message_ack`, also the answer of `POST /api/conversations/{id}/messages`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub client_id: String,
    pub conversation_id: String,
    pub message_id: String,
    pub seq: i64,
    pub timestamp: String,
}

/// Why a conversation left a user's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalReason {
    /// The user left (`DELETE /api/conversations/{id}/members/me`), in this tab or another.
    Left,
    /// Someone removed the user.
    Removed,
}

/// The resync exchange's answer: everything a tab shows that is not a conversation's message
/// log (those are filled from their last seq by `join_conversation {after_seq}` or history).
///
/// Versions: the server keeps one list version that grows with every change to any user's
/// list (a message, a read, a title or member change, someone joining or leaving). A client
/// keeps the `version` of the last `sync_state` it applied and sends it as `since`; live
/// frames that carry a version (`conversation_update`, `conversation_upserted`,
/// `conversation_removed`) may advance it while the transport stays up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    /// The `since` this answers (so a tab that receives another tab's answer, relayed, can
    /// tell whether it covers what that tab holds: it does when `full` or `since` ≤ its own).
    #[serde(default)]
    pub since: u64,
    /// Send as `since` next time.
    pub version: u64,
    /// True when `conversations` is the user's whole list, to replace what the client holds
    /// (`since` was 0, from the future, or older than the server can answer from). False: only
    /// the conversations changed since `since`, and `removed` the ones gone from the list.
    #[serde(default)]
    pub full: bool,
    #[serde(default)]
    pub conversations: Vec<ConversationSummary>,
    #[serde(default)]
    pub removed: Vec<String>,
    /// Every persona's status now (always whole: a few entries).
    #[serde(default)]
    pub personas: Vec<PersonaStatusEntry>,
    /// Who is online now among the people this user may see (always whole).
    #[serde(default)]
    pub online: Vec<OnlineUser>,
    /// The persona replies in progress in the user's conversations, with their text so far.
    #[serde(default)]
    pub replies: Vec<ReplyInProgress>,
    pub timestamp: String,
}

/// A persona's status as `sync_state` carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonaStatusEntry {
    pub persona_id: String,
    pub status: PersonaState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
}

/// A persona reply still streaming: its text so far starts at offset 0. Joining a conversation
/// (`join_conversation`, first time or again) also resumes each reply in progress there, with
/// `stream_start` then one `stream_delta {offset: 0, text: so far}`; the later deltas follow.
/// Clients apply deltas by offset: the part before what they hold is skipped, so nothing is
/// doubled; a delta starting beyond what they hold is a gap, filled by joining again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyInProgress {
    pub conversation_id: String,
    pub message_id: String,
    pub persona_id: String,
    pub text: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A frame the server sends to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Second frame on every socket, after `online_users`.
    Hello {
        protocol: u32,
        connection_id: String,
        user: User,
        heartbeat_ms: u64,
        server_time: String,
    },
    /// Gator.
    ConversationJoined {
        conversation_id: String,
        last_seq: i64,
        timestamp: String,
    },
    ConversationLeft {
        conversation_id: String,
    },
    /// Gator.
    NewMessage {
        conversation_id: String,
        message: Message,
        timestamp: String,
    },
    MessageAck(Ack),
    /// Gator.
    TypingIndicator {
        conversation_id: String,
        user_id: String,
        username: String,
        is_typing: bool,
        timestamp: String,
    },
    /// Gator.
    PresenceUpdate {
        user_id: String,
        username: String,
        online: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seen: Option<String>,
        timestamp: String,
    },
    /// Gator.
    OnlineUsers {
        users: Vec<OnlineUser>,
        timestamp: String,
    },
    PersonaStatus {
        persona_id: String,
        status: PersonaState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seen: Option<String>,
        timestamp: String,
    },
    ConversationUpdate {
        conversation_id: String,
        last_message: LastMessage,
        /// The list version this change has (see [`SyncState::version`]); 0 from an older server.
        #[serde(default, skip_serializing_if = "is_zero")]
        version: u64,
        timestamp: String,
    },
    UserJoined {
        conversation_id: String,
        user_id: String,
        username: String,
    },
    UserLeft {
        conversation_id: String,
        user_id: String,
        username: String,
    },
    StreamStart {
        conversation_id: String,
        message_id: String,
        persona_id: String,
    },
    StreamDelta {
        conversation_id: String,
        message_id: String,
        /// Characters (Unicode scalar values) already sent before this delta.
        offset: u64,
        text: String,
    },
    StreamEnd {
        conversation_id: String,
        message_id: String,
        interrupted: bool,
        message: Message,
    },
    Pong {
        ts: f64,
        server_time: String,
    },
    /// The answer of `sync` (and of `POST /api/sync`).
    SyncState(Box<SyncState>),
    /// A conversation now in the user's list, or changed (title, members): sent to every
    /// socket and poll of every member as soon as it happens, whether joined or not.
    ConversationUpserted {
        conversation: Box<ConversationSummary>,
        version: u64,
        timestamp: String,
    },
    /// A conversation that left the user's list: they left it (in any tab) or were removed.
    ConversationRemoved {
        conversation_id: String,
        reason: RemovalReason,
        version: u64,
        timestamp: String,
    },
    /// Gator.
    Error {
        code: ErrorCode,
        message: String,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        timestamp: String,
    },
}

/// Every `type` the server may send.
pub const SERVER_FRAME_TYPES: &[&str] = &[
    "hello",
    "conversation_joined",
    "conversation_left",
    "new_message",
    "message_ack",
    "typing_indicator",
    "presence_update",
    "online_users",
    "persona_status",
    "conversation_update",
    "user_joined",
    "user_left",
    "stream_start",
    "stream_delta",
    "stream_end",
    "pong",
    "error",
    "sync_state",
    "conversation_upserted",
    "conversation_removed",
];

impl ServerFrame {
    /// The frame's `type`, as on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerFrame::Hello { .. } => "hello",
            ServerFrame::ConversationJoined { .. } => "conversation_joined",
            ServerFrame::ConversationLeft { .. } => "conversation_left",
            ServerFrame::NewMessage { .. } => "new_message",
            ServerFrame::MessageAck(_) => "message_ack",
            ServerFrame::TypingIndicator { .. } => "typing_indicator",
            ServerFrame::PresenceUpdate { .. } => "presence_update",
            ServerFrame::OnlineUsers { .. } => "online_users",
            ServerFrame::PersonaStatus { .. } => "persona_status",
            ServerFrame::ConversationUpdate { .. } => "conversation_update",
            ServerFrame::UserJoined { .. } => "user_joined",
            ServerFrame::UserLeft { .. } => "user_left",
            ServerFrame::StreamStart { .. } => "stream_start",
            ServerFrame::StreamDelta { .. } => "stream_delta",
            ServerFrame::StreamEnd { .. } => "stream_end",
            ServerFrame::Pong { .. } => "pong",
            ServerFrame::Error { .. } => "error",
            ServerFrame::SyncState(_) => "sync_state",
            ServerFrame::ConversationUpserted { .. } => "conversation_upserted",
            ServerFrame::ConversationRemoved { .. } => "conversation_removed",
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }

    /// Parses a server frame. `Ok(None)` for a well-formed frame of a type this build does
    /// not know (a newer server): clients skip it rather than fail.
    pub fn parse(text: &str) -> Result<Option<ServerFrame>, FrameError> {
        let value = parse_object(text)?;
        let kind = value.get("type").and_then(|t| t.as_str()).unwrap_or_default().to_owned();
        if !SERVER_FRAME_TYPES.contains(&kind.as_str()) {
            return Ok(None);
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| FrameError::new(ErrorCode::InvalidField, format!("{kind}: {e}")))
    }
}

impl ClientFrame {
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientFrame::JoinConversation { .. } => "join_conversation",
            ClientFrame::LeaveConversation { .. } => "leave_conversation",
            ClientFrame::SendMessage { .. } => "send_message",
            ClientFrame::TypingStart { .. } => "typing_start",
            ClientFrame::TypingStop { .. } => "typing_stop",
            ClientFrame::GetOnlineStatus { .. } => "get_online_status",
            ClientFrame::Ping { .. } => "ping",
            ClientFrame::StopResponse { .. } => "stop_response",
            ClientFrame::Sync { .. } => "sync",
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client frames always serialize")
    }

    /// Parses a client frame and classifies what is wrong with a bad one, as the server's
    /// `error` frame reports it: `invalid_json`, `unknown_type` or `invalid_field`. The
    /// error's `reference` names the frame's type (or its client_id when it has one).
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        let value = parse_object(text)?;
        let kind = value.get("type").and_then(|t| t.as_str()).map(str::to_owned);
        let reference = value.get("client_id").and_then(|c| c.as_str()).map(str::to_owned).or_else(|| kind.clone());
        let kind =
            kind.ok_or_else(|| FrameError::new(ErrorCode::InvalidField, "a frame needs a string field \"type\""))?;
        if !CLIENT_FRAME_TYPES.contains(&kind.as_str()) {
            return Err(FrameError::new(
                ErrorCode::UnknownType,
                format!("unknown frame type \"{}\"", truncate(&kind, 64)),
            )
            .with_ref(Some(truncate(&kind, 64))));
        }
        serde_json::from_value(value)
            .map_err(|e| FrameError::new(ErrorCode::InvalidField, format!("{kind}: {e}")).with_ref(reference))
    }
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    pub reference: Option<String>,
}

impl FrameError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        FrameError { code, message: message.into(), reference: None }
    }

    pub fn with_ref(mut self, reference: Option<String>) -> Self {
        self.reference = reference;
        self
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for FrameError {}

fn parse_object(text: &str) -> Result<serde_json::Value, FrameError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| FrameError::new(ErrorCode::InvalidJson, format!("not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(FrameError::new(ErrorCode::InvalidField, "a frame must be a JSON object"));
    }
    Ok(value)
}

fn truncate(s: &str, max_chars: usize) -> String {
    s.chars().take(max_chars).collect()
}

/// Checks message content as the server does: 1 to [`MAX_CONTENT_CHARS`] characters after
/// trimming. Returns the trimmed content.
pub fn validate_content(content: &str) -> Result<&str, ErrorCode> {
    let trimmed = content.trim();
    if trimmed.is_empty() {
        return Err(ErrorCode::EmptyContent);
    }
    if trimmed.chars().count() > MAX_CONTENT_CHARS {
        return Err(ErrorCode::TooLong);
    }
    Ok(trimmed)
}
