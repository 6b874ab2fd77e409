//! The real server binary killed with SIGKILL while messages stream in, three times: after
//! each restart every acknowledged message is there exactly once, seq has no gaps, and
//! resending any client_id stores nothing new. Also: tokens never appear in the logs.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use persona_chat_protocol::http::{ConversationSummary, MessagesResponse, SessionResponse};
use persona_chat_protocol::{Ack, ClientFrame, ServerFrame};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const PASSWORD: &str = "crash test password";

struct ServerProcess {
    child: Child,
    base: String,
}

impl ServerProcess {
    fn start(data_dir: &Path, port: u16, log: &Path) -> ServerProcess {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_persona-chat-server"))
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--static-dir")
            .arg(data_dir.join("no-app"))
            .args(["--rate-limit-per-sec", "100000", "--rate-limit-burst", "100000"])
            .env("RUST_LOG", "trace")
            .env_remove("PERSONA_SECRET")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("the server binary starts");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the server did not listen within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        ServerProcess { child, base }
    }

    fn sigkill(mut self) {
        self.child.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
        self.child.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Signs alice up (`POST /api/users`), or in when she exists already (409).
async fn sign_in(http: &reqwest::Client, base: &str) -> SessionResponse {
    let body = serde_json::json!({"username": "alice", "password": PASSWORD});
    let resp = http.post(format!("{base}/api/users")).json(&body).send().await.unwrap();
    let resp = if resp.status() == reqwest::StatusCode::CONFLICT {
        http.post(format!("{base}/api/session")).json(&body).send().await.unwrap()
    } else {
        resp
    };
    assert!(resp.status().is_success(), "sign-in: {}", resp.status());
    resp.json().await.unwrap()
}

/// Sends messages as fast as acks come back (a window of 8 in flight) until the socket dies;
/// returns every client_id sent and the acks received.
async fn stream_until_killed(
    base: &str,
    token: &str,
    lobby: &str,
    round: usize,
    sent: &mut Vec<String>,
    acks: &mut HashMap<String, Ack>,
) {
    let url = format!("{}/ws?token={token}", base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("socket opens");
    let mut in_flight = 0usize;
    let mut n = 0usize;
    loop {
        while in_flight < 8 {
            let client_id = format!("r{round}-m{n}");
            n += 1;
            let frame = ClientFrame::SendMessage {
                conversation_id: lobby.to_owned(),
                content: format!("message {client_id}"),
                client_id: Some(client_id.clone()),
                persona_id: None,
            };
            if ws.send(WsMessage::Text(frame.to_json().into())).await.is_err() {
                return;
            }
            sent.push(client_id);
            in_flight += 1;
        }
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(WsMessage::Text(text)))) => {
                if let Ok(Some(ServerFrame::MessageAck(ack))) = ServerFrame::parse(text.as_str()) {
                    in_flight -= 1;
                    acks.insert(ack.client_id.clone(), ack);
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => return, // closed: the server was killed
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_exactly_once() {
    let dir = tempfile::TempDir::new().unwrap();
    let log = dir.path().join("server.log");
    let port = free_port();
    let http = reqwest::Client::new();
    let mut sent: Vec<String> = Vec::new();
    let mut acks: HashMap<String, Ack> = HashMap::new();
    let mut tokens = HashSet::new();

    for round in 0..3 {
        let server = ServerProcess::start(dir.path(), port, &log);
        let session = sign_in(&http, &server.base).await;
        tokens.insert(session.token.clone());
        let lobby = lobby_of(&http, &server.base, &session.token).await;
        // Kill at a moment that varies from round to round, while sends are in flight.
        let kill_after = Duration::from_millis(300 + 250 * round as u64);
        let base = server.base.clone();
        let killer = tokio::spawn(async move {
            tokio::time::sleep(kill_after).await;
            server.sigkill();
        });
        let before = acks.len();
        tokio::time::timeout(
            Duration::from_secs(30),
            stream_until_killed(&base, &session.token, &lobby, round, &mut sent, &mut acks),
        )
        .await
        .expect("the stream ends when the server dies");
        killer.await.unwrap();
        assert!(acks.len() > before, "round {round}: some messages were acknowledged before the kill");
    }

    // After the last restart: check everything.
    let server = ServerProcess::start(dir.path(), port, &log);
    let session = sign_in(&http, &server.base).await;
    tokens.insert(session.token.clone());
    let lobby = lobby_of(&http, &server.base, &session.token).await;
    let stored = all_messages(&http, &server.base, &session.token, &lobby).await;
    let seqs: Vec<i64> = stored.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=stored.len() as i64).collect::<Vec<_>>(), "seq is gap-free");
    let mut by_client: HashMap<String, usize> = HashMap::new();
    for m in &stored {
        *by_client.entry(m.client_id.clone().unwrap()).or_default() += 1;
    }
    let twice: Vec<_> = by_client.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    let missing: Vec<_> = acks.keys().filter(|c| !by_client.contains_key(*c)).collect();
    assert!(missing.is_empty(), "acknowledged but missing after SIGKILL: {missing:?}");
    for m in &stored {
        let ack = &acks.get(m.client_id.as_ref().unwrap());
        if let Some(ack) = ack {
            assert_eq!(
                (ack.message_id.as_str(), ack.seq),
                (m.id.as_str(), m.seq),
                "the stored message is the acknowledged one"
            );
        }
    }
    println!(
        "sent {} messages over 3 kills: {} acknowledged, {} stored (unacknowledged ones may or may not be)",
        sent.len(),
        acks.len(),
        stored.len()
    );

    // Resending every client_id (as a client's outbox does after a crash) stores nothing new
    // for those already stored, and returns the original ack for acknowledged ones.
    for client_id in &sent {
        let resp = http
            .post(format!("{}/api/conversations/{lobby}/messages", server.base))
            .bearer_auth(&session.token)
            .json(&serde_json::json!({"content": format!("message {client_id}"), "client_id": client_id}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        let ack: Ack = resp.json().await.unwrap();
        if let Some(original) = acks.get(client_id) {
            assert_eq!((ack.message_id.as_str(), ack.seq), (original.message_id.as_str(), original.seq));
        }
    }
    let after_resend = all_messages(&http, &server.base, &session.token, &lobby).await;
    assert_eq!(after_resend.len(), sent.len(), "each client_id stored exactly once after resending all");

    // Tokens are secrets: never in the logs, even at trace level.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.is_empty(), "the server logged something");
    for token in &tokens {
        let signature = token.split('.').nth(1).unwrap();
        assert!(!text.contains(signature), "a token's signature appears in the server log");
    }
}

async fn lobby_of(http: &reqwest::Client, base: &str, token: &str) -> String {
    let list: Vec<ConversationSummary> =
        http.get(format!("{base}/api/conversations")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    list.into_iter().find(|c| c.title == "Lobby").unwrap().id
}

async fn all_messages(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    conversation: &str,
) -> Vec<persona_chat_protocol::Message> {
    let mut out = Vec::new();
    loop {
        let after = out.last().map_or(0, |m: &persona_chat_protocol::Message| m.seq);
        let page: MessagesResponse = http
            .get(format!("{base}/api/conversations/{conversation}/messages?after_seq={after}&limit=500"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out.extend(page.messages);
        if !page.has_more {
            return out;
        }
    }
}
