//! Round-trip tests of the protocol crate against `shared/design/protocol.md`.
//!
//! Every JSON text here is written by hand from the contract, parsed into the Rust type,
//! compared with an explicitly built value, then serialized again and compared with the
//! hand-written text as a `serde_json::Value`: that checks field names, the `type` tag and
//! that absent optional fields stay absent.

use std::collections::BTreeSet;
use std::fmt::Debug;

use persona_chat_protocol::http::{
    ApiError, ConversationKind, ConversationSummary, CreateConversationRequest, Event, EventsResponse,
    MessagesResponse, Persona, PostMessageRequest, RefreshRequest, SessionRequest, SessionResponse, SyncRequest,
    TypingRequest,
};
use persona_chat_protocol::{
    validate_content, Ack, ClientFrame, ErrorCode, LastMessage, Message, OnlineUser, PersonaState, PersonaStatusEntry,
    RemovalReason, ReplyInProgress, ServerFrame, SyncState, User, CLIENT_FRAME_TYPES, MAX_CONTENT_CHARS,
    PROTOCOL_VERSION, SERVER_FRAME_TYPES,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

// The ids of the hand-written texts, for building the expected Rust values.
const CONV: &str = "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14";
const ALICE: &str = "b7e4d2a1-0c9f-4e3b-8a76-5d1f2e9c4b80";
const BOB: &str = "c2a9f1e7-5b4d-4c8e-9f03-a6b1d7e2c954";
const PERSONA: &str = "e91d4c7b-2a6f-4b19-8d53-0f7a3c6e2b41";
const MSG: &str = "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38";
const CLIENT: &str = "0d8b3f6a-7e2c-4a91-b5d4-3c6e9f1a2b07";
const CONN: &str = "5a2e9c7d-3f1b-4d86-a0e4-8b7c2d6f9e13";
const T0: &str = "2026-11-21T10:00:00.000Z";
const T1: &str = "2026-11-21T10:00:01.250Z";
const T2: &str = "2026-11-21T09:42:17.031Z";

fn s(x: &str) -> String {
    x.to_owned()
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Parses `json` as `T`, checks it equals `expected`, and checks that `expected` serializes
/// back to exactly the hand-written JSON (compared as values, so key order and whitespace do
/// not matter but names, types and omitted fields do).
fn roundtrip<T>(json: &str, expected: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let parsed: T =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("hand-written JSON does not parse: {e}\n{json}"));
    assert_eq!(&parsed, expected, "parsed value differs for\n{json}");

    let hand: Value = serde_json::from_str(json).expect("hand-written JSON is valid");
    let back = serde_json::to_value(expected).expect("serializes");
    assert_eq!(back, hand, "serialized form differs from the hand-written JSON");

    // And the text form parses back to the same value.
    let text = serde_json::to_string(expected).expect("serializes");
    let again: T = serde_json::from_str(&text).expect("own output parses");
    assert_eq!(&again, expected);
}

/// `roundtrip` plus the frame-level API: `ClientFrame::parse`, `to_json`, `type_name`.
fn client_roundtrip((json, expected): (&str, ClientFrame)) {
    roundtrip(json, &expected);
    assert_eq!(ClientFrame::parse(json), Ok(expected.clone()));
    let hand: Value = serde_json::from_str(json).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&expected.to_json()).unwrap(), hand);
    assert_eq!(hand["type"], expected.type_name());
}

/// `roundtrip` plus the frame-level API: `ServerFrame::parse`, `to_json`, `type_name`.
fn server_roundtrip((json, expected): (&str, ServerFrame)) {
    roundtrip(json, &expected);
    assert_eq!(ServerFrame::parse(json), Ok(Some(expected.clone())));
    let hand: Value = serde_json::from_str(json).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&expected.to_json()).unwrap(), hand);
    assert_eq!(hand["type"], expected.type_name());
}

/// The keys of a JSON object.
fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

fn key_set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| s(n)).collect()
}

// ---------------------------------------------------------------------------------------
// Samples: one (hand-written JSON, expected value) per frame form
// ---------------------------------------------------------------------------------------

fn c_join_gator() -> (&'static str, ClientFrame) {
    (
        r#"{"type": "join_conversation", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14"}"#,
        ClientFrame::JoinConversation { conversation_id: s(CONV), after_seq: None },
    )
}

fn c_join_after_seq() -> (&'static str, ClientFrame) {
    (
        r#"{"type": "join_conversation", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "after_seq": 41}"#,
        ClientFrame::JoinConversation { conversation_id: s(CONV), after_seq: Some(41) },
    )
}

fn c_leave() -> (&'static str, ClientFrame) {
    (
        r#"{"type": "leave_conversation", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14"}"#,
        ClientFrame::LeaveConversation { conversation_id: s(CONV) },
    )
}

fn c_send_gator() -> (&'static str, ClientFrame) {
    (
        r#"{"type": "send_message", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "content": "Hello there!"}"#,
        ClientFrame::SendMessage {
            conversation_id: s(CONV),
            content: s("Hello there!"),
            client_id: None,
            persona_id: None,
        },
    )
}

fn c_send_full() -> (&'static str, ClientFrame) {
    (
        r#"{"type": "send_message", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "content": "What do you think, Ada? \u00e9\u00e8 \ud83d\ude00",
            "client_id": "0d8b3f6a-7e2c-4a91-b5d4-3c6e9f1a2b07",
            "persona_id": "e91d4c7b-2a6f-4b19-8d53-0f7a3c6e2b41"}"#,
        ClientFrame::SendMessage {
            conversation_id: s(CONV),
            content: s("What do you think, Ada? éè 😀"),
            client_id: Some(s(CLIENT)),
            persona_id: Some(s(PERSONA)),
        },
    )
}

fn c_send_client_id_only() -> (&'static str, ClientFrame) {
    (
        r#"{"type": "send_message", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "content": "ok", "client_id": "0d8b3f6a-7e2c-4a91-b5d4-3c6e9f1a2b07"}"#,
        ClientFrame::SendMessage {
            conversation_id: s(CONV),
            content: s("ok"),
            client_id: Some(s(CLIENT)),
            persona_id: None,
        },
    )
}

fn c_typing_start() -> (&'static str, ClientFrame) {
    (
        r#"{"type": "typing_start", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14"}"#,
        ClientFrame::TypingStart { conversation_id: s(CONV) },
    )
}

fn c_typing_stop() -> (&'static str, ClientFrame) {
    (
        r#"{"type": "typing_stop", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14"}"#,
        ClientFrame::TypingStop { conversation_id: s(CONV) },
    )
}

fn c_get_online_status() -> (&'static str, ClientFrame) {
    (
        r#"{"type": "get_online_status",
            "user_ids": ["b7e4d2a1-0c9f-4e3b-8a76-5d1f2e9c4b80", "c2a9f1e7-5b4d-4c8e-9f03-a6b1d7e2c954"]}"#,
        ClientFrame::GetOnlineStatus { user_ids: vec![s(ALICE), s(BOB)] },
    )
}

