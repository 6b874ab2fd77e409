//! Who is connected and where frames go: sockets per user, sockets joined per conversation.
//!
//! Frames are serialized once and shared (`Utf8Bytes`, reference-counted) by every socket they go to. Each socket
//! has a bounded queue; a socket too slow to drain it is kicked (it reconnects and catches up
//! with after_seq) instead of letting memory grow.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use persona_chat_protocol::{OnlineUser, ServerFrame, User};
use axum::extract::ws::Utf8Bytes;
use tokio::sync::{mpsc, Notify};

pub type ConnId = u64;

/// What a socket's writer task is asked to do.
#[derive(Debug, Clone)]
pub enum Outbound {
    Text(Utf8Bytes),
    Close(u16, &'static str),
}

/// Frames queued per socket before it counts as too slow.
pub const SOCKET_QUEUE: usize = 512;

struct Conn {
    user: User,
    tx: mpsc::Sender<Outbound>,
    kick: Arc<Notify>,
    joined: HashSet<String>,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<ConnId, Conn>,
    by_user: HashMap<String, Vec<ConnId>>,
    by_conversation: HashMap<String, HashSet<ConnId>>,
}

#[derive(Default)]
pub struct Hub {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
}

pub struct TooManySockets;

/// A registered socket.
pub struct Registration {
    pub id: ConnId,
    /// The user had no other socket: they just came online.
    pub first: bool,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain maps behind: keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(
        &self,
        user: &User,
        tx: mpsc::Sender<Outbound>,
        kick: Arc<Notify>,
        max_per_user: usize,
    ) -> Result<Registration, TooManySockets> {
        let mut inner = self.lock();
        let existing = inner.by_user.get(&user.id).map_or(0, Vec::len);
        if existing >= max_per_user {
            return Err(TooManySockets);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        inner.conns.insert(id, Conn { user: user.clone(), tx, kick, joined: HashSet::new() });
        inner.by_user.entry(user.id.clone()).or_default().push(id);
        Ok(Registration { id, first: existing == 0 })
    }

    /// Forgets a socket. True when it was the user's last one: they just went offline.
    pub fn unregister(&self, id: ConnId) -> bool {
        let mut inner = self.lock();
        let Some(conn) = inner.conns.remove(&id) else { return false };
        for conversation in &conn.joined {
            if let Some(set) = inner.by_conversation.get_mut(conversation) {
                set.remove(&id);
                if set.is_empty() {
                    inner.by_conversation.remove(conversation);
                }
            }
        }
        let mut last = false;
        if let Some(ids) = inner.by_user.get_mut(&conn.user.id) {
            ids.retain(|c| *c != id);
            if ids.is_empty() {
                inner.by_user.remove(&conn.user.id);
                last = true;
            }
        }
        last
    }

    pub fn join(&self, id: ConnId, conversation_id: &str) {
        let mut inner = self.lock();
        if let Some(conn) = inner.conns.get_mut(&id) {
            conn.joined.insert(conversation_id.to_owned());
            inner.by_conversation.entry(conversation_id.to_owned()).or_default().insert(id);
        }
    }

    pub fn leave(&self, id: ConnId, conversation_id: &str) {
        let mut inner = self.lock();
        if let Some(conn) = inner.conns.get_mut(&id) {
            conn.joined.remove(conversation_id);
        }
        if let Some(set) = inner.by_conversation.get_mut(conversation_id) {
            set.remove(&id);
            if set.is_empty() {
                inner.by_conversation.remove(conversation_id);
            }
        }
    }

    pub fn is_online(&self, user_id: &str) -> bool {
        self.lock().by_user.contains_key(user_id)
    }

    pub fn online_users(&self) -> Vec<OnlineUser> {
        let inner = self.lock();
        let mut users: Vec<OnlineUser> = inner
            .by_user
            .values()
            .filter_map(|ids| ids.first())
            .filter_map(|id| inner.conns.get(id))
            .map(|c| OnlineUser { user_id: c.user.id.clone(), username: c.user.username.clone() })
            .collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        users
    }

    pub fn connection_count(&self) -> usize {
        self.lock().conns.len()
    }

    /// To one socket.
    pub fn send_to_conn(&self, id: ConnId, frame: &ServerFrame) {
        let text: Utf8Bytes = frame.to_json().into();
        let inner = self.lock();
        if let Some(conn) = inner.conns.get(&id) {
            deliver(conn, &text);
        }
    }

    /// To every socket joined to a conversation, except those of `except_user`.
    pub fn send_to_joined(&self, conversation_id: &str, frame: &ServerFrame, except_user: Option<&str>) {
        let text: Utf8Bytes = frame.to_json().into();
        let inner = self.lock();
        let Some(ids) = inner.by_conversation.get(conversation_id) else { return };
        for conn in ids.iter().filter_map(|id| inner.conns.get(id)) {
            if except_user != Some(conn.user.id.as_str()) {
                deliver(conn, &text);
            }
        }
    }

    /// To every socket of these users, joined or not.
    pub fn send_to_users<'a>(&self, user_ids: impl IntoIterator<Item = &'a str>, frame: &ServerFrame) {
        let text: Utf8Bytes = frame.to_json().into();
        let inner = self.lock();
        for user_id in user_ids {
            for conn in inner.by_user.get(user_id).into_iter().flatten().filter_map(|id| inner.conns.get(id)) {
                deliver(conn, &text);
            }
        }
    }

