//! The abuse suite (issue 12): each finding of probing the server as an attacker would, as a
//! test over real sockets with bounded time. Each fails on the server before issue 12.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{client_id, expect_api_error, json, within, TestServer, WAIT};
use persona_chat_protocol::http::{ConversationSummary, EventsResponse, Persona, SessionResponse};
use persona_chat_protocol::{ClientFrame, ServerFrame, CLOSE_SIGNED_OUT};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const PASSWORD: &str = "a good password";

async fn poll(server: &TestServer, token: &str, after: u64, timeout_ms: u64) -> reqwest::Response {
    server.get(token, &format!("/api/events?after={after}&timeout_ms={timeout_ms}")).await
}

async fn cursor(server: &TestServer, token: &str) -> u64 {
    let r: EventsResponse = json(server.get(token, "/api/events").await).await;
    r.next
}

// ---- 4. typing floods ----

#[tokio::test]
async fn a_typing_flood_leaves_other_members_connected_and_pollers_without_resync() {
    // A small poll log, so that a flood stored in it would push real events out.
    let server = TestServer::start_with(|c| c.event_log_capacity = 500).await;
    let flooder = server.sign_in("mallory", PASSWORD).await;
    let reader = server.sign_in("bob", PASSWORD).await;
    let poller = server.sign_in("carol", PASSWORD).await;
    let lobby = server.lobby(&flooder.token).await;
    let mut bob = server.connect(&reader.token).await;
    bob.join(&lobby, None).await;
    let from = cursor(&server, &poller.token).await;

    // 3,000 typing frames as fast as the socket takes them; bob reads nothing meanwhile.
    let mut m = server.connect(&flooder.token).await;
    m.join(&lobby, None).await;
    let frame = ClientFrame::TypingStart { conversation_id: lobby.clone() }.to_json();
    let mut closed = None;
    for _ in 0..3_000 {
        if let Err(e) = tokio::time::timeout(WAIT, m.try_send_text(frame.clone())).await.expect("sending is not stuck")
        {
            closed = Some(e);
            break;
        }
    }
    // The flooder is closed with 1008 and a reason (or at least its socket refuses more).
    let close = within("the flooder's close", async {
        loop {
            match m.recv_unbounded().await {
                Some(Ok(WsMessage::Close(Some(f)))) => return Some((u16::from(f.code), f.reason.to_string())),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await;
    let (code, reason) = close.unwrap_or_else(|| panic!("the flooder got no close frame (send error: {closed:?})"));
    assert_eq!(code, 1008, "{reason}");
    assert!(!reason.is_empty());

    // Bob is still connected: his message is acknowledged, and he saw at most a typing
    // indicator or two, not 3,000.
    let cid = client_id();
    bob.send_message(&lobby, "still here", &cid).await;
    let mut typing = 0;
    within("bob's ack", async {
        loop {
            match bob.next_frame().await {
                ServerFrame::MessageAck(ack) if ack.client_id == cid => break,
                ServerFrame::TypingIndicator { .. } => typing += 1,
                _ => {}
            }
        }
    })
    .await;
    assert!(typing <= 3, "bob got {typing} typing indicators from one flood");

    // Carol, polling from before the flood, gets events, not resync, and bob's message.
    let r: EventsResponse = json(poll(&server, &poller.token, from, 0).await).await;
    assert!(!r.resync, "the flood pushed real events out of the poll log");
    assert!(
        r.events
            .iter()
            .any(|e| matches!(&e.frame, ServerFrame::NewMessage { message, .. } if message.content == "still here")),
        "the poller sees bob's message"
    );
}

// ---- 3. sign-in can exhaust memory ----

/// A server binary of its own (so its memory is its own), killed when dropped.
struct Spawned {
    child: std::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Spawned {
    async fn start(extra: &[&str]) -> Spawned {
        let dir = tempfile::TempDir::new().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_persona-chat-server"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PERSONA_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("RUST_LOG", "warn")
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--static-dir")
            .arg(dir.path().join("none"))
            .args(["--secret", "abuse-test-secret-abuse-test-secret"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let child = cmd.spawn().expect("the server binary starts");
        let spawned = Spawned { child, base: format!("http://127.0.0.1:{port}"), _dir: dir };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", spawned.base)).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "the spawned server did not answer /healthz");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        spawned
    }

    /// Peak resident memory (VmHWM) of the server process, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("the server runs");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }
}

#[tokio::test]
async fn two_hundred_concurrent_sign_ins_stay_under_300_mb_and_others_are_served() {
    let server = Spawned::start(&[]).await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let body = serde_json::json!({"username": "alice", "password": PASSWORD});
    let r = http.post(format!("{}/api/users", server.base)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let alice: SessionResponse = r.json().await.unwrap();
    let before = server.peak_rss_kib();

    let mut storm = Vec::new();
    for i in 0..200 {
        let (http, base) = (http.clone(), server.base.clone());
        storm.push(tokio::spawn(async move {
            let body = serde_json::json!({"username": "alice", "password": format!("wrong password {i}")});
            http.post(format!("{base}/api/session")).json(&body).send().await.map(|r| r.status())
        }));
    }
    // Meanwhile a signed-in user is served, promptly.
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let t0 = Instant::now();
        let r = http.get(format!("{}/api/conversations", server.base)).bearer_auth(&alice.token).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        slowest = slowest.max(t0.elapsed());
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut statuses = std::collections::BTreeMap::new();
    for t in storm {
        let status = within("a sign-in of the storm", t).await.unwrap().expect("every sign-in is answered");
        *statuses.entry(status.as_u16()).or_insert(0) += 1;
    }
    let peak = server.peak_rss_kib();
    println!("200 concurrent wrong sign-ins: {statuses:?}; peak RSS {} MiB (before {} MiB); slowest other request {slowest:?}", peak / 1024, before / 1024);
    assert!(statuses.keys().all(|s| *s == 401 || *s == 429), "only refusals: {statuses:?}");
    assert!(statuses.contains_key(&429), "some are told to come back later: {statuses:?}");
    assert!(peak < 300 * 1024, "peak RSS {} MiB", peak / 1024);
    assert!(slowest < Duration::from_secs(2), "another user waited {slowest:?}");
}

// ---- 5. kicked and silent sockets ----

/// The kernel's state of the server's side of a TCP connection (`/proc/net/tcp`): None when gone.
fn tcp_state(server: SocketAddr, client: SocketAddr) -> Option<u8> {
    let hex = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => format!("{:08X}:{:04X}", u32::from_le_bytes(ip.octets()), a.port()),
        IpAddr::V6(_) => unreachable!("tests use IPv4"),
    };
    let (local, remote) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 3 && f[1] == local && f[2] == remote).then(|| u8::from_str_radix(f[3], 16).unwrap_or(0))
    })
}

const TCP_ESTABLISHED: u8 = 1;

#[tokio::test]
async fn a_kicked_sockets_tcp_connection_is_gone() {
    let server = TestServer::start_with(|c| {
        c.rate_limit_per_sec = 1e6;
        c.rate_limit_burst = 1e6;
    })
    .await;
    let writer = server.sign_in("alice", PASSWORD).await;
    let victim = server.sign_in("bob", PASSWORD).await;
    let lobby = server.lobby(&writer.token).await;
    // Bob joins and then reads nothing: his socket falls behind and is kicked.
    let mut bob = server.connect(&victim.token).await;
    bob.join(&lobby, None).await;
    let bob_addr = bob.local_addr();
    assert_eq!(tcp_state(server.addr, bob_addr), Some(TCP_ESTABLISHED));

    let big = "x".repeat(4_900);
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut sent = 0;
    while tcp_state(server.addr, bob_addr) == Some(TCP_ESTABLISHED) {
        assert!(Instant::now() < deadline, "bob's connection is still open after {sent} messages he did not read");
        let batch: Vec<_> = (0..8)
            .map(|_| {
                let url = server.url(&format!("/api/conversations/{lobby}/messages"));
                let (token, body) =
                    (writer.token.clone(), serde_json::json!({"content": big, "client_id": client_id()}));
                tokio::spawn(async move {
                    reqwest::Client::new().post(url).bearer_auth(token).json(&body).send().await.map(|r| r.status())
                })
            })
            .collect();
        for t in batch {
            assert_eq!(within("a post", t).await.unwrap().unwrap(), StatusCode::OK);
            sent += 1;
        }
    }
    // The server let go of it; reading what was buffered ends in a close, never a hang.
    within("the end of bob's stream", async { while let Some(Ok(_)) = bob.recv_unbounded().await {} }).await;
}

#[tokio::test]
async fn a_silent_socket_is_closed() {
    let server = TestServer::start_with(|c| c.heartbeat_ms = 200).await;
    let alice = server.sign_in("alice", PASSWORD).await;
    let mut quiet = server.connect(&alice.token).await;
    let t0 = Instant::now();
    let (code, reason) = quiet.expect_close().await;
    assert_eq!(code, 1008, "{reason}");
    let limit = persona_chat_server::ws::idle_limit(200);
    assert!(
        t0.elapsed() + Duration::from_millis(100) >= limit,
        "closed after {:?}, before the limit {limit:?}",
        t0.elapsed()
    );

    // One that pings every heartbeat stays open past that limit.
    let mut talker = server.connect(&alice.token).await;
    let until = Instant::now() + limit + Duration::from_millis(500);
    while Instant::now() < until {
        talker.send(&ClientFrame::Ping { ts: 1.0 }).await;
        assert!(matches!(talker.next_frame().await, ServerFrame::Pong { .. }));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn silent_http_connections_are_closed_after_the_header_timeout_and_connections_are_capped() {
    let server = TestServer::start_with(|c| {
        c.header_timeout_ms = 300;
        c.max_connections_per_address = 4;
    })
    .await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let t0 = Instant::now();
    // Nothing sent: the server closes it (EOF, or an error answer then EOF).
    within("the idle connection to close", async { while idle.read(&mut buf).await.unwrap_or(0) > 0 {} }).await;
    assert!(t0.elapsed() < Duration::from_secs(5));

    // Half a request's headers, then nothing: closed too.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    within("the slow connection to close", async { while slow.read(&mut buf).await.unwrap_or(0) > 0 {} }).await;

    // Four open connections from one address; the fifth is closed at once.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let mut fifth = TcpStream::connect(server.addr).await.unwrap();
    let n = within("the fifth connection to close", fifth.read(&mut buf)).await.unwrap_or(0);
    assert_eq!(n, 0, "the fifth connection was closed without an answer");
    drop(held);
    // Room again once they are gone.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(r) = http.get(server.url("/healthz")).send().await {
            assert!(r.status().is_success());
            break;
        }
        assert!(Instant::now() < deadline, "no connection accepted after the others closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- 6. personas can be starved ----

async fn persona_named(server: &TestServer, token: &str, name: &str) -> Persona {
    let list: Vec<Persona> = json(server.get(token, "/api/personas").await).await;
    list.into_iter().find(|p| p.name == name).expect("the persona exists")
}

async fn direct_with(server: &TestServer, token: &str, persona_id: &str) -> String {
    let r = server.post(token, "/api/conversations", &serde_json::json!({"persona_id": persona_id})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let c: ConversationSummary = json(r).await;
    c.id
}

#[tokio::test]
async fn a_persona_answers_a_fourth_user_while_three_others_flood_it() {
    // Replies take a while (about 40 pieces at 10 ms), as they would with a real model.
    let server = TestServer::start_with(|c| c.persona_pace_ms = 10).await;
    let mut flooders = Vec::new();
    for name in ["f1", "f2", "f3"] {
        let s = server.sign_in(name, PASSWORD).await;
        let ada = persona_named(&server, &s.token, "Ada").await;
        let conversation = direct_with(&server, &s.token, &ada.id).await;
        flooders.push((s, conversation));
    }
    let dave = server.sign_in("dave", PASSWORD).await;
    let ada = persona_named(&server, &dave.token, "Ada").await;
    let mine = direct_with(&server, &dave.token, &ada.id).await;
    let mut f1_socket = server.connect(&flooders[0].0.token).await;

    // Each flooder sends at its full rate (10 a second, bursts of 20) for 3 s.
    let stop = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for (s, conversation) in &flooders {
        let url = server.url(&format!("/api/conversations/{conversation}/messages"));
        let token = s.token.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            while Instant::now() < stop {
                let body = serde_json::json!({"content": "answer me!", "client_id": client_id()});
                let r = http.post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
                if r.status() == StatusCode::TOO_MANY_REQUESTS {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut dave_socket = server.connect(&dave.token).await;
    dave_socket.join(&mine, None).await;
    let t0 = Instant::now();
    dave_socket.send_message(&mine, "hello Ada, one question", &client_id()).await;
    within("Ada's reply to dave", async {
        loop {
            if let ServerFrame::StreamEnd { message, .. } = dave_socket.next_frame().await {
                assert_eq!(message.sender_id, ada.id);
                break;
            }
        }
    })
    .await;
    let waited = t0.elapsed();
    // A flooder is told, in the conversation, that some of its messages get no reply.
    let told = within("a skipped-reply notice to a flooder", async {
        loop {
            if let ServerFrame::Error { message, reference, .. } = f1_socket.next_frame().await {
                if reference.as_deref() == Some(flooders[0].1.as_str()) {
                    return message;
                }
            }
        }
    })
    .await;
    assert!(told.contains("Ada"), "{told}");
    for t in tasks {
        t.await.unwrap();
    }
    assert!(waited < Duration::from_secs(6), "dave waited {waited:?} for his reply");
}

// ---- 2. sign-out is local only ----

/// `POST /api/session/refresh` with a body and no `Authorization`.
async fn refresh_with(server: &TestServer, refresh_token: &str) -> reqwest::Response {
    within(
        "POST /api/session/refresh",
        reqwest::Client::new()
            .post(server.url("/api/session/refresh"))
            .json(&serde_json::json!({ "refresh_token": refresh_token }))
            .send(),
    )
    .await
    .expect("the refresh is answered")
}

#[tokio::test]
async fn a_refresh_token_outlives_its_access_token_but_not_its_session() {
    let server = TestServer::start_with(|c| c.token_ttl_secs = 1).await;
    let a = server.sign_in("alice", PASSWORD).await;
    assert!(!a.refresh_token.is_empty(), "a sign-in answers a refresh token");
    // The access token expires (as in a computer that slept)...
    let t0 = Instant::now();
    while server.get(&a.token, "/api/conversations").await.status() != StatusCode::UNAUTHORIZED {
        assert!(t0.elapsed() < Duration::from_secs(10), "a 1-second token still works after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = server.post(&a.token, "/api/session/refresh", &serde_json::json!({})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "an expired token alone cannot refresh");
    // ...and the refresh token still trades for a fresh one of the same session.
    let r = refresh_with(&server, &a.refresh_token).await;
    assert_eq!(r.status(), StatusCode::OK);
    let fresh: SessionResponse = json(r).await;
    assert_eq!(fresh.user, a.user);
    assert_eq!(server.get(&fresh.token, "/api/conversations").await.status(), StatusCode::OK, "the fresh token works");
    // Neither an access token nor a tampered refresh token passes for a refresh token.
    expect_api_error(refresh_with(&server, &fresh.token).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let (payload, sig) = a.refresh_token.split_once('.').expect("payload.signature");
    let tampered = format!("{payload}x.{sig}");
    expect_api_error(refresh_with(&server, &tampered).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
    // Signed out: the refresh token is refused too.
    let again = refresh_with(&server, &a.refresh_token).await;
    let again: SessionResponse = json(again).await;
    assert_eq!(server.delete(&again.token, "/api/session").await.status(), StatusCode::NO_CONTENT);
    expect_api_error(refresh_with(&server, &a.refresh_token).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn a_revoked_token_is_refused_on_rest_socket_and_poll_and_its_socket_closes_with_4001() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let other = server.sign_in("alice", PASSWORD).await; // a second session of hers
    let lobby = server.lobby(&a.token).await;
    let mut socket = server.connect(&a.token).await;
    socket.join(&lobby, None).await;
    let mut other_socket = server.connect(&other.token).await;
    let from = cursor(&server, &a.token).await;
    let url = server.url(&format!("/api/events?after={from}&timeout_ms=20000"));
    let token = a.token.clone();
    let open_poll =
        tokio::spawn(
            async move { reqwest::Client::new().get(url).bearer_auth(token).send().await.map(|r| r.status()) },
        );
    tokio::time::sleep(Duration::from_millis(100)).await; // let the poll begin

    // Refresh gives a new token for the same session.
    let r = server.post(&a.token, "/api/session/refresh", &serde_json::json!({})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let refreshed: SessionResponse = json(r).await;
    assert_eq!(refreshed.user, a.user);
    assert!(refreshed.expires_at >= a.expires_at);

    let t0 = Instant::now();
    let r = server.delete(&a.token, "/api/session").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (code, reason) = socket.expect_close().await;
    assert_eq!((code, reason.as_str()), (CLOSE_SIGNED_OUT, "signed out"));
    let status = within("the open poll to end", open_poll).await.unwrap().unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the open long poll ends with 401");
    assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
    for token in [&a.token, &refreshed.token] {
        expect_api_error(server.get(token, "/api/conversations").await, StatusCode::UNAUTHORIZED, "unauthorized").await;
        expect_api_error(poll(&server, token, from, 0).await, StatusCode::UNAUTHORIZED, "unauthorized").await;
        assert!(server.connect_raw(Some(token)).await.is_err(), "the upgrade is refused");
        let r = server.post(token, "/api/session/refresh", &serde_json::json!({})).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "a revoked session cannot be refreshed");
    }
    // Her other session is untouched...
    assert_eq!(server.get(&other.token, "/api/conversations").await.status(), StatusCode::OK);
    other_socket.send(&ClientFrame::Ping { ts: 1.0 }).await;
    assert!(matches!(other_socket.next_of("pong").await, ServerFrame::Pong { .. }));
    // ...until she signs out everywhere.
    let third = server.sign_in("alice", PASSWORD).await;
    assert_eq!(server.delete(&third.token, "/api/sessions").await.status(), StatusCode::NO_CONTENT);
    let (code, _) = within("the other socket's close", async {
        loop {
            match other_socket.recv_raw().await {
                Some(Ok(WsMessage::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string()),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(code, CLOSE_SIGNED_OUT);
    for token in [&other.token, &third.token] {
        assert_eq!(server.get(token, "/api/conversations").await.status(), StatusCode::UNAUTHORIZED);
    }
    // Signing in again works, and revocations survive a restart.
    let again = server.sign_in("alice", PASSWORD).await;
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    assert_eq!(server.get(&other.token, "/api/conversations").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(server.get(&again.token, "/api/conversations").await.status(), StatusCode::OK);
}

// ---- 3. sign-up apart from sign-in ----

#[tokio::test]
async fn sign_up_and_sign_in_rules() {
    let server = TestServer::start_with(|c| c.signups_per_address_per_hour = 4).await;
    // An unknown name is not registered by signing in, and is told apart from nothing.
    let unknown =
        expect_api_error(server.post_session("alice", PASSWORD).await, StatusCode::UNAUTHORIZED, "invalid_credentials")
            .await;
    assert_eq!(unknown.message, "wrong username or password");
    let r = server.post_users("alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let wrong = expect_api_error(
        server.post_session("alice", "not her password").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_eq!(wrong.message, unknown.message, "one answer for an unknown name and a wrong password");
    // Names equal after NFKC + case folding, or looking alike, are taken.
    for confusable in ["ALICE", "\u{430}lice", "ａｌｉｃｅ", "Alicé"] {
        let e = expect_api_error(server.post_users(confusable, PASSWORD).await, StatusCode::CONFLICT, "username_taken")
            .await;
        assert!(e.message.contains("taken"), "{}", e.message);
    }
    // Signing in is by the normalized name.
    assert_eq!(server.post_session("ＡＬＩＣＥ", PASSWORD).await.status(), StatusCode::OK);
    for short in ["abcd", "1234567", "        "] {
        expect_api_error(server.post_users("bob", short).await, StatusCode::BAD_REQUEST, "invalid_field").await;
    }
    // Sign-ups per address: 4 an hour here (alice was the first).
    for name in ["bob", "carol", "dave"] {
        assert_eq!(server.post_users(name, PASSWORD).await.status(), StatusCode::CREATED);
    }
    let r = server.post_users("erin", PASSWORD).await;
    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    expect_api_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert!(retry.is_some_and(|s| s >= 1), "Retry-After: {retry:?}");
    // Failed sign-ins of one name: 5 free, then exponential waits.
    for _ in 0..5 {
        expect_api_error(
            server.post_session("bob", "wrong password").await,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        )
        .await;
    }
    expect_api_error(
        server.post_session("bob", "wrong password").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let r = server.post_session("bob", PASSWORD).await;
    assert!(r.headers().contains_key("retry-after"));
    expect_api_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(server.post_session("carol", PASSWORD).await.status(), StatusCode::OK, "other names are not held up");
}

// ---- 8. too much is visible ----

#[tokio::test]
async fn user_search_with_an_empty_q_is_refused_and_results_are_paged() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    for name in ["bob1", "bob2", "bob3"] {
        server.sign_in(name, PASSWORD).await;
    }
    for q in ["", "b", "%20"] {
        expect_api_error(
            server.get(&a.token, &format!("/api/users?q={q}")).await,
            StatusCode::BAD_REQUEST,
            "invalid_field",
        )
        .await;
    }
    expect_api_error(server.get(&a.token, "/api/users").await, StatusCode::BAD_REQUEST, "invalid_field").await;
    let page = |offset| {
        let server = &server;
        let token = a.token.clone();
        async move {
            let users: Vec<persona_chat_protocol::User> =
                json(server.get(&token, &format!("/api/users?q=bo&limit=2&offset={offset}")).await).await;
            users.into_iter().map(|u| u.username).collect::<Vec<_>>()
        }
    };
    assert_eq!(page(0).await, vec!["bob1", "bob2"]);
    assert_eq!(page(2).await, vec!["bob3"]);
}

/// A non-loopback address of this machine, if it has one (the source address of the default
/// route; no packet is sent).
fn own_non_loopback_ip() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("10.255.255.254:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn metrics_are_refused_from_a_non_loopback_peer_unless_it_has_the_token() {
    let ip = own_non_loopback_ip();
    let server = TestServer::start_with(|c| {
        if let Some(ip) = ip {
            c.addr = SocketAddr::new(ip, 0);
        }
        c.metrics_token = Some("metrics-secret".into());
    })
    .await;
    let http = reqwest::Client::new();
    let url = server.url("/metrics");
    match ip {
        Some(ip) => {
            println!("non-loopback peer: {ip}");
            let r = within("GET /metrics", http.get(&url).send()).await.unwrap();
            expect_api_error(r, StatusCode::FORBIDDEN, "unauthorized").await;
            let r = within("GET /metrics", http.get(&url).bearer_auth("wrong").send()).await.unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN);
            let r = within("GET /metrics", http.get(&url).bearer_auth("metrics-secret").send()).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert!(r.text().await.unwrap().contains("persona_chat_sockets_open"));
        }
        None => {
            println!("this machine has no non-loopback address: only the loopback rule is checked");
            let r = within("GET /metrics", http.get(&url).send()).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
    }
}

#[tokio::test]
async fn the_origin_is_checked_against_the_public_origins_not_the_host_header() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let http = reqwest::Client::new();
    // An attacker's page whose request carries its own Host: refused all the same.
    let r = within(
        "a cross-origin request",
        http.get(server.url("/api/conversations"))
            .bearer_auth(&a.token)
            .header("Origin", "http://evil.example")
            .header("Host", "evil.example")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let own = format!("http://{}", server.addr);
    let r = within(
        "a same-origin request",
        http.get(server.url("/api/conversations")).bearer_auth(&a.token).header("Origin", own).send(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_app_gets_security_headers_with_a_csp_that_allows_its_inline_loader() {
    let server = TestServer::start_with(|c| c.allowed_origins = vec!["https://app.example".into()]).await;
    let dist = server.data_dir().join("no-static");
    std::fs::create_dir_all(&dist).unwrap();
    let loader = "import init from '/app.js';init('/app_bg.wasm');";
    std::fs::write(
        dist.join("index.html"),
        format!("<html><head><script type=\"module\">{loader}</script></head><body></body></html>"),
    )
    .unwrap();
    let r = within("GET /", reqwest::get(server.url("/login"))).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    let csp = h["content-security-policy"].to_str().unwrap().to_owned();
    for part in [
        "default-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "img-src 'self' data:",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "object-src 'none'",
        "https://app.example wss://app.example",
    ] {
        assert!(csp.contains(part), "{part:?} in {csp}");
    }
    use base64::Engine;
    use sha2::Digest;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(loader.as_bytes()));
    assert!(csp.contains(&format!("'sha256-{hash}'")), "the inline loader is allowed by its hash: {csp}");
    assert!(!csp.contains("unsafe-inline"));
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        a.token, server.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    within("the upgrade response", async {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
    })
    .await;
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    // A masked text frame whose payload is not UTF-8.
    let payload = [0xff, 0xfe, 0x80, 0x41];
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame).await.unwrap();
    // Read frames until the close: its code.
    let code = within("the close frame", async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the connection ended without a close frame");
            buf.extend_from_slice(&chunk[..n]);
            // Walk the unmasked server frames (short and 16-bit lengths suffice here).
            let mut at = 0;
            while at + 2 <= buf.len() {
                let op = buf[at] & 0x0f;
                let (len, head) = match buf[at + 1] & 0x7f {
                    126 if at + 4 <= buf.len() => (u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize, 4),
                    126 => break,
                    127 => panic!("no frame this large is expected"),
                    n => (n as usize, 2),
                };
                if at + head + len > buf.len() {
                    break;
                }
                if op == 0x8 {
                    return u16::from_be_bytes([buf[at + head], buf[at + head + 1]]);
                }
                at += head + len;
            }
        }
    })
    .await;
    assert_eq!(code, 1007);
}

// ---- 7. rooms are unlimited ----

#[tokio::test]
async fn room_creation_and_adding_people_are_limited() {
    let server = TestServer::start_with(|c| {
        c.rooms_per_hour = 3;
        c.max_rooms_per_user = 4;
        c.member_adds_per_hour = 2;
    })
    .await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let room = |title: &str| serde_json::json!({"title": title, "member_ids": [b.user.id]});
    let mut first = None;
    for i in 0..3 {
        let r = server.post(&a.token, "/api/conversations", &room(&format!("room {i}"))).await;
        assert_eq!(r.status(), StatusCode::OK);
        let c: ConversationSummary = json(r).await;
        first.get_or_insert(c.id);
    }
    let r = server.post(&a.token, "/api/conversations", &room("one too many")).await;
    assert!(r.headers().contains_key("retry-after"));
    expect_api_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Bob's list shows the three rooms and the Lobby: nothing half-made.
    assert_eq!(server.conversations(&b.token).await.len(), 4);
    let c = server.sign_in("carol", PASSWORD).await;
    let path = format!("/api/conversations/{}/members", first.unwrap());
    for _ in 0..2 {
        assert_eq!(
            server.post(&a.token, &path, &serde_json::json!({"user_ids": [c.user.id]})).await.status(),
            StatusCode::OK
        );
    }
    let r = server.post(&a.token, &path, &serde_json::json!({"user_ids": [c.user.id]})).await;
    expect_api_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[tokio::test]
async fn long_polls_per_user_are_limited() {
    let server = TestServer::start_with(|c| c.max_polls_per_user = 2).await;
    let a = server.sign_in("alice", PASSWORD).await;
    let from = cursor(&server, &a.token).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let url = server.url(&format!("/api/events?after={from}&timeout_ms=3000"));
        let token = a.token.clone();
        open.push(tokio::spawn(async move {
            reqwest::Client::new().get(url).bearer_auth(token).send().await.map(|r| r.status())
        }));
    }
    // The third waits for one of those to end: refused while they are open.
    let deadline = Instant::now() + WAIT;
    loop {
        let r = poll(&server, &a.token, from, 0).await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert!(Instant::now() < deadline, "a third long poll was never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in open {
        assert_eq!(within("an open poll", t).await.unwrap().unwrap(), StatusCode::OK);
    }
    assert_eq!(poll(&server, &a.token, from, 0).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn frame_floods_close_the_socket_with_1008() {
    let server = TestServer::start_with(|c| c.socket_frames_per_sec = 5.0).await;
    let a = server.sign_in("alice", PASSWORD).await;
    let mut s = server.connect(&a.token).await;
    let ping = ClientFrame::Ping { ts: 1.0 }.to_json();
    for _ in 0..80 {
        if s.try_send_text(ping.clone()).await.is_err() {
            break;
        }
    }
    let (code, reason) = within("the close", async {
        loop {
            match s.recv_unbounded().await {
                Some(Ok(WsMessage::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string()),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(code, 1008);
    assert!(reason.contains("too many frames"), "{reason}");
}

#[tokio::test]
async fn a_reconnect_loop_is_refused_before_it_floods_presence() {
    let server = TestServer::start_with(|c| c.socket_opens_per_minute = 3).await;
    let a = server.sign_in("alice", PASSWORD).await;
    for _ in 0..3 {
        server.connect(&a.token).await.close().await;
    }
    let refused = server.connect_raw(Some(&a.token)).await.err().expect("the fourth upgrade in a minute is refused");
    match refused {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
    let b = server.sign_in("bob", PASSWORD).await;
    server.connect(&b.token).await; // others are not held up
}
