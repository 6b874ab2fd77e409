//! The server over real sockets: sign-in, the WebSocket's greeting, sending and fan-out,
//! idempotent resends, recovery with after_seq, HTTP sends, bad input, membership,
//! presence, the socket limit, Gator clients, persistence across a restart and graceful
//! shutdown. Each test starts its own server on a free port with its own SQLite file.

#[macro_use]
mod common;

use common::{client_id, expect_api_error, json, new_message_in, within, TestServer};
use persona_chat_protocol::http::SessionResponse;
use persona_chat_protocol::{Ack, ClientFrame, ErrorCode, ServerFrame};
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite;

const PASSWORD: &str = "correct horse";

/// The error frame's code and ref.
fn error_of(frame: ServerFrame) -> (ErrorCode, Option<String>) {
    expect_frame!(frame, ServerFrame::Error { code, reference, message, .. } => {
        assert!(!message.is_empty(), "an error frame has a message");
        (code, reference)
    })
}

fn ack_of(frame: ServerFrame) -> Ack {
    expect_frame!(frame, ServerFrame::MessageAck(ack) => ack)
}

// ---- 1. sign-in ----

#[tokio::test]
async fn sign_up_creates_then_sign_in_checks_the_password() {
    let server = TestServer::start().await;

    // Signing in never registers: an unknown name gets the wrong-password answer.
    let unknown = server.post_session("alice", PASSWORD).await;
    expect_api_error(unknown, StatusCode::UNAUTHORIZED, "invalid_credentials").await;

    let created = server.post_users("alice", PASSWORD).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let first: SessionResponse = created.json().await.unwrap();
    assert_eq!(first.user.username, "alice");
    assert!(!first.user.id.is_empty() && !first.token.is_empty());
    assert!(first.expires_at > 0, "the token says when it expires");
    expect_api_error(server.post_users("alice", PASSWORD).await, StatusCode::CONFLICT, "username_taken").await;

    let second = server.sign_in("alice", PASSWORD).await;
    assert_eq!(second.user, first.user, "the second sign-in finds the same user");
    assert_eq!(server.conversations(&second.token).await.len(), 1, "the token works: the Lobby is listed");

    // Usernames are case-insensitive: the same account, not a new registration.
    let upper = server.sign_in("ALICE", PASSWORD).await;
    assert_eq!(upper.user.id, first.user.id);

    let wrong = server.post_session("alice", "wrong password").await;
    expect_api_error(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;

    for bad in ["", "has space", "semi;colon", "<script>", &"x".repeat(33)] {
        let resp = server.post_session(bad, PASSWORD).await;
        expect_api_error(resp, StatusCode::BAD_REQUEST, "invalid_field").await;
    }
    for bad in ["", "has space", "semi;colon", "<script>", &"x".repeat(33)] {
        let resp = server.post_users(bad, PASSWORD).await;
        expect_api_error(resp, StatusCode::BAD_REQUEST, "invalid_field").await;
    }
    for short in ["abc", "1234567", "        "] {
        expect_api_error(server.post_users("bob", short).await, StatusCode::BAD_REQUEST, "invalid_field").await;
    }

    // A body that is not the expected JSON is a 400 with a JSON error, not a bare text body.
    let resp = within(
        "POST /api/session with a bad body",
        reqwest::Client::new().post(server.url("/api/session")).json(&serde_json::json!({"username": 5})).send(),
    )
    .await
    .unwrap();
    expect_api_error(resp, StatusCode::BAD_REQUEST, "invalid_field").await;

    // The API refuses missing and forged tokens.
    let resp = within("GET without a token", reqwest::Client::new().get(server.url("/api/conversations")).send())
        .await
        .unwrap();
    expect_api_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let resp = server.get("not.a-token", "/api/conversations").await;
    expect_api_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

// ---- 2. the upgrade needs a valid token ----

/// The upgrade must be refused with an HTTP 401, not accepted and then closed.
fn assert_refused_401(result: Result<common::Client, tungstenite::Error>, what: &str) {
    match result {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 401, "{what}: status of the refused upgrade");
            // The body is whatever arrived with the headers: check it when it is all there.
            let body = resp.body().as_deref().and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok());
            if let Some(body) = body {
                assert_eq!(body["code"], "unauthorized", "{what}: {body}");
            }
        }
        Err(e) => panic!("{what}: expected an HTTP 401, got the error {e}"),
        Ok(_) => panic!("{what}: the upgrade was accepted"),
    }
}

