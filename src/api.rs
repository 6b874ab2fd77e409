//! The HTTP API, typed with the protocol crate's bodies.

use gloo_net::http::{Request, Response};
use persona_chat_protocol::http::{ApiError, ConversationSummary, MessagesResponse, SessionRequest, SessionResponse};
use serde::de::DeserializeOwned;

/// What went wrong, in words a person can read.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiFailure {
    pub status: u16,
    pub message: String,
    /// The server's error code, when it answered one.
    pub code: Option<persona_chat_protocol::ErrorCode>,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

async fn read<T: DeserializeOwned>(response: Result<Response, gloo_net::Error>) -> Result<T, ApiFailure> {
    let response = response.map_err(|e| ApiFailure { status: 0, message: format!("cannot reach the server ({e})"), code: None })?;
    let status = response.status();
    if response.ok() {
        return response
            .json::<T>()
            .await
            .map_err(|e| ApiFailure { status, message: format!("unexpected answer from the server: {e}"), code: None });
    }
    match response.json::<ApiError>().await {
        Ok(err) => Err(ApiFailure { status, message: err.message, code: Some(err.code) }),
        Err(_) => Err(ApiFailure { status, message: format!("the server answered {status}"), code: None }),
    }
}

pub async fn sign_in(base: &str, username: &str, password: &str) -> Result<SessionResponse, ApiFailure> {
    let body = SessionRequest { username: username.to_owned(), password: password.to_owned() };
    let request = Request::post(&format!("{base}/api/session")).json(&body).map_err(|e| ApiFailure { status: 0, message: e.to_string(), code: None })?;
    read(request.send().await).await
}

pub async fn conversations(base: &str, token: &str) -> Result<Vec<ConversationSummary>, ApiFailure> {
    read(Request::get(&format!("{base}/api/conversations")).header("Authorization", &format!("Bearer {token}")).send().await).await
}

/// The newest `limit` messages of a conversation, ascending.
pub async fn latest_messages(base: &str, token: &str, conversation_id: &str, limit: u32) -> Result<MessagesResponse, ApiFailure> {
    let url = format!("{base}/api/conversations/{conversation_id}/messages?limit={limit}");
    read(Request::get(&url).header("Authorization", &format!("Bearer {token}")).send().await).await
}

/// The HTTP twin of `send_message` (the polling transport's way to send): idempotent by
/// client_id, answered with the ack.
pub async fn post_message(base: &str, token: &str, conversation_id: &str, content: &str, client_id: &str) -> Result<persona_chat_protocol::Ack, ApiFailure> {
    let body = persona_chat_protocol::http::PostMessageRequest { content: content.to_owned(), client_id: client_id.to_owned() };
    let request = Request::post(&format!("{base}/api/conversations/{conversation_id}/messages"))
        .header("Authorization", &format!("Bearer {token}"))
        .json(&body)
        .map_err(|e| ApiFailure { status: 0, message: e.to_string(), code: None })?;
    read(request.send().await).await
}

/// The HTTP twin of typing_start / typing_stop.
pub async fn set_typing(base: &str, token: &str, conversation_id: &str, is_typing: bool) -> Result<(), ApiFailure> {
    let body = persona_chat_protocol::http::TypingRequest { is_typing };
    let request = Request::post(&format!("{base}/api/conversations/{conversation_id}/typing"))
        .header("Authorization", &format!("Bearer {token}"))
        .json(&body)
        .map_err(|e| ApiFailure { status: 0, message: e.to_string(), code: None })?;
    let response = request.send().await.map_err(|e| ApiFailure { status: 0, message: format!("cannot reach the server ({e})"), code: None })?;
    if response.ok() {
        Ok(())
    } else {
        Err(ApiFailure { status: response.status(), message: format!("the server answered {}", response.status()), code: None })
    }
}

/// Messages of a conversation after `after_seq`, ascending (one page).
pub async fn messages_after(base: &str, token: &str, conversation_id: &str, after_seq: i64) -> Result<MessagesResponse, ApiFailure> {
    let url = format!("{base}/api/conversations/{conversation_id}/messages?after_seq={after_seq}&limit=500");
    read(Request::get(&url).header("Authorization", &format!("Bearer {token}")).send().await).await
}

