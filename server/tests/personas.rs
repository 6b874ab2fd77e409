//! The AI personas against a real server over real sockets: streamed replies stored like any
//! message, the status they show while working, stop_response, mentions in rooms, personas
//! disabled by configuration, and the OpenAI-compatible responder against a local test double
//! of such an endpoint.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::*;
use persona_chat_protocol::http::{ConversationSummary, Persona};
use persona_chat_protocol::{ClientFrame, ErrorCode, Message, PersonaState, ServerFrame};
use reqwest::StatusCode;

const PASSWORD: &str = "a good password";

async fn personas(server: &TestServer, token: &str) -> Vec<Persona> {
    let resp = server.get(token, "/api/personas").await;
    assert_eq!(resp.status(), StatusCode::OK, "GET /api/personas");
    json(resp).await
}

async fn persona_named(server: &TestServer, token: &str, name: &str) -> Persona {
    personas(server, token)
        .await
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("a persona named {name}"))
}

/// Opens (or finds) the user's direct conversation with a persona.
async fn direct_with(server: &TestServer, token: &str, persona_id: &str) -> ConversationSummary {
    let resp = server.post(token, "/api/conversations", &serde_json::json!({ "persona_id": persona_id })).await;
    assert_eq!(resp.status(), StatusCode::OK, "POST /api/conversations with a persona");
    json(resp).await
}

/// One streamed reply as a socket saw it.
#[derive(Debug)]
struct Reply {
    conversation_id: String,
    message_id: String,
    persona_id: String,
    deltas: Vec<(u64, String)>,
    /// The `new_message` of the stored reply, if it came before `stream_end`.
    new_message: Option<Message>,
    interrupted: bool,
    message: Message,
}

impl Reply {
    fn text(&self) -> String {
        self.deltas.iter().map(|(_, t)| t.as_str()).collect()
    }

    /// Everything the contract says of a finished stream.
    fn check(&self) {
        let mut offset = 0u64;
        for (at, text) in &self.deltas {
            assert_eq!(*at, offset, "each delta's offset counts the characters sent before it: {self:?}");
            assert!(!text.is_empty(), "no empty deltas");
            offset += text.chars().count() as u64;
        }
        assert_eq!(self.text(), self.message.content, "the deltas add up to the stored message");
        assert_eq!(self.message.id, self.message_id, "stored under the streamed id");
        assert!(self.message.is_ai, "a persona's message is marked is_ai");
        assert_eq!(self.message.sender_id, self.persona_id, "sent by the persona");
        assert!(self.message.seq > 0, "stored with its seq");
        assert_eq!(self.new_message.as_ref(), Some(&self.message), "new_message of the reply comes before stream_end");
    }
}

/// Reads frames until `n` streams have ended (streams of several personas may interleave);
/// other frames are skipped. The replies in the order they ended.
async fn read_replies(client: &mut Client, n: usize) -> Vec<Reply> {
    within(&format!("{n} streamed replies"), async {
        let mut open: HashMap<String, Reply> = HashMap::new();
        let mut stored: HashMap<String, Message> = HashMap::new();
        let mut done = Vec::new();
        while done.len() < n {
            match client.next_frame().await {
                ServerFrame::StreamStart { conversation_id, message_id, persona_id } => {
                    assert!(!open.contains_key(&message_id), "one stream_start per reply");
                    let placeholder = Message {
                        id: String::new(),
                        seq: 0,
                        client_id: None,
                        sender_id: String::new(),
                        sender_name: String::new(),
                        content: String::new(),
                        timestamp: String::new(),
                        is_ai: false,
                        interrupted: false,
                    };
                    open.insert(
                        message_id.clone(),
                        Reply {
                            conversation_id,
                            message_id,
                            persona_id,
                            deltas: Vec::new(),
                            new_message: None,
                            interrupted: false,
                            message: placeholder,
                        },
                    );
                }
                ServerFrame::StreamDelta { conversation_id, message_id, offset, text } => {
                    let reply = open.get_mut(&message_id).expect("a delta follows its stream_start");
                    assert_eq!(reply.conversation_id, conversation_id);
                    reply.deltas.push((offset, text));
                }
                ServerFrame::NewMessage { message, .. } if message.is_ai => {
                    assert!(open.contains_key(&message.id), "the stored reply comes while its stream is open");
                    stored.insert(message.id.clone(), message);
                }
                ServerFrame::StreamEnd { conversation_id, message_id, interrupted, message } => {
                    let mut reply = open.remove(&message_id).expect("stream_end follows its stream_start");
                    assert_eq!(reply.conversation_id, conversation_id);
                    reply.interrupted = interrupted;
                    reply.message = message;
                    reply.new_message = stored.remove(&message_id);
                    done.push(reply);
                }
                _ => {}
            }
        }
        assert!(open.is_empty(), "no stream left open: {open:?}");
        done
    })
    .await
}