#[tokio::test]
async fn websocket_upgrade_without_a_valid_token_is_refused_with_401() {
    let server = TestServer::start().await;
    let session = server.sign_in("alice", PASSWORD).await;

    assert_refused_401(server.connect_raw(None).await, "no token");
    assert_refused_401(server.connect_raw(Some("")).await, "empty token");
    assert_refused_401(server.connect_raw(Some("garbage")).await, "garbage token");

    // A well-formed token whose signature does not match (payload of another user).
    let (_, sig) = session.token.split_once('.').unwrap();
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"sub":"someone-else","name":"mallory","exp":9999999999}"#);
    assert_refused_401(server.connect_raw(Some(&format!("{payload}.{sig}"))).await, "forged token");

    // A token signed by another server's secret.
    let other = TestServer::start_with(|c| c.secret = Some("another-secret-another-secret-xx".into())).await;
    let foreign = other.sign_in("alice", PASSWORD).await;
    assert_refused_401(server.connect_raw(Some(&foreign.token)).await, "token of another server");

    // The genuine token still works.
    server.connect(&session.token).await;
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let server = TestServer::start_with(|c| c.token_ttl_secs = -1).await;
    let session = server.sign_in("alice", PASSWORD).await;
    assert_refused_401(server.connect_raw(Some(&session.token)).await, "expired token");
    let resp = server.get(&session.token, "/api/conversations").await;
    expect_api_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

// ---- 3. the greeting ----

#[tokio::test]
async fn a_socket_starts_with_online_users_then_hello() {
    let server = TestServer::start_with(|c| c.heartbeat_ms = 12_345).await;
    let alice = server.sign_in("alice", PASSWORD).await;
    let mut socket = server.connect_raw(Some(&alice.token)).await.expect("the upgrade succeeds");

    let users = expect_frame!(socket.next_frame().await, ServerFrame::OnlineUsers { users, timestamp } => {
        assert!(timestamp.ends_with('Z'), "RFC 3339 UTC: {timestamp}");
        users
    });
    assert!(
        users.iter().any(|u| u.user_id == alice.user.id && u.username == "alice"),
        "online_users lists the new socket's user: {users:?}"
    );

    let hello = socket.next_json().await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["protocol"], 1);
    assert_eq!(hello["heartbeat_ms"], 12_345);
    assert_eq!(hello["user"]["id"], alice.user.id.as_str());
    assert_eq!(hello["user"]["username"], "alice");
    assert!(hello["connection_id"].as_str().is_some_and(|c| !c.is_empty()), "{hello}");
    assert!(hello["server_time"].as_str().is_some_and(|t| t.ends_with('Z')), "{hello}");

    socket.expect_silence().await;

    // Two sockets of the same user get different connection ids.
    let mut second = server.connect_raw(Some(&alice.token)).await.unwrap();
    second.next_of("hello").await;
    let id1 = hello["connection_id"].as_str().unwrap().to_owned();
    let mut third = server.connect_raw(Some(&alice.token)).await.unwrap();
    let id3 = expect_frame!(third.next_of("hello").await, ServerFrame::Hello { connection_id, .. } => connection_id);
    assert_ne!(id1, id3);
}

// ---- 4. two users in the Lobby ----

#[tokio::test]
async fn a_message_reaches_every_joined_socket_and_updates_every_member() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    assert_eq!(server.lobby(&b.token).await, lobby, "both see the same Lobby");

    let mut sa = server.connect(&a.token).await;
    let mut sb = server.connect(&b.token).await;
    expect_frame!(sa.next_frame().await, ServerFrame::PresenceUpdate { user_id, online: true, .. } => assert_eq!(user_id, b.user.id));

    assert_eq!(sa.join(&lobby, Some(0)).await, 0);
    assert_eq!(sb.join(&lobby, Some(0)).await, 0);

    let cid = client_id();
    sa.send_message(&lobby, "  hello, bob  ", &cid).await;

    let ack = ack_of(sa.next_frame().await);
    assert_eq!((ack.client_id.as_str(), ack.conversation_id.as_str(), ack.seq), (cid.as_str(), lobby.as_str(), 1));
    let mine = new_message_in(sa.next_frame().await, &lobby);
    assert_eq!(mine.id, ack.message_id);
    assert_eq!(mine.seq, 1);
    assert_eq!(mine.content, "hello, bob", "content is stored trimmed");
    assert_eq!(mine.client_id.as_deref(), Some(cid.as_str()));
    assert_eq!((mine.sender_id.as_str(), mine.sender_name.as_str(), mine.is_ai), (a.user.id.as_str(), "alice", false));
    assert_eq!(mine.timestamp, ack.timestamp);
    expect_frame!(sa.next_frame().await, ServerFrame::ConversationUpdate { conversation_id, last_message, .. } => {
        assert_eq!(conversation_id, lobby);
        assert_eq!(last_message.id, ack.message_id);
    });

    let theirs = new_message_in(sb.next_frame().await, &lobby);
    assert_eq!(theirs, mine, "B gets the same message as A");
    expect_frame!(sb.next_frame().await, ServerFrame::ConversationUpdate { conversation_id, last_message, .. } => {
        assert_eq!(conversation_id, lobby);
        assert_eq!((last_message.id.as_str(), last_message.seq), (mine.id.as_str(), 1));
        assert_eq!((last_message.sender_name.as_str(), last_message.content.as_str()), ("alice", "hello, bob"));
    });
    sa.expect_silence().await;
    sb.expect_silence().await;

    // A member's socket that has not joined still gets conversation_update, not new_message.
    let mut sb2 = server.connect(&b.token).await;
    sb.send_message(&lobby, "back to you", &client_id()).await;
    ack_of(sb.next_frame().await);
    assert_eq!(new_message_in(sb.next_frame().await, &lobby).seq, 2);
    sb.next_of("conversation_update").await;
    assert_eq!(new_message_in(sa.next_frame().await, &lobby).content, "back to you");
    sa.next_of("conversation_update").await;
    expect_frame!(sb2.next_frame().await, ServerFrame::ConversationUpdate { last_message, .. } => assert_eq!(last_message.seq, 2));
    sb2.expect_silence().await;

    // The list shows the newest message and the unread count.
    let list = server.conversations(&a.token).await;
    let entry = list.iter().find(|c| c.id == lobby).unwrap();
    assert_eq!(entry.last_seq, 2);
    assert_eq!(entry.last_message.as_ref().map(|m| m.content.as_str()), Some("back to you"));

    // After leaving, a socket gets no more new_message (the update still comes).
    sa.send(&ClientFrame::LeaveConversation { conversation_id: lobby.clone() }).await;
    expect_frame!(sa.next_frame().await, ServerFrame::ConversationLeft { conversation_id } => assert_eq!(conversation_id, lobby));
    sb.send_message(&lobby, "are you there?", &client_id()).await;
    expect_frame!(sa.next_frame().await, ServerFrame::ConversationUpdate { last_message, .. } => assert_eq!(last_message.seq, 3));
    sa.expect_silence().await;
}