fn c_ping() -> (&'static str, ClientFrame) {
    // A performance.now()-style clock: fractional milliseconds.
    (r#"{"type": "ping", "ts": 48213.5}"#, ClientFrame::Ping { ts: 48213.5 })
}

fn c_stop_response() -> (&'static str, ClientFrame) {
    (
        r#"{"type": "stop_response", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "message_id": "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38"}"#,
        ClientFrame::StopResponse { conversation_id: s(CONV), message_id: s(MSG) },
    )
}

fn c_sync() -> (&'static str, ClientFrame) {
    (r#"{"type": "sync", "since": 9071}"#, ClientFrame::Sync { since: 9071 })
}

fn client_samples() -> Vec<(&'static str, ClientFrame)> {
    vec![
        c_join_gator(),
        c_join_after_seq(),
        c_leave(),
        c_send_gator(),
        c_send_full(),
        c_send_client_id_only(),
        c_typing_start(),
        c_typing_stop(),
        c_get_online_status(),
        c_ping(),
        c_stop_response(),
        c_sync(),
    ]
}

/// Alice's message, sent with a client_id.
fn alice_message() -> Message {
    Message {
        id: s(MSG),
        seq: 42,
        client_id: Some(s(CLIENT)),
        sender_id: s(ALICE),
        sender_name: s("alice"),
        content: s("Hello there!"),
        timestamp: s(T0),
        is_ai: false,
        interrupted: false,
    }
}

/// A persona's reply: no client_id.
fn persona_message() -> Message {
    Message {
        id: s(MSG),
        seq: 43,
        client_id: None,
        sender_id: s(PERSONA),
        sender_name: s("Ada"),
        content: s("Hi Alice, how can I help?"),
        timestamp: s(T1),
        is_ai: true,
        interrupted: false,
    }
}

fn sv_hello() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "hello", "protocol": 1, "connection_id": "5a2e9c7d-3f1b-4d86-a0e4-8b7c2d6f9e13",
            "user": {"id": "b7e4d2a1-0c9f-4e3b-8a76-5d1f2e9c4b80", "username": "alice"},
            "heartbeat_ms": 30000, "server_time": "2026-11-21T10:00:00.000Z"}"#,
        ServerFrame::Hello {
            protocol: PROTOCOL_VERSION,
            connection_id: s(CONN),
            user: User { id: s(ALICE), username: s("alice") },
            heartbeat_ms: 30_000,
            server_time: s(T0),
        },
    )
}

fn sv_conversation_joined() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "conversation_joined", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "last_seq": 42, "timestamp": "2026-11-21T10:00:00.000Z"}"#,
        ServerFrame::ConversationJoined { conversation_id: s(CONV), last_seq: 42, timestamp: s(T0) },
    )
}

fn sv_conversation_left() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "conversation_left", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14"}"#,
        ServerFrame::ConversationLeft { conversation_id: s(CONV) },
    )
}

fn sv_new_message_user() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "new_message", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "message": {"id": "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38", "seq": 42,
                        "client_id": "0d8b3f6a-7e2c-4a91-b5d4-3c6e9f1a2b07",
                        "sender_id": "b7e4d2a1-0c9f-4e3b-8a76-5d1f2e9c4b80", "sender_name": "alice",
                        "content": "Hello there!", "timestamp": "2026-11-21T10:00:00.000Z",
                        "is_ai": false},
            "timestamp": "2026-11-21T10:00:00.000Z"}"#,
        ServerFrame::NewMessage { conversation_id: s(CONV), message: alice_message(), timestamp: s(T0) },
    )
}

fn sv_new_message_ai() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "new_message", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "message": {"id": "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38", "seq": 43,
                        "sender_id": "e91d4c7b-2a6f-4b19-8d53-0f7a3c6e2b41", "sender_name": "Ada",
                        "content": "Hi Alice, how can I help?",
                        "timestamp": "2026-11-21T10:00:01.250Z", "is_ai": true},
            "timestamp": "2026-11-21T10:00:01.250Z"}"#,
        ServerFrame::NewMessage { conversation_id: s(CONV), message: persona_message(), timestamp: s(T1) },
    )
}

fn sv_message_ack() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "message_ack", "client_id": "0d8b3f6a-7e2c-4a91-b5d4-3c6e9f1a2b07",
            "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "message_id": "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38", "seq": 42,
            "timestamp": "2026-11-21T10:00:00.000Z"}"#,
        ServerFrame::MessageAck(ack()),
    )
}

fn sv_typing_indicator() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "typing_indicator", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "user_id": "c2a9f1e7-5b4d-4c8e-9f03-a6b1d7e2c954", "username": "bob",
            "is_typing": true, "timestamp": "2026-11-21T10:00:00.000Z"}"#,
        ServerFrame::TypingIndicator {
            conversation_id: s(CONV),
            user_id: s(BOB),
            username: s("bob"),
            is_typing: true,
            timestamp: s(T0),
        },
    )
}

fn sv_typing_indicator_stopped() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "typing_indicator", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "user_id": "c2a9f1e7-5b4d-4c8e-9f03-a6b1d7e2c954", "username": "bob",
            "is_typing": false, "timestamp": "2026-11-21T10:00:05.000Z"}"#,
        ServerFrame::TypingIndicator {
            conversation_id: s(CONV),
            user_id: s(BOB),
            username: s("bob"),
            is_typing: false,
            timestamp: s("2026-11-21T10:00:05.000Z"),
        },
    )
}

fn sv_presence_online() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "presence_update", "user_id": "c2a9f1e7-5b4d-4c8e-9f03-a6b1d7e2c954",
            "username": "bob", "online": true, "timestamp": "2026-11-21T10:00:00.000Z"}"#,
        ServerFrame::PresenceUpdate {
            user_id: s(BOB),
            username: s("bob"),
            online: true,
            last_seen: None,
            timestamp: s(T0),
        },
    )
}

fn sv_presence_offline() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "presence_update", "user_id": "c2a9f1e7-5b4d-4c8e-9f03-a6b1d7e2c954",
            "username": "bob", "online": false, "last_seen": "2026-11-21T09:42:17.031Z",
            "timestamp": "2026-11-21T10:00:00.000Z"}"#,
        ServerFrame::PresenceUpdate {
            user_id: s(BOB),
            username: s("bob"),
            online: false,
            last_seen: Some(s(T2)),
            timestamp: s(T0),
        },
    )
}

fn sv_online_users() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "online_users",
            "users": [{"user_id": "b7e4d2a1-0c9f-4e3b-8a76-5d1f2e9c4b80", "username": "alice"},
                      {"user_id": "c2a9f1e7-5b4d-4c8e-9f03-a6b1d7e2c954", "username": "bob"}],
            "timestamp": "2026-11-21T10:00:00.000Z"}"#,
        ServerFrame::OnlineUsers {
            users: vec![
                OnlineUser { user_id: s(ALICE), username: s("alice") },
                OnlineUser { user_id: s(BOB), username: s("bob") },
            ],
            timestamp: s(T0),
        },
    )
}

fn sv_online_users_empty() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "online_users", "users": [], "timestamp": "2026-11-21T10:00:00.000Z"}"#,
        ServerFrame::OnlineUsers { users: vec![], timestamp: s(T0) },
    )
}

fn sv_persona_status_responding() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "persona_status", "persona_id": "e91d4c7b-2a6f-4b19-8d53-0f7a3c6e2b41",
            "status": "responding", "timestamp": "2026-11-21T10:00:00.000Z"}"#,
        ServerFrame::PersonaStatus {
            persona_id: s(PERSONA),
            status: PersonaState::Responding,
            last_seen: None,
            timestamp: s(T0),
        },
    )
}

fn sv_persona_status_offline() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "persona_status", "persona_id": "e91d4c7b-2a6f-4b19-8d53-0f7a3c6e2b41",
            "status": "offline", "last_seen": "2026-11-21T09:42:17.031Z",
            "timestamp": "2026-11-21T10:00:00.000Z"}"#,
        ServerFrame::PersonaStatus {
            persona_id: s(PERSONA),
            status: PersonaState::Offline,
            last_seen: Some(s(T2)),
            timestamp: s(T0),
        },
    )
}