fn authed_json<B: serde::Serialize>(request: gloo_net::http::RequestBuilder, token: &str, body: &B) -> Result<gloo_net::http::Request, ApiFailure> {
    request
        .header("Authorization", &format!("Bearer {token}"))
        .json(body)
        .map_err(|e| ApiFailure { status: 0, message: e.to_string(), code: None })
}

/// For routes that answer 204: Ok, or the failure in words.
async fn no_content(response: Result<Response, gloo_net::Error>) -> Result<(), ApiFailure> {
    let response = response.map_err(|e| ApiFailure { status: 0, message: format!("cannot reach the server ({e})"), code: None })?;
    if response.ok() {
        return Ok(());
    }
    let status = response.status();
    match response.json::<ApiError>().await {
        Ok(err) => Err(ApiFailure { status, message: err.message, code: Some(err.code) }),
        Err(_) => Err(ApiFailure { status, message: format!("the server answered {status}"), code: None }),
    }
}

pub async fn personas(base: &str, token: &str) -> Result<Vec<persona_chat_protocol::http::Persona>, ApiFailure> {
    read(Request::get(&format!("{base}/api/personas")).header("Authorization", &format!("Bearer {token}")).send().await).await
}

/// Up to `limit` messages older than `before_seq`, ascending.
pub async fn messages_before(base: &str, token: &str, conversation_id: &str, before_seq: i64, limit: u32) -> Result<MessagesResponse, ApiFailure> {
    let url = format!("{base}/api/conversations/{conversation_id}/messages?before_seq={before_seq}&limit={limit}");
    read(Request::get(&url).header("Authorization", &format!("Bearer {token}")).send().await).await
}

pub async fn members(base: &str, token: &str, conversation_id: &str) -> Result<Vec<persona_chat_protocol::http::Member>, ApiFailure> {
    let url = format!("{base}/api/conversations/{conversation_id}/members");
    read(Request::get(&url).header("Authorization", &format!("Bearer {token}")).send().await).await
}

/// Opens (or finds) the direct conversation with a persona, or creates a room.
pub async fn create_conversation(base: &str, token: &str, body: &persona_chat_protocol::http::CreateConversationRequest) -> Result<ConversationSummary, ApiFailure> {
    read(authed_json(Request::post(&format!("{base}/api/conversations")), token, body)?.send().await).await
}

pub async fn add_members(base: &str, token: &str, conversation_id: &str, user_ids: Vec<String>) -> Result<ConversationSummary, ApiFailure> {
    let body = serde_json::json!({ "user_ids": user_ids });
    read(authed_json(Request::post(&format!("{base}/api/conversations/{conversation_id}/members")), token, &body)?.send().await).await
}

pub async fn search_users(base: &str, token: &str, prefix: &str) -> Result<Vec<persona_chat_protocol::User>, ApiFailure> {
    let q = js_sys::encode_uri_component(prefix);
    read(Request::get(&format!("{base}/api/users?q={q}")).header("Authorization", &format!("Bearer {token}")).send().await).await
}

pub async fn mark_read(base: &str, token: &str, conversation_id: &str, seq: i64) -> Result<(), ApiFailure> {
    let body = persona_chat_protocol::http::ReadRequest { seq };
    no_content(authed_json(Request::post(&format!("{base}/api/conversations/{conversation_id}/read")), token, &body)?.send().await).await
}

/// The HTTP twin of stop_response.
pub async fn stop_response(base: &str, token: &str, conversation_id: &str, message_id: &str) -> Result<(), ApiFailure> {
    let body = serde_json::json!({ "message_id": message_id });
    no_content(authed_json(Request::post(&format!("{base}/api/conversations/{conversation_id}/stop")), token, &body)?.send().await).await
}

pub async fn leave(base: &str, token: &str, conversation_id: &str) -> Result<(), ApiFailure> {
    let url = format!("{base}/api/conversations/{conversation_id}/members/me");
    no_content(Request::delete(&url).header("Authorization", &format!("Bearer {token}")).send().await).await
}

/// Messages with `after_seq < seq < before_seq`, ascending (at most `limit`).
pub async fn messages_between(base: &str, token: &str, conversation_id: &str, after_seq: i64, before_seq: i64, limit: u32) -> Result<MessagesResponse, ApiFailure> {
    let url = format!("{base}/api/conversations/{conversation_id}/messages?after_seq={after_seq}&before_seq={before_seq}&limit={limit}");
    read(Request::get(&url).header("Authorization", &format!("Bearer {token}")).send().await).await
}
