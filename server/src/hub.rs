//! Who is connected and where frames go: sockets per user, sockets joined per conversation.
//!
//! Frames are serialized once and shared (`Utf8Bytes`, reference-counted) by every socket they
//! go to, and every frame meant for users (not a reply to one socket) also goes into the
//! [`EventLog`] for clients that poll. Each socket has a bounded queue; a socket too slow to
//! drain it is kicked (it reconnects and catches up with after_seq) instead of letting memory
//! grow. The hub also caches who is a member of which conversation.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use persona_chat_protocol::{OnlineUser, ServerFrame, User};

use crate::clock::now_rfc3339;
use crate::events::{Audience, EventLog};
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
    /// The session whose token opened it: signing that session out closes it.
    session: String,
    tx: mpsc::Sender<Outbound>,
    kick: Arc<Kick>,
    joined: HashSet<String>,
}

/// Asks a socket's task to close it, with a code and a reason; the first ask wins.
#[derive(Default)]
pub struct Kick {
    notify: Notify,
    reason: Mutex<Option<(u16, &'static str)>>,
}

/// A socket too slow to keep up with its queue.
pub const KICK_SLOW: (u16, &str) = (1008, "too slow to keep up; reconnect");

impl Kick {
    pub fn kick(&self, code: u16, reason: &'static str) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some((code, reason));
        }
        drop(r);
        self.notify.notify_one();
    }

    /// Resolves with the code and reason once kicked.
    pub async fn kicked(&self) -> (u16, &'static str) {
        loop {
            if let Some(r) = *self.reason.lock().unwrap_or_else(|p| p.into_inner()) {
                return r;
            }
            self.notify.notified().await;
        }
    }
}

#[derive(Default)]
struct Inner {
    conns: HashMap<ConnId, Conn>,
    by_user: HashMap<String, Vec<ConnId>>,
    by_conversation: HashMap<String, HashSet<ConnId>>,
    /// conversation -> its user members, shared with the event log's audiences (copied only
    /// when membership changes while an event still holds the old set).
    members: HashMap<String, Arc<HashSet<String>>>,
    /// user -> the conversations they are a member of.
    memberships: HashMap<String, HashSet<String>>,
    /// Users present through the HTTP long poll (the polling fallback), by user id.
    pollers: HashMap<String, Poller>,
}

/// A user polling for events: online while a poll is open, and for a grace period after.
struct Poller {
    user: User,
    open_polls: u32,
    until: Instant,
}

impl Inner {
    fn is_online(&self, user_id: &str) -> bool {
        self.by_user.contains_key(user_id) || self.pollers.contains_key(user_id)
    }

    /// The member sets of every conversation of `user_id`: who shares one with them.
    fn peer_sets(&self, user_id: &str) -> Vec<Arc<HashSet<String>>> {
        self.memberships.get(user_id).into_iter().flatten().filter_map(|c| self.members.get(c).cloned()).collect()
    }

    fn add_member(&mut self, conversation_id: &str, user_id: &str) {
        Arc::make_mut(self.members.entry(conversation_id.to_owned()).or_default()).insert(user_id.to_owned());
        self.memberships.entry(user_id.to_owned()).or_default().insert(conversation_id.to_owned());
    }
}

/// A presence_update for `user`; going offline, its timestamp is the `last_seen` it carries.
fn presence(user: &User, online: bool, last_seen: Option<String>) -> ServerFrame {
    let timestamp = last_seen.clone().unwrap_or_else(now_rfc3339);
    ServerFrame::PresenceUpdate {
        user_id: user.id.clone(),
        username: user.username.clone(),
        online,
        last_seen,
        timestamp,
    }
}

pub struct Hub {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    pub events: EventLog,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(EventLog::new(DEFAULT_EVENT_LOG))
    }
}

/// Events kept for pollers unless configured otherwise.
pub const DEFAULT_EVENT_LOG: usize = 10_000;

pub struct TooManySockets;

/// A registered socket.
pub struct Registration {
    pub id: ConnId,
    /// The user had no other socket: they just came online.
    pub first: bool,
}

