//! The pending-message queue. Every send has a client_id and stays here until the server
//! acknowledges it; it survives a reload through browser storage (as a JSON string), and is
//! sent again after one: the server stores each (sender, client_id) once, so resending is safe.
//!
//! Plain Rust with time as a value (ms, the page's clock): no storage or timers here.

use std::fmt;

use persona_chat_protocol::http::PostMessageRequest;
use persona_chat_protocol::{ClientFrame, ErrorCode};
use serde::{Deserialize, Serialize};

/// Where the glue keeps a user's outbox: per user, so a message is never sent as someone else.
pub fn storage_key(user_id: &str) -> String {
    format!("persona-chat.outbox.{user_id}")
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxConfig {
    /// Most messages waiting at once (failed ones do not count).
    pub capacity: usize,
    /// The first wait after a `rate_limited` refusal; it doubles on each further one.
    pub rate_limit_base_ms: u64,
    pub rate_limit_cap_ms: u64,
    /// The first wait after a send that did not get through (an HTTP send's 5xx or network
    /// error while the transport stays up); it doubles on each further one.
    pub unsent_base_ms: u64,
    pub unsent_cap_ms: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            capacity: 100,
            rate_limit_base_ms: 2_000,
            rate_limit_cap_ms: 30_000,
            unsent_base_ms: 1_000,
            unsent_cap_ms: 30_000,
        }
    }
}

/// Where a message is on its way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OutStatus {
    /// Waiting for a transport.
    Queued,
    /// Sent at `sent_at`, no answer yet.
    InFlight { sent_at: f64 },
    /// Refused as `rate_limited`: sent again at `retry_at`.
    RateLimited { retry_at: f64 },
    /// Its send did not get through while the transport stayed up (polling: the POST failed,
    /// the polls did not): sent again at `retry_at`, or at once on a new transport.
    Unsent { retry_at: f64 },
    /// Refused for good (too long, not a member...): kept with the reason until retried or discarded.
    Failed { code: ErrorCode, reason: String },
}

/// One message on its way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    pub client_id: String,
    pub conversation_id: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona_id: Option<String>,
    /// When it was written (RFC 3339), for the pending echo.
    pub written_at: String,
    pub status: OutStatus,
    /// `rate_limited` refusals so far (the wait doubles with each).
    #[serde(default)]
    pub rate_limited: u32,
    /// Sends that did not get through in a row (the wait doubles with each).
    #[serde(default)]
    pub unsent: u32,
}

impl Outgoing {
    pub fn new(
        client_id: impl Into<String>,
        conversation_id: impl Into<String>,
        content: impl Into<String>,
        written_at: impl Into<String>,
    ) -> Self {
        Outgoing {
            client_id: client_id.into(),
            conversation_id: conversation_id.into(),
            content: content.into(),
            persona_id: None,
            written_at: written_at.into(),
            status: OutStatus::Queued,
            rate_limited: 0,
            unsent: 0,
        }
    }

    /// Not failed: still on its way.
    pub fn is_pending(&self) -> bool {
        !matches!(self.status, OutStatus::Failed { .. })
    }

    /// The socket frame that sends it.
    pub fn to_frame(&self) -> ClientFrame {
        ClientFrame::SendMessage {
            conversation_id: self.conversation_id.clone(),
            content: self.content.clone(),
            client_id: Some(self.client_id.clone()),
            persona_id: self.persona_id.clone(),
        }
    }

    /// The body of `POST /api/conversations/{conversation_id}/messages` (the polling fallback).
    pub fn to_request(&self) -> PostMessageRequest {
        PostMessageRequest { content: self.content.clone(), client_id: self.client_id.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxError {
    /// The queue holds `capacity` messages already: show it, the message is not taken.
    Full {
        capacity: usize,
    },
    Duplicate(String),
    Unknown(String),
    /// Only a failed message can be retried.
    NotFailed(String),
}

impl fmt::Display for OutboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboxError::Full { capacity } => {
                write!(f, "{capacity} messages are already waiting to be sent; wait for the connection to come back")
            }
            OutboxError::Duplicate(id) => write!(f, "message {id} is already queued"),
            OutboxError::Unknown(id) => write!(f, "no queued message {id}"),
            OutboxError::NotFailed(id) => write!(f, "message {id} has not failed"),
        }
    }
}