fn sv_conversation_update() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "conversation_update", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "last_message": {"id": "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38", "seq": 42,
                             "sender_name": "alice", "content": "Hello there!",
                             "timestamp": "2026-11-21T10:00:00.000Z"},
            "timestamp": "2026-11-21T10:00:00.000Z"}"#,
        ServerFrame::ConversationUpdate {
            conversation_id: s(CONV),
            last_message: LastMessage {
                id: s(MSG),
                seq: 42,
                sender_name: s("alice"),
                content: s("Hello there!"),
                timestamp: s(T0),
            },
            version: 0,
            timestamp: s(T0),
        },
    )
}

fn sv_conversation_update_versioned() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "conversation_update", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "last_message": {"id": "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38", "seq": 42,
                             "sender_name": "alice", "content": "Hello there!",
                             "timestamp": "2026-11-21T10:00:00.000Z"},
            "version": 9071,
            "timestamp": "2026-11-21T10:00:00.000Z"}"#,
        ServerFrame::ConversationUpdate {
            conversation_id: s(CONV),
            last_message: LastMessage {
                id: s(MSG),
                seq: 42,
                sender_name: s("alice"),
                content: s("Hello there!"),
                timestamp: s(T0),
            },
            version: 9071,
            timestamp: s(T0),
        },
    )
}

fn room_summary() -> ConversationSummary {
    ConversationSummary {
        id: s(CONV),
        kind: ConversationKind::Room,
        title: s("Design review"),
        persona: None,
        last_message: None,
        last_seq: 0,
        unread_count: 0,
    }
}

const ROOM_SUMMARY_JSON: &str = r#"{"id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14", "kind": "room",
    "title": "Design review", "last_seq": 0, "unread_count": 0}"#;

fn sv_sync_state() -> (String, ServerFrame) {
    (
        format!(
            r#"{{"type": "sync_state", "since": 9002, "version": 9071, "full": false,
                "conversations": [{ROOM_SUMMARY_JSON}],
                "removed": ["5a2e9c7d-3f1b-4d86-a0e4-8b7c2d6f9e13"],
                "personas": [{{"persona_id": "e91d4c7b-2a6f-4b19-8d53-0f7a3c6e2b41", "status": "responding"}}],
                "online": [{{"user_id": "c2a9f1e7-5b4d-4c8e-9f03-a6b1d7e2c954", "username": "bob"}}],
                "replies": [{{"conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
                              "message_id": "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38",
                              "persona_id": "e91d4c7b-2a6f-4b19-8d53-0f7a3c6e2b41",
                              "text": "Well, the short"}}],
                "timestamp": "2026-11-21T10:00:00.000Z"}}"#
        ),
        ServerFrame::SyncState(Box::new(SyncState {
            since: 9002,
            version: 9071,
            full: false,
            conversations: vec![room_summary()],
            removed: vec![s(CONN)],
            personas: vec![PersonaStatusEntry {
                persona_id: s(PERSONA),
                status: PersonaState::Responding,
                last_seen: None,
            }],
            online: vec![OnlineUser { user_id: s(BOB), username: s("bob") }],
            replies: vec![ReplyInProgress {
                conversation_id: s(CONV),
                message_id: s(MSG),
                persona_id: s(PERSONA),
                text: s("Well, the short"),
            }],
            timestamp: s(T0),
        })),
    )
}

fn sv_conversation_upserted() -> (String, ServerFrame) {
    (
        format!(
            r#"{{"type": "conversation_upserted", "conversation": {ROOM_SUMMARY_JSON},
                "version": 9072, "timestamp": "2026-11-21T10:00:00.000Z"}}"#
        ),
        ServerFrame::ConversationUpserted { conversation: Box::new(room_summary()), version: 9072, timestamp: s(T0) },
    )
}

fn sv_conversation_removed() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "conversation_removed", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "reason": "removed", "version": 9073, "timestamp": "2026-11-21T10:00:00.000Z"}"#,
        ServerFrame::ConversationRemoved {
            conversation_id: s(CONV),
            reason: RemovalReason::Removed,
            version: 9073,
            timestamp: s(T0),
        },
    )
}

fn sv_user_joined() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "user_joined", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "user_id": "c2a9f1e7-5b4d-4c8e-9f03-a6b1d7e2c954", "username": "bob"}"#,
        ServerFrame::UserJoined { conversation_id: s(CONV), user_id: s(BOB), username: s("bob") },
    )
}

fn sv_user_left() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "user_left", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "user_id": "c2a9f1e7-5b4d-4c8e-9f03-a6b1d7e2c954", "username": "bob"}"#,
        ServerFrame::UserLeft { conversation_id: s(CONV), user_id: s(BOB), username: s("bob") },
    )
}

fn sv_stream_start() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "stream_start", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "message_id": "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38",
            "persona_id": "e91d4c7b-2a6f-4b19-8d53-0f7a3c6e2b41"}"#,
        ServerFrame::StreamStart { conversation_id: s(CONV), message_id: s(MSG), persona_id: s(PERSONA) },
    )
}

fn sv_stream_delta() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "stream_delta", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "message_id": "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38", "offset": 9,
            "text": " how can I help?"}"#,
        ServerFrame::StreamDelta {
            conversation_id: s(CONV),
            message_id: s(MSG),
            offset: 9,
            text: s(" how can I help?"),
        },
    )
}

fn sv_stream_end() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "stream_end", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "message_id": "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38", "interrupted": false,
            "message": {"id": "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38", "seq": 43,
                        "sender_id": "e91d4c7b-2a6f-4b19-8d53-0f7a3c6e2b41", "sender_name": "Ada",
                        "content": "Hi Alice, how can I help?",
                        "timestamp": "2026-11-21T10:00:01.250Z", "is_ai": true}}"#,
        ServerFrame::StreamEnd {
            conversation_id: s(CONV),
            message_id: s(MSG),
            interrupted: false,
            message: persona_message(),
        },
    )
}

fn sv_stream_end_interrupted() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "stream_end", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "message_id": "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38", "interrupted": true,
            "message": {"id": "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38", "seq": 43,
                        "sender_id": "e91d4c7b-2a6f-4b19-8d53-0f7a3c6e2b41", "sender_name": "Ada",
                        "content": "Hi Alice,", "timestamp": "2026-11-21T10:00:01.250Z",
                        "is_ai": true}}"#,
        ServerFrame::StreamEnd {
            conversation_id: s(CONV),
            message_id: s(MSG),
            interrupted: true,
            message: Message { content: s("Hi Alice,"), ..persona_message() },
        },
    )
}

fn sv_pong() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "pong", "ts": 48213.5, "server_time": "2026-11-21T10:00:00.000Z"}"#,
        ServerFrame::Pong { ts: 48213.5, server_time: s(T0) },
    )
}

fn sv_error_with_ref() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "error", "code": "too_long", "message": "content is longer than 5000 characters",
            "ref": "0d8b3f6a-7e2c-4a91-b5d4-3c6e9f1a2b07", "timestamp": "2026-11-21T10:00:00.000Z"}"#,
        ServerFrame::Error {
            code: ErrorCode::TooLong,
            message: s("content is longer than 5000 characters"),
            reference: Some(s(CLIENT)),
            timestamp: s(T0),
        },
    )
}

fn sv_error_gator() -> (&'static str, ServerFrame) {
    (
        r#"{"type": "error", "code": "not_member", "message": "you are not a member of this conversation",
            "timestamp": "2026-11-21T10:00:00.000Z"}"#,
        ServerFrame::Error {
            code: ErrorCode::NotMember,
            message: s("you are not a member of this conversation"),
            reference: None,
            timestamp: s(T0),
        },
    )
}

