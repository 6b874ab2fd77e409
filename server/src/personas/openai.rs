//! A responder for any OpenAI-compatible chat-completions endpoint, streaming.
//!
//! `POST {url}/chat/completions` with `stream: true`, the persona's personality as the system
//! message and the recent conversation as the messages; the answer is Server-Sent Events whose
//! `data:` lines carry `choices[0].delta.content`, until `data: [DONE]`. The API key goes in
//! the Authorization header only and is never logged.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::responder::{Chunks, ReplyRequest, Responder};
use crate::config::ApiKey;

/// Longest wait for the response headers.
const RESPONSE_WAIT: Duration = Duration::from_secs(60);
/// Longest silence in the middle of a streamed answer.
const IDLE_WAIT: Duration = Duration::from_secs(60);
/// Most tokens asked for: a chat reply, not an essay.
const MAX_TOKENS: u32 = 400;

pub struct OpenAi {
    client: reqwest::Client,
    endpoint: String,
    model: String,
    key: Option<ApiKey>,
}

impl OpenAi {
    /// `url`: the API's base (`https://api.openai.com/v1`, `http://localhost:11434/v1`, ...);
    /// a URL that already ends in `/chat/completions` is taken as it is.
    pub fn new(url: &str, model: &str, key: Option<ApiKey>) -> Result<OpenAi, String> {
        let url = url.trim().trim_end_matches('/');
        let endpoint =
            if url.ends_with("/chat/completions") { url.to_owned() } else { format!("{url}/chat/completions") };
        let parsed = reqwest::Url::parse(&endpoint).map_err(|e| format!("PERSONA_LLM_URL is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("PERSONA_LLM_URL must be http or https".into());
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(OpenAi { client, endpoint, model: model.to_owned(), key: key.filter(|k| !k.expose().is_empty()) })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// The request body: the persona's personality as the system message, then the
/// conversation: the persona's own messages as the assistant's, everyone else's as the
/// user's, prefixed with who wrote them (rooms have several people).
pub fn request_body(model: &str, request: &ReplyRequest) -> Value {
    let persona = &request.persona;
    let system = format!(
        "You are {name}, one of the AI personas of persona-chat, a group chat app. {personality} \
         Stay in character. Answer the latest message in a few sentences (under 80 words), in \
         plain text with no stage directions, and address people by name when it helps. \
         Messages from people start with their name and a colon; do not start yours that way.",
        name = persona.name,
        personality = super::personality(&persona.name, &persona.tagline),
    );
    let mut messages = vec![json!({"role": "system", "content": system})];
    for m in &request.history {
        if m.sender_id == persona.id {
            messages.push(json!({"role": "assistant", "content": m.content}));
        } else {
            messages.push(json!({"role": "user", "content": format!("{}: {}", m.sender_name, m.content)}));
        }
    }
    json!({"model": model, "stream": true, "max_tokens": MAX_TOKENS, "messages": messages})
}

/// One line of the event stream.
#[derive(Debug, PartialEq)]
pub enum SseLine {
    /// Some text of the answer.
    Text(String),
    /// `data: [DONE]`: the answer is complete.
    Done,
    /// An error object in the stream.
    Error(String),
    /// Anything else: comments, other fields, deltas without text (the role, a finish reason).
    Skip,
}

pub fn parse_sse_line(line: &str) -> SseLine {
    let Some(data) = line.strip_prefix("data:") else { return SseLine::Skip };
    let data = data.trim();
    if data == "[DONE]" {
        return SseLine::Done;
    }
    let Ok(value) = serde_json::from_str::<Value>(data) else { return SseLine::Skip };
    if let Some(error) = value.get("error") {
        let message =
            error.get("message").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| error.to_string());
        return SseLine::Error(message);
    }
    match value.pointer("/choices/0/delta/content").and_then(Value::as_str) {
        Some(text) if !text.is_empty() => SseLine::Text(text.to_owned()),
        _ => SseLine::Skip,
    }
}

impl Responder for OpenAi {
    fn respond(&self, request: ReplyRequest) -> Chunks {
        let (tx, rx) = mpsc::channel(64);
        let mut builder = self.client.post(&self.endpoint).json(&request_body(&self.model, &request));
        if let Some(key) = &self.key {
            builder = builder.bearer_auth(key.expose());
        }
        tokio::spawn(async move {
            if let Err(e) = stream(builder, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }

    fn name(&self) -> &'static str {
        "OpenAI-compatible"
    }
}

/// Sends the request and forwards the answer's text until `[DONE]`, the end of the body, or
/// the receiver going away.
async fn stream(builder: reqwest::RequestBuilder, tx: &mpsc::Sender<Result<String, String>>) -> Result<(), String> {
    // Errors name the URL at most, never the headers (where the key is).
    let response = tokio::time::timeout(RESPONSE_WAIT, builder.send())
        .await
        .map_err(|_| format!("no answer within {RESPONSE_WAIT:?}"))?
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        return Err(format!("the endpoint answered {status}: {body}"));
    }
    let mut body = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let next = tokio::time::timeout(IDLE_WAIT, body.next())
            .await
            .map_err(|_| format!("the answer stalled for {IDLE_WAIT:?}"))?;
        let bytes = match next {
            None => break,
            Some(Ok(bytes)) => bytes,
            Some(Err(e)) => return Err(format!("the answer broke off: {e}")),
        };
        buffer.extend_from_slice(&bytes);
        while let Some(newline) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=newline).collect();
            let line = String::from_utf8_lossy(&line);
            match parse_sse_line(line.trim_end_matches(['\n', '\r'])) {
                SseLine::Text(text) => {
                    if tx.send(Ok(text)).await.is_err() {
                        return Ok(()); // cancelled: dropping the body closes the connection
                    }
                }
                SseLine::Done => return Ok(()),
                SseLine::Error(message) => return Err(format!("the endpoint reported: {message}")),
                SseLine::Skip => {}
            }
        }
    }
    // The body ended without [DONE]: take a last unterminated line, then call it complete.
    if let SseLine::Text(text) = parse_sse_line(String::from_utf8_lossy(&buffer).trim()) {
        let _ = tx.send(Ok(text)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::personas::PersonaInfo;
    use persona_chat_protocol::Message;

    #[test]
    fn sse_lines_are_parsed() {
        assert_eq!(parse_sse_line(r#"data: {"choices":[{"delta":{"content":"Hel"}}]}"#), SseLine::Text("Hel".into()));
        assert_eq!(
            parse_sse_line(r#"data:{"choices":[{"index":0,"delta":{"content":" lo"}}]}"#),
            SseLine::Text(" lo".into())
        );
        assert_eq!(parse_sse_line(r#"data: {"choices":[{"delta":{"role":"assistant"}}]}"#), SseLine::Skip);
        assert_eq!(parse_sse_line(r#"data: {"choices":[{"delta":{},"finish_reason":"stop"}]}"#), SseLine::Skip);
        assert_eq!(parse_sse_line("data: [DONE]"), SseLine::Done);
        assert_eq!(parse_sse_line(": keep-alive"), SseLine::Skip);
        assert_eq!(parse_sse_line("event: message"), SseLine::Skip);
        assert_eq!(parse_sse_line(""), SseLine::Skip);
        assert_eq!(parse_sse_line(r#"data: {"error":{"message":"quota"}}"#), SseLine::Error("quota".into()));
    }

    #[test]
    fn the_body_carries_the_personality_and_the_conversation() {
        let persona = PersonaInfo { id: "p1".into(), name: "Ada".into(), tagline: "Mathematician".into() };
        let m = |id: &str, sender_id: &str, name: &str, content: &str| Message {
            id: id.into(),
            seq: 1,
            client_id: None,
            sender_id: sender_id.into(),
            sender_name: name.into(),
            content: content.into(),
            timestamp: "t".into(),
            is_ai: sender_id == "p1",
            interrupted: false,
        };
        let history = vec![
            m("1", "u1", "alice", "hi Ada"),
            m("2", "p1", "Ada", "Hello alice."),
            m("3", "u1", "alice", "what is 2+2?"),
        ];
        let request = ReplyRequest { persona, conversation_id: "c".into(), trigger: history[2].clone(), history };
        let body = request_body("some-model", &request);
        assert_eq!(body["model"], "some-model");
        assert_eq!(body["stream"], true);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages[0]["role"], "system");
        assert!(messages[0]["content"].as_str().unwrap().contains("You are Ada"));
        assert_eq!(messages[1], json!({"role": "user", "content": "alice: hi Ada"}));
        assert_eq!(messages[2], json!({"role": "assistant", "content": "Hello alice."}));
        assert_eq!(messages[3], json!({"role": "user", "content": "alice: what is 2+2?"}));
    }

    #[test]
    fn the_endpoint_is_derived_from_the_base_url() {
        let key = Some(ApiKey::from("sk-secret".to_owned()));
        assert_eq!(
            OpenAi::new("http://localhost:1/v1/", "m", key.clone()).unwrap().endpoint(),
            "http://localhost:1/v1/chat/completions"
        );
        assert_eq!(
            OpenAi::new("https://x.test/v1/chat/completions", "m", None).unwrap().endpoint(),
            "https://x.test/v1/chat/completions"
        );
        assert!(OpenAi::new("not a url", "m", None).is_err());
        assert!(!format!("{key:?}").contains("sk-secret"), "the key never shows in Debug");
    }
}