// ---- 5. idempotent resend over the socket ----

#[tokio::test]
async fn resending_a_client_id_returns_the_same_ack_and_stores_nothing_new() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    let mut sa = server.connect(&a.token).await;
    let mut sb = server.connect(&b.token).await;
    sa.next_of("presence_update").await;
    sa.join(&lobby, None).await;
    sb.join(&lobby, None).await;

    let cid = client_id();
    sa.send_message(&lobby, "only once", &cid).await;
    let first = ack_of(sa.next_frame().await);
    assert_eq!(first.seq, 1);
    new_message_in(sa.next_frame().await, &lobby);
    sa.next_of("conversation_update").await;
    new_message_in(sb.next_frame().await, &lobby);
    sb.next_of("conversation_update").await;

    for _ in 0..2 {
        sa.send_message(&lobby, "only once", &cid).await;
        let again = ack_of(sa.next_frame().await);
        assert_eq!(again, first, "a resend gets the original ack");
    }
    // Even with other content: the first stored version stands.
    sa.send_message(&lobby, "edited?", &cid).await;
    assert_eq!(ack_of(sa.next_frame().await), first);
    sa.expect_silence().await;
    sb.expect_silence().await;

    let page = server.messages_after(&a.token, &lobby, 0).await;
    assert_eq!(page.messages.len(), 1, "exactly one message stored: {:?}", page.messages);
    assert_eq!(page.messages[0].id, first.message_id);
    assert_eq!(page.messages[0].content, "only once");
    assert!(!page.has_more);

    // The same client_id over HTTP is the same message too.
    assert_eq!(server.post_message(&a.token, &lobby, "only once", &cid).await, first);
    // Another user's identical client_id is their own, new message.
    sb.send_message(&lobby, "mine", &cid).await;
    let bob_ack = ack_of(sb.next_frame().await);
    assert_eq!(bob_ack.seq, 2);
    assert_ne!(bob_ack.message_id, first.message_id);
}

// ---- 6. recovery with after_seq ----