fn server_samples() -> Vec<(&'static str, ServerFrame)> {
    vec![
        sv_hello(),
        sv_conversation_joined(),
        sv_conversation_left(),
        sv_new_message_user(),
        sv_new_message_ai(),
        sv_message_ack(),
        sv_typing_indicator(),
        sv_typing_indicator_stopped(),
        sv_presence_online(),
        sv_presence_offline(),
        sv_online_users(),
        sv_online_users_empty(),
        sv_persona_status_responding(),
        sv_persona_status_offline(),
        sv_conversation_update(),
        sv_user_joined(),
        sv_user_left(),
        sv_stream_start(),
        sv_stream_delta(),
        sv_stream_end(),
        sv_stream_end_interrupted(),
        sv_pong(),
        sv_error_with_ref(),
        sv_error_gator(),
        sv_conversation_update_versioned(),
        leak(sv_sync_state()),
        leak(sv_conversation_upserted()),
        sv_conversation_removed(),
    ]
}

/// A sample built with `format!` as a `&'static str` one (a test process, so the leak is fine).
fn leak((json, frame): (String, ServerFrame)) -> (&'static str, ServerFrame) {
    (Box::leak(json.into_boxed_str()), frame)
}

fn ack() -> Ack {
    Ack { client_id: s(CLIENT), conversation_id: s(CONV), message_id: s(MSG), seq: 42, timestamp: s(T0) }
}

// Exhaustive matches: adding a variant without a sample makes these fail to compile.
fn client_variant(f: &ClientFrame) -> usize {
    match f {
        ClientFrame::JoinConversation { .. } => 0,
        ClientFrame::LeaveConversation { .. } => 1,
        ClientFrame::SendMessage { .. } => 2,
        ClientFrame::TypingStart { .. } => 3,
        ClientFrame::TypingStop { .. } => 4,
        ClientFrame::GetOnlineStatus { .. } => 5,
        ClientFrame::Ping { .. } => 6,
        ClientFrame::StopResponse { .. } => 7,
        ClientFrame::Sync { .. } => 8,
    }
}
const CLIENT_VARIANTS: usize = 9;

fn server_variant(f: &ServerFrame) -> usize {
    match f {
        ServerFrame::Hello { .. } => 0,
        ServerFrame::ConversationJoined { .. } => 1,
        ServerFrame::ConversationLeft { .. } => 2,
        ServerFrame::NewMessage { .. } => 3,
        ServerFrame::MessageAck(_) => 4,
        ServerFrame::TypingIndicator { .. } => 5,
        ServerFrame::PresenceUpdate { .. } => 6,
        ServerFrame::OnlineUsers { .. } => 7,
        ServerFrame::PersonaStatus { .. } => 8,
        ServerFrame::ConversationUpdate { .. } => 9,
        ServerFrame::UserJoined { .. } => 10,
        ServerFrame::UserLeft { .. } => 11,
        ServerFrame::StreamStart { .. } => 12,
        ServerFrame::StreamDelta { .. } => 13,
        ServerFrame::StreamEnd { .. } => 14,
        ServerFrame::Pong { .. } => 15,
        ServerFrame::Error { .. } => 16,
        ServerFrame::SyncState(_) => 17,
        ServerFrame::ConversationUpserted { .. } => 18,
        ServerFrame::ConversationRemoved { .. } => 19,
    }
}
const SERVER_VARIANTS: usize = 20;

// ---------------------------------------------------------------------------------------
// Client frames
// ---------------------------------------------------------------------------------------

#[test]
fn client_join_conversation() {
    client_roundtrip(c_join_gator());
    client_roundtrip(c_join_after_seq());
}

#[test]
fn client_join_conversation_null_after_seq_is_absent() {
    let f = ClientFrame::parse(
        r#"{"type":"join_conversation","conversation_id":"6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14","after_seq":null}"#,
    )
    .unwrap();
    assert_eq!(f, c_join_gator().1);
}

#[test]
fn client_leave_conversation() {
    client_roundtrip(c_leave());
}

#[test]
fn client_send_message() {
    client_roundtrip(c_send_gator());
    client_roundtrip(c_send_full());
    client_roundtrip(c_send_client_id_only());
}

#[test]
fn client_typing_start_and_stop() {
    client_roundtrip(c_typing_start());
    client_roundtrip(c_typing_stop());
}

#[test]
fn client_get_online_status() {
    client_roundtrip(c_get_online_status());
    client_roundtrip((
        r#"{"type": "get_online_status", "user_ids": []}"#,
        ClientFrame::GetOnlineStatus { user_ids: vec![] },
    ));
}

#[test]
fn client_ping() {
    client_roundtrip(c_ping());
}

#[test]
fn client_ping_with_integer_ts() {
    // Date.now() sends an integer. `ts` is an f64, so it comes back as 1763719200000.0: the
    // same JSON number to a browser, though not the same serde_json::Value.
    let f = ClientFrame::parse(r#"{"type": "ping", "ts": 1763719200000}"#).unwrap();
    assert_eq!(f, ClientFrame::Ping { ts: 1_763_719_200_000.0 });
    let back: Value = serde_json::from_str(&f.to_json()).unwrap();
    assert_eq!(back["ts"].as_f64(), Some(1_763_719_200_000.0));
    assert_eq!(back["type"], "ping");
}

#[test]
fn client_stop_response() {
    client_roundtrip(c_stop_response());
}

#[test]
fn every_client_variant_has_a_sample() {
    let covered: BTreeSet<usize> = client_samples().iter().map(|(_, f)| client_variant(f)).collect();
    assert_eq!(covered, (0..CLIENT_VARIANTS).collect::<BTreeSet<_>>());
    for sample in client_samples() {
        client_roundtrip(sample);
    }
}

// ---------------------------------------------------------------------------------------
// Server frames
// ---------------------------------------------------------------------------------------

#[test]
fn server_hello() {
    server_roundtrip(sv_hello());
}

#[test]
fn server_conversation_joined_and_left() {
    server_roundtrip(sv_conversation_joined());
    server_roundtrip(sv_conversation_left());
}

#[test]
fn server_new_message() {
    server_roundtrip(sv_new_message_user());
    server_roundtrip(sv_new_message_ai());
}

#[test]
fn server_message_ack() {
    server_roundtrip(sv_message_ack());
}

#[test]
fn server_typing_indicator() {
    server_roundtrip(sv_typing_indicator());
    server_roundtrip(sv_typing_indicator_stopped());
}

#[test]
fn server_presence_update() {
    server_roundtrip(sv_presence_online());
    server_roundtrip(sv_presence_offline());
}

#[test]
fn server_online_users() {
    server_roundtrip(sv_online_users());
    server_roundtrip(sv_online_users_empty());
}

#[test]
fn server_persona_status() {
    server_roundtrip(sv_persona_status_responding());
    server_roundtrip(sv_persona_status_offline());
    for (name, state) in [
        ("online", PersonaState::Online),
        ("busy", PersonaState::Busy),
        ("responding", PersonaState::Responding),
        ("offline", PersonaState::Offline),
    ] {
        let json = format!(
            r#"{{"type": "persona_status", "persona_id": "e91d4c7b-2a6f-4b19-8d53-0f7a3c6e2b41",
                "status": "{name}", "timestamp": "2026-11-21T10:00:00.000Z"}}"#
        );
        server_roundtrip((
            &json,
            ServerFrame::PersonaStatus { persona_id: s(PERSONA), status: state, last_seen: None, timestamp: s(T0) },
        ));
        assert_eq!(state.as_str(), name);
        assert_eq!(serde_json::to_value(state).unwrap(), Value::from(name));
    }
}

