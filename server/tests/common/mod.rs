//! The harness of the server's integration tests: a real server on 127.0.0.1:0 with its
//! SQLite file in a temporary directory, spoken to over real sockets (reqwest for HTTP,
//! tokio-tungstenite for the WebSocket).
//!
//! Every network wait is bounded by [`WAIT`], so a broken server fails a test instead of
//! hanging it. Frames are read strictly: [`Client::next_frame`] returns the very next frame
//! and panics on anything else (a close, a binary frame, a frame that does not parse). Only
//! [`Client::next_of`] skips frames, and says so in its name.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use persona_chat_protocol::http::{ApiError, ConversationSummary, MessagesResponse, SessionResponse};
use persona_chat_protocol::{Ack, ClientFrame, Message, OnlineUser, ServerFrame, User};
use persona_chat_server::config::Config;
use persona_chat_server::Server;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any single network step may take. Generous: the test machine may be busy
/// building something else, and sign-in hashes with a deliberately slow KDF.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a socket must stay quiet for "nothing arrives" to count.
pub const QUIET: Duration = Duration::from_millis(400);

/// Awaits `fut`, failing the test when it takes longer than [`WAIT`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Matches a frame against a pattern, panicking with the frame when it does not fit.
#[macro_export]
macro_rules! expect_frame {
    ($frame:expr, $pat:pat => $out:expr) => {
        match $frame {
            $pat => $out,
            other => panic!("expected {}, got {:?}", stringify!($pat), other),
        }
    };
}

/// A running server and an HTTP client for it.
pub struct TestServer {
    pub addr: SocketAddr,
    dir: TempDir,
    stop: oneshot::Sender<()>,
    handle: JoinHandle<std::io::Result<()>>,
    http: reqwest::Client,
}

impl TestServer {
    /// A server with the test defaults on a fresh data dir.
    pub async fn start() -> TestServer {
        Self::start_in(TempDir::new().expect("temp dir"), |_| {}).await
    }

    /// A server on a fresh data dir, its config adjusted by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_in(TempDir::new().expect("temp dir"), configure).await
    }

    /// A server on the given data dir (e.g. one a stopped server used).
    pub async fn start_in(dir: TempDir, configure: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::for_tests(dir.path().to_path_buf());
        configure(&mut config);
        let server = within("the server to bind", Server::bind(config)).await.expect("the server binds");
        let (addr, stop, handle) = server.spawn();
        TestServer { addr, dir, stop, handle, http: reqwest::Client::new() }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server, waits until it has finished serving, and hands back its data dir.
    pub async fn stop(self) -> TempDir {
        let _ = self.stop.send(());
        within("the server to stop", self.handle)
            .await
            .expect("the server task does not panic")
            .expect("the server stops without an I/O error");
        self.dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, token: Option<&str>) -> String {
        match token {
            Some(t) => format!("ws://{}/ws?token={}", self.addr, t),
            None => format!("ws://{}/ws", self.addr),
        }
    }

    // ---- HTTP ----

    pub async fn post_session(&self, username: &str, password: &str) -> reqwest::Response {
        let body = serde_json::json!({ "username": username, "password": password });
        within("POST /api/session", self.http.post(self.url("/api/session")).json(&body).send())
            .await
            .expect("POST /api/session is answered")
    }

    pub async fn post_users(&self, username: &str, password: &str) -> reqwest::Response {
        let body = serde_json::json!({ "username": username, "password": password });
        within("POST /api/users", self.http.post(self.url("/api/users")).json(&body).send())
            .await
            .expect("POST /api/users is answered")
    }

    /// Signs up (`POST /api/users`), or signs in when the name is taken (409), asserting
    /// success either way.
    pub async fn sign_in(&self, username: &str, password: &str) -> SessionResponse {
        let resp = self.post_users(username, password).await;
        if resp.status() == StatusCode::CREATED {
            return json(resp).await;
        }
        assert_eq!(resp.status(), StatusCode::CONFLICT, "sign-up of {username}: neither created nor taken");
        let resp = self.post_session(username, password).await;
        assert_eq!(resp.status(), StatusCode::OK, "sign-in of {username}");
        json(resp).await
    }

    pub async fn delete(&self, token: &str, path: &str) -> reqwest::Response {
        within(&format!("DELETE {path}"), self.http.delete(self.url(path)).bearer_auth(token).send())
            .await
            .unwrap_or_else(|e| panic!("DELETE {path} is answered: {e}"))
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        within(&format!("GET {path}"), self.http.get(self.url(path)).bearer_auth(token).send())
            .await
            .unwrap_or_else(|e| panic!("GET {path} is answered: {e}"))
    }

    pub async fn post(&self, token: &str, path: &str, body: &serde_json::Value) -> reqwest::Response {
        within(&format!("POST {path}"), self.http.post(self.url(path)).bearer_auth(token).json(body).send())
            .await
            .unwrap_or_else(|e| panic!("POST {path} is answered: {e}"))
    }

    pub async fn conversations(&self, token: &str) -> Vec<ConversationSummary> {
        let resp = self.get(token, "/api/conversations").await;
        assert_eq!(resp.status(), StatusCode::OK, "GET /api/conversations");
        json(resp).await
    }

    /// The id of the Lobby, as the user's conversation list shows it.
    pub async fn lobby(&self, token: &str) -> String {
        self.conversations(token).await.into_iter().find(|c| c.title == "Lobby").expect("every user is in the Lobby").id
    }

    /// `GET /api/conversations/{id}/messages?after_seq=N`, asserting success.
    pub async fn messages_after(&self, token: &str, conversation_id: &str, after_seq: i64) -> MessagesResponse {
        let resp =
            self.get(token, &format!("/api/conversations/{conversation_id}/messages?after_seq={after_seq}")).await;
        assert_eq!(resp.status(), StatusCode::OK, "GET messages of {conversation_id}");
        json(resp).await
    }

    pub async fn post_message_raw(
        &self,
        token: &str,
        conversation_id: &str,
        content: &str,
        client_id: &str,
    ) -> reqwest::Response {
        let body = serde_json::json!({ "content": content, "client_id": client_id });
        self.post(token, &format!("/api/conversations/{conversation_id}/messages"), &body).await
    }

    /// Sends a message over HTTP, asserting success.
    pub async fn post_message(&self, token: &str, conversation_id: &str, content: &str, client_id: &str) -> Ack {
        let resp = self.post_message_raw(token, conversation_id, content, client_id).await;
        assert_eq!(resp.status(), StatusCode::OK, "POST message {client_id:?}");
        json(resp).await
    }

    // ---- WebSocket ----

    /// Opens a socket without reading anything from it.
    pub async fn connect_raw(&self, token: Option<&str>) -> Result<Client, tungstenite::Error> {
        let (ws, _response) =
            within("the WebSocket upgrade", tokio_tungstenite::connect_async(self.ws_url(token))).await?;
        Ok(Client { ws, online_users: Vec::new(), user: None })
    }

    /// Opens a socket and reads its greeting (`online_users`, then `hello`), asserting both.
    pub async fn connect(&self, token: &str) -> Client {
        let mut client = self.connect_raw(Some(token)).await.expect("the WebSocket upgrade succeeds");
        let users = expect_frame!(client.next_frame().await, ServerFrame::OnlineUsers { users, .. } => users);
        let user = expect_frame!(client.next_frame().await, ServerFrame::Hello { user, .. } => user);
        client.online_users = users;
        client.user = Some(user);
        client
    }
}