#[tokio::test]
async fn joining_with_after_seq_replays_exactly_the_missed_messages_in_order() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    let mut acks = Vec::new();
    for i in 1..=5 {
        acks.push(server.post_message(&a.token, &lobby, &format!("message {i}"), &client_id()).await);
    }
    assert_eq!(acks.iter().map(|a| a.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);

    let mut sb = server.connect(&b.token).await;
    assert_eq!(sb.join(&lobby, Some(2)).await, 5, "conversation_joined comes first, with last_seq");
    for (i, ack) in acks.iter().enumerate().skip(2) {
        let m = new_message_in(sb.next_frame().await, &lobby);
        assert_eq!((m.seq, m.id.as_str()), (ack.seq, ack.message_id.as_str()));
        assert_eq!(m.content, format!("message {}", i + 1));
    }
    sb.expect_silence().await;

    // Up to date: nothing replayed. No after_seq: nothing replayed (Gator behaviour).
    assert_eq!(sb.join(&lobby, Some(5)).await, 5);
    sb.expect_silence().await;
    assert_eq!(sb.join(&lobby, None).await, 5);
    sb.expect_silence().await;

    // From 0: everything, in order.
    let mut fresh = server.connect(&b.token).await;
    fresh.join(&lobby, Some(0)).await;
    for seq in 1..=5 {
        assert_eq!(new_message_in(fresh.next_frame().await, &lobby).seq, seq);
    }
    fresh.expect_silence().await;

    // Joined sockets then get live messages after the backlog, without gaps.
    let ack = server.post_message(&a.token, &lobby, "message 6", &client_id()).await;
    assert_eq!(new_message_in(fresh.next_frame().await, &lobby).seq, ack.seq);
    fresh.next_of("conversation_update").await;

    // The same window over HTTP.
    let page = server.messages_after(&b.token, &lobby, 2).await;
    assert_eq!(page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![3, 4, 5, 6]);
    let resp = server.get(&b.token, &format!("/api/conversations/{lobby}/messages?after_seq=1&limit=2")).await;
    let page: persona_chat_protocol::http::MessagesResponse = json(resp).await;
    assert_eq!(page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert!(page.has_more);
}

// ---- 7. sending over HTTP ----

#[tokio::test]
async fn http_send_answers_the_ack_and_reaches_joined_sockets() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    let mut sa = server.connect(&a.token).await;
    let mut sb = server.connect(&b.token).await;
    sa.next_of("presence_update").await;
    sa.join(&lobby, Some(0)).await;
    sb.join(&lobby, Some(0)).await;

    let cid = client_id();
    let resp = server.post_message_raw(&a.token, &lobby, "over http", &cid).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = json(resp).await;
    for key in ["client_id", "conversation_id", "message_id", "seq", "timestamp"] {
        assert!(body.get(key).is_some(), "the ack body has {key}: {body}");
    }
    let ack: Ack = serde_json::from_value(body).unwrap();
    assert_eq!((ack.client_id.as_str(), ack.conversation_id.as_str(), ack.seq), (cid.as_str(), lobby.as_str(), 1));

    // No message_ack on the sender's socket (the ack went over HTTP), but the message does.
    for socket in [&mut sa, &mut sb] {
        let m = new_message_in(socket.next_frame().await, &lobby);
        assert_eq!((m.id.as_str(), m.seq, m.content.as_str()), (ack.message_id.as_str(), 1, "over http"));
        socket.next_of("conversation_update").await;
    }

    let again = server.post_message(&a.token, &lobby, "over http", &cid).await;
    assert_eq!(again, ack, "a resend gets the same ack");
    sa.expect_silence().await;
    sb.expect_silence().await;
    assert_eq!(server.messages_after(&b.token, &lobby, 0).await.messages.len(), 1);

    // Bad sends over HTTP are JSON errors with the fitting status.
    let resp = server.post_message_raw(&a.token, &lobby, "   ", &client_id()).await;
    expect_api_error(resp, StatusCode::BAD_REQUEST, "empty_content").await;
    let resp = server.post_message_raw(&a.token, &lobby, &"x".repeat(5001), &client_id()).await;
    expect_api_error(resp, StatusCode::BAD_REQUEST, "too_long").await;
    let resp = server
        .post(&a.token, &format!("/api/conversations/{lobby}/messages"), &serde_json::json!({"content": "no id"}))
        .await;
    expect_api_error(resp, StatusCode::BAD_REQUEST, "invalid_field").await;
    let resp = server.post_message_raw(&a.token, &lobby, "x", "").await;
    expect_api_error(resp, StatusCode::BAD_REQUEST, "invalid_field").await;
    sa.expect_silence().await;
}