#[test]
fn server_conversation_update() {
    server_roundtrip(sv_conversation_update());
    let update = LastMessage::from(&alice_message());
    assert_eq!(
        ServerFrame::ConversationUpdate {
            conversation_id: s(CONV),
            last_message: update,
            version: 0,
            timestamp: s(T0)
        },
        sv_conversation_update().1
    );
    server_roundtrip(sv_conversation_update_versioned());
}

#[test]
fn server_sync_and_live_list_frames() {
    let (json, frame) = sv_sync_state();
    server_roundtrip((&json, frame));
    let (json, frame) = sv_conversation_upserted();
    server_roundtrip((&json, frame));
    server_roundtrip(sv_conversation_removed());
    for (name, reason) in [("left", RemovalReason::Left), ("removed", RemovalReason::Removed)] {
        assert_eq!(serde_json::to_value(reason).unwrap(), Value::from(name));
    }
    // The smallest answer: nothing changed. Lists absent read as empty, `full` as false.
    let f = ServerFrame::parse(r#"{"type":"sync_state","version":7,"timestamp":"2026-11-21T10:00:00.000Z"}"#)
        .unwrap()
        .unwrap();
    assert_eq!(
        f,
        ServerFrame::SyncState(Box::new(SyncState {
            since: 0,
            version: 7,
            full: false,
            conversations: vec![],
            removed: vec![],
            personas: vec![],
            online: vec![],
            replies: vec![],
            timestamp: s(T0),
        }))
    );
}

#[test]
fn client_sync() {
    client_roundtrip(c_sync());
    roundtrip(r#"{"since": 9071}"#, &SyncRequest { since: 9071 });
    assert_eq!(serde_json::from_str::<SyncRequest>("{}").unwrap(), SyncRequest { since: 0 });
}

#[test]
fn server_user_joined_and_left() {
    server_roundtrip(sv_user_joined());
    server_roundtrip(sv_user_left());
}

#[test]
fn server_stream_frames() {
    server_roundtrip(sv_stream_start());
    server_roundtrip(sv_stream_delta());
    server_roundtrip(sv_stream_end());
    server_roundtrip(sv_stream_end_interrupted());
}

#[test]
fn server_pong() {
    server_roundtrip(sv_pong());
}

#[test]
fn server_error() {
    server_roundtrip(sv_error_with_ref());
    server_roundtrip(sv_error_gator());
}

#[test]
fn every_server_variant_has_a_sample() {
    let covered: BTreeSet<usize> = server_samples().iter().map(|(_, f)| server_variant(f)).collect();
    assert_eq!(covered, (0..SERVER_VARIANTS).collect::<BTreeSet<_>>());
    for sample in server_samples() {
        server_roundtrip(sample);
    }
}

// ---------------------------------------------------------------------------------------
// type_name and the type lists
// ---------------------------------------------------------------------------------------

#[test]
fn type_name_agrees_with_the_serialized_type() {
    let mut client_types = BTreeSet::new();
    for (_, f) in client_samples() {
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["type"], f.type_name(), "{f:?}");
        client_types.insert(f.type_name());
    }
    assert_eq!(client_types, CLIENT_FRAME_TYPES.iter().copied().collect::<BTreeSet<_>>());
    assert_eq!(client_types.len(), CLIENT_FRAME_TYPES.len());

    let mut server_types = BTreeSet::new();
    for (_, f) in server_samples() {
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["type"], f.type_name(), "{f:?}");
        server_types.insert(f.type_name());
    }
    assert_eq!(server_types, SERVER_FRAME_TYPES.iter().copied().collect::<BTreeSet<_>>());
    assert_eq!(server_types.len(), SERVER_FRAME_TYPES.len());
}

// ---------------------------------------------------------------------------------------
// Gator compatibility
// ---------------------------------------------------------------------------------------

#[test]
fn gator_client_frames_parse_unchanged() {
    // Exactly what a client written against the Gator design sends.
    let gator = [
        (
            r#"{"type":"join_conversation","conversation_id":"6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14"}"#,
            ClientFrame::JoinConversation { conversation_id: s(CONV), after_seq: None },
        ),
        (
            r#"{"type":"leave_conversation","conversation_id":"6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14"}"#,
            ClientFrame::LeaveConversation { conversation_id: s(CONV) },
        ),
        (
            r#"{"type":"send_message","conversation_id":"6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14","content":"Hello there!"}"#,
            ClientFrame::SendMessage {
                conversation_id: s(CONV),
                content: s("Hello there!"),
                client_id: None,
                persona_id: None,
            },
        ),
        (
            r#"{"type":"typing_start","conversation_id":"6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14"}"#,
            ClientFrame::TypingStart { conversation_id: s(CONV) },
        ),
        (
            r#"{"type":"typing_stop","conversation_id":"6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14"}"#,
            ClientFrame::TypingStop { conversation_id: s(CONV) },
        ),
        (
            r#"{"type":"get_online_status","user_ids":["b7e4d2a1-0c9f-4e3b-8a76-5d1f2e9c4b80"]}"#,
            ClientFrame::GetOnlineStatus { user_ids: vec![s(ALICE)] },
        ),
    ];
    for (json, expected) in gator {
        assert_eq!(ClientFrame::parse(json), Ok(expected.clone()), "{json}");
        // And the frame we would send in its place has exactly the Gator keys.
        let hand: Value = serde_json::from_str(json).unwrap();
        let ours: Value = serde_json::from_str(&expected.to_json()).unwrap();
        assert_eq!(keys(&ours), keys(&hand), "{json}");
        assert_eq!(ours, hand);
    }
}

#[test]
fn gator_server_frames_have_exactly_the_contract_fields() {
    let cases: Vec<(ServerFrame, &[&str])> = vec![
        (sv_conversation_joined().1, &["type", "conversation_id", "last_seq", "timestamp"]),
        (sv_new_message_user().1, &["type", "conversation_id", "message", "timestamp"]),
        (sv_typing_indicator().1, &["type", "conversation_id", "user_id", "username", "is_typing", "timestamp"]),
        (sv_presence_online().1, &["type", "user_id", "username", "online", "timestamp"]),
        (sv_presence_offline().1, &["type", "user_id", "username", "online", "last_seen", "timestamp"]),
        (sv_online_users().1, &["type", "users", "timestamp"]),
        (sv_error_gator().1, &["type", "code", "message", "timestamp"]),
        (sv_error_with_ref().1, &["type", "code", "message", "ref", "timestamp"]),
    ];
    for (frame, expected) in cases {
        let v: Value = serde_json::from_str(&frame.to_json()).unwrap();
        assert_eq!(keys(&v), key_set(expected), "{}", frame.type_name());
    }

    // Nested objects too.
    let v = serde_json::to_value(sv_new_message_user().1).unwrap();
    assert_eq!(
        keys(&v["message"]),
        key_set(&["id", "seq", "client_id", "sender_id", "sender_name", "content", "timestamp", "is_ai"])
    );
    let v = serde_json::to_value(sv_new_message_ai().1).unwrap();
    assert_eq!(
        keys(&v["message"]),
        key_set(&["id", "seq", "sender_id", "sender_name", "content", "timestamp", "is_ai"])
    );
    let v = serde_json::to_value(sv_online_users().1).unwrap();
    for user in v["users"].as_array().unwrap() {
        assert_eq!(keys(user), key_set(&["user_id", "username"]));
    }
    // Codes go out as the contract's snake_case strings.
    let v = serde_json::to_value(sv_error_gator().1).unwrap();
    assert_eq!(v["code"], "not_member");
}

// ---------------------------------------------------------------------------------------
// Unknown fields
// ---------------------------------------------------------------------------------------