impl std::error::Error for OutboxError {}

/// What a refusal did to the message.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Kept pending; sent again from `retry_at` (see [`Outbox::next_wake`]).
    RetryAt(f64),
    /// Marked failed with this reason.
    Failed(String),
}

/// The persisted form: versioned, so a future layout can read an old one.
#[derive(Serialize, Deserialize)]
struct Stored {
    v: u32,
    items: Vec<Outgoing>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outbox {
    config: OutboxConfig,
    /// In the order written (a retried message moves to the end).
    items: Vec<Outgoing>,
}

impl Outbox {
    pub fn new(config: OutboxConfig) -> Self {
        Outbox { config, items: Vec::new() }
    }

    /// Queues a message (its status is reset to Queued).
    pub fn push(&mut self, mut item: Outgoing) -> Result<(), OutboxError> {
        if self.get(&item.client_id).is_some() {
            return Err(OutboxError::Duplicate(item.client_id));
        }
        self.check_room()?;
        item.status = OutStatus::Queued;
        self.items.push(item);
        Ok(())
    }

    fn check_room(&self) -> Result<(), OutboxError> {
        if self.pending_count() >= self.config.capacity {
            return Err(OutboxError::Full { capacity: self.config.capacity });
        }
        Ok(())
    }

    /// What to send now that a transport is up, in order, marked in flight. A rate-limited
    /// message not yet due holds back the ones after it, so the server stores them in order.
    pub fn take_sendable(&mut self, now: f64) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for item in &mut self.items {
            match item.status {
                OutStatus::Queued => {}
                OutStatus::RateLimited { retry_at } | OutStatus::Unsent { retry_at } if now >= retry_at => {}
                OutStatus::RateLimited { .. } | OutStatus::Unsent { .. } => break,
                OutStatus::InFlight { .. } | OutStatus::Failed { .. } => continue,
            }
            item.status = OutStatus::InFlight { sent_at: now };
            out.push(item.clone());
        }
        out
    }

    /// The transport went down: what was in flight is sent again on the next one (its ack
    /// may have been lost; the server ignores a second copy).
    pub fn requeue_in_flight(&mut self) {
        for item in &mut self.items {
            if matches!(item.status, OutStatus::InFlight { .. } | OutStatus::Unsent { .. }) {
                item.status = OutStatus::Queued;
            }
        }
    }

    /// A send over HTTP did not get through (a 5xx, a dropped connection) while the transport
    /// is still up: nothing else would send it again, so it is due again after a wait that
    /// doubles with each failure in a row (see [`Outbox::next_wake`]). None if it is not in
    /// flight (acked meanwhile, say).
    pub fn send_failed(&mut self, client_id: &str, now: f64) -> Option<f64> {
        let config = &self.config;
        let item = self
            .items
            .iter_mut()
            .find(|i| i.client_id == client_id && matches!(i.status, OutStatus::InFlight { .. }))?;
        item.unsent += 1;
        let wait = super::backoff::doubling_ms(config.unsent_base_ms, config.unsent_cap_ms, item.unsent);
        let retry_at = now + wait as f64;
        item.status = OutStatus::Unsent { retry_at };
        Some(retry_at)
    }

    /// One send found no transport: queued again for the next one.
    pub fn not_sent(&mut self, client_id: &str) -> bool {
        match self.items.iter_mut().find(|i| i.client_id == client_id) {
            Some(item) if matches!(item.status, OutStatus::InFlight { .. }) => {
                item.status = OutStatus::Queued;
                true
            }
            _ => false,
        }
    }

