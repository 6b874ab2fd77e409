//! Counters for `GET /metrics`, in Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    pub messages_stored: AtomicU64,
    pub messages_duplicate: AtomicU64,
    pub frames_received: AtomicU64,
    pub error_frames: AtomicU64,
    pub rate_limited: AtomicU64,
    pub sign_ins: AtomicU64,
    pub sign_in_failures: AtomicU64,
    pub polls: AtomicU64,
    pub sockets_opened: AtomicU64,
    pub sockets_refused: AtomicU64,
    pub connections_refused: AtomicU64,
    pub sockets_closed_for_abuse: AtomicU64,
    pub persona_replies_skipped: AtomicU64,
}

pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// The exposition text, with the gauges read by the caller.
    pub fn render(&self, sockets_open: usize, users_online: usize, event_log_len: usize) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
        };
        counter("persona_chat_messages_stored_total", "Messages stored.", &self.messages_stored);
        counter(
            "persona_chat_messages_duplicate_total",
            "Sends of an already stored client_id (answered with the original ack).",
            &self.messages_duplicate,
        );
        counter("persona_chat_frames_received_total", "WebSocket frames received.", &self.frames_received);
        counter("persona_chat_error_frames_total", "Error frames sent.", &self.error_frames);
        counter("persona_chat_rate_limited_total", "Sends refused by the rate limit.", &self.rate_limited);
        counter("persona_chat_sign_ins_total", "Successful sign-ins.", &self.sign_ins);
        counter("persona_chat_sign_in_failures_total", "Refused sign-ins.", &self.sign_in_failures);
        counter("persona_chat_polls_total", "Long-poll requests.", &self.polls);
        counter("persona_chat_sockets_opened_total", "WebSockets opened.", &self.sockets_opened);
        counter(
            "persona_chat_sockets_refused_total",
            "WebSockets closed at once (limit) or upgrades refused.",
            &self.sockets_refused,
        );
        counter(
            "persona_chat_connections_refused_total",
            "TCP connections closed at once (total or per-address cap).",
            &self.connections_refused,
        );
        counter(
            "persona_chat_sockets_closed_for_abuse_total",
            "WebSockets closed for a frame flood, silence or bad UTF-8.",
            &self.sockets_closed_for_abuse,
        );
        counter("persona_chat_persona_replies_skipped_total", "Messages a persona did not answer: enough replies were waiting in that conversation, or in all (the sender is told).", &self.persona_replies_skipped);
        for (name, help, v) in [
            ("persona_chat_sockets_open", "WebSockets open now.", sockets_open),
            ("persona_chat_users_online", "Users with at least one socket.", users_online),
            ("persona_chat_event_log_len", "Events kept for pollers.", event_log_len),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}