// ---- 8. bad input ----

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_socket_stays_open() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    let mut s = server.connect(&a.token).await;

    s.send_text("{this is not json").await;
    assert_eq!(error_of(s.next_frame().await).0, ErrorCode::InvalidJson);

    s.send_json(serde_json::json!({"type": "dance", "conversation_id": lobby})).await;
    assert_eq!(error_of(s.next_frame().await), (ErrorCode::UnknownType, Some("dance".into())));

    s.send_json(serde_json::json!({"type": "ping", "ts": "soon"})).await;
    assert_eq!(error_of(s.next_frame().await).0, ErrorCode::InvalidField);

    s.send_json(
        serde_json::json!({"type": "send_message", "conversation_id": lobby, "content": 42, "client_id": "c-42"}),
    )
    .await;
    assert_eq!(error_of(s.next_frame().await), (ErrorCode::InvalidField, Some("c-42".into())));

    s.send_json(serde_json::json!({"conversation_id": lobby})).await;
    assert_eq!(error_of(s.next_frame().await).0, ErrorCode::InvalidField, "a frame without a type");

    s.send_text("[1, 2, 3]").await;
    assert_eq!(error_of(s.next_frame().await).0, ErrorCode::InvalidField, "a frame that is not an object");

    for empty in ["", "   \n\t "] {
        let cid = client_id();
        s.send_message(&lobby, empty, &cid).await;
        assert_eq!(error_of(s.next_frame().await), (ErrorCode::EmptyContent, Some(cid)));
    }

    let cid = client_id();
    s.send_message(&lobby, &"x".repeat(5001), &cid).await;
    assert_eq!(error_of(s.next_frame().await), (ErrorCode::TooLong, Some(cid)));

    // The limit counts characters, not bytes: 5000 two-byte characters are fine.
    let cid = client_id();
    s.send_message(&lobby, &"é".repeat(5000), &cid).await;
    assert_eq!(ack_of(s.next_frame().await).seq, 1);
    s.next_of("conversation_update").await; // not joined: no new_message

    s.send_binary(b"{\"type\":\"ping\",\"ts\":1}".to_vec()).await;
    assert_eq!(error_of(s.next_frame().await).0, ErrorCode::InvalidJson, "binary frames are refused");

    // Unknown fields are ignored.
    s.send_json(serde_json::json!({"type": "ping", "ts": 42.5, "extra": {"nested": true}})).await;
    expect_frame!(s.next_frame().await, ServerFrame::Pong { ts, server_time } => {
        assert_eq!(ts, 42.5);
        assert!(server_time.ends_with('Z'));
    });

    // None of that closed the socket, and nothing bad was stored.
    s.send(&ClientFrame::Ping { ts: 1234.0 }).await;
    expect_frame!(s.next_frame().await, ServerFrame::Pong { ts, .. } => assert_eq!(ts, 1234.0));
    assert_eq!(server.messages_after(&a.token, &lobby, 0).await.messages.len(), 1);
    s.expect_silence().await;
}

// ---- 9. membership ----

/// Creates a room that only `member_id` belongs to, straight in the database (no route
/// creates rooms yet).
fn create_private_room(server: &TestServer, member_id: &str) -> String {
    let db = rusqlite::Connection::open(server.data_dir().join("persona-chat.sqlite3")).expect("the database opens");
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    let id = client_id();
    let now = "2024-01-01T00:00:00.000Z";
    db.execute(
        "INSERT INTO conversations (id, kind, title, is_lobby, created_at, updated_at) VALUES (?1, 'room', 'Private', 0, ?2, ?2)",
        [&id, now],
    )
    .unwrap();
    db.execute(
        "INSERT INTO members (conversation_id, member_id, member_kind, joined_at) VALUES (?1, ?2, 'user', ?3)",
        [&id, member_id, now],
    )
    .unwrap();
    id
}

#[tokio::test]
async fn conversations_the_user_is_not_in_are_refused() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let private = create_private_room(&server, &b.user.id);
    let ack = server.post_message(&b.token, &private, "secret", &client_id()).await;
    assert_eq!(ack.seq, 1, "the member can use the room");

    let mut s = server.connect(&a.token).await;
    for conversation in [uuid::Uuid::new_v4().to_string(), private.clone()] {
        s.send(&ClientFrame::JoinConversation { conversation_id: conversation.clone(), after_seq: Some(0) }).await;
        assert_eq!(error_of(s.next_frame().await), (ErrorCode::NotMember, Some(conversation.clone())), "join");

        let cid = client_id();
        s.send_message(&conversation, "let me in", &cid).await;
        assert_eq!(error_of(s.next_frame().await), (ErrorCode::NotMember, Some(cid)), "send");

        s.send(&ClientFrame::TypingStart { conversation_id: conversation.clone() }).await;
        assert_eq!(error_of(s.next_frame().await).0, ErrorCode::NotMember, "typing");

        let resp = server.get(&a.token, &format!("/api/conversations/{conversation}/messages?after_seq=0")).await;
        expect_api_error(resp, StatusCode::FORBIDDEN, "not_member").await;
        let resp = server.post_message_raw(&a.token, &conversation, "let me in", &client_id()).await;
        expect_api_error(resp, StatusCode::FORBIDDEN, "not_member").await;
    }
    s.expect_silence().await;

    // Nothing leaked in: the room still has only its member's message, and the socket works.
    let page = server.messages_after(&b.token, &private, 0).await;
    assert_eq!(page.messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), vec!["secret"]);
    assert!(server.conversations(&a.token).await.iter().all(|c| c.id != private));
    s.send(&ClientFrame::Ping { ts: 7.0 }).await;
    s.next_of("pong").await;
}

// ---- 10. presence ----