    /// The server stored it (`message_ack`, or the HTTP send's answer): it leaves the queue.
    pub fn ack(&mut self, client_id: &str) -> Option<Outgoing> {
        let i = self.items.iter().position(|i| i.client_id == client_id)?;
        Some(self.items.remove(i))
    }

    /// The server refused it (an `error` frame whose `ref` is the client_id, or an HTTP
    /// error). `rate_limited` is transient: kept pending and retried later; anything else
    /// marks it failed with the reason.
    pub fn refuse(&mut self, client_id: &str, code: ErrorCode, message: &str, now: f64) -> Option<Refusal> {
        let config = &self.config;
        let item = self.items.iter_mut().find(|i| i.client_id == client_id)?;
        if code == ErrorCode::RateLimited {
            item.rate_limited += 1;
            let wait =
                super::backoff::doubling_ms(config.rate_limit_base_ms, config.rate_limit_cap_ms, item.rate_limited);
            let retry_at = now + wait as f64;
            item.status = OutStatus::RateLimited { retry_at };
            Some(Refusal::RetryAt(retry_at))
        } else {
            let reason = format!("{message} ({})", code.as_str());
            item.status = OutStatus::Failed { code, reason: reason.clone() };
            Some(Refusal::Failed(reason))
        }
    }

    /// The user retries a failed message: it is queued again, at the end.
    pub fn retry(&mut self, client_id: &str) -> Result<(), OutboxError> {
        let i = self
            .items
            .iter()
            .position(|i| i.client_id == client_id)
            .ok_or_else(|| OutboxError::Unknown(client_id.to_owned()))?;
        if self.items[i].is_pending() {
            return Err(OutboxError::NotFailed(client_id.to_owned()));
        }
        self.check_room()?;
        let mut item = self.items.remove(i);
        item.status = OutStatus::Queued;
        item.rate_limited = 0;
        self.items.push(item);
        Ok(())
    }

    /// The user gives up on a message.
    pub fn discard(&mut self, client_id: &str) -> Option<Outgoing> {
        self.ack(client_id)
    }

    /// When a rate-limited (or unsent) message is due again.
    pub fn next_wake(&self) -> Option<f64> {
        self.items
            .iter()
            .filter_map(|i| match i.status {
                OutStatus::RateLimited { retry_at } | OutStatus::Unsent { retry_at } => Some(retry_at),
                _ => None,
            })
            .min_by(f64::total_cmp)
    }

    pub fn items(&self) -> &[Outgoing] {
        &self.items
    }

    pub fn get(&self, client_id: &str) -> Option<&Outgoing> {
        self.items.iter().find(|i| i.client_id == client_id)
    }

    /// Messages still on their way (what the capacity limits).
    pub fn pending_count(&self) -> usize {
        self.items.iter().filter(|i| i.is_pending()).count()
    }

    pub fn failed_count(&self) -> usize {
        self.items.len() - self.pending_count()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Another tab's message (see `shared_outbox`): taken as it is, at the end, even beyond
    /// the capacity (it was accepted there). False if already held.
    pub fn adopt(&mut self, item: Outgoing) -> bool {
        if self.get(&item.client_id).is_some() {
            return false;
        }
        self.items.push(item);
        true
    }

    /// Another tab's word on a message held here: refused there (`Failed`) or retried there
    /// (`Queued`, moved to the end). False if unknown.
    pub fn set_status(&mut self, client_id: &str, status: OutStatus) -> bool {
        let Some(i) = self.items.iter().position(|i| i.client_id == client_id) else { return false };
        let requeued = !self.items[i].is_pending() && status == OutStatus::Queued;
        self.items[i].status = status;
        if requeued {
            let item = self.items.remove(i);
            self.items.push(item);
        }
        true
    }

    /// For browser storage.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&Stored { v: 1, items: self.items.clone() })
            .unwrap_or_else(|_| "{\"v\":1,\"items\":[]}".into())
    }

