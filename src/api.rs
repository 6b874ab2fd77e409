//! The HTTP API, typed with the protocol crate's bodies.

use gloo_net::http::{Request, RequestBuilder, Response};
use persona_chat_protocol::http::{
    ApiError, ConversationSummary, CreateConversationRequest, Member, MessagesResponse, Persona, PostMessageRequest,
    ReadRequest, RefreshRequest, SessionRequest, SessionResponse, SyncRequest, TypingRequest,
};
use persona_chat_protocol::{Ack, SyncState, User};
use serde::de::DeserializeOwned;

/// What went wrong, in words a person can read.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiFailure {
    pub status: u16,
    pub message: String,
    /// The server's error code, when it answered one.
    pub code: Option<persona_chat_protocol::ErrorCode>,
}

thread_local! {
    static ON_TOKEN_REFUSED: std::cell::RefCell<Option<std::rc::Rc<dyn Fn()>>> = const { std::cell::RefCell::new(None) };
}

/// What to do when the server refuses the session's token (revoked, expired): set once by the
/// session's owner. Sign-in refusals (wrong password) are not this.
pub fn on_token_refused(f: impl Fn() + 'static) {
    ON_TOKEN_REFUSED.with(|h| *h.borrow_mut() = Some(std::rc::Rc::new(f)));
}