/// The persona_status frames of one persona, skipping everything else, until `last` comes.
async fn statuses_until(client: &mut Client, persona_id: &str, last: PersonaState) -> Vec<PersonaState> {
    within("persona_status frames", async {
        let mut seen = Vec::new();
        loop {
            match client.next_frame().await {
                ServerFrame::PersonaStatus { persona_id: id, status, last_seen, .. } if id == persona_id => {
                    assert!(last_seen.is_some(), "persona_status carries last_seen");
                    seen.push(status);
                    if status == last {
                        return seen;
                    }
                }
                frame @ (ServerFrame::StreamStart { .. }
                | ServerFrame::StreamDelta { .. }
                | ServerFrame::StreamEnd { .. }) => {
                    panic!("stream frames reach only sockets joined to the conversation, got {frame:?}")
                }
                _ => {}
            }
        }
    })
    .await
}

fn error_code(frame: ServerFrame) -> ErrorCode {
    expect_frame!(frame, ServerFrame::Error { code, .. } => code)
}

#[tokio::test]
async fn a_direct_conversation_gets_a_streamed_reply_stored_like_any_message() {
    let server = TestServer::start().await;
    let alice = server.sign_in("alice", PASSWORD).await;
    let bob = server.sign_in("bob", PASSWORD).await;
    let all = personas(&server, &alice.token).await;
    assert!(all.len() >= 4, "at least four personas");
    for name in ["Ada", "Captain Reyes", "Mira", "Professor Bramble", "Juno"] {
        let p = all.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("{name} is seeded"));
        assert_eq!(p.status, PersonaState::Online, "{name} starts online");
        assert!(!p.tagline.is_empty());
    }
    let ada = persona_named(&server, &alice.token, "Ada").await;
    let direct = direct_with(&server, &alice.token, &ada.id).await;

    let mut a = server.connect(&alice.token).await;
    let mut b = server.connect(&bob.token).await; // not a member: sees the status only
    a.next_of("presence_update").await; // bob came online
    a.join(&direct.id, Some(0)).await;
    a.send_message(&direct.id, "What do you think about black holes?", &client_id()).await;
    let ack = expect_frame!(a.next_of("message_ack").await, ServerFrame::MessageAck(ack) => ack);

    let reply = read_replies(&mut a, 1).await.remove(0);
    reply.check();
    assert!(!reply.interrupted);
    assert_eq!(reply.persona_id, ada.id);
    assert_eq!(reply.message.sender_name, "Ada");
    assert_eq!(reply.message.seq, ack.seq + 1, "the reply takes the next seq");
    assert!(reply.deltas.len() >= 3, "streamed in pieces, not at once: {:?}", reply.deltas);
    assert!(reply.message.content.to_lowercase().contains("black holes"), "on topic: {}", reply.message.content);
    let words = reply.message.content.split_whitespace().count();
    assert!((20..=80).contains(&words), "a few sentences: {}", reply.message.content);
    assert_eq!(
        expect_frame!(a.next_of("persona_status").await, ServerFrame::PersonaStatus { status, .. } => status),
        PersonaState::Online,
        "after its reply the persona is online again"
    );

    // Another user saw the persona work: busy, then responding, then online.
    assert_eq!(
        statuses_until(&mut b, &ada.id, PersonaState::Online).await,
        vec![PersonaState::Busy, PersonaState::Responding, PersonaState::Online]
    );

    // The reply is an ordinary message: over HTTP, and on a socket that joins later.
    let page = server.messages_after(&alice.token, &direct.id, 0).await;
    assert_eq!(page.messages.len(), 2);
    assert_eq!(page.messages[1], reply.message);
    let mut again = server.connect(&alice.token).await;
    again.join(&direct.id, Some(ack.seq)).await;
    assert_eq!(new_message_in(again.next_frame().await, &direct.id), reply.message);
    let summary = server.conversations(&alice.token).await.into_iter().find(|c| c.id == direct.id).unwrap();
    assert_eq!(summary.last_message.map(|m| m.id), Some(reply.message_id.clone()));
    assert_eq!(summary.persona.map(|p| p.status), Some(PersonaState::Online));
}