#[test]
fn unknown_fields_are_ignored() {
    let f = ClientFrame::parse(
        r#"{"type": "send_message", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "content": "Hello there!", "mood": "cheerful", "attachments": [1, 2, {"x": null}]}"#,
    )
    .unwrap();
    assert_eq!(f, c_send_gator().1);

    let f = ClientFrame::parse(
        r#"{"type": "typing_stop", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14", "v": 2}"#,
    )
    .unwrap();
    assert_eq!(f, c_typing_stop().1);

    let f = ServerFrame::parse(
        r#"{"type": "new_message", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "message": {"id": "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38", "seq": 42,
                        "client_id": "0d8b3f6a-7e2c-4a91-b5d4-3c6e9f1a2b07",
                        "sender_id": "b7e4d2a1-0c9f-4e3b-8a76-5d1f2e9c4b80", "sender_name": "alice",
                        "content": "Hello there!", "timestamp": "2026-11-21T10:00:00.000Z",
                        "is_ai": false, "reactions": []},
            "timestamp": "2026-11-21T10:00:00.000Z", "shard": 7}"#,
    )
    .unwrap();
    assert_eq!(f, Some(sv_new_message_user().1));

    let r: SessionResponse = serde_json::from_str(
        r#"{"token": "tok", "user": {"id": "b7e4d2a1-0c9f-4e3b-8a76-5d1f2e9c4b80", "username": "alice", "avatar": null},
            "expires_at": "2026-11-22T10:00:00.000Z"}"#,
    )
    .unwrap();
    assert_eq!(r.user, User { id: s(ALICE), username: s("alice") });
}

// ---------------------------------------------------------------------------------------
// ClientFrame::parse error classification
// ---------------------------------------------------------------------------------------

fn parse_err(json: &str) -> persona_chat_protocol::FrameError {
    match ClientFrame::parse(json) {
        Ok(f) => panic!("{json} parsed as {f:?}"),
        Err(e) => e,
    }
}

#[test]
fn invalid_json_is_invalid_json() {
    for text in ["", "{", "not json", r#"{"type": "ping", "ts": }"#, r#"{"type": "ping"} trailing"#, "\u{0}"] {
        let e = parse_err(text);
        assert_eq!(e.code, ErrorCode::InvalidJson, "{text:?}: {e}");
        assert_eq!(e.reference, None);
    }
}

#[test]
fn non_objects_and_missing_type_are_invalid_field() {
    for text in [
        "[]",
        r#"[{"type": "ping", "ts": 1}]"#,
        r#""join_conversation""#,
        "42",
        "null",
        "true",
        "{}",
        r#"{"conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14"}"#,
        r#"{"type": 5}"#,
        r#"{"type": null}"#,
        r#"{"type": ["ping"]}"#,
    ] {
        let e = parse_err(text);
        assert_eq!(e.code, ErrorCode::InvalidField, "{text}: {e}");
    }
}

