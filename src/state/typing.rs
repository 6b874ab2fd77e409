//! Typing indicators, both ways, with time as a value (ms, the page's clock).
//!
//! Outgoing: `typing_start` at most once every 3 s while the draft changes (the server drops a
//! typist after 5 s without one), `typing_stop` after 2 s without a change, on send, and on
//! leaving the conversation. Incoming: a typist disappears 6 s after their last typing frame
//! even if no stop arrives. Each call says what to send and when to be woken next. The
//! timings live in `persona_chat_protocol::typing`, shared with the server.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct TypingConfig {
    /// Least time between two `typing_start` while typing goes on.
    pub start_every_ms: u64,
    /// A draft unchanged this long: `typing_stop`.
    pub idle_stop_ms: u64,
    /// An incoming typist without news this long disappears.
    pub incoming_ttl_ms: u64,
}

impl Default for TypingConfig {
    fn default() -> Self {
        use persona_chat_protocol::typing::{IDLE_STOP_MS, SHOWN_FOR_MS, START_EVERY_MS};
        TypingConfig { start_every_ms: START_EVERY_MS, idle_stop_ms: IDLE_STOP_MS, incoming_ttl_ms: SHOWN_FOR_MS }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypingSignal {
    Start,
    Stop,
}

/// What to do after an outgoing-typing call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypingStep {
    /// Send this (over the socket, or the HTTP typing route while polling).
    pub send: Option<TypingSignal>,
    /// Call [`OutgoingTyping::tick`] at this time.
    pub wake_at: Option<f64>,
}

/// The user's own typing in the open conversation's composer.
#[derive(Debug, Clone)]
pub struct OutgoingTyping {
    config: TypingConfig,
    typing: bool,
    last_start_at: f64,
    last_change_at: f64,
}

impl OutgoingTyping {
    pub fn new(config: TypingConfig) -> Self {
        OutgoingTyping { config, typing: false, last_start_at: f64::NEG_INFINITY, last_change_at: f64::NEG_INFINITY }
    }

    pub fn is_typing(&self) -> bool {
        self.typing
    }

    /// The draft changed; an emptied draft counts as a stop.
    pub fn draft_changed(&mut self, now: f64, draft_is_empty: bool) -> TypingStep {
        if draft_is_empty {
            return self.stop();
        }
        self.last_change_at = now;
        let send = if !self.typing || now - self.last_start_at >= self.config.start_every_ms as f64 {
            self.typing = true;
            self.last_start_at = now;
            Some(TypingSignal::Start)
        } else {
            None
        };
        TypingStep { send, wake_at: Some(self.stop_at()) }
    }

    /// A wake-up (possibly late: the check is against the clock).
    pub fn tick(&mut self, now: f64) -> TypingStep {
        if !self.typing {
            return TypingStep::default();
        }
        if now >= self.stop_at() {
            return self.stop();
        }
        TypingStep { send: None, wake_at: Some(self.stop_at()) }
    }

    /// The message was sent.
    pub fn message_sent(&mut self) -> TypingStep {
        self.stop()
    }

    /// The user leaves the conversation (or the composer goes away).
    pub fn left(&mut self) -> TypingStep {
        self.stop()
    }

    fn stop_at(&self) -> f64 {
        self.last_change_at + self.config.idle_stop_ms as f64
    }

    fn stop(&mut self) -> TypingStep {
        let was = std::mem::replace(&mut self.typing, false);
        TypingStep { send: was.then_some(TypingSignal::Stop), wake_at: None }
    }
}

/// Someone typing in a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Typist {
    pub user_id: String,
    pub username: String,
    pub expires_at: f64,
}

/// Who is typing where, from `typing_indicator` frames.
#[derive(Debug, Clone)]
pub struct IncomingTyping {
    ttl_ms: u64,
    /// Per conversation, in the order they started typing.
    by_conversation: BTreeMap<String, Vec<Typist>>,
}