    /// From browser storage, after a reload. Times belonged to the old page's clock, so
    /// whatever was in flight or waiting out a rate limit is simply queued again. Nothing is
    /// dropped, even beyond the capacity.
    pub fn from_json(text: &str, config: OutboxConfig) -> Result<Outbox, serde_json::Error> {
        let stored: Stored = serde_json::from_str(text)?;
        let items = stored
            .items
            .into_iter()
            .map(|mut item| {
                if item.is_pending() {
                    item.status = OutStatus::Queued;
                }
                item
            })
            .collect();
        Ok(Outbox { config, items })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u32) -> Outgoing {
        Outgoing::new(format!("k{n}"), "c", format!("hello {n}"), "2026-11-21T10:00:00.000Z")
    }

    fn ids(items: &[Outgoing]) -> Vec<&str> {
        items.iter().map(|i| i.client_id.as_str()).collect()
    }

    fn outbox() -> Outbox {
        Outbox::new(OutboxConfig::default())
    }

    #[test]
    fn drains_in_order_once_and_ack_removes() {
        let mut o = outbox();
        for n in 1..=3 {
            o.push(msg(n)).unwrap();
        }
        let sent = o.take_sendable(10.0);
        assert_eq!(ids(&sent), vec!["k1", "k2", "k3"]);
        assert!(sent.iter().all(|i| i.status == OutStatus::InFlight { sent_at: 10.0 }));
        assert!(o.take_sendable(11.0).is_empty(), "in flight: not sent twice on the same transport");
        o.push(msg(4)).unwrap();
        assert_eq!(ids(&o.take_sendable(12.0)), vec!["k4"]);
        assert_eq!(o.ack("k2").map(|i| i.content), Some("hello 2".into()));
        assert_eq!(o.ack("k2"), None);
        assert_eq!(ids(o.items()), vec!["k1", "k3", "k4"]);
        assert_eq!(o.pending_count(), 3);
    }

    #[test]
    fn a_lost_transport_resends_what_was_in_flight_in_order() {
        let mut o = outbox();
        for n in 1..=3 {
            o.push(msg(n)).unwrap();
        }
        o.take_sendable(10.0);
        o.ack("k1");
        o.requeue_in_flight();
        o.push(msg(4)).unwrap();
        assert_eq!(ids(&o.take_sendable(20.0)), vec!["k2", "k3", "k4"]);
        assert!(o.not_sent("k3"));
        assert!(!o.not_sent("k3"), "already queued");
        assert_eq!(ids(&o.take_sendable(21.0)), vec!["k3"]);
    }

    #[test]
    fn a_failed_http_send_goes_out_again_by_itself_with_growing_waits() {
        // Polling: the POST of k1 fails (5xx, dropped) twice while the polls keep working, so
        // no new transport comes to resend it. Only the outbox's own wake may do it.
        let mut o = outbox();
        o.push(msg(1)).unwrap();
        o.push(msg(2)).unwrap();
        assert_eq!(ids(&o.take_sendable(0.0)), vec!["k1", "k2"]);
        o.ack("k2");
        assert_eq!(o.send_failed("k1", 100.0), Some(1_100.0));
        assert_eq!(o.send_failed("k1", 100.0), None, "only what is in flight");
        o.push(msg(3)).unwrap();
        assert!(o.take_sendable(500.0).is_empty(), "not due yet, and k3 waits behind it (order)");
        // The page sleeps until next_wake, then flushes: the loop a tab runs without the user.
        let mut now = 500.0;
        let mut failures_left = 1;
        let mut sent = Vec::new();
        while let Some(at) = o.next_wake() {
            assert!(at > now, "a wake in the future");
            now = at;
            for item in o.take_sendable(now) {
                if item.client_id == "k1" && failures_left > 0 {
                    failures_left -= 1;
                    assert_eq!(o.send_failed("k1", now), Some(now + 2_000.0), "the wait doubles");
                } else {
                    o.ack(&item.client_id);
                    sent.push(item.client_id);
                }
            }
            assert!(now < 60_000.0, "sent within a minute");
        }
        // (k3 went out with k1's second try, which failed: a failure in a batch cannot keep
        // the order, the same as a rate-limited one.)
        assert_eq!(sent, vec!["k3", "k1"], "both went out without any user action");
        assert!(o.is_empty());

        // A new transport sends it at once.
        o.push(msg(4)).unwrap();
        o.take_sendable(0.0);
        o.send_failed("k4", 0.0);
        o.requeue_in_flight();
        assert_eq!(ids(&o.take_sendable(1.0)), vec!["k4"]);
    }

