//! Recovery paths with the server's default limits: a client resending what it already sent
//! (lost acks, a restart) gets the original acks, rate limit or not, and ends up with every
//! message stored exactly once.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;
use persona_chat_protocol::{Ack, ServerFrame};
use reqwest::StatusCode;

const PASSWORD: &str = "recovery password";

/// What the server said to one send.
#[derive(Debug)]
enum Outcome {
    Acked(Ack),
    RateLimited,
}

/// Reads frames until every client_id of `sent` has its ack or its refusal (other frames,
/// such as `conversation_update`, are skipped). Any other refusal fails the test.
async fn outcomes(ws: &mut Client, sent: &[String]) -> HashMap<String, Outcome> {
    let wanted: HashSet<&String> = sent.iter().collect();
    let mut out = HashMap::new();
    while out.len() < sent.len() {
        match ws.next_frame().await {
            ServerFrame::MessageAck(ack) => {
                assert!(wanted.contains(&ack.client_id), "an ack of something not sent now: {ack:?}");
                assert!(out.insert(ack.client_id.clone(), Outcome::Acked(ack)).is_none(), "one answer per send");
            }
            ServerFrame::Error { code, reference, message, .. } => {
                assert_eq!(code.as_str(), "rate_limited", "the only refusal expected here ({message})");
                let reference = reference.expect("a refusal names the client_id");
                assert!(wanted.contains(&reference));
                assert!(out.insert(reference, Outcome::RateLimited).is_none(), "one answer per send");
            }
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn a_resend_of_a_stored_message_gets_its_original_ack_even_when_rate_limited() {
    let server = TestServer::start().await; // the default limits: 10 per second, bursts of 20
    let a = server.sign_in("rita", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    let first_id = client_id();
    let first = server.post_message(&a.token, &lobby, "the first", &first_id).await;
    // Use up the burst until the server refuses.
    let mut refused = false;
    for i in 0..40 {
        let resp = server.post_message_raw(&a.token, &lobby, &format!("filler {i}"), &client_id()).await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = true;
            break;
        }
        assert_eq!(resp.status(), StatusCode::OK);
    }
    assert!(refused, "the default limit refuses a burst of 41 new messages");
    // The resend of the stored one: its original ack, over HTTP and over the socket.
    let again = server.post_message(&a.token, &lobby, "the first", &first_id).await;
    assert_eq!(again, first, "the original ack");
    let mut ws = server.connect(&a.token).await;
    ws.send_message(&lobby, "the first", &first_id).await;
    let answer = outcomes(&mut ws, std::slice::from_ref(&first_id)).await;
    match &answer[&first_id] {
        Outcome::Acked(ack) => assert_eq!(ack, &first),
        other => panic!("the resend of a stored message was refused: {other:?}"),
    }
    // A new message is still limited: the dedupe did not open a hole in the limit.
    let resp = server.post_message_raw(&a.token, &lobby, "new one", &client_id()).await;
    expect_api_error(resp, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[tokio::test]
async fn with_default_limits_35_pending_messages_across_a_restart_are_each_stored_once_and_acked() {
    let server = TestServer::start().await;
    let session = server.sign_in("rita", PASSWORD).await;
    let lobby = server.lobby(&session.token).await;
    let ids: Vec<String> = (0..35).map(|_| client_id()).collect();
    let content = |i: usize| format!("pending {i:02}");

    // Before the restart: all 35 go out at once; the burst is stored, the rest refused.
    let mut ws = server.connect(&session.token).await;
    for (i, id) in ids.iter().enumerate() {
        ws.send_message(&lobby, &content(i), id).await;
    }
    let before = outcomes(&mut ws, &ids).await;
    let mut acks: HashMap<String, Ack> = HashMap::new();
    for (id, o) in before {
        if let Outcome::Acked(ack) = o {
            acks.insert(id, ack);
        }
    }
    assert!(acks.len() >= 20 && acks.len() < 35, "the burst of 20 (and what refilled) is stored: {}", acks.len());
    let dir = server.stop().await;

    // The server comes back; the client lost every ack (say the tab was reloaded) and resends
    // its whole outbox, twice in a row (a second reconnect right after the first): by then
    // the bucket is empty, and the already stored messages must still get their acks.
    let server = TestServer::start_in(dir, |_| {}).await;
    let session = server.sign_in("rita", PASSWORD).await;
    let mut ws = server.connect(&session.token).await;
    let mut outstanding: Vec<usize> = (0..35).collect();
    let mut limited_stored = Vec::new();
    for round in 0.. {
        assert!(round < 20, "still not acked after 20 rounds: {outstanding:?}");
        let resend: Vec<usize> = if round < 2 { (0..35).collect() } else { outstanding.clone() };
        let sent: Vec<String> = resend.iter().map(|&i| ids[i].clone()).collect();
        for &i in &resend {
            ws.send_message(&lobby, &content(i), &ids[i]).await;
        }
        let mut any_limited = false;
        for (id, o) in outcomes(&mut ws, &sent).await {
            match o {
                Outcome::Acked(ack) => {
                    if let Some(original) = acks.get(&id) {
                        assert_eq!(&ack, original, "a resend gets the original ack");
                    }
                    acks.insert(id, ack);
                }
                Outcome::RateLimited => {
                    any_limited = true;
                    if acks.contains_key(&id) {
                        limited_stored.push(id);
                    }
                }
            }
        }
        outstanding.retain(|&i| !acks.contains_key(&ids[i]));
        if outstanding.is_empty() && round >= 1 {
            break;
        }
        if any_limited {
            // The client's pacing after a refusal (the outbox backs off from 2 s); the
            // default rate refills 10 a second.
            tokio::time::sleep(Duration::from_millis(1_000)).await;
        }
    }
    assert!(limited_stored.is_empty(), "resends of stored messages were refused as rate limited: {limited_stored:?}");
    assert_eq!(acks.len(), 35);

    // Stored exactly once each, in the order sent, under the acked seqs.
    let mut mine = Vec::new();
    let mut after = 0;
    loop {
        let page = server.messages_after(&session.token, &lobby, after).await;
        after = page.messages.last().map_or(after, |m| m.seq);
        mine.extend(page.messages.into_iter().filter(|m| m.sender_id == session.user.id));
        if !page.has_more {
            break;
        }
    }
    let contents: Vec<&str> = mine.iter().map(|m| m.content.as_str()).collect();
    let expected: Vec<String> = (0..35).map(content).collect();
    let mut sorted = contents.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "each message once");
    for m in &mine {
        let id = m.client_id.as_ref().expect("stored with its client_id");
        assert_eq!(acks[id].seq, m.seq, "the ack names the stored seq");
    }
}

/// The conversation a frame is about, if any.
fn conversation_of(frame: &ServerFrame) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&frame.to_json()).expect("a frame is JSON");
    v.get("conversation_id").and_then(|c| c.as_str()).map(str::to_owned)
}

#[tokio::test]
async fn a_member_who_left_gets_nothing_more_of_the_conversation_on_socket_or_poll() {
    let server = TestServer::start().await;
    let a = server.sign_in("alice", PASSWORD).await;
    let c = server.sign_in("carol", PASSWORD).await;
    let resp = server
        .post(&a.token, "/api/conversations", &serde_json::json!({"title": "Secrets", "member_ids": [c.user.id]}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let room: persona_chat_protocol::http::ConversationSummary = json(resp).await;
    // Carol is joined on a socket and holds a poll cursor, both from before she leaves.
    let mut sc = server.connect(&c.token).await;
    sc.join(&room.id, None).await;
    let cursor: persona_chat_protocol::http::EventsResponse = json(server.get(&c.token, "/api/events").await).await;
    server.post_message(&a.token, &room.id, "before she leaves", &client_id()).await;
    let seen = new_message_in(sc.next_of("new_message").await, &room.id);
    assert_eq!(seen.content, "before she leaves", "the socket was live in the room");

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
    // What follows in the room: a message, typing.
    server.post_message(&a.token, &room.id, "after she left", &client_id()).await;
    let typing = server
        .post(&a.token, &format!("/api/conversations/{}/typing", room.id), &serde_json::json!({"is_typing": true}))
        .await;
    assert_eq!(typing.status(), StatusCode::NO_CONTENT);

    // The socket: frames up to her own leave notice, then nothing of the room.
    let mut after_leave = false;
    loop {
        let frame = match tokio::time::timeout(QUIET, sc.next_frame()).await {
            Ok(frame) => frame,
            Err(_) => break,
        };
        match &frame {
            ServerFrame::UserLeft { user_id, .. } if *user_id == c.user.id => after_leave = true,
            ServerFrame::ConversationLeft { .. } => after_leave = true,
            // Her own leave notice for the list (issue 11), in every tab.
            ServerFrame::ConversationRemoved { reason: persona_chat_protocol::RemovalReason::Left, .. } => {
                after_leave = true
            }
            // The list update of the message from before the leave.
            ServerFrame::ConversationUpdate { last_message, .. } if last_message.content == "before she leaves" => {}
            f if conversation_of(f).as_deref() == Some(room.id.as_str()) => {
                panic!("carol left but her socket still gets {f:?} (leave notice seen: {after_leave})")
            }
            _ => {}
        }
    }
    // The poll from her old cursor: nothing of the room after the leave.
    let poll: persona_chat_protocol::http::EventsResponse =
        json(server.get(&c.token, &format!("/api/events?after={}&timeout_ms=300", cursor.next)).await).await;
    let mut left = false;
    for e in &poll.events {
        match &e.frame {
            ServerFrame::UserLeft { user_id, .. } if *user_id == c.user.id => left = true,
            ServerFrame::ConversationRemoved { reason: persona_chat_protocol::RemovalReason::Left, .. } => left = true,
            ServerFrame::NewMessage { message, .. } if message.content == "before she leaves" => {}
            ServerFrame::ConversationUpdate { last_message, .. } if last_message.content == "before she leaves" => {}
            f if conversation_of(f).as_deref() == Some(room.id.as_str()) => {
                panic!("carol left but her poll still gets {f:?} (leave seen: {left}): {:?}", poll.events)
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_socket_that_stops_reading_is_kicked_and_catches_up_with_every_message_once() {
    let server = TestServer::start_with(|c| {
        c.rate_limit_per_sec = 1_000_000.0;
        c.rate_limit_burst = 1_000_000.0;
    })
    .await;
    let a = server.sign_in("alice", PASSWORD).await;
    let b = server.sign_in("bob", PASSWORD).await;
    let lobby = server.lobby(&a.token).await;
    // Bob joins, then reads nothing while alice writes big messages: the kernel buffers fill,
    // then his queue (SOCKET_QUEUE frames), and the server kicks him.
    let mut slow = server.connect(&b.token).await;
    let from = slow.join(&lobby, None).await;
    let body = "x".repeat(4_900);
    let total = 1_500;
    let posters: Vec<_> = (0..4)
        .map(|p| {
            let (url, token, body) =
                (server.url(&format!("/api/conversations/{lobby}/messages")), a.token.clone(), body.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for i in (p..total).step_by(4) {
                    let resp = http
                        .post(&url)
                        .bearer_auth(&token)
                        .json(
                            &serde_json::json!({"content": format!("{i:04} {body}"), "client_id": format!("slow-{i}")}),
                        )
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), StatusCode::OK);
                }
            })
        })
        .collect();
    for p in posters {
        within("the writers", p).await.unwrap();
    }
    // Now bob reads: what was buffered, then the close (1008, too slow).
    let mut got: Vec<i64> = Vec::new();
    let close = within("the kick", async {
        loop {
            match slow.recv_raw().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                    if let Ok(Some(ServerFrame::NewMessage { message, conversation_id, .. })) = ServerFrame::parse(&t) {
                        if conversation_id == lobby {
                            got.push(message.seq);
                        }
                    }
                }
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                    return format!("close {:?}", frame.map(|f| u16::from(f.code)))
                }
                Some(Ok(_)) => {}
                // The server drops a socket it kicks (its queue is full: no room for a close frame).
                Some(Err(e)) => return format!("error {e}"),
                None => return "end of stream".to_owned(),
            }
        }
    })
    .await;
    assert!(got.len() < total, "kicked ({close}) before the end, after {} messages", got.len());
    eprintln!("kicked after {} of {total} messages: {close}", got.len());
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "what came before the kick came in order, none missing");
    // He reconnects and joins from the last seq he has: the rest, each once.
    let mut again = server.connect(&b.token).await;
    let after = got.last().copied().unwrap_or(from);
    let last = again.join(&lobby, Some(after)).await;
    assert_eq!(last, from + total as i64);
    while got.last().copied().unwrap_or(from) < last {
        let m = new_message_in(again.next_of("new_message").await, &lobby);
        got.push(m.seq);
    }
    let expected: Vec<i64> = (from + 1..=last).collect();
    assert_eq!(got, expected, "every message exactly once, in order");
}
