//! Who is typing where. The server itself says `is_typing=false` when no typing_start came
//! for [`TYPING_TIMEOUT`], and when the socket that was typing closes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::hub::ConnId;

pub const TYPING_TIMEOUT: Duration = Duration::from_millis(persona_chat_protocol::typing::TIMEOUT_MS);
/// A typing_start is relayed at most this often per user and conversation; those in between
/// only keep the state alive.
pub const TYPING_RELAY_EVERY: Duration = Duration::from_millis(persona_chat_protocol::typing::RELAY_EVERY_MS);

struct Typist {
    username: String,
    /// The socket that said so (None: over HTTP).
    conn: Option<ConnId>,
    until: Instant,
    /// The others were told this user is typing: they are to be told when it ends.
    announced: bool,
}

/// A typing state that ended: (conversation, user id, username).
pub type Ended = (String, String, String);

#[derive(Default)]
pub struct Typing {
    inner: Mutex<HashMap<(String, String), Typist>>,
    /// When a start was last relayed, per (conversation, user): kept across stops and
    /// reconnects, so a user reconnecting in a loop is not relayed more often either.
    relayed: Mutex<HashMap<(String, String), Instant>>,
}

impl Typing {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Typist>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a start may be relayed now (and if so, it counts as relayed).
    fn may_relay(&self, key: &(String, String), now: Instant) -> bool {
        let mut relayed = self.relayed.lock().unwrap_or_else(|p| p.into_inner());
        match relayed.get(key) {
            Some(at) if now.duration_since(*at) < TYPING_RELAY_EVERY => false,
            _ => {
                relayed.insert(key.clone(), now);
                true
            }
        }
    }

    /// Records a typing_start at `now`; true if the others should be told (at most once per
    /// [`TYPING_RELAY_EVERY`] per user and conversation).
    pub fn start(
        &self,
        conversation_id: &str,
        user_id: &str,
        username: &str,
        conn: Option<ConnId>,
        now: Instant,
    ) -> bool {
        let key = (conversation_id.to_owned(), user_id.to_owned());
        let relay = self.may_relay(&key, now);
        let mut inner = self.lock();
        let announced = relay || inner.get(&key).is_some_and(|t| t.announced);
        inner.insert(key, Typist { username: username.to_owned(), conn, until: now + TYPING_TIMEOUT, announced });
        relay
    }

    /// Records a typing_stop; true if the others were told the user was typing there.
    pub fn stop(&self, conversation_id: &str, user_id: &str) -> bool {
        self.lock().remove(&(conversation_id.to_owned(), user_id.to_owned())).is_some_and(|t| t.announced)
    }

    /// Removes and returns the typists whose time ran out by `now`.
    pub fn expire(&self, now: Instant) -> Vec<Ended> {
        self.relayed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, at| now.duration_since(*at) < TYPING_RELAY_EVERY);
        let mut inner = self.lock();
        let gone: Vec<(String, String)> =
            inner.iter().filter(|(_, t)| t.until <= now).map(|(k, _)| k.clone()).collect();
        gone.into_iter()
            .filter_map(|k| inner.remove(&k).filter(|t| t.announced).map(|t| (k.0, k.1, t.username)))
            .collect()
    }

    /// Removes and returns what a closing socket was typing.
    pub fn socket_closed(&self, conn: ConnId) -> Vec<Ended> {
        let mut inner = self.lock();
        let gone: Vec<(String, String)> =
            inner.iter().filter(|(_, t)| t.conn == Some(conn)).map(|(k, _)| k.clone()).collect();
        gone.into_iter()
            .filter_map(|k| inner.remove(&k).filter(|t| t.announced).map(|t| (k.0, k.1, t.username)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_expires_five_seconds_after_the_last_start() {
        let typing = Typing::default();
        let t0 = Instant::now();
        assert!(typing.start("c", "u", "ann", Some(1), t0));
        assert!(!typing.start("c", "u", "ann", Some(1), t0 + Duration::from_secs(1)), "relayed at most every 2.5 s");
        assert!(typing.start("c", "u", "ann", Some(1), t0 + Duration::from_secs(3)));
        assert!(typing.stop("c", "u"));
        assert!(
            !typing.start("c", "u", "ann", Some(2), t0 + Duration::from_secs(4)),
            "a stop or a new socket does not reset the budget"
        );
        assert!(typing.socket_closed(2).is_empty(), "nobody was told of that start: nobody is told it ended");
        assert!(typing.start("c", "u", "ann", Some(1), t0 + Duration::from_secs(6)));
        assert!(typing.expire(t0 + Duration::from_millis(10_900)).is_empty());
        assert_eq!(typing.expire(t0 + Duration::from_secs(11)), vec![("c".into(), "u".into(), "ann".into())]);
        assert!(!typing.stop("c", "u"), "already ended");
    }

    #[test]
    fn a_closing_socket_ends_only_its_own_typing() {
        let typing = Typing::default();
        let now = Instant::now();
        typing.start("c1", "u", "ann", Some(1), now);
        typing.start("c2", "v", "bob", Some(2), now);
        assert_eq!(typing.socket_closed(1), vec![("c1".into(), "u".into(), "ann".into())]);
        assert!(typing.stop("c2", "v"));
    }
}