/// Tells the session's owner that the token was refused (a 401 on any authorised request,
/// the long poll's included, or the socket closed because the session ended).
pub fn token_refused() {
    if let Some(f) = ON_TOKEN_REFUSED.with(|h| h.borrow().clone()) {
        f();
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn unreachable_server(e: gloo_net::Error) -> ApiFailure {
    ApiFailure { status: 0, message: format!("cannot reach the server ({e})"), code: None }
}

/// A refusal: the server's own words when it gave them.
async fn failure(response: Response) -> ApiFailure {
    let status = response.status();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.trim().parse::<u64>().ok());
    let mut failure = match response.json::<ApiError>().await {
        Ok(err) => ApiFailure { status, message: err.message, code: Some(err.code) },
        Err(_) => ApiFailure { status, message: format!("the server answered {status}"), code: None },
    };
    if status == 401 && failure.code != Some(persona_chat_protocol::ErrorCode::InvalidCredentials) {
        token_refused();
    }
    if let (429, Some(secs)) = (status, retry_after) {
        failure.message = format!("{}. Try again in {secs} s.", failure.message.trim_end_matches('.'));
    }
    failure
}

/// Sends a request and reads its JSON answer.
async fn read<T: DeserializeOwned>(request: Request) -> Result<T, ApiFailure> {
    let response = request.send().await.map_err(unreachable_server)?;
    if !response.ok() {
        return Err(failure(response).await);
    }
    let status = response.status();
    response.json::<T>().await.map_err(|e| ApiFailure {
        status,
        message: format!("unexpected answer from the server: {e}"),
        code: None,
    })
}

/// Sends a request answered with 204 No Content.
async fn no_content(request: Request) -> Result<(), ApiFailure> {
    let response = request.send().await.map_err(unreachable_server)?;
    if response.ok() {
        Ok(())
    } else {
        Err(failure(response).await)
    }
}

fn authed(builder: RequestBuilder, token: &str) -> RequestBuilder {
    builder.header("Authorization", &format!("Bearer {token}"))
}

fn get(url: &str, token: &str) -> Result<Request, ApiFailure> {
    authed(Request::get(url), token).build().map_err(|e| ApiFailure { status: 0, message: e.to_string(), code: None })
}

fn with_json<B: serde::Serialize>(builder: RequestBuilder, body: &B) -> Result<Request, ApiFailure> {
    builder.json(body).map_err(|e| ApiFailure { status: 0, message: e.to_string(), code: None })
}

pub async fn sign_in(base: &str, username: &str, password: &str) -> Result<SessionResponse, ApiFailure> {
    let body = SessionRequest { username: username.to_owned(), password: password.to_owned() };
    read(with_json(Request::post(&format!("{base}/api/session")), &body)?).await
}

/// Creates an account and signs in to it.
pub async fn sign_up(base: &str, username: &str, password: &str) -> Result<SessionResponse, ApiFailure> {
    let body = SessionRequest { username: username.to_owned(), password: password.to_owned() };
    read(with_json(Request::post(&format!("{base}/api/users")), &body)?).await
}

/// A fresh token for the same session: for its refresh token (good while the session lives,
/// even after the token expired), or, from an older server without one, for the token.
pub async fn refresh_session(base: &str, session: &SessionResponse) -> Result<SessionResponse, ApiFailure> {
    let url = format!("{base}/api/session/refresh");
    if session.refresh_token.is_empty() {
        return read(authed(Request::post(&url), &session.token).build().map_err(|e| ApiFailure {
            status: 0,
            message: e.to_string(),
            code: None,
        })?)
        .await;
    }
    read(with_json(Request::post(&url), &RefreshRequest { refresh_token: session.refresh_token.clone() })?).await
}

/// Ends the session on the server (`everywhere`: every session of the user). Its token is
/// refused from then on, and its sockets close.
pub async fn sign_out(base: &str, token: &str, everywhere: bool) -> Result<(), ApiFailure> {
    let path = if everywhere { "sessions" } else { "session" };
    no_content(authed(Request::delete(&format!("{base}/api/{path}")), token).build().map_err(|e| ApiFailure {
        status: 0,
        message: e.to_string(),
        code: None,
    })?)
    .await
}

pub async fn conversations(base: &str, token: &str) -> Result<Vec<ConversationSummary>, ApiFailure> {
    read(get(&format!("{base}/api/conversations"), token)?).await
}

pub async fn personas(base: &str, token: &str) -> Result<Vec<Persona>, ApiFailure> {
    read(get(&format!("{base}/api/personas"), token)?).await
}

/// One page of a conversation's messages, ascending: those after `after_seq` and before
/// `before_seq` (each when given), at most `limit`; without `after_seq`, the newest.
async fn messages(
    base: &str,
    token: &str,
    conversation_id: &str,
    after_seq: Option<i64>,
    before_seq: Option<i64>,
    limit: u32,
) -> Result<MessagesResponse, ApiFailure> {
    let mut url = format!("{base}/api/conversations/{conversation_id}/messages?limit={limit}");
    if let Some(after) = after_seq {
        url.push_str(&format!("&after_seq={after}"));
    }
    if let Some(before) = before_seq {
        url.push_str(&format!("&before_seq={before}"));
    }
    read(get(&url, token)?).await
}

/// The newest `limit` messages of a conversation, ascending.
pub async fn latest_messages(
    base: &str,
    token: &str,
    conversation_id: &str,
    limit: u32,
) -> Result<MessagesResponse, ApiFailure> {
    messages(base, token, conversation_id, None, None, limit).await
}

/// Messages of a conversation after `after_seq`, ascending (one page).
pub async fn messages_after(
    base: &str,
    token: &str,
    conversation_id: &str,
    after_seq: i64,
) -> Result<MessagesResponse, ApiFailure> {
    messages(base, token, conversation_id, Some(after_seq), None, 500).await
}

/// Up to `limit` messages older than `before_seq`, ascending.
pub async fn messages_before(
    base: &str,
    token: &str,
    conversation_id: &str,
    before_seq: i64,
    limit: u32,
) -> Result<MessagesResponse, ApiFailure> {
    messages(base, token, conversation_id, None, Some(before_seq), limit).await
}

/// Messages with `after_seq < seq < before_seq`, ascending (at most `limit`).
pub async fn messages_between(
    base: &str,
    token: &str,
    conversation_id: &str,
    after_seq: i64,
    before_seq: i64,
    limit: u32,
) -> Result<MessagesResponse, ApiFailure> {
    messages(base, token, conversation_id, Some(after_seq), Some(before_seq), limit).await
}

/// The HTTP twin of `send_message` (the polling transport's way to send): idempotent by
/// client_id, answered with the ack.
pub async fn post_message(
    base: &str,
    token: &str,
    conversation_id: &str,
    content: &str,
    client_id: &str,
) -> Result<Ack, ApiFailure> {
    let body = PostMessageRequest { content: content.to_owned(), client_id: client_id.to_owned() };
    read(with_json(
        authed(Request::post(&format!("{base}/api/conversations/{conversation_id}/messages")), token),
        &body,
    )?)
    .await
}

/// The HTTP twin of typing_start / typing_stop.
pub async fn set_typing(base: &str, token: &str, conversation_id: &str, is_typing: bool) -> Result<(), ApiFailure> {
    let body = TypingRequest { is_typing };
    no_content(with_json(
        authed(Request::post(&format!("{base}/api/conversations/{conversation_id}/typing")), token),
        &body,
    )?)
    .await
}

/// `POST /api/sync`: the resync exchange over HTTP (what changed since `since`).
pub async fn sync(base: &str, token: &str, since: u64) -> Result<SyncState, ApiFailure> {
    read(with_json(authed(Request::post(&format!("{base}/api/sync")), token), &SyncRequest { since })?).await
}

/// `DELETE /api/conversations/{id}/members/me`: leaves a room (not the Lobby).
pub async fn leave(base: &str, token: &str, conversation_id: &str) -> Result<(), ApiFailure> {
    let url = format!("{base}/api/conversations/{conversation_id}/members/me");
    no_content(authed(Request::delete(&url), token).build().map_err(|e| ApiFailure {
        status: 0,
        message: e.to_string(),
        code: None,
    })?)
    .await
}

pub async fn members(base: &str, token: &str, conversation_id: &str) -> Result<Vec<Member>, ApiFailure> {
    read(get(&format!("{base}/api/conversations/{conversation_id}/members"), token)?).await
}

/// Opens (or finds) the direct conversation with a persona, or creates a room.
pub async fn create_conversation(
    base: &str,
    token: &str,
    body: &CreateConversationRequest,
) -> Result<ConversationSummary, ApiFailure> {
    read(with_json(authed(Request::post(&format!("{base}/api/conversations")), token), body)?).await
}

pub async fn add_members(
    base: &str,
    token: &str,
    conversation_id: &str,
    user_ids: Vec<String>,
) -> Result<ConversationSummary, ApiFailure> {
    #[derive(serde::Serialize)]
    struct Body {
        user_ids: Vec<String>,
    }
    let body = Body { user_ids };
    read(with_json(
        authed(Request::post(&format!("{base}/api/conversations/{conversation_id}/members")), token),
        &body,
    )?)
    .await
}

pub async fn search_users(base: &str, token: &str, prefix: &str) -> Result<Vec<User>, ApiFailure> {
    let q = crate::config::encode_query_value(prefix);
    read(get(&format!("{base}/api/users?q={q}"), token)?).await
}

pub async fn mark_read(base: &str, token: &str, conversation_id: &str, seq: i64) -> Result<(), ApiFailure> {
    no_content(with_json(
        authed(Request::post(&format!("{base}/api/conversations/{conversation_id}/read")), token),
        &ReadRequest { seq },
    )?)
    .await
}

/// The HTTP twin of stop_response.
pub async fn stop_response(base: &str, token: &str, conversation_id: &str, message_id: &str) -> Result<(), ApiFailure> {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        message_id: &'a str,
    }
    let body = Body { message_id };
    no_content(with_json(
        authed(Request::post(&format!("{base}/api/conversations/{conversation_id}/stop")), token),
        &body,
    )?)
    .await
}