    #[test]
    fn overflow_is_an_error_and_drops_nothing() {
        let mut o = Outbox::new(OutboxConfig { capacity: 3, ..OutboxConfig::default() });
        for n in 1..=3 {
            o.push(msg(n)).unwrap();
        }
        let err = o.push(msg(4)).unwrap_err();
        assert_eq!(err, OutboxError::Full { capacity: 3 });
        assert!(err.to_string().contains("3 messages"));
        assert_eq!(ids(o.items()), vec!["k1", "k2", "k3"]);
        // Acknowledged ones make room.
        o.take_sendable(0.0);
        o.ack("k1");
        o.push(msg(4)).unwrap();
        assert_eq!(o.push(msg(2)), Err(OutboxError::Duplicate("k2".into())));
    }

    #[test]
    fn the_default_capacity_is_one_hundred() {
        let mut o = outbox();
        for n in 0..100 {
            o.push(msg(n)).unwrap();
        }
        assert_eq!(o.push(msg(100)), Err(OutboxError::Full { capacity: 100 }));
        assert_eq!(o.len(), 100);
    }

    #[test]
    fn a_refusal_marks_failed_with_the_reason_and_retry_requeues_at_the_end() {
        let mut o = outbox();
        for n in 1..=3 {
            o.push(msg(n)).unwrap();
        }
        o.take_sendable(0.0);
        let r = o.refuse("k1", ErrorCode::TooLong, "message too long", 5.0);
        assert_eq!(r, Some(Refusal::Failed("message too long (too_long)".into())));
        assert_eq!(
            o.get("k1").unwrap().status,
            OutStatus::Failed { code: ErrorCode::TooLong, reason: "message too long (too_long)".into() }
        );
        assert_eq!((o.pending_count(), o.failed_count()), (2, 1));
        // A failed message is not sent again by itself, even after the transport comes back.
        o.requeue_in_flight();
        assert_eq!(ids(&o.take_sendable(6.0)), vec!["k2", "k3"]);
        assert_eq!(o.retry("k2"), Err(OutboxError::NotFailed("k2".into())));
        assert_eq!(o.retry("zz"), Err(OutboxError::Unknown("zz".into())));
        o.retry("k1").unwrap();
        assert_eq!(ids(o.items()), vec!["k2", "k3", "k1"]);
        assert_eq!(ids(&o.take_sendable(7.0)), vec!["k1"]);
        assert_eq!(o.refuse("nope", ErrorCode::TooLong, "x", 0.0), None);
    }