impl Hub {
    pub fn new(events: EventLog) -> Hub {
        Hub { inner: Mutex::default(), next_id: AtomicU64::new(0), events }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain maps behind: keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(
        &self,
        user: &User,
        session: &str,
        tx: mpsc::Sender<Outbound>,
        kick: Arc<Kick>,
        max_per_user: usize,
    ) -> Result<Registration, TooManySockets> {
        let mut inner = self.lock();
        let existing = inner.by_user.get(&user.id).map_or(0, Vec::len);
        if existing >= max_per_user {
            return Err(TooManySockets);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        inner
            .conns
            .insert(id, Conn { user: user.clone(), session: session.to_owned(), tx, kick, joined: HashSet::new() });
        inner.by_user.entry(user.id.clone()).or_default().push(id);
        let first = existing == 0;
        if first && !inner.pollers.contains_key(&user.id) {
            // Under the same lock as the registration, so presence frames can never arrive
            // out of order when a user drops and comes back at once.
            self.fan_out_presence(&inner, &user.id, &presence(user, true, None));
        }
        Ok(Registration { id, first })
    }

    /// Forgets a socket. When it was the user's last one they just went offline: the others
    /// are told, unless `announce` is false (the server is shutting down, so everyone is
    /// leaving and coming back), and `last_seen` is returned so it can be stored.
    pub fn unregister(&self, id: ConnId, announce: bool) -> Option<String> {
        let mut inner = self.lock();
        let user = inner.conns.get(&id).map(|c| c.user.clone())?;
        if !Self::forget(&mut inner, id) || inner.pollers.contains_key(&user.id) {
            // Still online: another socket, or the long poll.
            return None;
        }
        let now = now_rfc3339();
        if announce {
            self.fan_out_presence(&inner, &user.id, &presence(&user, false, Some(now.clone())));
        }
        Some(now)
    }

    /// Removes a socket from the maps; true if it was its user's last.
    fn forget(inner: &mut Inner, id: ConnId) -> bool {
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

    // ---- membership cache ----

    /// Replaces the membership cache (at start, from the store).
    pub fn load_members(&self, memberships: Vec<(String, String)>) {
        let mut inner = self.lock();
        inner.members.clear();
        inner.memberships.clear();
        for (conversation, user) in memberships {
            inner.add_member(&conversation, &user);
        }
    }

    pub fn add_member(&self, conversation_id: &str, user_id: &str) {
        self.lock().add_member(conversation_id, user_id);
    }

    /// Removes a member, and unjoins their sockets from the conversation.
    pub fn remove_member(&self, conversation_id: &str, user_id: &str) {
        let mut inner = self.lock();
        if let Some(set) = inner.members.get_mut(conversation_id) {
            Arc::make_mut(set).remove(user_id);
        }
        if let Some(set) = inner.memberships.get_mut(user_id) {
            set.remove(conversation_id);
        }
        let ids: Vec<ConnId> = inner.by_user.get(user_id).cloned().unwrap_or_default();
        for id in ids {
            if let Some(conn) = inner.conns.get_mut(&id) {
                conn.joined.remove(conversation_id);
            }
            if let Some(set) = inner.by_conversation.get_mut(conversation_id) {
                set.remove(&id);
            }
        }
    }

    pub fn members_of(&self, conversation_id: &str) -> Vec<String> {
        self.lock().members.get(conversation_id).map(|m| m.iter().cloned().collect()).unwrap_or_default()
    }

    pub fn is_member(&self, conversation_id: &str, user_id: &str) -> bool {
        self.lock().members.get(conversation_id).is_some_and(|m| m.contains(user_id))
    }

    // ---- sockets ----

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
        self.lock().is_online(user_id)
    }

    // ---- presence of users who poll ----

    /// A long poll of `user` begins: they are online (announced if they were not).
    pub fn poll_started(&self, user: &User) {
        let mut inner = self.lock();
        let was_online = inner.is_online(&user.id);
        let poller = inner.pollers.entry(user.id.clone()).or_insert_with(|| Poller {
            user: user.clone(),
            open_polls: 0,
            until: Instant::now(),
        });
        poller.open_polls += 1;
        if !was_online {
            self.fan_out_presence(&inner, &user.id, &presence(user, true, None));
        }
    }

    /// Opens a long poll for `user` unless they have `max` open already.
    pub fn try_poll_started(&self, user: &User, max: u32) -> bool {
        if self.lock().pollers.get(&user.id).is_some_and(|p| p.open_polls >= max) {
            return false;
        }
        self.poll_started(user);
        true
    }

    /// A long poll of `user_id` ended: they stay online for `grace` unless another begins.
    pub fn poll_ended(&self, user_id: &str, grace: Duration) {
        let mut inner = self.lock();
        if let Some(p) = inner.pollers.get_mut(user_id) {
            p.open_polls = p.open_polls.saturating_sub(1);
            p.until = Instant::now() + grace;
        }
    }

    /// Users whose polling stopped longer than the grace ago go offline (announced unless
    /// they have a socket). Returns who went offline, with their last_seen, to be stored.
    pub fn sweep_pollers(&self, now: Instant) -> Vec<(String, String)> {
        let mut inner = self.lock();
        let gone: Vec<String> = inner
            .pollers
            .iter()
            .filter(|(_, p)| p.open_polls == 0 && p.until <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut offline = Vec::new();
        for id in gone {
            let Some(p) = inner.pollers.remove(&id) else { continue };
            if !inner.by_user.contains_key(&id) {
                let last_seen = now_rfc3339();
                self.fan_out_presence(&inner, &id, &presence(&p.user, false, Some(last_seen.clone())));
                offline.push((id, last_seen));
            }
        }
        offline
    }

    /// The online users who share a conversation with `user_id` (and they themselves).
    pub fn online_users_for(&self, user_id: &str) -> Vec<OnlineUser> {
        let sets = self.lock().peer_sets(user_id);
        self.online_users()
            .into_iter()
            .filter(|u| u.user_id == user_id || sets.iter().any(|s| s.contains(&u.user_id)))
            .collect()
    }

    pub fn online_users(&self) -> Vec<OnlineUser> {
        let inner = self.lock();
        let mut users: Vec<OnlineUser> = inner
            .by_user
            .values()
            .filter_map(|ids| ids.first())
            .filter_map(|id| inner.conns.get(id))
            .map(|c| &c.user)
            .chain(inner.pollers.iter().filter(|(id, _)| !inner.by_user.contains_key(*id)).map(|(_, p)| &p.user))
            .map(|u| OnlineUser { user_id: u.id.clone(), username: u.username.clone() })
            .collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        users
    }

    /// Closes every socket opened with one of these sessions.
    pub fn close_sessions(&self, sessions: &[String], code: u16, reason: &'static str) {
        let inner = self.lock();
        for conn in inner.conns.values().filter(|c| sessions.contains(&c.session)) {
            conn.kick.kick(code, reason);
        }
    }

    pub fn connection_count(&self) -> usize {
        self.lock().conns.len()
    }

    /// The queue of one socket, for sending with backpressure (a long backlog) instead of
    /// kicking a socket whose queue is full.
    pub fn sender(&self, id: ConnId) -> Option<mpsc::Sender<Outbound>> {
        self.lock().conns.get(&id).map(|c| c.tx.clone())
    }

    /// To one socket.
    pub fn send_to_conn(&self, id: ConnId, frame: &ServerFrame) {
        let text: Utf8Bytes = frame.to_json().into();
        let inner = self.lock();
        if let Some(conn) = inner.conns.get(&id) {
            deliver(conn, &text);
        }
    }

    /// To every socket joined to a conversation, except those of `except_user`; pollers among
    /// its members get it too.
    pub fn send_to_joined(&self, conversation_id: &str, frame: &ServerFrame, except_user: Option<&str>) {
        self.to_joined(conversation_id, frame, except_user, false)
    }

    /// Like [`Hub::send_to_joined`] for frames pollers may miss (typing): they go to the event
    /// log's small ephemeral ring, never pushing durable events out.
    pub fn send_ephemeral_to_joined(&self, conversation_id: &str, frame: &ServerFrame, except_user: Option<&str>) {
        self.to_joined(conversation_id, frame, except_user, true)
    }

    fn to_joined(&self, conversation_id: &str, frame: &ServerFrame, except_user: Option<&str>, ephemeral: bool) {
        let text: Utf8Bytes = frame.to_json().into();
        let inner = self.lock();
        let audience = Audience::Members {
            sets: inner.members.get(conversation_id).cloned().into_iter().collect(),
            except: except_user.map(str::to_owned),
        };
        if ephemeral {
            self.events.append_ephemeral(audience, text.clone());
        } else {
            self.events.append(audience, text.clone());
        }
        let Some(ids) = inner.by_conversation.get(conversation_id) else { return };
        for conn in ids.iter().filter_map(|id| inner.conns.get(id)) {
            if except_user != Some(conn.user.id.as_str()) {
                deliver(conn, &text);
            }
        }
    }

    /// To every socket of these users, joined or not, and to their polls.
    pub fn send_to_users<'a>(&self, user_ids: impl IntoIterator<Item = &'a str>, frame: &ServerFrame) {
        let text: Utf8Bytes = frame.to_json().into();
        let user_ids: Vec<String> = user_ids.into_iter().map(str::to_owned).collect();
        let inner = self.lock();
        for user_id in &user_ids {
            for conn in inner.by_user.get(user_id).into_iter().flatten().filter_map(|id| inner.conns.get(id)) {
                deliver(conn, &text);
            }
        }
        self.events.append(Audience::Users(user_ids), text);
    }

    /// To every socket and poll of a conversation's members, joined or not.
    pub fn send_to_members(&self, conversation_id: &str, frame: &ServerFrame) {
        let text: Utf8Bytes = frame.to_json().into();
        let inner = self.lock();
        let Some(set) = inner.members.get(conversation_id).cloned() else { return };
        for user_id in set.iter() {
            for conn in inner.by_user.get(user_id).into_iter().flatten().filter_map(|id| inner.conns.get(id)) {
                deliver(conn, &text);
            }
        }
        self.events.append(Audience::Members { sets: vec![set], except: None }, text);
    }

    /// A user's presence: to the sockets and polls of those who share a conversation with them.
    fn fan_out_presence(&self, inner: &Inner, user_id: &str, frame: &ServerFrame) {
        let text: Utf8Bytes = frame.to_json().into();
        let sets = inner.peer_sets(user_id);
        for conn in inner.conns.values() {
            if conn.user.id != user_id && sets.iter().any(|s| s.contains(&conn.user.id)) {
                deliver(conn, &text);
            }
        }
        self.events.append(Audience::Members { sets, except: Some(user_id.to_owned()) }, text);
    }

    /// To every socket and poll, except those of `except_user`.
    pub fn send_to_all(&self, frame: &ServerFrame, except_user: Option<&str>) {
        let inner = self.lock();
        self.fan_out_all(&inner, frame, except_user);
    }

    fn fan_out_all(&self, inner: &Inner, frame: &ServerFrame, except_user: Option<&str>) {
        let text: Utf8Bytes = frame.to_json().into();
        for conn in inner.conns.values() {
            if except_user != Some(conn.user.id.as_str()) {
                deliver(conn, &text);
            }
        }
        self.events.append(Audience::All { except: except_user.map(str::to_owned) }, text);
    }
}

fn deliver(conn: &Conn, text: &Utf8Bytes) {
    if conn.tx.try_send(Outbound::Text(text.clone())).is_err() {
        // Full (too slow) or closed (already going away): either way this socket is done.
        conn.kick.kick(KICK_SLOW.0, KICK_SLOW.1);
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
        let kick = Arc::new(Kick::default());
        let a = hub.register(&user("a"), "s", tx.clone(), kick.clone(), 2).ok().unwrap();
        let b = hub.register(&user("a"), "s", tx.clone(), kick.clone(), 2).ok().unwrap();
        assert!(a.first && !b.first);
        assert!(hub.register(&user("a"), "s", tx.clone(), kick.clone(), 2).is_err());
        assert!(hub.unregister(a.id, true).is_none());
        assert!(hub.is_online("a"));
        assert!(hub.unregister(b.id, true).is_some());
        assert!(!hub.is_online("a"));
    }

    #[test]
    fn joined_fan_out_skips_the_excepted_user() {
        let hub = Hub::default();
        let kick = Arc::new(Kick::default());
        let (tx_a, mut rx_a) = mpsc::channel(4);
        let (tx_b, mut rx_b) = mpsc::channel(4);
        let (tx_z, mut rx_z) = mpsc::channel(4);
        hub.load_members(vec![("c".into(), "a".into()), ("c".into(), "b".into()), ("other".into(), "z".into())]);
        let a = hub.register(&user("a"), "sa", tx_a, kick.clone(), 5).ok().unwrap();
        let _z = hub.register(&user("z"), "sz", tx_z, kick.clone(), 5).ok().unwrap();
        let b = hub.register(&user("b"), "sb", tx_b, kick, 5).ok().unwrap();
        // Registering b told a (who shares c with b) that b came online, under the hub's lock;
        // z, who shares nothing with either, heard of neither, and a did not hear of z.
        assert!(
            matches!(rx_a.try_recv(), Ok(Outbound::Text(t)) if t.as_str().contains("\"presence_update\"") && t.as_str().contains("\"b\""))
        );
        assert!(rx_a.try_recv().is_err());
        assert!(rx_z.try_recv().is_err());
        assert_eq!(hub.online_users_for("z").len(), 1, "z sees only themselves online");
        hub.join(a.id, "c");
        hub.join(b.id, "c");
        let before = hub.events.last_id();
        let frame = ServerFrame::ConversationLeft { conversation_id: "c".into() };
        hub.send_to_joined("c", &frame, Some("a"));
        assert!(rx_a.try_recv().is_err());
        assert!(matches!(rx_b.try_recv(), Ok(Outbound::Text(_))));
        // Pollers get it too: b (a member) does, a (the excepted sender) does not.
        assert!(
            matches!(hub.events.read("b", before, 10), crate::events::Read::Events { ref events, .. } if events.len() == 1)
        );
        assert!(
            matches!(hub.events.read("a", before, 10), crate::events::Read::Events { ref events, .. } if events.is_empty())
        );
        hub.leave(b.id, "c");
        hub.send_to_joined("c", &frame, Some("a"));
        assert!(rx_b.try_recv().is_err());
    }
}
