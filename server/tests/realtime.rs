//! The long poll, typing, rate limits, rooms, origins, metrics and the app's cache headers,
//! against a real server over real sockets.

mod common;

use std::time::{Duration, Instant};

use common::*;
use persona_chat_protocol::http::{ConversationKind, ConversationSummary, EventsResponse};
use persona_chat_protocol::{ClientFrame, ServerFrame};
use reqwest::StatusCode;

const PASSWORD: &str = "a good password";

async fn poll(server: &TestServer, token: &str, query: &str) -> EventsResponse {
    let resp = server.get(token, &format!("/api/events?{query}")).await;
    assert_eq!(resp.status(), StatusCode::OK, "GET /api/events?{query}");
    json(resp).await
}

#[tokio::test]
async fn the_long_poll_carries_what_a_socket_would_get() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;

    // Without a cursor: the current one, at once.
    let start = poll(&server, &b.token, "").await;
    assert!(!start.resync && start.events.is_empty());

    // A poll waiting when the message is sent answers with it.
    let waiting = {
        let (server_url, token, after) = (server.url(""), b.token.clone(), start.next);
        tokio::spawn(async move {
            reqwest::Client::new()
                .get(format!("{server_url}/api/events?after={after}&timeout_ms=8000"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<EventsResponse>()
                .await
                .unwrap()
        })
    };
    // The poll is at the server (counted), waiting, before the message is sent: the answer
    // must come from the wake, not from events already there.
    within("the poll to reach the server", async {
        loop {
            let text = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
            if text.lines().any(|l| l == "persona_chat_polls_total 2") {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(!waiting.is_finished(), "the poll waits: there is nothing to answer yet");
    let sent_at = Instant::now();
    let ack = server.post_message(&a.token, &lobby, "over HTTP", &client_id()).await;
    let got = within("the waiting poll", waiting).await.unwrap();
    assert!(sent_at.elapsed() < Duration::from_secs(3), "answered as soon as there was an event");
    let message = got
        .events
        .iter()
        .find_map(|e| match &e.frame {
            ServerFrame::NewMessage { message, .. } => Some(message.clone()),
            _ => None,
        })
        .expect("new_message in the poll");
    assert_eq!((message.id.as_str(), message.seq), (ack.message_id.as_str(), ack.seq));
    assert!(got.events.windows(2).all(|w| w[0].id < w[1].id), "ids ascend");
    assert_eq!(got.next, got.events.last().unwrap().id);
    // The poll answers as soon as there is one event; the rest follow from the cursor, as a
    // client polling again sees them.
    let mut got = got;
    if !got.events.iter().any(|e| matches!(e.frame, ServerFrame::ConversationUpdate { .. })) {
        let more = poll(&server, &b.token, &format!("after={}&timeout_ms=2000", got.next)).await;
        assert!(
            more.events.iter().any(|e| matches!(e.frame, ServerFrame::ConversationUpdate { .. })),
            "conversation_update follows"
        );
        assert!(more.events.iter().all(|e| e.id > got.next), "nothing twice across polls");
        got = more;
    }

    // Nothing new: an empty answer at the timeout, cursor unchanged.
    let t = Instant::now();
    let empty = poll(&server, &b.token, &format!("after={}&timeout_ms=300", got.next)).await;
    assert!(empty.events.is_empty() && !empty.resync);
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert_eq!(empty.next, got.next);

    // The sender does not get its own typing back, the other does.
    let typing = server
        .post(&a.token, &format!("/api/conversations/{lobby}/typing"), &serde_json::json!({"is_typing": true}))
        .await;
    assert_eq!(typing.status(), StatusCode::NO_CONTENT);
    let for_b = poll(&server, &b.token, &format!("after={}&timeout_ms=2000", got.next)).await;
    assert!(
        matches!(&for_b.events[0].frame, ServerFrame::TypingIndicator { is_typing: true, username, .. } if username == "alice")
    );
    let for_a = poll(&server, &a.token, &format!("after={}&timeout_ms=200", got.next)).await;
    assert!(for_a.events.iter().all(|e| !matches!(e.frame, ServerFrame::TypingIndicator { .. })));
}

#[tokio::test]
async fn a_cursor_older_than_what_is_kept_gets_resync() {
    let server = TestServer::start_with(|c| c.event_log_capacity = 5).await;
    let a = server.sign_in("alice", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    let start = poll(&server, &a.token, "").await;
    for i in 0..6 {
        server.post_message(&a.token, &lobby, &format!("m{i}"), &client_id()).await;
    }
    let answer = poll(&server, &a.token, &format!("after={}&timeout_ms=1000", start.next)).await;
    assert!(answer.resync, "the events after the cursor are gone");
    assert!(answer.next > start.next);
    // From the resync cursor it carries on normally.
    let next = poll(&server, &a.token, &format!("after={}&timeout_ms=200", answer.next)).await;
    assert!(!next.resync);
    // A cursor from another boot is refused the same way.
    let alien = poll(&server, &a.token, "after=1&timeout_ms=200").await;
    assert!(alien.resync);
    // The long poll needs a token.
    let resp = reqwest::get(server.url("/api/events?after=1")).await.unwrap();
    expect_api_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn typing_stops_by_itself_after_five_seconds_and_when_the_socket_closes() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    let mut sa = server.connect(&a.token).await;
    let mut sb = server.connect(&b.token).await;
    sa.next_of("presence_update").await;
    sa.join(&lobby, None).await;
    sb.join(&lobby, None).await;

    sa.send(&ClientFrame::TypingStart { conversation_id: lobby.clone() }).await;
    let started = Instant::now();
    expect_frame!(sb.next_frame().await, ServerFrame::TypingIndicator { is_typing: true, .. } => ());
    let stop = expect_frame!(sb.next_frame().await, ServerFrame::TypingIndicator { is_typing, username, .. } => (is_typing, username));
    let waited = started.elapsed();
    assert_eq!(stop, (false, "alice".to_owned()));
    assert!(
        waited >= Duration::from_millis(4_700) && waited < Duration::from_millis(6_500),
        "stopped after {waited:?}"
    );

    // A typist whose socket closes stops at once.
    sa.send(&ClientFrame::TypingStart { conversation_id: lobby.clone() }).await;
    expect_frame!(sb.next_frame().await, ServerFrame::TypingIndicator { is_typing: true, .. } => ());
    sa.close().await;
    let frame = sb.next_of("typing_indicator").await;
    assert!(matches!(frame, ServerFrame::TypingIndicator { is_typing: false, .. }));
}

#[tokio::test]
async fn sends_beyond_the_rate_limit_are_refused_and_not_stored() {
    let server = TestServer::start_with(|c| {
        c.rate_limit_per_sec = 1.0;
        c.rate_limit_burst = 3.0;
    })
    .await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    let mut sa = server.connect(&a.token).await;
    sa.join(&lobby, None).await;
    let mut refused = Vec::new();
    for i in 0..5 {
        let id = format!("cid-{i}");
        sa.send_message(&lobby, &format!("burst {i}"), &id).await;
    }
    let mut acked = 0;
    while acked + refused.len() < 5 {
        match sa.next_frame().await {
            ServerFrame::MessageAck(_) => acked += 1,
            ServerFrame::Error { code, reference, .. } => {
                assert_eq!(code.as_str(), "rate_limited");
                refused.push(reference.expect("names the client_id"));
            }
            _ => {}
        }
    }
    assert_eq!((acked, refused.clone()), (3, vec!["cid-3".to_owned(), "cid-4".to_owned()]));
    assert_eq!(server.messages_after(&a.token, &lobby, 0).await.messages.len(), 3, "refused sends stored nothing");
    // Over HTTP too, 429; other users are not affected.
    let resp = server.post_message_raw(&a.token, &lobby, "again", &client_id()).await;
    expect_api_error(resp, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    server.post_message(&b.token, &lobby, "bob is fine", &client_id()).await;
    // After a second a token is back, and the refused message can be sent again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sa.send_message(&lobby, "burst 3", "cid-3").await;
    sa.next_of("message_ack").await;
}

#[tokio::test]
async fn rooms_have_members_who_are_told_of_joins_and_leaves() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let c = server.sign_in("carol", PASSWORD).await;
    let mut sb = server.connect(&b.token).await;

    // Find people by name.
    let found: Vec<persona_chat_protocol::User> = json(server.get(&a.token, "/api/users?q=bo").await).await;
    assert_eq!(found.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), vec!["bob"]);

    let resp = server
        .post(&a.token, "/api/conversations", &serde_json::json!({"title": "Book club", "member_ids": [b.user.id]}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let room: ConversationSummary = json(resp).await;
    assert_eq!((room.kind, room.title.as_str(), room.last_seq), (ConversationKind::Room, "Book club", 0));
    // Bob hears of the new room on his socket although he never joined it.
    let joined = sb.next_of("user_joined").await;
    assert!(matches!(joined, ServerFrame::UserJoined { ref conversation_id, .. } if conversation_id == &room.id));
    assert!(server.conversations(&b.token).await.iter().any(|x| x.id == room.id));

    // Carol is not in it: 403 everywhere, revealing nothing.
    let resp = server.get(&c.token, &format!("/api/conversations/{}/messages", room.id)).await;
    expect_api_error(resp, StatusCode::FORBIDDEN, "not_member").await;
    let resp = server
        .post(
            &c.token,
            &format!("/api/conversations/{}/members", room.id),
            &serde_json::json!({"user_ids": [c.user.id]}),
        )
        .await;
    expect_api_error(resp, StatusCode::FORBIDDEN, "not_member").await;
    let resp = server
        .post(&c.token, &format!("/api/conversations/{}/typing", room.id), &serde_json::json!({"is_typing": true}))
        .await;
    expect_api_error(resp, StatusCode::FORBIDDEN, "not_member").await;

    // Bob adds Carol; Bob's socket is told.
    sb.join(&room.id, None).await;
    let resp = server
        .post(
            &b.token,
            &format!("/api/conversations/{}/members", room.id),
            &serde_json::json!({"user_ids": [c.user.id]}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let who = expect_frame!(sb.next_of("user_joined").await, ServerFrame::UserJoined { username, .. } => username);
    assert_eq!(who, "carol");
    let ack = server.post_message(&c.token, &room.id, "hi book club", &client_id()).await;
    assert_eq!(ack.seq, 1);
    let members: Vec<serde_json::Value> =
        json(server.get(&a.token, &format!("/api/conversations/{}/members", room.id)).await).await;
    assert_eq!(members.len(), 3);
    assert_eq!(members[0]["name"], "bob", "online people first");

    // Carol leaves: Bob is told, Carol is out.
    let resp = within(
        "leave",
        reqwest::Client::new()
            .delete(server.url(&format!("/api/conversations/{}/members/me", room.id)))
            .bearer_auth(&c.token)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let left = sb.next_of("user_left").await;
    assert!(matches!(left, ServerFrame::UserLeft { ref username, .. } if username == "carol"));
    let resp = server.post_message_raw(&c.token, &room.id, "still here?", &client_id()).await;
    expect_api_error(resp, StatusCode::FORBIDDEN, "not_member").await;

    // The Lobby cannot be left, nor a room made without a title.
    let lobby = server.lobby(&a.token).await;
    let resp = within(
        "leave lobby",
        reqwest::Client::new()
            .delete(server.url(&format!("/api/conversations/{lobby}/members/me")))
            .bearer_auth(&a.token)
            .send(),
    )
    .await
    .unwrap();
    expect_api_error(resp, StatusCode::BAD_REQUEST, "invalid_field").await;
    let resp = server.post(&a.token, "/api/conversations", &serde_json::json!({"title": "  "})).await;
    expect_api_error(resp, StatusCode::BAD_REQUEST, "invalid_field").await;
}

#[tokio::test]
async fn a_direct_conversation_with_a_persona_is_made_once() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let personas: Vec<serde_json::Value> = json(server.get(&a.token, "/api/personas").await).await;
    assert!(personas.len() >= 4, "at least four personas are seeded");
    let ada = personas[0]["id"].as_str().unwrap().to_owned();
    let first: ConversationSummary =
        json(server.post(&a.token, "/api/conversations", &serde_json::json!({"persona_id": ada})).await).await;
    let again: ConversationSummary =
        json(server.post(&a.token, "/api/conversations", &serde_json::json!({"persona_id": ada})).await).await;
    assert_eq!(first.id, again.id);
    assert_eq!(first.kind, ConversationKind::Direct);
    assert_eq!(first.persona.as_ref().map(|p| p.id.as_str()), Some(ada.as_str()));
    let resp = server.post(&a.token, "/api/conversations", &serde_json::json!({"persona_id": "no-such-persona"})).await;
    expect_api_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    // Another user's direct conversation is theirs alone.
    let b = server.sign_in("bob", PASSWORD).await;
    let resp = server.get(&b.token, &format!("/api/conversations/{}/messages", first.id)).await;
    expect_api_error(resp, StatusCode::FORBIDDEN, "not_member").await;
}

#[tokio::test]
async fn a_client_id_cannot_be_reused_in_another_conversation() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    let room: ConversationSummary =
        json(server.post(&a.token, "/api/conversations", &serde_json::json!({"title": "Side room"})).await).await;
    let id = client_id();
    server.post_message(&a.token, &lobby, "in the lobby", &id).await;
    let resp = server.post_message_raw(&a.token, &room.id, "elsewhere", &id).await;
    expect_api_error(resp, StatusCode::BAD_REQUEST, "invalid_field").await;
    assert!(server.messages_after(&a.token, &room.id, 0).await.messages.is_empty());
}

#[tokio::test]
async fn other_origins_are_refused_unless_allowed() {
    let server = TestServer::start_with(|c| c.allowed_origins = vec!["https://chat.example".into()]).await;
    let a = server.sign_in("alice", PASSWORD).await;
    let http = reqwest::Client::new();
    let get_with_origin = |origin: &'static str| {
        http.get(server.url("/api/conversations")).bearer_auth(&a.token).header("Origin", origin).send()
    };
    let evil = within("evil origin", get_with_origin("https://evil.example")).await.unwrap();
    assert_eq!(evil.status(), StatusCode::FORBIDDEN);
    let allowed = within("allowed origin", get_with_origin("https://chat.example")).await.unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://chat.example");
    let same = format!("http://{}", server.addr);
    let same = within(
        "same origin",
        http.get(server.url("/api/conversations")).bearer_auth(&a.token).header("Origin", same).send(),
    )
    .await
    .unwrap();
    assert_eq!(same.status(), StatusCode::OK);
    assert!(same.headers().get("access-control-allow-origin").is_none(), "no CORS needed");
    let preflight = within(
        "preflight",
        http.request(reqwest::Method::OPTIONS, server.url("/api/session"))
            .header("Origin", "https://chat.example")
            .header("Access-Control-Request-Method", "POST")
            .send(),
    )
    .await
    .unwrap();
    assert!(preflight.status().is_success());
    assert!(preflight.headers()["access-control-allow-headers"].to_str().unwrap().contains("authorization"));

    // The socket's upgrade checks the Origin too.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = server.ws_url(Some(&a.token)).into_client_request().unwrap();
    request.headers_mut().insert("Origin", "https://evil.example".parse().unwrap());
    match within("evil upgrade", tokio_tungstenite::connect_async(request)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected a 403 refusal, got {other:?}"),
    }
    let mut request = server.ws_url(Some(&a.token)).into_client_request().unwrap();
    request.headers_mut().insert("Origin", "https://chat.example".parse().unwrap());
    assert!(within("allowed upgrade", tokio_tungstenite::connect_async(request)).await.is_ok());
}

#[tokio::test]
async fn metrics_count_what_happens() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    let _socket = server.connect(&a.token).await;
    server.post_message(&a.token, &lobby, "counted", &client_id()).await;
    let resp = within("metrics", reqwest::get(server.url("/metrics"))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    for line in [
        "persona_chat_messages_stored_total 1",
        "persona_chat_sockets_open 1",
        "persona_chat_users_online 1",
        "persona_chat_sign_ins_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing in\n{text}");
    }
    assert!(text.contains("# TYPE persona_chat_messages_stored_total counter"));
}

#[tokio::test]
async fn the_app_is_served_with_fitting_cache_headers_and_a_route_fallback() {
    let dir = tempfile::TempDir::new().unwrap();
    let dist = dir.path().join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(dist.join("index.html"), "<!doctype html><title>persona-chat</title>").unwrap();
    std::fs::write(dist.join("app-0123456789abcdef_bg.wasm"), vec![0u8; 4096]).unwrap();
    std::fs::write(dist.join("main-0123456789abcde.css"), "body{color:red}".repeat(200)).unwrap();
    let server = TestServer::start_with(move |c| c.static_dir = dist).await;
    let http = reqwest::Client::builder().no_gzip().no_brotli().build().unwrap();
    let get = |path: &str, enc: &'static str| http.get(server.url(path)).header("Accept-Encoding", enc).send();

    let index = within("index", get("/", "identity")).await.unwrap();
    assert_eq!(index.status(), StatusCode::OK);
    assert_eq!(index.headers()["cache-control"], "no-cache");
    let route = within("an app route", get("/c/some-conversation", "identity")).await.unwrap();
    assert_eq!(route.status(), StatusCode::OK, "app routes fall back to index.html");
    assert!(route.text().await.unwrap().contains("persona-chat"));
    let wasm = within("wasm", get("/app-0123456789abcdef_bg.wasm", "identity")).await.unwrap();
    assert_eq!(wasm.headers()["cache-control"], "public, max-age=31536000, immutable");
    let css = within("css br", get("/main-0123456789abcde.css", "br")).await.unwrap();
    assert_eq!(css.headers()["content-encoding"], "br");
    let css = within("css gzip", get("/main-0123456789abcde.css", "gzip")).await.unwrap();
    assert_eq!(css.headers()["content-encoding"], "gzip");
}

#[tokio::test]
async fn precompressed_copies_of_the_app_files_are_sent_as_they_are() {
    // scripts/build-app.sh leaves name.br and name.gz beside each file: those bytes go out.
    let dir = tempfile::TempDir::new().unwrap();
    let dist = dir.path().join("dist");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(dist.join("index.html"), "<!doctype html><title>persona-chat</title>").unwrap();
    std::fs::write(dist.join("index.html.br"), "index as brotli").unwrap();
    std::fs::write(dist.join("app-0123456789abcdef_bg.wasm"), vec![0u8; 4096]).unwrap();
    std::fs::write(dist.join("app-0123456789abcdef_bg.wasm.br"), "wasm as brotli").unwrap();
    std::fs::write(dist.join("app-0123456789abcdef_bg.wasm.gz"), "wasm as gzip").unwrap();
    let server = TestServer::start_with(move |c| c.static_dir = dist).await;
    let http = reqwest::Client::builder().no_gzip().no_brotli().build().unwrap();
    let get = |path: &str, enc: &'static str| http.get(server.url(path)).header("Accept-Encoding", enc).send();

    for (enc, body) in [("br, gzip", "wasm as brotli"), ("gzip", "wasm as gzip")] {
        let wasm = within("wasm", get("/app-0123456789abcdef_bg.wasm", enc)).await.unwrap();
        assert_eq!(wasm.status(), StatusCode::OK);
        assert_eq!(wasm.headers()["content-encoding"], enc.split(',').next().unwrap());
        assert_eq!(wasm.headers()["content-type"], "application/wasm");
        assert_eq!(wasm.headers()["cache-control"], "public, max-age=31536000, immutable");
        assert_eq!(wasm.headers()["vary"], "accept-encoding");
        assert_eq!(wasm.text().await.unwrap(), body);
    }
    let plain = within("wasm, plain", get("/app-0123456789abcdef_bg.wasm", "identity")).await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(plain.bytes().await.unwrap().len(), 4096);
    let route = within("an app route", get("/c/some-conversation", "br")).await.unwrap();
    assert_eq!(route.headers()["content-encoding"], "br");
    assert_eq!(route.headers()["cache-control"], "no-cache");
    assert!(route.headers().contains_key("content-security-policy"));
    assert_eq!(route.text().await.unwrap(), "index as brotli");
}

#[tokio::test]
async fn a_persona_reply_can_be_stopped_over_http() {
    let server = TestServer::start_with(|c| c.persona_pace_ms = 250).await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let personas: Vec<serde_json::Value> = json(server.get(&a.token, "/api/personas").await).await;
    let persona = personas[0]["id"].as_str().unwrap().to_owned();
    let chat: ConversationSummary =
        json(server.post(&a.token, "/api/conversations", &serde_json::json!({"persona_id": persona})).await).await;
    let mut sa = server.connect(&a.token).await;
    sa.join(&chat.id, None).await;
    server.post_message(&a.token, &chat.id, "Tell me about gardens and the sea", &client_id()).await;
    let message_id =
        expect_frame!(sa.next_of("stream_start").await, ServerFrame::StreamStart { message_id, .. } => message_id);
    let stop_path = format!("/api/conversations/{}/stop", chat.id);

    // Not someone else's to stop, and unknown ids are not found.
    let resp = server.post(&b.token, &stop_path, &serde_json::json!({"message_id": message_id})).await;
    expect_api_error(resp, StatusCode::FORBIDDEN, "not_member").await;
    let resp = server.post(&a.token, &stop_path, &serde_json::json!({"message_id": "no-such-reply"})).await;
    expect_api_error(resp, StatusCode::NOT_FOUND, "not_found").await;

    let resp = server.post(&a.token, &stop_path, &serde_json::json!({"message_id": message_id})).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    // What the socket saw streamed, up to the end.
    let mut streamed = String::new();
    let (interrupted, stored) = within("the interrupted stream_end", async {
        loop {
            match sa.next_frame().await {
                ServerFrame::StreamDelta { text, .. } => streamed.push_str(&text),
                ServerFrame::StreamEnd { interrupted, message, .. } => return (interrupted, message),
                _ => {}
            }
        }
    })
    .await;
    assert!(interrupted);
    assert_eq!(stored.id, message_id);
    assert!(stored.interrupted, "stored marked interrupted");
    // Partial: the built-in responder writes at least 20 words, 250 ms apart in pieces of 1 to
    // 3; stopped right after the first, far fewer were streamed.
    assert_eq!(stored.content, streamed, "exactly the streamed text is stored");
    assert!(streamed.split_whitespace().count() < 20, "cut short: {streamed:?}");
    let history = server.messages_after(&a.token, &chat.id, 0).await.messages;
    let last = history.last().expect("the reply is stored");
    assert_eq!(
        (last.id.as_str(), last.content.as_str(), last.interrupted),
        (message_id.as_str(), streamed.as_str(), true),
        "the partial text is what is stored, marked"
    );
}

#[tokio::test]
async fn joining_far_behind_replays_every_missed_message_in_order() {
    let server = TestServer::start_with(|c| {
        c.rate_limit_per_sec = 1_000_000.0;
        c.rate_limit_burst = 1_000_000.0;
    })
    .await;
    let a = server.sign_in("alice", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    // More than a page (256) and more than a socket's queue (512).
    let total = 700;
    for i in 0..total {
        server.post_message(&a.token, &lobby, &format!("m{i}"), &format!("cid-{i}")).await;
    }
    let mut socket = server.connect(&a.token).await;
    assert_eq!(socket.join(&lobby, Some(0)).await, total as i64, "conversation_joined announces last_seq");
    for expected in 1..=total as i64 {
        let message = new_message_in(socket.next_frame().await, &lobby);
        assert_eq!(message.seq, expected, "every missed message, in order, none twice");
    }
    // Still a healthy socket afterwards.
    socket.send(&ClientFrame::Ping { ts: 1.0 }).await;
    assert!(matches!(socket.next_frame().await, ServerFrame::Pong { .. }));
}