#[tokio::test]
async fn presence_follows_a_users_first_and_last_socket() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let mut sa = server.connect(&a.token).await;

    let sb1 = server.connect(&b.token).await;
    let mut names: Vec<_> = sb1.online_users.iter().map(|u| u.username.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["alice", "bob"], "online_users lists everyone online");
    expect_frame!(sa.next_frame().await, ServerFrame::PresenceUpdate { user_id, username, online, last_seen, timestamp } => {
        assert_eq!((user_id.as_str(), username.as_str(), online), (b.user.id.as_str(), "bob", true));
        assert_eq!(last_seen, None);
        assert!(timestamp.ends_with('Z'));
    });

    // A second socket of an online user is no news; closing one of two is none either.
    let mut sb2 = server.connect(&b.token).await;
    sa.expect_silence().await;
    sb1.close().await;
    sa.expect_silence().await;

    // get_online_status answers for the ids asked about.
    sb2.send(&ClientFrame::GetOnlineStatus { user_ids: vec![a.user.id.clone(), "nobody".into()] }).await;
    let users = expect_frame!(sb2.next_frame().await, ServerFrame::OnlineUsers { users, .. } => users);
    assert_eq!(users.iter().map(|u| u.user_id.as_str()).collect::<Vec<_>>(), vec![a.user.id.as_str()]);

    sb2.close().await;
    expect_frame!(sa.next_frame().await, ServerFrame::PresenceUpdate { user_id, online, last_seen, .. } => {
        assert_eq!((user_id.as_str(), online), (b.user.id.as_str(), false));
        assert!(last_seen.is_some_and(|t| t.ends_with('Z')), "going offline carries last_seen");
    });
    sa.expect_silence().await;

    // Back online: announced again.
    let _sb3 = server.connect(&b.token).await;
    expect_frame!(sa.next_frame().await, ServerFrame::PresenceUpdate { online: true, .. } => ());
}

#[tokio::test]
async fn a_dropped_connection_counts_as_going_offline() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let mut sa = server.connect(&a.token).await;
    let sb = server.connect(&b.token).await;
    sa.next_of("presence_update").await;
    drop(sb); // no close handshake: the TCP connection just goes away
    expect_frame!(sa.next_frame().await, ServerFrame::PresenceUpdate { online: false, user_id, .. } => assert_eq!(user_id, b.user.id));
}

// ---- 11. socket limit ----

#[tokio::test]
async fn sockets_beyond_the_per_user_limit_are_closed_with_1008() {
    let server = TestServer::start_with(|c| c.max_sockets_per_user = 2).await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let s1 = server.connect(&a.token).await;
    let mut s2 = server.connect(&a.token).await;

    let mut s3 = server.connect_raw(Some(&a.token)).await.expect("the upgrade itself succeeds");
    let (code, reason) = s3.expect_close().await;
    assert_eq!(code, 1008);
    assert!(!reason.is_empty(), "the close frame says why");

    // The limit is per user: another user connects fine, and the first two still work.
    let _sb = server.connect(&b.token).await;
    s2.send(&ClientFrame::Ping { ts: 3.0 }).await;
    s2.next_of("pong").await;

    // Closing one frees a place.
    s1.close().await;
    within("a place to free up", async {
        loop {
            let mut s = server.connect_raw(Some(&a.token)).await.unwrap();
            match s.recv_raw().await {
                Some(Ok(tungstenite::Message::Text(_))) => break,
                Some(Ok(tungstenite::Message::Close(_))) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await
                }
                other => panic!("expected a greeting or a close, got {other:?}"),
            }
        }
    })
    .await;
}

// ---- 12. Gator clients ----

#[tokio::test]
async fn a_gator_client_without_after_seq_or_client_id_works() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    server.post_message(&a.token, &lobby, "from before", &client_id()).await;

    let mut s = server.connect(&a.token).await;
    s.send_json(serde_json::json!({"type": "join_conversation", "conversation_id": lobby})).await;
    let joined = s.next_json().await;
    assert_eq!(joined["type"], "conversation_joined");
    assert_eq!(joined["conversation_id"], lobby.as_str());
    assert_eq!(joined["last_seq"], 1);
    assert!(joined["timestamp"].is_string());
    s.expect_silence().await; // no after_seq: no backlog

    let mut seqs = Vec::new();
    for text in ["hi gator", "hi gator"] {
        s.send_json(serde_json::json!({"type": "send_message", "conversation_id": lobby, "content": text})).await;
        let ack = ack_of(s.next_frame().await);
        assert!(!ack.client_id.is_empty(), "the server makes up a client_id");
        let m = s.next_json().await;
        assert_eq!(m["type"], "new_message");
        assert_eq!(m["conversation_id"], lobby.as_str());
        assert!(m["timestamp"].is_string());
        let msg = &m["message"];
        assert_eq!(msg["id"], ack.message_id.as_str());
        assert_eq!(msg["content"], text);
        assert_eq!(msg["sender_id"], a.user.id.as_str());
        assert_eq!(msg["sender_name"], "alice");
        assert_eq!(msg["is_ai"], false);
        assert!(msg["timestamp"].is_string());
        seqs.push(msg["seq"].as_i64().unwrap());
        s.next_of("conversation_update").await;
    }
    assert_eq!(seqs, vec![2, 3], "each send without client_id is a new message");

    s.send_json(serde_json::json!({"type": "leave_conversation", "conversation_id": lobby})).await;
    let left = s.next_json().await;
    assert_eq!(
        (left["type"].as_str(), left["conversation_id"].as_str()),
        (Some("conversation_left"), Some(lobby.as_str()))
    );
}

