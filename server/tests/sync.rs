//! One truth in every tab (issue 11), the server's half: the live list
//! (`conversation_upserted`, `conversation_removed`), the resync exchange (`sync` over the
//! socket, `POST /api/sync`) with its list versions, tombstones and rate bound, replies in
//! progress resumed on join, stop from any member, and a reply cut by SIGKILL stored as
//! interrupted at the next start. Real servers over real sockets.

mod common;

use std::time::{Duration, Instant};

use common::*;
use persona_chat_protocol::http::{ConversationSummary, EventsResponse, Persona};
use persona_chat_protocol::{ClientFrame, RemovalReason, ServerFrame, SyncState};
use reqwest::StatusCode;

const PASSWORD: &str = "sync test password";

async fn create_room(server: &TestServer, token: &str, title: &str, members: &[&str]) -> ConversationSummary {
    let resp =
        server.post(token, "/api/conversations", &serde_json::json!({"title": title, "member_ids": members})).await;
    assert_eq!(resp.status(), StatusCode::OK, "room {title} is created");
    json(resp).await
}

async fn persona_named(server: &TestServer, token: &str, name: &str) -> Persona {
    let list: Vec<Persona> = json(server.get(token, "/api/personas").await).await;
    list.into_iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no persona {name}"))
}

async fn direct_with(server: &TestServer, token: &str, persona_id: &str) -> ConversationSummary {
    let resp = server.post(token, "/api/conversations", &serde_json::json!({ "persona_id": persona_id })).await;
    assert_eq!(resp.status(), StatusCode::OK);
    json(resp).await
}

/// `sync {since}` over a socket: the answer (other frames skipped) and its size on the wire.
async fn sync_ws(client: &mut Client, since: u64) -> (SyncState, usize) {
    client.send(&ClientFrame::Sync { since }).await;
    within("a sync_state", async {
        loop {
            match client.recv_raw().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                    if let Ok(Some(ServerFrame::SyncState(state))) = ServerFrame::parse(text.as_str()) {
                        return (*state, text.len());
                    }
                    if let Ok(Some(ServerFrame::Error { message, .. })) = ServerFrame::parse(text.as_str()) {
                        panic!("sync refused: {message}");
                    }
                }
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    })
    .await
}

async fn sync_http(server: &TestServer, token: &str, since: u64) -> reqwest::Response {
    server.post(token, "/api/sync", &serde_json::json!({ "since": since })).await
}

/// The poll cursor now (`GET /api/events` without `after`).
async fn poll_cursor(server: &TestServer, token: &str) -> u64 {
    let r: EventsResponse = json(server.get(token, "/api/events").await).await;
    r.next
}

/// Polls from `after` until a frame matches `want` (bounded by WAIT).
async fn poll_until(
    server: &TestServer,
    token: &str,
    mut after: u64,
    want: impl Fn(&ServerFrame) -> bool,
) -> ServerFrame {
    within("a matching polled event", async {
        loop {
            let r: EventsResponse =
                json(server.get(token, &format!("/api/events?after={after}&timeout_ms=2000")).await).await;
            assert!(!r.resync, "the cursor is kept");
            if let Some(e) = r.events.into_iter().find(|e| want(&e.frame)) {
                return e.frame;
            }
            after = r.next;
        }
    })
    .await
}

/// The conversation a frame is about, from its JSON (`conversation_id`, or the summary's id).
fn conversation_of(frame: &ServerFrame) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&frame.to_json()).expect("a frame is JSON");
    v.get("conversation_id")
        .or_else(|| v.get("conversation").and_then(|c| c.get("id")))
        .and_then(|c| c.as_str())
        .map(str::to_owned)
}

/// Reads frames for QUIET; panics on any about `conversation`.
async fn expect_nothing_of(client: &mut Client, conversation: &str, who: &str) {
    loop {
        let frame = match tokio::time::timeout(QUIET, client.next_frame()).await {
            Ok(frame) => frame,
            Err(_) => return,
        };
        if conversation_of(&frame).as_deref() == Some(conversation) {
            panic!("{who} still gets {frame:?}");
        }
    }
}