    /// To every socket, except those of `except_user`.
    pub fn send_to_all(&self, frame: &ServerFrame, except_user: Option<&str>) {
        let text: Utf8Bytes = frame.to_json().into();
        let inner = self.lock();
        for conn in inner.conns.values() {
            if except_user != Some(conn.user.id.as_str()) {
                deliver(conn, &text);
            }
        }
    }
}

fn deliver(conn: &Conn, text: &Utf8Bytes) {
    if conn.tx.try_send(Outbound::Text(text.clone())).is_err() {
        // Full (too slow) or closed (already going away): either way this socket is done.
        conn.kick.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> User {
        User { id: id.into(), username: id.into() }
    }

    #[test]
    fn presence_counts_sockets_per_user_and_limits_them() {
        let hub = Hub::default();
        let (tx, _rx) = mpsc::channel(4);
        let kick = Arc::new(Notify::new());
        let a = hub.register(&user("a"), tx.clone(), kick.clone(), 2).ok().unwrap();
        let b = hub.register(&user("a"), tx.clone(), kick.clone(), 2).ok().unwrap();
        assert!(a.first && !b.first);
        assert!(hub.register(&user("a"), tx.clone(), kick.clone(), 2).is_err());
        assert!(!hub.unregister(a.id));
        assert!(hub.is_online("a"));
        assert!(hub.unregister(b.id));
        assert!(!hub.is_online("a"));
    }

    #[test]
    fn joined_fan_out_skips_the_excepted_user() {
        let hub = Hub::default();
        let kick = Arc::new(Notify::new());
        let (tx_a, mut rx_a) = mpsc::channel(4);
        let (tx_b, mut rx_b) = mpsc::channel(4);
        let a = hub.register(&user("a"), tx_a, kick.clone(), 5).ok().unwrap();
        let b = hub.register(&user("b"), tx_b, kick, 5).ok().unwrap();
        hub.join(a.id, "c");
        hub.join(b.id, "c");
        let frame = ServerFrame::ConversationLeft { conversation_id: "c".into() };
        hub.send_to_joined("c", &frame, Some("a"));
        assert!(rx_a.try_recv().is_err());
        assert!(matches!(rx_b.try_recv(), Ok(Outbound::Text(_))));
        hub.leave(b.id, "c");
        hub.send_to_joined("c", &frame, Some("a"));
        assert!(rx_b.try_recv().is_err());
    }
}