// ---- 13. persistence ----

#[tokio::test]
async fn messages_and_accounts_survive_a_restart() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    let first = server.post_message(&a.token, &lobby, "before the restart", &client_id()).await;
    let mut s = server.connect(&a.token).await;
    s.join(&lobby, Some(1)).await;
    let cid = client_id();
    s.send_message(&lobby, "over the socket", &cid).await;
    let second = ack_of(s.next_frame().await);
    let dir = server.stop().await;

    let server = TestServer::start_in(dir, |_| {}).await;
    let again = server.sign_in("alice", PASSWORD).await;
    assert_eq!(again.user, a.user, "the account is still there");
    expect_api_error(
        server.post_session("alice", "wrong password").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_eq!(server.lobby(&again.token).await, lobby, "the same Lobby, not a second one");
    assert_eq!(server.conversations(&again.token).await.len(), 1);

    let page = server.messages_after(&again.token, &lobby, 0).await;
    let got: Vec<_> = page.messages.iter().map(|m| (m.seq, m.id.as_str(), m.content.as_str())).collect();
    assert_eq!(
        got,
        vec![(1, first.message_id.as_str(), "before the restart"), (2, second.message_id.as_str(), "over the socket")]
    );

    // seq carries on, and a resend from before the restart is still recognised.
    assert_eq!(server.post_message(&again.token, &lobby, "after", &client_id()).await.seq, 3);
    assert_eq!(server.post_message(&again.token, &lobby, "over the socket", &cid).await, second);
    // A token from before the restart stays valid (same secret).
    assert_eq!(server.conversations(&a.token).await.len(), 1);
}

// ---- 14. graceful shutdown ----

#[tokio::test]
async fn stopping_the_server_closes_sockets_with_1012() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    let mut sa = server.connect(&a.token).await;
    let mut sb = server.connect(&b.token).await;
    sa.next_of("presence_update").await;
    sb.join(&lobby, Some(0)).await;
    let addr = server.addr;

    let stopped = tokio::spawn(server.stop());
    for socket in [&mut sa, &mut sb] {
        let (code, reason) = socket.expect_close().await;
        assert_eq!(code, 1012, "service restart: come back soon");
        assert!(!reason.is_empty());
    }
    within("the server to stop", stopped).await.expect("stop does not panic");

    // Nothing listens any more.
    let refused = within("a connection attempt", tokio::net::TcpStream::connect(addr)).await;
    assert!(refused.is_err(), "the port is closed after shutdown");
}

// ---- more of what exists today ----

#[tokio::test]
async fn typing_reaches_the_other_joined_sockets_only() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    let mut sa = server.connect(&a.token).await;
    let mut sa2 = server.connect(&a.token).await;
    let mut sb = server.connect(&b.token).await;
    sa.next_of("presence_update").await;
    sa2.next_of("presence_update").await;
    for s in [&mut sa, &mut sa2, &mut sb] {
        s.join(&lobby, None).await;
    }

    for (frame, typing) in [
        (ClientFrame::TypingStart { conversation_id: lobby.clone() }, true),
        (ClientFrame::TypingStop { conversation_id: lobby.clone() }, false),
    ] {
        sa.send(&frame).await;
        expect_frame!(sb.next_frame().await, ServerFrame::TypingIndicator { conversation_id, user_id, username, is_typing, .. } => {
            assert_eq!((conversation_id.as_str(), user_id.as_str(), username.as_str()), (lobby.as_str(), a.user.id.as_str(), "alice"));
            assert_eq!(is_typing, typing);
        });
    }
    // Not to the typist, on any of their sockets.
    sa.expect_silence().await;
    sa2.expect_silence().await;
}

#[tokio::test]
async fn a_frame_over_64_kib_closes_the_socket_with_1009() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    let mut s = server.connect(&a.token).await;
    let huge = serde_json::json!({"type": "send_message", "conversation_id": lobby, "content": "x".repeat(70 * 1024), "client_id": client_id()});
    s.send_json(huge).await;
    let (code, reason) = s.expect_close().await;
    assert_eq!(code, 1009, "message too big: {reason}");
    assert_eq!(server.messages_after(&a.token, &lobby, 0).await.messages.len(), 0);
    // The user can reconnect at once.
    server.connect(&a.token).await;
}