impl IncomingTyping {
    pub fn new(config: &TypingConfig) -> Self {
        IncomingTyping { ttl_ms: config.incoming_ttl_ms, by_conversation: BTreeMap::new() }
    }

    /// Applies a `typing_indicator`; true if the list changed (a renewal is no change).
    pub fn indicator(
        &mut self,
        now: f64,
        conversation_id: &str,
        user_id: &str,
        username: &str,
        is_typing: bool,
    ) -> bool {
        let expires_at = now + self.ttl_ms as f64;
        if !is_typing {
            return self.remove(conversation_id, user_id);
        }
        let list = self.by_conversation.entry(conversation_id.to_owned()).or_default();
        match list.iter_mut().find(|t| t.user_id == user_id) {
            Some(t) => {
                t.expires_at = expires_at;
                false
            }
            None => {
                list.push(Typist { user_id: user_id.to_owned(), username: username.to_owned(), expires_at });
                true
            }
        }
    }

    /// Their message arrived: they are no longer typing it.
    pub fn message_from(&mut self, conversation_id: &str, user_id: &str) -> bool {
        self.remove(conversation_id, user_id)
    }

    fn remove(&mut self, conversation_id: &str, user_id: &str) -> bool {
        let Some(list) = self.by_conversation.get_mut(conversation_id) else { return false };
        let before = list.len();
        list.retain(|t| t.user_id != user_id);
        let changed = list.len() != before;
        if list.is_empty() {
            self.by_conversation.remove(conversation_id);
        }
        changed
    }

    /// Drops typists whose time is up; true if any went.
    pub fn expire(&mut self, now: f64) -> bool {
        let mut changed = false;
        self.by_conversation.retain(|_, list| {
            let before = list.len();
            list.retain(|t| t.expires_at > now);
            changed |= list.len() != before;
            !list.is_empty()
        });
        changed
    }

    /// Who is typing in a conversation at `now` (expired ones never show, even if the
    /// wake-up that would drop them is late).
    pub fn typists(&self, conversation_id: &str, now: f64) -> Vec<&Typist> {
        self.by_conversation
            .get(conversation_id)
            .map_or_else(Vec::new, |l| l.iter().filter(|t| t.expires_at > now).collect())
    }

    /// When the next typist expires.
    pub fn next_wake(&self) -> Option<f64> {
        self.by_conversation.values().flatten().map(|t| t.expires_at).min_by(f64::total_cmp)
    }