#[tokio::test]
async fn messages_waiting_for_a_persona_are_answered_in_order_one_stream_at_a_time() {
    let server = TestServer::start_with(|c| c.persona_pace_ms = 40).await;
    let alice = server.sign_in("alice", PASSWORD).await;
    let bob = server.sign_in("bob", PASSWORD).await;
    let mira = persona_named(&server, &alice.token, "Mira").await;
    let direct = direct_with(&server, &alice.token, &mira.id).await;
    let mut a = server.connect(&alice.token).await;
    let mut b = server.connect(&bob.token).await;
    a.next_of("presence_update").await; // bob came online
    a.join(&direct.id, None).await;
    a.send_message(&direct.id, "The garden smells of rain", &client_id()).await;
    a.send_message(&direct.id, "And the cat is asleep on the windowsill", &client_id()).await;

    let replies = read_replies(&mut a, 2).await;
    for r in &replies {
        r.check();
    }
    // Both user messages were stored first (seq 1 and 2), then the replies in order.
    assert_eq!((replies[0].message.seq, replies[1].message.seq), (3, 4));
    assert!(replies[0].message.content.to_lowercase().contains("garden"), "{}", replies[0].message.content);
    assert!(replies[1].message.content.to_lowercase().contains("windowsill"), "{}", replies[1].message.content);
    // One at a time, and busy again while the second waited.
    assert_eq!(
        statuses_until(&mut b, &mira.id, PersonaState::Online).await,
        vec![
            PersonaState::Busy,
            PersonaState::Responding,
            PersonaState::Busy,
            PersonaState::Responding,
            PersonaState::Online
        ]
    );
}

#[tokio::test]
async fn http_lists_show_the_live_status() {
    // A slow thinker, so "busy" lasts long enough to be seen over HTTP.
    let server = TestServer::start_with(|c| c.persona_think_ms = 1500).await;
    let alice = server.sign_in("alice", PASSWORD).await;
    let bramble = persona_named(&server, &alice.token, "Professor Bramble").await;
    let direct = direct_with(&server, &alice.token, &bramble.id).await;
    let mut a = server.connect(&alice.token).await;
    server.post_message(&alice.token, &direct.id, "How do ferns reproduce?", &client_id()).await;
    assert_eq!(statuses_until(&mut a, &bramble.id, PersonaState::Busy).await, vec![PersonaState::Busy]);
    assert_eq!(persona_named(&server, &alice.token, "Professor Bramble").await.status, PersonaState::Busy);
    let listed = server.conversations(&alice.token).await.into_iter().find(|c| c.id == direct.id).unwrap();
    assert_eq!(listed.persona.map(|p| p.status), Some(PersonaState::Busy));
    statuses_until(&mut a, &bramble.id, PersonaState::Online).await;
    let now = persona_named(&server, &alice.token, "Professor Bramble").await;
    assert_eq!(now.status, PersonaState::Online);
    assert!(now.last_seen.is_some());
}