#[test]
fn unknown_type_is_unknown_type_with_the_type_as_ref() {
    let e = parse_err(r#"{"type": "delete_everything", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14"}"#);
    assert_eq!(e.code, ErrorCode::UnknownType);
    assert_eq!(e.reference.as_deref(), Some("delete_everything"));

    // Server frame types are not client frame types.
    let e = parse_err(r#"{"type": "new_message"}"#);
    assert_eq!(e.code, ErrorCode::UnknownType);
    assert_eq!(e.reference.as_deref(), Some("new_message"));

    // Types are case-sensitive.
    let e = parse_err(r#"{"type": "Ping", "ts": 1}"#);
    assert_eq!(e.code, ErrorCode::UnknownType);

    // Even with a client_id, the reference of an unknown type is the type.
    let e = parse_err(r#"{"type": "edit_message", "client_id": "0d8b3f6a-7e2c-4a91-b5d4-3c6e9f1a2b07"}"#);
    assert_eq!(e.code, ErrorCode::UnknownType);
    assert_eq!(e.reference.as_deref(), Some("edit_message"));

    // A huge type name is cut down in the reference.
    let long = "x".repeat(1000);
    let e = parse_err(&format!(r#"{{"type": "{long}"}}"#));
    assert_eq!(e.code, ErrorCode::UnknownType);
    assert_eq!(e.reference.as_deref().map(str::len), Some(64));
}

#[test]
fn wrong_or_missing_fields_are_invalid_field() {
    for (text, reference) in [
        (r#"{"type": "join_conversation", "conversation_id": 5}"#, "join_conversation"),
        (
            r#"{"type": "join_conversation", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14", "after_seq": "x"}"#,
            "join_conversation",
        ),
        (
            r#"{"type": "join_conversation", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14", "after_seq": 1.5}"#,
            "join_conversation",
        ),
        (r#"{"type": "join_conversation"}"#, "join_conversation"),
        (r#"{"type": "leave_conversation", "conversation_id": null}"#, "leave_conversation"),
        (r#"{"type": "send_message", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14"}"#, "send_message"),
        (
            r#"{"type": "send_message", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14", "content": 12}"#,
            "send_message",
        ),
        (r#"{"type": "typing_start", "conversation_id": {}}"#, "typing_start"),
        (r#"{"type": "typing_stop"}"#, "typing_stop"),
        (r#"{"type": "get_online_status", "user_ids": "b7e4d2a1-0c9f-4e3b-8a76-5d1f2e9c4b80"}"#, "get_online_status"),
        (r#"{"type": "get_online_status", "user_ids": [1, 2]}"#, "get_online_status"),
        (r#"{"type": "ping", "ts": "now"}"#, "ping"),
        (r#"{"type": "ping"}"#, "ping"),
        (r#"{"type": "stop_response", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14"}"#, "stop_response"),
    ] {
        let e = parse_err(text);
        assert_eq!(e.code, ErrorCode::InvalidField, "{text}: {e}");
        assert_eq!(e.reference.as_deref(), Some(reference), "{text}");
    }
}

#[test]
fn bad_send_message_refers_to_its_client_id() {
    let e = parse_err(
        r#"{"type": "send_message", "conversation_id": 5, "content": "Hello there!",
            "client_id": "0d8b3f6a-7e2c-4a91-b5d4-3c6e9f1a2b07"}"#,
    );
    assert_eq!(e.code, ErrorCode::InvalidField);
    assert_eq!(e.reference.as_deref(), Some(CLIENT));

    let e = parse_err(
        r#"{"type": "send_message", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "client_id": "0d8b3f6a-7e2c-4a91-b5d4-3c6e9f1a2b07"}"#,
    );
    assert_eq!(e.code, ErrorCode::InvalidField);
    assert_eq!(e.reference.as_deref(), Some(CLIENT));

    // A client_id that is not a string is itself the bad field; the reference falls back
    // to the type.
    let e = parse_err(
        r#"{"type": "send_message", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "content": "hi", "client_id": 17}"#,
    );
    assert_eq!(e.code, ErrorCode::InvalidField);
    assert_eq!(e.reference.as_deref(), Some("send_message"));
}

// ---------------------------------------------------------------------------------------
// ServerFrame::parse
// ---------------------------------------------------------------------------------------

#[test]
fn server_parse_skips_unknown_types() {
    assert_eq!(
        ServerFrame::parse(
            r#"{"type": "reaction_added", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14", "emoji": "👍"}"#
        ),
        Ok(None)
    );
    assert_eq!(ServerFrame::parse(r#"{"type": "ping", "ts": 1}"#), Ok(None));
    for (json, expected) in server_samples() {
        assert_eq!(ServerFrame::parse(json), Ok(Some(expected)));
    }
}

#[test]
fn server_parse_errors() {
    let e = ServerFrame::parse("{oops").unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidJson);
    let e = ServerFrame::parse("[1, 2]").unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidField);
    // A known type with a wrong field is an error, not a skipped frame.
    let e = ServerFrame::parse(r#"{"type": "conversation_joined", "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14", "last_seq": "many", "timestamp": "2026-11-21T10:00:00.000Z"}"#)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidField);
}

#[test]
fn server_error_frame_with_an_unknown_code_parses() {
    let f = ServerFrame::parse(
        r#"{"type": "error", "code": "quota_exceeded", "message": "try again tomorrow",
            "timestamp": "2026-11-21T10:00:00.000Z"}"#,
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        f,
        ServerFrame::Error {
            code: ErrorCode::Unknown,
            message: s("try again tomorrow"),
            reference: None,
            timestamp: s(T0),
        }
    );
}

// ---------------------------------------------------------------------------------------
// ErrorCode
// ---------------------------------------------------------------------------------------

#[test]
fn error_codes_roundtrip_as_snake_case() {
    let contract = [
        ("invalid_json", ErrorCode::InvalidJson),
        ("unknown_type", ErrorCode::UnknownType),
        ("invalid_field", ErrorCode::InvalidField),
        ("too_long", ErrorCode::TooLong),
        ("empty_content", ErrorCode::EmptyContent),
        ("not_member", ErrorCode::NotMember),
        ("not_found", ErrorCode::NotFound),
        ("rate_limited", ErrorCode::RateLimited),
        ("too_large", ErrorCode::TooLarge),
    ];
    let http_extensions = [
        ("unauthorized", ErrorCode::Unauthorized),
        ("invalid_credentials", ErrorCode::InvalidCredentials),
        ("username_taken", ErrorCode::UsernameTaken),
        ("internal", ErrorCode::Internal),
    ];
    for (name, code) in contract.into_iter().chain(http_extensions) {
        roundtrip(&format!("\"{name}\""), &code);
        assert_eq!(code.as_str(), name);
        // Inside an error frame and an HTTP error body as well.
        server_roundtrip((
            &format!(
                r#"{{"type": "error", "code": "{name}", "message": "m", "timestamp": "2026-11-21T10:00:00.000Z"}}"#
            ),
            ServerFrame::Error { code, message: s("m"), reference: None, timestamp: s(T0) },
        ));
        roundtrip(&format!(r#"{{"code": "{name}", "message": "m"}}"#), &ApiError { code, message: s("m") });
    }
}

#[test]
fn unknown_error_code_parses_as_unknown() {
    for name in ["payment_required", "Invalid_Json", "", "unknown"] {
        let code: ErrorCode = serde_json::from_str(&format!("\"{name}\"")).unwrap();
        assert_eq!(code, ErrorCode::Unknown, "{name:?}");
    }
    assert_eq!(ErrorCode::Unknown.as_str(), "unknown");
    assert_eq!(serde_json::to_value(ErrorCode::Unknown).unwrap(), Value::from("unknown"));
    let e: ApiError = serde_json::from_str(r#"{"code": "teapot", "message": "I'm a teapot"}"#).unwrap();
    assert_eq!(e, ApiError { code: ErrorCode::Unknown, message: s("I'm a teapot") });
}

// ---------------------------------------------------------------------------------------
// validate_content
// ---------------------------------------------------------------------------------------

#[test]
fn validate_content_trims() {
    assert_eq!(validate_content("  Hello there!\n"), Ok("Hello there!"));
    assert_eq!(validate_content("\t a  b \r\n"), Ok("a  b"));
    assert_eq!(validate_content("x"), Ok("x"));
}

#[test]
fn validate_content_rejects_empty() {
    for text in ["", " ", "\n\t  \r\n", "\u{3000}\u{a0}"] {
        assert_eq!(validate_content(text), Err(ErrorCode::EmptyContent), "{text:?}");
    }
}

#[test]
fn validate_content_length_limit() {
    assert_eq!(MAX_CONTENT_CHARS, 5000);
    let max = "a".repeat(5000);
    assert_eq!(validate_content(&max), Ok(max.as_str()));
    assert_eq!(validate_content(&"a".repeat(5001)), Err(ErrorCode::TooLong));
    // Whitespace around does not count.
    let padded = format!("   {max}  \n");
    assert_eq!(validate_content(&padded), Ok(max.as_str()));
}

#[test]
fn validate_content_counts_characters_not_bytes() {
    let accents = "é".repeat(5000); // 10 000 bytes
    assert_eq!(accents.len(), 10_000);
    assert_eq!(validate_content(&accents), Ok(accents.as_str()));
    assert_eq!(validate_content(&"é".repeat(5001)), Err(ErrorCode::TooLong));
    let emoji = "😀".repeat(5000); // 20 000 bytes
    assert_eq!(validate_content(&emoji), Ok(emoji.as_str()));
    assert_eq!(validate_content(&"😀".repeat(5001)), Err(ErrorCode::TooLong));
}

// ---------------------------------------------------------------------------------------
// HTTP bodies
// ---------------------------------------------------------------------------------------

fn ada() -> Persona {
    Persona {
        id: s(PERSONA),
        name: s("Ada"),
        tagline: s("Mathematician, poet of science"),
        status: PersonaState::Online,
        last_seen: None,
    }
}

const ADA_JSON: &str = r#"{"id": "e91d4c7b-2a6f-4b19-8d53-0f7a3c6e2b41", "name": "Ada",
    "tagline": "Mathematician, poet of science", "status": "online"}"#;

#[test]
fn http_session() {
    roundtrip(
        r#"{"username": "alice", "password": "correct horse battery staple"}"#,
        &SessionRequest { username: s("alice"), password: s("correct horse battery staple") },
    );
    roundtrip(
        r#"{"token": "eyJ1aWQiOiJiN2U0ZDJhMSJ9.c2lnbmF0dXJl",
            "user": {"id": "b7e4d2a1-0c9f-4e3b-8a76-5d1f2e9c4b80", "username": "alice"},
            "expires_at": 1795000000, "refresh_token": "eyJzaWQiOiJzMSJ9.cmVmcmVzaA"}"#,
        &SessionResponse {
            token: s("eyJ1aWQiOiJiN2U0ZDJhMSJ9.c2lnbmF0dXJl"),
            user: User { id: s(ALICE), username: s("alice") },
            expires_at: 1_795_000_000,
            refresh_token: s("eyJzaWQiOiJzMSJ9.cmVmcmVzaA"),
        },
    );
    // From an older server, without expires_at or a refresh token: 0, unknown, and none.
    let old: SessionResponse =
        serde_json::from_str(r#"{"token": "t", "user": {"id": "u", "username": "alice"}}"#).unwrap();
    assert_eq!((old.expires_at, old.refresh_token.as_str()), (0, ""));
    roundtrip(
        r#"{"refresh_token": "eyJzaWQiOiJzMSJ9.cmVmcmVzaA"}"#,
        &RefreshRequest { refresh_token: s("eyJzaWQiOiJzMSJ9.cmVmcmVzaA") },
    );
}

#[test]
fn http_persona() {
    roundtrip(ADA_JSON, &ada());
    roundtrip(
        r#"{"id": "e91d4c7b-2a6f-4b19-8d53-0f7a3c6e2b41", "name": "Ada", "tagline": "",
            "status": "offline", "last_seen": "2026-11-21T09:42:17.031Z"}"#,
        &Persona { tagline: s(""), status: PersonaState::Offline, last_seen: Some(s(T2)), ..ada() },
    );
    // tagline may be absent.
    let p: Persona =
        serde_json::from_str(r#"{"id": "e91d4c7b-2a6f-4b19-8d53-0f7a3c6e2b41", "name": "Ada", "status": "busy"}"#)
            .unwrap();
    assert_eq!(p, Persona { tagline: s(""), status: PersonaState::Busy, ..ada() });
}

#[test]
fn http_conversation_summary() {
    let direct = format!(
        r#"{{"id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14", "kind": "direct", "title": "Ada",
            "persona": {ADA_JSON},
            "last_message": {{"id": "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38", "seq": 42,
                             "sender_name": "alice", "content": "Hello there!",
                             "timestamp": "2026-11-21T10:00:00.000Z"}},
            "last_seq": 42, "unread_count": 3}}"#
    );
    roundtrip(
        &direct,
        &ConversationSummary {
            id: s(CONV),
            kind: ConversationKind::Direct,
            title: s("Ada"),
            persona: Some(ada()),
            last_message: Some(LastMessage::from(&alice_message())),
            last_seq: 42,
            unread_count: 3,
        },
    );
    // A fresh room: no persona, no messages yet.
    roundtrip(
        r#"{"id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14", "kind": "room", "title": "Lobby",
            "last_seq": 0, "unread_count": 0}"#,
        &ConversationSummary {
            id: s(CONV),
            kind: ConversationKind::Room,
            title: s("Lobby"),
            persona: None,
            last_message: None,
            last_seq: 0,
            unread_count: 0,
        },
    );
    // The list itself is a JSON array of summaries.
    let list: Vec<ConversationSummary> = serde_json::from_str(&format!("[{direct}]")).unwrap();
    assert_eq!(list.len(), 1);
}

#[test]
fn http_create_conversation() {
    roundtrip(
        r#"{"persona_id": "e91d4c7b-2a6f-4b19-8d53-0f7a3c6e2b41"}"#,
        &CreateConversationRequest { persona_id: Some(s(PERSONA)), ..Default::default() },
    );
    roundtrip(
        r#"{"title": "Book club", "member_ids": ["c2a9f1e7-5b4d-4c8e-9f03-a6b1d7e2c954"],
            "persona_ids": ["e91d4c7b-2a6f-4b19-8d53-0f7a3c6e2b41"]}"#,
        &CreateConversationRequest {
            persona_id: None,
            title: Some(s("Book club")),
            member_ids: vec![s(BOB)],
            persona_ids: vec![s(PERSONA)],
        },
    );
}

#[test]
fn http_messages_response() {
    roundtrip(
        r#"{"messages": [
              {"id": "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38", "seq": 42,
               "client_id": "0d8b3f6a-7e2c-4a91-b5d4-3c6e9f1a2b07",
               "sender_id": "b7e4d2a1-0c9f-4e3b-8a76-5d1f2e9c4b80", "sender_name": "alice",
               "content": "Hello there!", "timestamp": "2026-11-21T10:00:00.000Z", "is_ai": false},
              {"id": "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38", "seq": 43,
               "sender_id": "e91d4c7b-2a6f-4b19-8d53-0f7a3c6e2b41", "sender_name": "Ada",
               "content": "Hi Alice, how can I help?", "timestamp": "2026-11-21T10:00:01.250Z",
               "is_ai": true}],
            "has_more": true}"#,
        &MessagesResponse { messages: vec![alice_message(), persona_message()], has_more: true },
    );
    roundtrip(r#"{"messages": [], "has_more": false}"#, &MessagesResponse { messages: vec![], has_more: false });
    // has_more may be absent.
    let r: MessagesResponse = serde_json::from_str(r#"{"messages": []}"#).unwrap();
    assert!(!r.has_more);
}

#[test]
fn http_post_message_and_ack() {
    roundtrip(
        r#"{"content": "Hello there!", "client_id": "0d8b3f6a-7e2c-4a91-b5d4-3c6e9f1a2b07"}"#,
        &PostMessageRequest { content: s("Hello there!"), client_id: s(CLIENT) },
    );
    // The answer is the message_ack body, without "type".
    roundtrip(
        r#"{"client_id": "0d8b3f6a-7e2c-4a91-b5d4-3c6e9f1a2b07",
            "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "message_id": "a4c7e2f9-1b3d-4e6a-8c05-9d2f7b1e6a38", "seq": 42,
            "timestamp": "2026-11-21T10:00:00.000Z"}"#,
        &ack(),
    );
    let mut frame = serde_json::to_value(ServerFrame::MessageAck(ack())).unwrap();
    frame.as_object_mut().unwrap().remove("type");
    assert_eq!(frame, serde_json::to_value(ack()).unwrap());
}

#[test]
fn http_typing() {
    roundtrip(r#"{"is_typing": true}"#, &TypingRequest { is_typing: true });
    roundtrip(r#"{"is_typing": false}"#, &TypingRequest { is_typing: false });
}

#[test]
fn http_event() {
    roundtrip(
        r#"{"id": 1207, "frame": {"type": "typing_indicator",
            "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
            "user_id": "c2a9f1e7-5b4d-4c8e-9f03-a6b1d7e2c954", "username": "bob",
            "is_typing": true, "timestamp": "2026-11-21T10:00:00.000Z"}}"#,
        &Event { id: 1207, frame: sv_typing_indicator().1 },
    );
}

#[test]
fn http_events_response() {
    roundtrip(
        r#"{"events": [
              {"id": 1207, "frame": {"type": "conversation_joined",
                                     "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
                                     "last_seq": 42, "timestamp": "2026-11-21T10:00:00.000Z"}},
              {"id": 1208, "frame": {"type": "user_left",
                                     "conversation_id": "6f1c2a9e-4b3d-4f8a-9e21-7c5d0b8a3f14",
                                     "user_id": "c2a9f1e7-5b4d-4c8e-9f03-a6b1d7e2c954",
                                     "username": "bob"}}],
            "next": 1208}"#,
        &EventsResponse {
            resync: false,
            events: vec![
                Event { id: 1207, frame: sv_conversation_joined().1 },
                Event { id: 1208, frame: sv_user_left().1 },
            ],
            next: 1208,
        },
    );
    // The timeout: an empty list.
    roundtrip(r#"{"events": [], "next": 1208}"#, &EventsResponse { resync: false, events: vec![], next: 1208 });
}

#[test]
fn http_events_response_resync() {
    // `after` is older than what the server keeps: `{resync: true, next}`.
    roundtrip(r#"{"resync": true, "next": 5000}"#, &EventsResponse { resync: true, events: vec![], next: 5000 });
    // A server that also sends the empty list is understood the same way.
    let r: EventsResponse = serde_json::from_str(r#"{"resync": true, "events": [], "next": 5000}"#).unwrap();
    assert_eq!(r, EventsResponse { resync: true, events: vec![], next: 5000 });
    // Events are never dropped, even next to resync.
    let r = EventsResponse { resync: true, events: vec![Event { id: 4999, frame: sv_user_left().1 }], next: 5000 };
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(keys(&v), key_set(&["resync", "events", "next"]));
    assert_eq!(serde_json::from_value::<EventsResponse>(v).unwrap(), r);
    // resync: false may be sent explicitly.
    let r: EventsResponse = serde_json::from_str(r#"{"resync": false, "events": [], "next": 7}"#).unwrap();
    assert_eq!(r, EventsResponse { resync: false, events: vec![], next: 7 });
}

#[test]
fn http_api_error() {
    roundtrip(
        r#"{"code": "invalid_credentials", "message": "wrong username or password"}"#,
        &ApiError { code: ErrorCode::InvalidCredentials, message: s("wrong username or password") },
    );
    roundtrip(
        r#"{"code": "not_found", "message": "no such conversation"}"#,
        &ApiError { code: ErrorCode::NotFound, message: s("no such conversation") },
    );
}