#[tokio::test]
async fn someone_added_to_a_room_gets_it_on_their_socket_and_their_poll() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let c = server.sign_in("carol", PASSWORD).await;
    let mut sb = server.connect(&b.token).await;
    let cursor = poll_cursor(&server, &b.token).await;

    let room = create_room(&server, &a.token, "Book club", &[&b.user.id]).await;
    let (summary, version) = expect_frame!(
        sb.next_of("conversation_upserted").await,
        ServerFrame::ConversationUpserted { conversation, version, .. } => (conversation, version)
    );
    assert_eq!((summary.id.as_str(), summary.title.as_str()), (room.id.as_str(), "Book club"));
    assert_eq!((summary.last_seq, summary.unread_count), (0, 0));
    assert!(version > 0, "a list version");
    let polled = poll_until(
        &server,
        &b.token,
        cursor,
        |f| matches!(f, ServerFrame::ConversationUpserted { conversation, .. } if conversation.id == room.id),
    )
    .await;
    assert!(matches!(polled, ServerFrame::ConversationUpserted { version: v, .. } if v == version));

    // Carol, added later, gets it too; Bob (already in) gets it again, newer.
    let mut sc = server.connect(&c.token).await;
    let resp = server
        .post(
            &a.token,
            &format!("/api/conversations/{}/members", room.id),
            &serde_json::json!({"user_ids": [c.user.id]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let to_carol = expect_frame!(
        sc.next_of("conversation_upserted").await,
        ServerFrame::ConversationUpserted { conversation, version, .. } => (conversation.id, version)
    );
    assert_eq!(to_carol.0, room.id);
    assert!(to_carol.1 > version, "the addition has a newer version");
    let to_bob = expect_frame!(
        sb.next_of("conversation_upserted").await,
        ServerFrame::ConversationUpserted { version, .. } => version
    );
    assert_eq!(to_bob, to_carol.1, "one change, one version");
}

#[tokio::test]
async fn a_removed_member_is_told_and_gets_nothing_more_of_the_room() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let c = server.sign_in("carol", PASSWORD).await;
    let room = create_room(&server, &a.token, "Secrets", &[&b.user.id, &c.user.id]).await;
    let mut sb = server.connect(&b.token).await;
    sb.join(&room.id, None).await;
    let cursor = poll_cursor(&server, &b.token).await;

    // Only the creator may remove; unknown rooms are 404; the Lobby is not a room one leaves.
    let path = format!("/api/conversations/{}/members/{}", room.id, b.user.id);
    expect_api_error(server.delete(&c.token, &path).await, StatusCode::FORBIDDEN, "invalid_field").await;
    let unknown = format!("/api/conversations/{}/members/{}", client_id(), b.user.id);
    expect_api_error(server.delete(&a.token, &unknown).await, StatusCode::NOT_FOUND, "not_found").await;
    let lobby = server.lobby(&a.token).await;
    let lobby_path = format!("/api/conversations/{lobby}/members/{}", b.user.id);
    expect_api_error(server.delete(&a.token, &lobby_path).await, StatusCode::BAD_REQUEST, "invalid_field").await;
    let stranger = format!("/api/conversations/{}/members/{}", room.id, client_id());
    expect_api_error(server.delete(&a.token, &stranger).await, StatusCode::NOT_FOUND, "not_found").await;

    let resp = server.delete(&a.token, &path).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (id, reason) = expect_frame!(
        sb.next_of("conversation_removed").await,
        ServerFrame::ConversationRemoved { conversation_id, reason, .. } => (conversation_id, reason)
    );
    assert_eq!((id.as_str(), reason), (room.id.as_str(), RemovalReason::Removed));
    let polled = poll_until(&server, &b.token, cursor, |f| matches!(f, ServerFrame::ConversationRemoved { .. })).await;
    assert!(matches!(polled, ServerFrame::ConversationRemoved { reason: RemovalReason::Removed, .. }));

    // The room goes on without him.
    server.post_message(&a.token, &room.id, "now that he is gone", &client_id()).await;
    let typing = server
        .post(&a.token, &format!("/api/conversations/{}/typing", room.id), &serde_json::json!({"is_typing": true}))
        .await;
    assert_eq!(typing.status(), StatusCode::NO_CONTENT);
    expect_nothing_of(&mut sb, &room.id, "bob, removed,").await;
    let resp = server.post_message_raw(&b.token, &room.id, "hello?", &client_id()).await;
    expect_api_error(resp, StatusCode::FORBIDDEN, "not_member").await;
    let (full, _) = sync_ws(&mut sb, 0).await;
    assert!(full.full && !full.conversations.iter().any(|x| x.id == room.id), "gone from his list");
}

#[tokio::test]
async fn leaving_reaches_every_tab_of_the_user() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let room = create_room(&server, &a.token, "Short stay", &[&b.user.id]).await;
    let mut tab1 = server.connect(&b.token).await;
    let mut tab2 = server.connect(&b.token).await;
    let resp = server.delete(&b.token, &format!("/api/conversations/{}/members/me", room.id)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for tab in [&mut tab1, &mut tab2] {
        let (id, reason) = expect_frame!(
            tab.next_of("conversation_removed").await,
            ServerFrame::ConversationRemoved { conversation_id, reason, .. } => (conversation_id, reason)
        );
        assert_eq!((id.as_str(), reason), (room.id.as_str(), RemovalReason::Left));
    }
}

#[tokio::test]
async fn a_reconnect_brings_back_a_room_that_changed_while_away_and_only_that() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let room = create_room(&server, &a.token, "Quiet room", &[&b.user.id]).await;
    let mut sb = server.connect(&b.token).await;
    let (first, _) = sync_ws(&mut sb, 0).await;
    assert!(first.full, "since 0 is the whole list");
    assert_eq!(first.since, 0);
    assert_eq!(first.conversations.len(), 2, "the Lobby and the room: {:?}", first.conversations);
    assert!(first.personas.len() >= 4, "every persona's status");
    assert!(first.online.iter().any(|u| u.user_id == b.user.id), "bob sees himself online");
    sb.close().await;

    for text in ["first", "second", "third"] {
        server.post_message(&a.token, &room.id, text, &client_id()).await;
    }
    let mut sb = server.connect(&b.token).await;
    let (delta, _) = sync_ws(&mut sb, first.version).await;
    assert!(!delta.full);
    assert_eq!(delta.since, first.version);
    assert!(delta.version > first.version);
    assert_eq!(delta.conversations.len(), 1, "only the room changed: {:?}", delta.conversations);
    let changed = &delta.conversations[0];
    assert_eq!(changed.id, room.id);
    assert_eq!((changed.last_seq, changed.unread_count), (3, 3));
    assert_eq!(changed.last_message.as_ref().map(|m| m.content.as_str()), Some("third"));
    assert!(delta.removed.is_empty());

    // The same over HTTP (the polling transport).
    let resp = sync_http(&server, &b.token, first.version).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let http: SyncState = json(resp).await;
    assert_eq!(http.conversations, delta.conversations);
    assert_eq!(http.version, delta.version);

    // Joining does not read it (a rejoin after a reconnect is not the user looking).
    sb.join(&room.id, None).await;
    let (joined, _) = sync_ws(&mut sb, delta.version).await;
    assert!(joined.conversations.is_empty(), "a join changed the list: {:?}", joined.conversations);
    // Reading it moves the version once more; then nothing is new.
    let read_path = format!("/api/conversations/{}/read", room.id);
    assert_eq!(
        server.post(&b.token, &read_path, &serde_json::json!({ "seq": 3 })).await.status(),
        StatusCode::NO_CONTENT
    );
    let (read, _) = sync_ws(&mut sb, delta.version).await;
    assert_eq!(read.conversations.len(), 1);
    assert_eq!(read.conversations[0].unread_count, 0, "read in this tab");
    let (nothing, _) = sync_ws(&mut sb, read.version).await;
    assert!(!nothing.full && nothing.conversations.is_empty() && nothing.removed.is_empty());
    assert_eq!(nothing.version, read.version);
    // A since from the future (another server's, a wiped database) gets the whole list.
    let (future, _) = sync_ws(&mut sb, read.version + 1_000).await;
    assert!(future.full);
    assert_eq!(future.conversations.len(), 2);
    // Without a token: 401.
    let resp = within(
        "POST /api/sync without a token",
        reqwest::Client::new().post(server.url("/api/sync")).json(&serde_json::json!({"since": 0})).send(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_unchanged_sync_of_fifty_conversations_is_under_one_kilobyte() {
    let server = TestServer::start_with(|c| {
        c.rooms_per_hour = 1_000;
        c.member_adds_per_hour = 1_000;
        c.rate_limit_per_sec = 1_000.0;
        c.rate_limit_burst = 1_000.0;
    })
    .await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let mut rooms = Vec::new();
    for i in 0..49 {
        let room = create_room(&server, &a.token, &format!("room {i}"), &[&b.user.id]).await;
        server.post_message(&a.token, &room.id, &format!("hello {i}"), &client_id()).await;
        rooms.push(room);
    }
    let mut sb = server.connect(&b.token).await;
    let (full, full_bytes) = sync_ws(&mut sb, 0).await;
    assert_eq!(full.conversations.len(), 50, "49 rooms and the Lobby");
    let (unchanged, bytes) = sync_ws(&mut sb, full.version).await;
    eprintln!("sync of 50 conversations: full {full_bytes} bytes, unchanged {bytes} bytes");
    assert!(unchanged.conversations.is_empty() && !unchanged.full);
    assert!(bytes < 1024, "an unchanged sync is {bytes} bytes");
    // A few changed: just those.
    server.post_message(&a.token, &rooms[3].id, "news", &client_id()).await;
    server.post_message(&a.token, &rooms[40].id, "more news", &client_id()).await;
    let (changed, _) = sync_ws(&mut sb, unchanged.version).await;
    let mut ids: Vec<&str> = changed.conversations.iter().map(|c| c.id.as_str()).collect();
    ids.sort();
    let mut want = vec![rooms[3].id.as_str(), rooms[40].id.as_str()];
    want.sort();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn tombstones_say_which_conversations_left_the_list() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let room = create_room(&server, &a.token, "Revolving door", &[&b.user.id]).await;
    let before: SyncState = json(sync_http(&server, &b.token, 0).await).await;
    let path = format!("/api/conversations/{}/members/{}", room.id, b.user.id);
    assert_eq!(server.delete(&a.token, &path).await.status(), StatusCode::NO_CONTENT);
    let after: SyncState = json(sync_http(&server, &b.token, before.version).await).await;
    assert!(!after.full);
    assert_eq!(after.removed, vec![room.id.clone()]);
    assert!(after.conversations.is_empty(), "the room is not in his list: {:?}", after.conversations);
    let later: SyncState = json(sync_http(&server, &b.token, after.version).await).await;
    assert!(later.removed.is_empty(), "told once");
    // Added back: in the list again, no longer removed.
    let resp = server
        .post(
            &a.token,
            &format!("/api/conversations/{}/members", room.id),
            &serde_json::json!({"user_ids": [b.user.id]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let back: SyncState = json(sync_http(&server, &b.token, before.version).await).await;
    assert!(back.removed.is_empty());
    assert_eq!(back.conversations.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec![room.id.as_str()]);
}

#[tokio::test]
async fn a_sync_flood_is_refused_without_slowing_anyone_else() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let flood = {
        let (url, token) = (server.url("/api/sync"), b.token.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let started = Instant::now();
            let (mut ok, mut refused) = (0, 0);
            for _ in 0..300 {
                let resp = http.post(&url).bearer_auth(&token).json(&serde_json::json!({"since": 0})).send().await;
                match resp.map(|r| (r.status(), r.headers().contains_key("retry-after"))) {
                    Ok((StatusCode::OK, _)) => ok += 1,
                    Ok((StatusCode::TOO_MANY_REQUESTS, true)) => refused += 1,
                    other => panic!("unexpected answer to a sync: {other:?}"),
                }
            }
            (ok, refused, started.elapsed())
        })
    };
    // Alice meanwhile: every sync answered, quickly.
    for _ in 0..5 {
        let started = Instant::now();
        let resp = sync_http(&server, &a.token, 0).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(started.elapsed() < Duration::from_secs(2), "alice waited {:?}", started.elapsed());
    }
    let (ok, refused, took) = within("the flood", flood).await.unwrap();
    // The burst (20) and the rate (2 a second) bound bob's answers.
    let bound = 20 + (2.0 * took.as_secs_f64()).ceil() as usize + 1;
    assert!(ok <= bound, "{ok} answered in {took:?}, at most {bound}");
    assert_eq!(ok + refused, 300);
    expect_api_error(sync_http(&server, &b.token, 0).await, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Over the socket: an error frame, the socket stays.
    let mut sb = server.connect(&b.token).await;
    sb.send(&ClientFrame::Sync { since: 0 }).await;
    let (code, reference) = expect_frame!(
        sb.next_of("error").await,
        ServerFrame::Error { code, reference, .. } => (code, reference)
    );
    assert_eq!((code.as_str(), reference.as_deref()), ("rate_limited", Some("sync")));
    sb.send(&ClientFrame::Ping { ts: 1.0 }).await;
    sb.next_of("pong").await;
}

/// Applies a reply's frames as a client does, strictly: each delta must start where the text
/// so far ends (no gap, no double). Returns the text at the first delta and the stored message.
async fn follow_reply(client: &mut Client, message_id: &str) -> (String, persona_chat_protocol::Message) {
    within("the rest of the reply", async {
        let (mut started, mut text, mut first) = (false, String::new(), None::<String>);
        loop {
            match client.next_frame().await {
                ServerFrame::StreamStart { message_id: m, .. } if m == message_id => {
                    assert!(!started, "stream_start once");
                    started = true;
                }
                ServerFrame::StreamDelta { message_id: m, offset, text: t, .. } if m == message_id => {
                    assert!(started, "stream_start before the deltas");
                    assert_eq!(offset as usize, text.chars().count(), "a delta at {offset} after {text:?}");
                    text.push_str(&t);
                    first.get_or_insert_with(|| text.clone());
                }
                ServerFrame::StreamEnd { message_id: m, message, .. } if m == message_id => {
                    assert_eq!(message.content, text, "the deltas make up the stored message");
                    return (first.unwrap_or_default(), message);
                }
                _ => {}
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_tab_joining_mid_reply_gets_the_text_so_far_then_every_delta_once() {
    let pieces: Vec<String> = (0..200).map(|i| format!("w{i} ")).collect();
    let url = fake_llm(pieces, Duration::from_millis(25), false).await;
    let server = TestServer::start_with(move |c| c.persona_llm_url = Some(url)).await;
    let a = server.sign_in("alice", PASSWORD).await;
    let ada = persona_named(&server, &a.token, "Ada").await;
    let direct = direct_with(&server, &a.token, &ada.id).await;
    let mut tab1 = server.connect(&a.token).await;
    tab1.join(&direct.id, None).await;
    tab1.send_message(&direct.id, "Count slowly", &client_id()).await;
    let (message_id, seen) = within("a few deltas", async {
        let (mut id, mut seen, mut deltas) = (String::new(), String::new(), 0);
        while deltas < 5 {
            match tab1.next_frame().await {
                ServerFrame::StreamStart { message_id, .. } => id = message_id,
                ServerFrame::StreamDelta { text, .. } => {
                    seen.push_str(&text);
                    deltas += 1;
                }
                _ => {}
            }
        }
        (id, seen)
    })
    .await;
    // The resync exchange lists it with its text so far.
    let state: SyncState = json(sync_http(&server, &a.token, 0).await).await;
    let in_progress = state.replies.iter().find(|r| r.message_id == message_id).expect("the reply is in progress");
    assert_eq!(
        (in_progress.conversation_id.as_str(), in_progress.persona_id.as_str()),
        (direct.id.as_str(), ada.id.as_str())
    );
    assert!(in_progress.text.starts_with(&seen), "{:?} then {seen:?}", in_progress.text);

    // A second tab joins mid-reply.
    let mut tab2 = server.connect(&a.token).await;
    tab2.join(&direct.id, Some(0)).await;
    let (first, message) = follow_reply(&mut tab2, &message_id).await;
    assert!(first.starts_with(&seen), "the first delta is the text so far: {first:?} vs {seen:?}");
    assert!(first.chars().count() < message.content.chars().count(), "joined before the end");
    assert!(message.content.starts_with(&in_progress.text));
    let (_, in_tab1) = follow_reply_rest(&mut tab1, &message_id, seen).await;
    assert_eq!(in_tab1, message.content);
}

/// The rest of a reply in a tab that already holds `text` of it.
async fn follow_reply_rest(client: &mut Client, message_id: &str, mut text: String) -> (String, String) {
    within("the rest of the reply", async {
        loop {
            match client.next_frame().await {
                ServerFrame::StreamDelta { message_id: m, offset, text: t, .. } if m == message_id => {
                    assert_eq!(offset as usize, text.chars().count());
                    text.push_str(&t);
                }
                ServerFrame::StreamEnd { message_id: m, message, .. } if m == message_id => {
                    return (text, message.content);
                }
                _ => {}
            }
        }
    })
    .await
}

#[tokio::test]
async fn any_member_may_stop_a_reply_from_any_tab_and_others_may_not() {
    let pieces: Vec<String> = (0..300).map(|i| format!("w{i} ")).collect();
    let url = fake_llm(pieces, Duration::from_millis(30), false).await;
    let server = TestServer::start_with(move |c| c.persona_llm_url = Some(url)).await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let c = server.sign_in("carol", PASSWORD).await;
    let ada = persona_named(&server, &a.token, "Ada").await;
    let resp = server
        .post(
            &a.token,
            "/api/conversations",
            &serde_json::json!({"title": "Ask Ada", "member_ids": [b.user.id], "persona_ids": [ada.id]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let room: ConversationSummary = json(resp).await;
    let mut sb = server.connect(&b.token).await;
    sb.join(&room.id, None).await;
    server.post_message(&a.token, &room.id, "@Ada talk for a long time", &client_id()).await;
    let message_id =
        expect_frame!(sb.next_of("stream_start").await, ServerFrame::StreamStart { message_id, .. } => message_id);
    sb.next_of("stream_delta").await;

    let mut sc = server.connect(&c.token).await;
    sc.send(&ClientFrame::StopResponse { conversation_id: room.id.clone(), message_id: message_id.clone() }).await;
    let code = expect_frame!(sc.next_of("error").await, ServerFrame::Error { code, .. } => code);
    assert_eq!(code.as_str(), "not_member");

    sb.send(&ClientFrame::StopResponse { conversation_id: room.id.clone(), message_id: message_id.clone() }).await;
    let (interrupted, message) = within("the stopped reply's end", async {
        loop {
            if let ServerFrame::StreamEnd { message_id: m, interrupted, message, .. } = sb.next_frame().await {
                if m == message_id {
                    return (interrupted, message);
                }
            }
        }
    })
    .await;
    assert!(interrupted && message.interrupted, "stopped by bob, who did not ask");
    assert!(message.content.len() < 300 * 4, "cut short: {} chars", message.content.len());
}

mod killed {
    //! The real binary, SIGKILLed mid-reply.

    use super::*;
    use std::process::{Child, Command, Stdio};

    struct Process(Child);

    impl Drop for Process {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn start(data_dir: &std::path::Path, port: u16, llm: &str) -> Process {
        let child = Command::new(env!("CARGO_BIN_EXE_persona-chat-server"))
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--static-dir")
            .arg(data_dir.join("no-app"))
            .args(["--persona-llm-url", llm, "--persona-pace-ms", "10", "--persona-seed", "11"])
            .env_remove("PERSONA_SECRET")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the server binary starts");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the server did not listen within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Process(child)
    }

    async fn sign_in(http: &reqwest::Client, base: &str) -> persona_chat_protocol::http::SessionResponse {
        let body = serde_json::json!({"username": "alice", "password": PASSWORD});
        let resp = http.post(format!("{base}/api/users")).json(&body).send().await.unwrap();
        let resp = if resp.status() == StatusCode::CONFLICT {
            http.post(format!("{base}/api/session")).json(&body).send().await.unwrap()
        } else {
            resp
        };
        assert!(resp.status().is_success(), "sign-in: {}", resp.status());
        resp.json().await.unwrap()
    }

    #[tokio::test]
    async fn a_reply_cut_by_sigkill_is_stored_interrupted_with_the_text_saved_before() {
        let pieces: Vec<String> = (0..400).map(|i| format!("w{i} ")).collect();
        let full: String = pieces.concat();
        let llm = fake_llm(pieces, Duration::from_millis(20), false).await;
        let dir = tempfile::TempDir::new().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let server = start(dir.path(), port, &llm);
        let session = sign_in(&http, &base).await;
        let personas: Vec<Persona> = http
            .get(format!("{base}/api/personas"))
            .bearer_auth(&session.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ada = personas.into_iter().find(|p| p.name == "Ada").unwrap();
        let direct: ConversationSummary = http
            .post(format!("{base}/api/conversations"))
            .bearer_auth(&session.token)
            .json(&serde_json::json!({"persona_id": ada.id}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws?token={}", session.token))
            .await
            .expect("the socket opens");
        use futures_util::{SinkExt, StreamExt};
        let send = |f: ClientFrame| tokio_tungstenite::tungstenite::Message::Text(f.to_json().into());
        ws.send(send(ClientFrame::JoinConversation { conversation_id: direct.id.clone(), after_seq: None }))
            .await
            .unwrap();
        ws.send(send(ClientFrame::SendMessage {
            conversation_id: direct.id.clone(),
            content: "Count for a long time".into(),
            client_id: Some(client_id()),
            persona_id: None,
        }))
        .await
        .unwrap();
        // Deltas for 2.5 s after the first: drafts were saved with the first and then about
        // each second; then SIGKILL.
        let (streamed, first) = within("2.5 s of deltas", async {
            let (mut streamed, mut first, mut since) = (String::new(), String::new(), None::<Instant>);
            loop {
                let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) = ws.next().await else {
                    panic!("the socket ended early")
                };
                if let Ok(Some(ServerFrame::StreamDelta { text, .. })) = ServerFrame::parse(text.as_str()) {
                    streamed.push_str(&text);
                    let at = *since.get_or_insert_with(Instant::now);
                    if first.is_empty() {
                        first = streamed.clone();
                    }
                    if at.elapsed() >= Duration::from_millis(2_500) {
                        return (streamed, first);
                    }
                }
            }
        })
        .await;
        drop(server); // SIGKILL (Child::kill), then wait
        drop(ws);

        let _server = start(dir.path(), port, &llm);
        // A fresh client: the old one's pooled connections died with the server.
        let http = reqwest::Client::new();
        let session = sign_in(&http, &base).await;
        let history: persona_chat_protocol::http::MessagesResponse = http
            .get(format!("{base}/api/conversations/{}/messages?after_seq=0", direct.id))
            .bearer_auth(&session.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let reply = history.messages.iter().find(|m| m.is_ai).expect("the partial reply was stored at the start");
        assert!(reply.interrupted, "marked interrupted: {reply:?}");
        assert_eq!(reply.seq, 2, "a seq allocated after the question");
        assert!(streamed.starts_with(&reply.content), "what was streamed, up to a save: {:?}", reply.content);
        assert!(
            reply.content.len() > first.len(),
            "saved again after the first delta: {} chars, first delta {}",
            reply.content.len(),
            first.len()
        );
        assert!(reply.content.len() < full.len(), "partial");
        // The list shows it as the last message.
        let list: Vec<ConversationSummary> = http
            .get(format!("{base}/api/conversations"))
            .bearer_auth(&session.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let summary = list.iter().find(|c| c.id == direct.id).unwrap();
        assert_eq!(summary.last_message.as_ref().map(|m| m.id.as_str()), Some(reply.id.as_str()));
    }
}
