//! The persona runtime's recovery paths: a responder that fails midway and a server that
//! stops mid-stream store the partial reply, marked interrupted; a resent message gets no
//! second reply; a full queue is never dropped silently. The persona randomness is seeded
//! by the harness (the seed is printed: PERSONA_TEST_SEED replays it).

mod common;

use std::time::Duration;

use common::*;
use persona_chat_protocol::http::{ConversationSummary, Persona};
use persona_chat_protocol::{Message, PersonaState, ServerFrame};
use reqwest::StatusCode;

const PASSWORD: &str = "recovery password";

async fn persona_named(server: &TestServer, token: &str, name: &str) -> Persona {
    let list: Vec<Persona> = json(server.get(token, "/api/personas").await).await;
    list.into_iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no persona {name}"))
}

async fn direct_with(server: &TestServer, token: &str, persona_id: &str) -> ConversationSummary {
    let resp = server.post(token, "/api/conversations", &serde_json::json!({ "persona_id": persona_id })).await;
    assert_eq!(resp.status(), StatusCode::OK);
    json(resp).await
}

/// Reads one reply's frames (others skipped) until stream_end: the text of its deltas, the
/// flag and the stored message.
async fn one_reply(client: &mut Client) -> (String, bool, Message) {
    within("a whole streamed reply", async {
        let mut text = String::new();
        loop {
            match client.next_frame().await {
                ServerFrame::StreamDelta { offset, text: t, .. } => {
                    assert_eq!(offset as usize, text.chars().count(), "deltas in order, none missing");
                    text.push_str(&t);
                }
                ServerFrame::StreamEnd { interrupted, message, .. } => return (text, interrupted, message),
                _ => {}
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_responder_failing_midway_stores_the_partial_reply_marked_interrupted() {
    let pieces: Vec<String> = ["One", " two", " three"].map(String::from).to_vec();
    let url = fake_llm(pieces.clone(), Duration::from_millis(20), true).await;
    let server = TestServer::start_with(move |c| c.persona_llm_url = Some(url)).await;
    let alice = server.sign_in("alice", PASSWORD).await;
    let ada = persona_named(&server, &alice.token, "Ada").await;
    let direct = direct_with(&server, &alice.token, &ada.id).await;
    let mut a = server.connect(&alice.token).await;
    a.join(&direct.id, None).await;
    a.send_message(&direct.id, "Count for me", &client_id()).await;
    let (streamed, interrupted, message) = one_reply(&mut a).await;
    assert!(interrupted, "stream_end says interrupted");
    assert!(message.interrupted, "the stored message is marked interrupted");
    assert_eq!(message.content, streamed, "what was streamed is what is stored");
    assert!(
        !streamed.is_empty() && "One two three".starts_with(&streamed),
        "a prefix of what the model said: {streamed:?}"
    );
    // Not the built-in responder's text stored instead: the model's words, cut where it failed.
    let history = server.messages_after(&alice.token, &direct.id, 0).await.messages;
    let stored = history.iter().find(|m| m.id == message.id).expect("the reply is in the history");
    assert!(stored.interrupted, "the history says interrupted too");
    assert_eq!(stored.content, streamed);
}

#[tokio::test]
async fn a_server_stopping_mid_stream_stores_the_partial_reply_marked_interrupted() {
    // 300 words, 30 ms apart: still streaming when the server stops.
    let pieces: Vec<String> = (0..300).map(|i| format!("w{i} ")).collect();
    let full: String = pieces.concat();
    let url = fake_llm(pieces, Duration::from_millis(30), false).await;
    let server = TestServer::start_with(move |c| c.persona_llm_url = Some(url.clone())).await;
    let alice = server.sign_in("alice", PASSWORD).await;
    let ada = persona_named(&server, &alice.token, "Ada").await;
    let direct = direct_with(&server, &alice.token, &ada.id).await;
    let mut a = server.connect(&alice.token).await;
    a.join(&direct.id, None).await;
    a.send_message(&direct.id, "Talk for a long time", &client_id()).await;
    // Three deltas, then the server stops.
    let mut streamed = String::new();
    within("three deltas", async {
        let mut deltas = 0;
        while deltas < 3 {
            if let ServerFrame::StreamDelta { text, .. } = a.next_frame().await {
                streamed.push_str(&text);
                deltas += 1;
            }
        }
    })
    .await;
    let dir = server.stop().await;
    let server = TestServer::start_in(dir, |_| {}).await;
    let alice = server.sign_in("alice", PASSWORD).await;
    let history = server.messages_after(&alice.token, &direct.id, 0).await.messages;
    let reply = history.iter().find(|m| m.is_ai).expect("the partial reply was stored");
    assert!(reply.interrupted, "marked interrupted: {reply:?}");
    assert!(reply.content.starts_with(&streamed), "holds what was streamed: {:?} vs {streamed:?}", reply.content);
    assert!(
        full.starts_with(&reply.content) && reply.content.len() < full.len(),
        "partial: {} of {} chars",
        reply.content.len(),
        full.len()
    );
}

#[tokio::test]
async fn a_resent_message_does_not_get_a_second_reply() {
    let server = TestServer::start().await;
    let alice = server.sign_in("alice", PASSWORD).await;
    let ada = persona_named(&server, &alice.token, "Ada").await;
    let direct = direct_with(&server, &alice.token, &ada.id).await;
    let mut a = server.connect(&alice.token).await;
    a.join(&direct.id, None).await;
    let id = client_id();
    a.send_message(&direct.id, "Tell me about bridges", &id).await;
    let (_, interrupted, first) = one_reply(&mut a).await;
    assert!(!interrupted && !first.interrupted);
    within("Ada online again", async {
        loop {
            if let ServerFrame::PersonaStatus { status: PersonaState::Online, persona_id, .. } = a.next_frame().await {
                if persona_id == ada.id {
                    return;
                }
            }
        }
    })
    .await;
    // The same client_id again, over the socket and over HTTP: acks only, no new reply.
    a.send_message(&direct.id, "Tell me about bridges", &id).await;
    let ack = expect_frame!(a.next_frame().await, ServerFrame::MessageAck(ack) => ack);
    assert_eq!(ack.client_id, id);
    server.post_message(&alice.token, &direct.id, "Tell me about bridges", &id).await;
    a.expect_silence().await;
    let history = server.messages_after(&alice.token, &direct.id, 0).await.messages;
    assert_eq!(history.iter().filter(|m| m.is_ai).count(), 1, "one reply: {history:?}");
    assert_eq!(history.len(), 2);
}

#[tokio::test]
async fn a_full_persona_queue_says_so_instead_of_dropping_silently() {
    // Ada thinks for seconds before her first reply, so the queue fills behind it.
    let server = TestServer::start_with(|c| {
        c.persona_think_ms = 6_000;
        c.rate_limit_per_sec = 1_000.0;
        c.rate_limit_burst = 1_000.0;
    })
    .await;
    let alice = server.sign_in("alice", PASSWORD).await;
    let ada = persona_named(&server, &alice.token, "Ada").await;
    let direct = direct_with(&server, &alice.token, &ada.id).await;
    let mut a = server.connect(&alice.token).await;
    // One reply is being thought about, MAX_PENDING_PER_CONVERSATION wait: the rest are
    // refused out loud, about this conversation.
    let waiting = persona_chat_server::personas::runtime::MAX_PENDING_PER_CONVERSATION;
    let total = 1 + waiting + 4;
    for i in 0..total {
        a.send_message(&direct.id, &format!("question {i}"), &client_id()).await;
    }
    let (mut acks, mut told) = (0, 0);
    within("acks and the refusals", async {
        while acks < total || told < 4 {
            match a.next_frame().await {
                ServerFrame::MessageAck(_) => acks += 1,
                ServerFrame::Error { code, reference, message, .. } => {
                    assert_eq!(code.as_str(), "rate_limited");
                    assert_eq!(reference.as_deref(), Some(direct.id.as_str()), "about the conversation: {message}");
                    assert!(message.contains("Ada"), "names the persona: {message}");
                    told += 1;
                }
                _ => {}
            }
        }
    })
    .await;
    // 4 refused, or 5 if every trigger came before the first was taken: the counter says
    // which, and each refusal counted reaches alice.
    let text = within("metrics", reqwest::get(server.url("/metrics"))).await.unwrap().text().await.unwrap();
    let counted: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("persona_chat_persona_replies_skipped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no skipped counter in\n{text}"));
    assert!(counted == 4 || counted == 5, "{counted} refused");
    within("the last refusal", async {
        while told < counted {
            if let ServerFrame::Error { .. } = a.next_frame().await {
                told += 1;
            }
        }
    })
    .await;
    assert_eq!(told, counted);
}
