//! The HTTP long-poll transport (`GET /api/events`), used when WebSocket is blocked. It
//! delivers the same frames a socket would; sending goes over the HTTP routes (see api.rs).
//!
//! Frames are read one by one, so a frame type this build does not know is skipped instead
//! of failing the whole answer.

use std::cell::Cell;
use std::rc::Rc;

use gloo_net::http::Request;
use persona_chat_protocol::ServerFrame;
use serde::Deserialize;

/// How long one poll may wait on the server.
pub const POLL_TIMEOUT_MS: u32 = 25_000;
/// Pause after a failed poll before the next.
pub const RETRY_AFTER_FAILURE_MS: u32 = 2_000;

#[derive(Debug, Clone)]
pub enum PollEvent {
    /// The first poll answered: the transport is live.
    Live,
    Frame(ServerFrame),
    /// Events were missed (the cursor was too old): reload lists, fill from last seqs.
    Resync,
    /// A poll failed (network or server); it is retried.
    Failed(String),
}

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
    let frames = raw
        .events
        .into_iter()
        .filter_map(|e| ServerFrame::parse(&e.frame.to_string()).ok().flatten())
        .collect();
    Ok((frames, raw.resync, raw.next))
}

/// A running poll loop; stops when dropped or stopped.
pub struct Poller {
    running: Rc<Cell<bool>>,
}

impl Poller {
    pub fn start(base: String, token: String, on_event: Rc<dyn Fn(PollEvent)>) -> Poller {
        let running = Rc::new(Cell::new(true));
        let alive = running.clone();
        leptos::task::spawn_local(async move {
            let mut cursor: Option<u64> = None;
            let mut announced = false;
            while alive.get() {
                let url = match cursor {
                    None => format!("{base}/api/events"),
                    Some(after) => format!("{base}/api/events?after={after}&timeout_ms={POLL_TIMEOUT_MS}"),
                };
                let answer = match Request::get(&url).header("Authorization", &format!("Bearer {token}")).send().await {
                    Ok(resp) if resp.ok() => resp.text().await.map_err(|e| e.to_string()).and_then(|t| parse_events(&t)),
                    Ok(resp) => Err(format!("the server answered {}", resp.status())),
                    Err(e) => Err(e.to_string()),
                };
                if !alive.get() {
                    break;
                }
                match answer {
                    Ok((frames, resync, next)) => {
                        if !announced {
                            announced = true;
                            on_event(PollEvent::Live);
                        }
                        if resync {
                            on_event(PollEvent::Resync);
                        }
                        for frame in frames {
                            on_event(PollEvent::Frame(frame));
                        }
                        cursor = Some(next);
                    }
                    Err(e) => {
                        on_event(PollEvent::Failed(e));
                        gloo_timers::future::TimeoutFuture::new(RETRY_AFTER_FAILURE_MS).await;
                    }
                }
            }
        });
        Poller { running }
    }

    pub fn stop(&self) {
        self.running.set(false);
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop();
    }
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