    #[test]
    fn failed_messages_do_not_fill_the_queue_but_retrying_needs_room() {
        let mut o = Outbox::new(OutboxConfig { capacity: 2, ..OutboxConfig::default() });
        o.push(msg(1)).unwrap();
        o.refuse("k1", ErrorCode::NotMember, "not a member", 0.0);
        o.push(msg(2)).unwrap();
        o.push(msg(3)).unwrap();
        assert_eq!(o.retry("k1"), Err(OutboxError::Full { capacity: 2 }));
        assert!(matches!(o.get("k1").unwrap().status, OutStatus::Failed { .. }), "still there, still failed");
        assert_eq!(o.discard("k1").map(|i| i.client_id), Some("k1".into()));
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn rate_limited_stays_pending_and_is_retried_after_a_growing_delay_in_order() {
        let mut o = outbox();
        for n in 1..=3 {
            o.push(msg(n)).unwrap();
        }
        o.take_sendable(0.0);
        o.ack("k1");
        assert_eq!(o.refuse("k2", ErrorCode::RateLimited, "slow down", 100.0), Some(Refusal::RetryAt(2_100.0)));
        assert_eq!(o.refuse("k3", ErrorCode::RateLimited, "slow down", 100.0), Some(Refusal::RetryAt(2_100.0)));
        assert_eq!((o.pending_count(), o.failed_count()), (2, 0));
        assert_eq!(o.next_wake(), Some(2_100.0));
        o.push(msg(4)).unwrap();
        // Before the delay nothing goes: k4 waits behind k2 so the server stores them in order.
        assert!(o.take_sendable(2_000.0).is_empty());
        assert_eq!(ids(&o.take_sendable(2_100.0)), vec!["k2", "k3", "k4"]);
        assert_eq!(o.next_wake(), None);
        // Limited again: the wait doubles, up to the cap.
        assert_eq!(o.refuse("k2", ErrorCode::RateLimited, "slow down", 3_000.0), Some(Refusal::RetryAt(7_000.0)));
        for _ in 0..10 {
            o.refuse("k2", ErrorCode::RateLimited, "slow down", 3_000.0);
        }
        assert_eq!(o.get("k2").unwrap().status, OutStatus::RateLimited { retry_at: 33_000.0 });
    }

    #[test]
    fn persists_across_a_reload_and_sends_once_after_it() {
        let mut o = outbox();
        for n in 1..=4 {
            o.push(msg(n)).unwrap();
        }
        o.get("k1").unwrap();
        o.take_sendable(50.0); // all in flight when the page goes away
        o.ack("k1");
        o.refuse("k2", ErrorCode::EmptyContent, "empty", 60.0);
        o.refuse("k3", ErrorCode::RateLimited, "slow down", 60.0);
        let mut with_persona = msg(5);
        with_persona.persona_id = Some("p1".into());
        o.push(with_persona).unwrap();
        let text = o.to_json();

        let mut back = Outbox::from_json(&text, OutboxConfig::default()).unwrap();
        assert_eq!(ids(back.items()), vec!["k2", "k3", "k4", "k5"]);
        assert!(
            matches!(&back.get("k2").unwrap().status, OutStatus::Failed { reason, .. } if reason == "empty (empty_content)")
        );
        assert_eq!(back.get("k3").unwrap().status, OutStatus::Queued, "old-clock times are not trusted");
        assert_eq!(back.get("k5").unwrap().persona_id.as_deref(), Some("p1"));
        // The new page's clock starts near zero: everything pending goes at once, once.
        assert_eq!(ids(&back.take_sendable(1.0)), vec!["k3", "k4", "k5"]);
        assert!(back.take_sendable(2.0).is_empty());
        assert!(Outbox::from_json("not json", OutboxConfig::default()).is_err());
        assert!(Outbox::from_json("{\"v\":1,\"items\":[]}", OutboxConfig::default()).unwrap().is_empty());
    }

    #[test]
    fn a_reload_keeps_everything_even_beyond_a_smaller_capacity() {
        let mut o = outbox();
        for n in 1..=5 {
            o.push(msg(n)).unwrap();
        }
        let mut back =
            Outbox::from_json(&o.to_json(), OutboxConfig { capacity: 2, ..OutboxConfig::default() }).unwrap();
        assert_eq!(back.len(), 5);
        assert!(back.push(msg(6)).is_err());
    }

    #[test]
    fn frames_and_requests_carry_the_client_id() {
        let m = msg(7);
        assert_eq!(
            m.to_frame(),
            ClientFrame::SendMessage {
                conversation_id: "c".into(),
                content: "hello 7".into(),
                client_id: Some("k7".into()),
                persona_id: None
            }
        );
        assert_eq!(m.to_request(), PostMessageRequest { content: "hello 7".into(), client_id: "k7".into() });
        assert_eq!(storage_key("u1"), "persona-chat.outbox.u1");
    }
}
