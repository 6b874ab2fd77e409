//! The HTTP long-poll transport (`GET /api/events`), used when WebSocket is blocked. It
//! delivers the same frames a socket would; sending goes over the HTTP routes (see api.rs).
//! The connection machine decides when to poll; this does one poll at a time.
//!
//! Frames are read one by one, so a frame type this build does not know is skipped instead
//! of failing the whole answer.

use gloo_net::http::Request;
use persona_chat_protocol::ServerFrame;
use serde::Deserialize;

#[derive(Deserialize)]
struct RawEvents {
    #[serde(default)]
    resync: bool,
    #[serde(default)]
    events: Vec<RawEvent>,
    next: u64,
}

#[derive(Deserialize)]
struct RawEvent {
    frame: serde_json::Value,
}

/// Parses one answer of `/api/events` into its frames, the resync flag and the next cursor.
pub fn parse_events(body: &str) -> Result<(Vec<ServerFrame>, bool, u64), String> {
    let raw: RawEvents = serde_json::from_str(body).map_err(|e| format!("unexpected answer from /api/events: {e}"))?;
    let frames =
        raw.events.into_iter().filter_map(|e| ServerFrame::parse(&e.frame.to_string()).ok().flatten()).collect();
    Ok((frames, raw.resync, raw.next))
}

/// One long poll: from `after` (None: just learn the current cursor, at once), waiting at
/// most `timeout_ms` on the server. Answers the frames, the resync flag and the next cursor.
pub async fn poll_once(
    base: &str,
    token: &str,
    after: Option<u64>,
    timeout_ms: u64,
) -> Result<(Vec<ServerFrame>, bool, u64), String> {
    let url = match after {
        None => format!("{base}/api/events"),
        Some(after) => format!("{base}/api/events?after={after}&timeout_ms={timeout_ms}"),
    };
    let resp = Request::get(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .send()
        .await
        .map_err(|e| format!("cannot reach the server ({e})"))?;
    if resp.status() == 401 {
        crate::api::token_refused();
    }
    if !resp.ok() {
        return Err(format!("the server answered {}", resp.status()));
    }
    let text = resp.text().await.map_err(|e| e.to_string())?;
    parse_events(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_frame_by_frame_skipping_unknown_types() {
        let body = r#"{"events":[
            {"id":7,"frame":{"type":"conversation_left","conversation_id":"c"}},
            {"id":8,"frame":{"type":"from_the_future","x":1}},
            {"id":9,"frame":{"type":"user_joined","conversation_id":"c","user_id":"u","username":"ann"}}
        ],"next":9}"#;
        let (frames, resync, next) = parse_events(body).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].type_name(), "user_joined");
        assert_eq!((resync, next), (false, 9));
        let (frames, resync, next) = parse_events(r#"{"resync":true,"next":42}"#).unwrap();
        assert!(frames.is_empty() && resync && next == 42);
        assert!(parse_events("<html>").is_err());
    }
}