#[tokio::test]
async fn stop_response_interrupts_and_stores_what_was_streamed() {
    // A slow pace, so the reply is still streaming when the stop arrives.
    let server = TestServer::start_with(|c| c.persona_pace_ms = 150).await;
    let alice = server.sign_in("alice", PASSWORD).await;
    let bob = server.sign_in("bob", PASSWORD).await;
    let reyes = persona_named(&server, &alice.token, "Captain Reyes").await;
    let direct = direct_with(&server, &alice.token, &reyes.id).await;
    let mut a = server.connect(&alice.token).await;
    let mut b = server.connect(&bob.token).await;
    a.next_of("presence_update").await; // bob came online
    a.join(&direct.id, None).await;
    a.send_message(&direct.id, "Tell me about your longest flight", &client_id()).await;

    let (message_id, first) = within("the first delta", async {
        let mut message_id = None;
        loop {
            match a.next_frame().await {
                ServerFrame::StreamStart { message_id: id, .. } => message_id = Some(id),
                ServerFrame::StreamDelta { message_id: id, offset, text, .. } => {
                    assert_eq!(Some(&id), message_id.as_ref());
                    assert_eq!(offset, 0);
                    return (id, text);
                }
                _ => {}
            }
        }
    })
    .await;

    // Nobody outside the conversation can stop it; an unknown id is not found.
    b.send(&ClientFrame::StopResponse { conversation_id: direct.id.clone(), message_id: message_id.clone() }).await;
    assert_eq!(error_code(b.next_of("error").await), ErrorCode::NotMember);
    a.send(&ClientFrame::StopResponse { conversation_id: direct.id.clone(), message_id: "no-such-message".into() })
        .await;

    a.send(&ClientFrame::StopResponse { conversation_id: direct.id.clone(), message_id: message_id.clone() }).await;
    let mut streamed = first;
    let mut saw_error = false;
    let (interrupted, message) = within("the interrupted stream_end", async {
        loop {
            match a.next_frame().await {
                ServerFrame::StreamDelta { offset, text, .. } => {
                    assert_eq!(offset, streamed.chars().count() as u64);
                    streamed.push_str(&text);
                }
                ServerFrame::Error { code, .. } => {
                    assert_eq!(code, ErrorCode::NotFound, "the unknown id");
                    saw_error = true;
                }
                ServerFrame::StreamEnd { message_id: id, interrupted, message, .. } => {
                    assert_eq!(id, message_id);
                    return (interrupted, message);
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(saw_error, "stop_response with an unknown id is answered not_found");
    assert!(interrupted, "stream_end says interrupted");
    assert_eq!(message.content, streamed, "what was streamed is what is stored");
    assert!(message.content.split_whitespace().count() < 20, "cut short: {}", message.content);
    assert!(message.is_ai && message.id == message_id);
    let page = server.messages_after(&alice.token, &direct.id, 0).await;
    assert_eq!(page.messages.last(), Some(&message));
    assert_eq!(statuses_until(&mut b, &reyes.id, PersonaState::Online).await.last(), Some(&PersonaState::Online));

    // The stream is over: stopping it again finds nothing.
    a.send(&ClientFrame::StopResponse { conversation_id: direct.id.clone(), message_id }).await;
    assert_eq!(error_code(a.next_of("error").await), ErrorCode::NotFound);
}

#[tokio::test]
async fn personas_answer_mentions_and_persona_id_in_the_lobby() {
    let server = TestServer::start().await;
    let alice = server.sign_in("alice", PASSWORD).await;
    let bob = server.sign_in("bob", PASSWORD).await;
    let lobby = server.lobby(&alice.token).await;
    let reyes = persona_named(&server, &alice.token, "Captain Reyes").await;
    let juno = persona_named(&server, &alice.token, "Juno").await;
    let ada = persona_named(&server, &alice.token, "Ada").await;
    let mut a = server.connect(&alice.token).await;
    let mut b = server.connect(&bob.token).await;
    a.next_of("presence_update").await; // bob came online
    a.join(&lobby, None).await;
    b.join(&lobby, None).await;

    // A plain message: no persona answers.
    a.send_message(&lobby, "Hello everyone, nice weather today", &client_id()).await;
    new_message_in(b.next_of("new_message").await, &lobby);
    b.next_of("conversation_update").await;
    b.expect_silence().await;

    // A mention, in any case, of a persona that is not a member of the Lobby.
    a.send_message(&lobby, "@captain reyes which ship did you like best?", &client_id()).await;
    let reply = read_replies(&mut b, 1).await.remove(0);
    reply.check();
    assert_eq!((reply.persona_id.as_str(), reply.message.sender_name.as_str()), (reyes.id.as_str(), "Captain Reyes"));
    assert!(reply.message.content.to_lowercase().contains("ship"), "{}", reply.message.content);

    // persona_id on the send, without a mention.
    a.send(&ClientFrame::SendMessage {
        conversation_id: lobby.clone(),
        content: "Tell me a joke about penguins".into(),
        client_id: Some(client_id()),
        persona_id: Some(juno.id.clone()),
    })
    .await;
    let reply = read_replies(&mut b, 1).await.remove(0);
    reply.check();
    assert_eq!(reply.persona_id, juno.id);

    // Two personas mentioned: both answer.
    a.send_message(&lobby, "@Ada and @Juno: is zero even?", &client_id()).await;
    let replies = read_replies(&mut b, 2).await;
    let mut senders: Vec<&str> = replies.iter().map(|r| r.persona_id.as_str()).collect();
    senders.sort();
    let mut expected = vec![ada.id.as_str(), juno.id.as_str()];
    expected.sort();
    assert_eq!(senders, expected);
    for r in &replies {
        r.check();
    }

    // Answering did not make them members.
    let members: Vec<serde_json::Value> =
        json(server.get(&alice.token, &format!("/api/conversations/{lobby}/members")).await).await;
    assert!(members.iter().all(|m| m["kind"] == "user"), "personas answer mentions without joining: {members:?}");
}

#[tokio::test]
async fn an_offline_persona_shows_offline_and_does_not_reply() {
    let server = TestServer::start_with(|c| c.offline_personas = vec!["juno".into(), " Mira ".into()]).await;
    let alice = server.sign_in("alice", PASSWORD).await;
    for p in personas(&server, &alice.token).await {
        let expected = if p.name == "Juno" || p.name == "Mira" { PersonaState::Offline } else { PersonaState::Online };
        assert_eq!(p.status, expected, "{}", p.name);
    }
    let juno = persona_named(&server, &alice.token, "Juno").await;
    let direct = direct_with(&server, &alice.token, &juno.id).await;
    assert_eq!(direct.persona.as_ref().map(|p| p.status), Some(PersonaState::Offline));

    // The message is stored and delivered as usual; nobody answers it.
    let mut a = server.connect(&alice.token).await;
    a.join(&direct.id, None).await;
    a.send_message(&direct.id, "Are you there?", &client_id()).await;
    a.next_of("message_ack").await;
    new_message_in(a.next_frame().await, &direct.id);
    a.next_of("conversation_update").await;
    let lobby = server.lobby(&alice.token).await;
    a.join(&lobby, None).await;
    a.send_message(&lobby, "@Juno hello?", &client_id()).await;
    a.next_of("conversation_update").await;
    a.expect_silence().await;
    let page = server.messages_after(&alice.token, &direct.id, 0).await;
    assert_eq!(page.messages.len(), 1);
    assert!(!page.messages[0].is_ai);
}

/// What the test double of an OpenAI-compatible endpoint was asked.
#[derive(Default)]
struct Asked {
    bodies: Vec<serde_json::Value>,
    auth: Vec<Option<String>>,
}

/// A tiny OpenAI-compatible endpoint on 127.0.0.1:0: `POST /v1/chat/completions` answers a
/// fixed streamed reply (split across chunks mid-line), or 500 when the last message says
/// "fail".
async fn fake_llm() -> (String, Arc<Mutex<Asked>>) {
    use axum::body::{Body, Bytes};
    use axum::http::{header, HeaderMap};
    use axum::response::{IntoResponse, Response};

    let asked = Arc::new(Mutex::new(Asked::default()));
    let state = asked.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |headers: HeaderMap, body: axum::Json<serde_json::Value>| {
            let state = state.clone();
            async move {
                let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let last = body.0["messages"]
                    .as_array()
                    .and_then(|m| m.last())
                    .map(|m| m["content"].to_string())
                    .unwrap_or_default();
                {
                    let mut asked = state.lock().unwrap();
                    asked.bodies.push(body.0.clone());
                    asked.auth.push(auth);
                }
                if last.contains("fail") {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "model exploded").into_response();
                }
                let mut events = String::from(
                    ": a comment\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n",
                );
                for piece in ["Primes", " are the", " atoms of", " arithmetic", ". Shall we", " factor", " something?"]
                {
                    events.push_str(&format!(
                        "data: {}\n\n",
                        serde_json::json!({"choices": [{"index": 0, "delta": {"content": piece}}]})
                    ));
                }
                events.push_str(
                    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
                );
                // Chunks of 37 bytes: lines arrive cut in the middle.
                let chunks: Vec<Result<Bytes, std::io::Error>> =
                    events.into_bytes().chunks(37).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .body(Body::from_stream(futures_util::stream::iter(chunks)))
                    .unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), asked)
}

#[tokio::test]
async fn an_openai_compatible_endpoint_can_write_the_replies() {
    let (url, asked) = fake_llm().await;
    let server = TestServer::start_with(move |c| {
        c.persona_llm_url = Some(url);
        c.persona_llm_model = "test-model".into();
        c.persona_llm_api_key = Some(persona_chat_server::config::ApiKey::from("sk-test-key".to_owned()));
    })
    .await;
    let alice = server.sign_in("alice", PASSWORD).await;
    let ada = persona_named(&server, &alice.token, "Ada").await;
    let direct = direct_with(&server, &alice.token, &ada.id).await;
    let mut a = server.connect(&alice.token).await;
    a.join(&direct.id, None).await;
    a.send_message(&direct.id, "Tell me about primes", &client_id()).await;
    let reply = read_replies(&mut a, 1).await.remove(0);
    reply.check();
    assert!(!reply.interrupted);
    assert_eq!(reply.message.content, "Primes are the atoms of arithmetic. Shall we factor something?");

    {
        let asked = asked.lock().unwrap();
        assert_eq!(asked.auth, vec![Some("Bearer sk-test-key".to_owned())]);
        let body = &asked.bodies[0];
        assert_eq!(body["model"], "test-model");
        assert_eq!(body["stream"], true);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages[0]["role"], "system");
        let system = messages[0]["content"].as_str().unwrap();
        assert!(system.contains("Ada") && system.contains("proof"), "the persona's personality: {system}");
        assert_eq!(messages.last().unwrap()["content"], "alice: Tell me about primes");
    }

    // The conversation so far goes along next time, the persona's words as the assistant's.
    a.send_message(&direct.id, "Go on", &client_id()).await;
    read_replies(&mut a, 1).await.remove(0).check();
    {
        let asked = asked.lock().unwrap();
        let roles: Vec<&str> =
            asked.bodies[1]["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, vec!["system", "user", "assistant", "user"]);
    }

    // The endpoint failing before any words: the built-in responder answers instead.
    a.send_message(&direct.id, "please fail now", &client_id()).await;
    let reply = read_replies(&mut a, 1).await.remove(0);
    reply.check();
    assert_ne!(reply.message.content, "Primes are the atoms of arithmetic. Shall we factor something?");
    assert!(reply.message.content.split_whitespace().count() >= 20);
}