#[tokio::test]
async fn message_queries_are_validated() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    for i in 1..=4 {
        server.post_message(&a.token, &lobby, &format!("m{i}"), &client_id()).await;
    }
    let resp = server.get(&a.token, &format!("/api/conversations/{lobby}/messages?after_seq=abc")).await;
    expect_api_error(resp, StatusCode::BAD_REQUEST, "invalid_field").await;

    // Without after_seq: the newest, still ascending; before_seq pages backwards.
    let page: persona_chat_protocol::http::MessagesResponse =
        json(server.get(&a.token, &format!("/api/conversations/{lobby}/messages?limit=2")).await).await;
    assert_eq!(page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert!(page.has_more);
    let page: persona_chat_protocol::http::MessagesResponse =
        json(server.get(&a.token, &format!("/api/conversations/{lobby}/messages?before_seq=3")).await).await;
    assert_eq!(page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert!(!page.has_more);
}

// ---- unread counts: what the list says, and marking a conversation read ----

#[tokio::test]
async fn unread_counts_follow_messages_and_the_read_route() {
    let server = TestServer::start().await;
    let a = server.sign_in("ada", "password-a").await;
    let b = server.sign_in("bob", "password-b").await;
    let lobby = server.lobby(&a.token).await;
    for i in 0..3 {
        server.post_message(&b.token, &lobby, &format!("hi {i}"), &client_id()).await;
    }
    let unread = |list: Vec<persona_chat_protocol::http::ConversationSummary>| {
        list.iter().find(|c| c.id == lobby).unwrap().unread_count
    };
    assert_eq!(unread(server.conversations(&a.token).await), 3);
    assert_eq!(unread(server.conversations(&b.token).await), 0, "own messages are read");

    let path = format!("/api/conversations/{lobby}/read");
    let read = |seq: serde_json::Value| {
        let (server, token, path) = (&server, a.token.clone(), path.clone());
        async move { server.post(&token, &path, &serde_json::json!({ "seq": seq })).await }
    };
    assert_eq!(read(serde_json::json!(2)).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(unread(server.conversations(&a.token).await), 1);
    // Never moves back; beyond the end is clamped (a later message still counts).
    assert_eq!(read(serde_json::json!(1)).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(unread(server.conversations(&a.token).await), 1);
    assert_eq!(read(serde_json::json!(99)).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(unread(server.conversations(&a.token).await), 0);
    server.post_message(&b.token, &lobby, "one more", &client_id()).await;
    assert_eq!(unread(server.conversations(&a.token).await), 1);

    expect_api_error(read(serde_json::json!(-1)).await, StatusCode::BAD_REQUEST, "invalid_field").await;
    expect_api_error(read(serde_json::json!("two")).await, StatusCode::BAD_REQUEST, "invalid_field").await;
    let private = create_private_room(&server, &b.user.id);
    let resp =
        server.post(&a.token, &format!("/api/conversations/{private}/read"), &serde_json::json!({ "seq": 1 })).await;
    expect_api_error(resp, StatusCode::FORBIDDEN, "not_member").await;
}

// ---- presence of users on the polling fallback ----

#[tokio::test]
async fn a_user_who_only_polls_is_online_until_polling_stops_for_the_grace_period() {
    let server = TestServer::start_with(|c| c.poll_presence_grace_ms = 1_000).await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let mut sa = server.connect(&a.token).await;

    // Bob polls (no socket): Alice hears he is online, and a new socket lists him.
    let cursor: serde_json::Value = json(server.get(&b.token, "/api/events").await).await;
    let next = cursor["next"].as_u64().unwrap();
    let path = format!("/api/events?after={next}&timeout_ms=300");
    let poll = server.get(&b.token, &path);
    let (answer, frame) = tokio::join!(poll, sa.next_frame());
    assert_eq!(answer.status(), StatusCode::OK);
    expect_frame!(frame, ServerFrame::PresenceUpdate { user_id, online, .. } => assert_eq!((user_id.as_str(), online), (b.user.id.as_str(), true)));
    let sa2 = server.connect(&a.token).await;
    assert!(sa2.online_users.iter().any(|u| u.username == "bob"), "pollers are listed online");

    // Within the grace period, polling again is no news; a socket of his is none either, and
    // closing it leaves him online while he still polls.
    server.get(&b.token, &format!("/api/events?after={next}&timeout_ms=100")).await;
    let sb = server.connect(&b.token).await;
    sb.close().await;
    sa.expect_silence().await;

    // He stops: after the grace period he goes offline, with last_seen.
    let frame = within("bob to go offline", sa.next_frame()).await;
    expect_frame!(frame, ServerFrame::PresenceUpdate { user_id, online, last_seen, .. } => {
        assert_eq!((user_id.as_str(), online), (b.user.id.as_str(), false));
        assert!(last_seen.is_some());
    });
}