/// Reads a JSON body.
pub async fn json<T: DeserializeOwned>(resp: reqwest::Response) -> T {
    let status = resp.status();
    let text = within("a response body", resp.text()).await.expect("the body is read");
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("body of a {status} response is not the expected JSON ({e}): {text}"))
}

/// Asserts an HTTP error: its status and its JSON `{code, message}` body.
pub async fn expect_api_error(resp: reqwest::Response, status: StatusCode, code: &str) -> ApiError {
    assert_eq!(resp.status(), status, "status of an error response");
    let body: serde_json::Value = json(resp).await;
    assert_eq!(body["code"], code, "code of the error body {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "the error body has a message: {body}");
    serde_json::from_value(body).expect("the error body is an ApiError")
}

/// One client socket.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// From the greeting, when opened with [`TestServer::connect`].
    pub online_users: Vec<OnlineUser>,
    pub user: Option<User>,
}

impl Client {
    /// The next WebSocket message, transport-level ping/pong aside. `None`: the stream ended.
    pub async fn recv_raw(&mut self) -> Option<Result<WsMessage, tungstenite::Error>> {
        within("a WebSocket message", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                    other => return other,
                }
            }
        })
        .await
    }

    /// This socket's own address (to find its TCP connection).
    pub fn local_addr(&self) -> SocketAddr {
        match self.ws.get_ref() {
            MaybeTlsStream::Plain(tcp) => tcp.local_addr().expect("a connected socket has an address"),
            _ => panic!("tests use plain TCP"),
        }
    }

    /// The next message, whatever it is, with no time limit of its own (the caller bounds it).
    pub async fn recv_unbounded(&mut self) -> Option<Result<WsMessage, tungstenite::Error>> {
        self.ws.next().await
    }

    /// The very next frame; panics on anything else.
    pub async fn next_frame(&mut self) -> ServerFrame {
        match self.recv_raw().await {
            Some(Ok(WsMessage::Text(text))) => match ServerFrame::parse(text.as_str()) {
                Ok(Some(frame)) => frame,
                Ok(None) => panic!("a frame of an unknown type: {text}"),
                Err(e) => panic!("a frame that does not parse ({e}): {text}"),
            },
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The very next frame as raw JSON (to check the wire format itself).
    pub async fn next_json(&mut self) -> serde_json::Value {
        match self.recv_raw().await {
            Some(Ok(WsMessage::Text(text))) => serde_json::from_str(text.as_str()).expect("frames are JSON"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next frame of type `type_name`, skipping (and dropping) any other frames.
    pub async fn next_of(&mut self, type_name: &str) -> ServerFrame {
        within(&format!("a {type_name} frame"), async {
            loop {
                let frame = self.next_frame().await;
                if frame.type_name() == type_name {
                    return frame;
                }
            }
        })
        .await
    }

    /// Asserts that nothing arrives for [`QUIET`].
    pub async fn expect_silence(&mut self) {
        let got = tokio::time::timeout(QUIET, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                    other => return other,
                }
            }
        })
        .await;
        if let Ok(message) = got {
            panic!("expected nothing, got {message:?}");
        }
    }

    /// The next message must be a close frame: its code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        match self.recv_raw().await {
            Some(Ok(WsMessage::Close(Some(frame)))) => (u16::from(frame.code), frame.reason.to_string()),
            other => panic!("expected a close frame with a code, got {other:?}"),
        }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        let text: String = text.into();
        within("sending a frame", self.ws.send(WsMessage::text(text))).await.expect("the frame is sent");
    }

    /// Sends a text frame, reporting a failure (the server closed the socket) instead of
    /// panicking.
    pub async fn try_send_text(&mut self, text: impl Into<String>) -> Result<(), tungstenite::Error> {
        self.ws.send(WsMessage::text(text.into())).await
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        within("sending a binary frame", self.ws.send(WsMessage::binary(bytes))).await.expect("the frame is sent");
    }

    pub async fn send(&mut self, frame: &ClientFrame) {
        self.send_text(frame.to_json()).await;
    }

    pub async fn send_json(&mut self, value: serde_json::Value) {
        self.send_text(value.to_string()).await;
    }

    /// Joins a conversation and reads `conversation_joined` (only that): its last_seq.
    pub async fn join(&mut self, conversation_id: &str, after_seq: Option<i64>) -> i64 {
        self.send(&ClientFrame::JoinConversation { conversation_id: conversation_id.into(), after_seq }).await;
        let (id, last_seq) = expect_frame!(
            self.next_frame().await,
            ServerFrame::ConversationJoined { conversation_id, last_seq, .. } => (conversation_id, last_seq)
        );
        assert_eq!(id, conversation_id);
        last_seq
    }

    /// Sends a message with a client_id.
    pub async fn send_message(&mut self, conversation_id: &str, content: &str, client_id: &str) {
        self.send(&ClientFrame::SendMessage {
            conversation_id: conversation_id.into(),
            content: content.into(),
            client_id: Some(client_id.into()),
            persona_id: None,
        })
        .await;
    }

    /// Closes the socket from this side and waits for the server to finish the handshake.
    pub async fn close(mut self) {
        within("closing the socket", async {
            let _ = self.ws.close(None).await;
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// The message of a `new_message` frame, checking its conversation.
pub fn new_message_in(frame: ServerFrame, conversation: &str) -> Message {
    let (id, message) =
        expect_frame!(frame, ServerFrame::NewMessage { conversation_id, message, .. } => (conversation_id, message));
    assert_eq!(id, conversation, "new_message of the expected conversation");
    message
}

/// A fresh client id.
pub fn client_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A fake OpenAI-compatible endpoint (for `--persona-llm-url`) streaming `pieces`, `every` apart, then failing the
/// response midway (`fail`), or finishing.
pub async fn fake_llm(pieces: Vec<String>, every: Duration, fail: bool) -> String {
    use axum::body::{Body, Bytes};
    use axum::http::header;
    use axum::response::Response;
    use futures_util::StreamExt;

    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            let pieces = pieces.clone();
            async move {
                let events = futures_util::stream::iter(pieces.into_iter().map(Some).chain(std::iter::once(None)))
                    .then(move |piece| async move {
                        tokio::time::sleep(every).await;
                        match piece {
                            Some(p) => Ok(Bytes::from(format!(
                                "data: {}\n\n",
                                serde_json::json!({"choices": [{"index": 0, "delta": {"content": p}}]})
                            ))),
                            None if fail => Err(std::io::Error::other("the model fell over")),
                            None => Ok(Bytes::from("data: [DONE]\n\n")),
                        }
                    });
                Response::builder()
                    .header(header::CONTENT_TYPE, "text/event-stream")
                    .body(Body::from_stream(events))
                    .unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}