    /// Forget everyone (e.g. after a resync).
    pub fn clear(&mut self) {
        self.by_conversation.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out() -> OutgoingTyping {
        OutgoingTyping::new(TypingConfig::default())
    }

    /// Types a key every `every` ms from `from` to `until`, ticking at each wake-up on the way.
    /// Returns (time, signal) for every signal sent.
    fn type_steadily(t: &mut OutgoingTyping, from: f64, until: f64, every: f64) -> Vec<(f64, TypingSignal)> {
        let mut sent = Vec::new();
        let mut now = from;
        let mut wake = None;
        while now <= until {
            if let Some(w) = wake.filter(|&w| w <= now) {
                sent.extend(t.tick(w).send.map(|x| (w, x)));
            }
            let s = t.draft_changed(now, false);
            sent.extend(s.send.map(|x| (now, x)));
            wake = s.wake_at;
            now += every;
        }
        sent
    }

    #[test]
    fn start_goes_at_most_every_three_seconds_while_typing() {
        let mut t = out();
        let sent = type_steadily(&mut t, 0.0, 10_000.0, 250.0);
        assert_eq!(
            sent,
            vec![
                (0.0, TypingSignal::Start),
                (3_000.0, TypingSignal::Start),
                (6_000.0, TypingSignal::Start),
                (9_000.0, TypingSignal::Start)
            ]
        );
        assert!(t.is_typing());
    }

    #[test]
    fn stop_goes_after_two_seconds_idle_even_on_a_late_wakeup() {
        let mut t = out();
        let s = t.draft_changed(1_000.0, false);
        assert_eq!(s, TypingStep { send: Some(TypingSignal::Start), wake_at: Some(3_000.0) });
        let s = t.draft_changed(1_500.0, false);
        assert_eq!(s, TypingStep { send: None, wake_at: Some(3_500.0) });
        // The old wake-up at 3 000 finds the draft changed since: not yet.
        assert_eq!(t.tick(3_000.0), TypingStep { send: None, wake_at: Some(3_500.0) });
        assert_eq!(t.tick(3_499.0).send, None);
        assert_eq!(t.tick(3_500.0), TypingStep { send: Some(TypingSignal::Stop), wake_at: None });
        assert_eq!(t.tick(9_000.0), TypingStep::default(), "one stop only");
        // A hidden tab's wake-up a minute late still stops (once).
        t.draft_changed(10_000.0, false);
        assert_eq!(t.tick(70_000.0).send, Some(TypingSignal::Stop));
        // Typing again after a stop starts again at once.
        assert_eq!(t.draft_changed(70_500.0, false).send, Some(TypingSignal::Start));
    }

    #[test]
    fn stop_goes_on_send_on_leaving_and_on_an_emptied_draft() {
        let mut t = out();
        t.draft_changed(0.0, false);
        assert_eq!(t.message_sent(), TypingStep { send: Some(TypingSignal::Stop), wake_at: None });
        assert_eq!(t.message_sent().send, None, "nothing to stop");
        // The next message, started right away, announces itself again.
        assert_eq!(t.draft_changed(100.0, false).send, Some(TypingSignal::Start));
        assert_eq!(t.left().send, Some(TypingSignal::Stop));
        assert_eq!(t.left().send, None);
        t.draft_changed(200.0, false);
        assert_eq!(t.draft_changed(300.0, true).send, Some(TypingSignal::Stop));
        assert_eq!(t.draft_changed(400.0, true).send, None);
    }

    #[test]
    fn incoming_typists_expire_six_seconds_after_their_last_frame() {
        let mut i = IncomingTyping::new(&TypingConfig::default());
        assert!(i.indicator(0.0, "c", "u1", "ada", true));
        assert!(i.indicator(1_000.0, "c", "u2", "bob", true));
        assert!(!i.indicator(3_000.0, "c", "u1", "ada", true), "a renewal is no change");
        assert_eq!(i.next_wake(), Some(7_000.0));
        let names =
            |i: &IncomingTyping, now| i.typists("c", now).iter().map(|t| t.username.clone()).collect::<Vec<_>>();
        assert_eq!(names(&i, 6_999.0), vec!["ada", "bob"]);
        assert_eq!(names(&i, 7_000.0), vec!["ada"], "bob's 6 s are up, even before the wake-up");
        assert!(!i.expire(6_000.0));
        assert!(i.expire(7_000.0));
        assert_eq!(i.next_wake(), Some(9_000.0));
        assert!(i.expire(9_000.0));
        assert_eq!(i.next_wake(), None);
        assert!(i.typists("c", 9_000.0).is_empty());
    }

    #[test]
    fn incoming_stop_and_message_remove_a_typist_per_conversation() {
        let mut i = IncomingTyping::new(&TypingConfig::default());
        i.indicator(0.0, "c", "u1", "ada", true);
        i.indicator(0.0, "d", "u1", "ada", true);
        assert!(i.indicator(500.0, "c", "u1", "ada", false));
        assert!(!i.indicator(600.0, "c", "u1", "ada", false));
        assert_eq!(i.typists("d", 700.0).len(), 1, "other conversations keep theirs");
        assert!(i.message_from("d", "u1"));
        assert!(i.typists("d", 700.0).is_empty());
        i.indicator(800.0, "c", "u3", "cy", true);
        i.clear();
        assert_eq!(i.next_wake(), None);
    }
}
