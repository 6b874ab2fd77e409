//! Which tab of a user holds the connection: the election, failover and relay policy.
//!
//! Like [`super::machine`], plain Rust: events and time in, actions out; the glue in
//! `relay.rs` carries them out with the Web Locks API (a lock named for the server and the
//! user: whoever holds it leads) and a BroadcastChannel (heartbeats, frames in, sends out).
//!
//! - Without Web Locks or BroadcastChannel the tab is `Solo`: its own connection, as before.
//! - Otherwise a tab starts as a `Follower` and queues for the lock; when the lock is granted
//!   it leads: opens the connection and sends a heartbeat every `heartbeat_ms`.
//! - A follower that hears no heartbeat for `leader_timeout_ms` (a frozen leader keeps its
//!   lock) asks for the lock with `steal`. A leader whose lock was stolen steps down at
//!   once: it closes its connection and follows (and queues again).
//! - A closed or reloaded leader releases the lock with the page: the next queued tab gets it
//!   at once.

use persona_chat_protocol::{ClientFrame, ServerFrame};
use serde::{Deserialize, Serialize};

use super::machine::{LinkState, Transport};

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub heartbeat_ms: f64,
    /// No heartbeat for this long: the leader is frozen.
    pub leader_timeout_ms: f64,
}

impl Default for Config {
    fn default() -> Self {
        // A hidden tab's timers fire at most once a second in Chromium: a leader in the
        // background beats that slowly, so silence means frozen only after 2.5 s. A closed or
        // reloaded leader is replaced at once, when the browser releases its lock.
        Config { heartbeat_ms: 350.0, leader_timeout_ms: 2_500.0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Its own connection (no Web Locks or BroadcastChannel).
    Solo,
    Leader,
    Follower,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Solo => "solo",
            Role::Leader => "leader",
            Role::Follower => "follower",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Begin: whether the browser has Web Locks and BroadcastChannel.
    Start {
        supported: bool,
    },
    /// A lock request was granted (`steal`: the one that stole it).
    LockGranted {
        steal: bool,
    },
    /// The lock we held was stolen by another tab.
    LockLost,
    /// A heartbeat from the leading tab `tab`.
    Heartbeat {
        tab: String,
    },
    /// The user asks this tab to lead (diagnostics).
    LeadHere,
    Tick,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `navigator.locks.request(name, { steal }, ...)`, held until `ReleaseLock`.
    RequestLock {
        steal: bool,
    },
    /// Let go of the lock held (stepping down by choice; not needed after a steal).
    ReleaseLock,
    /// Open this tab's own connection (leader or solo).
    OpenConnection,
    /// Close it (a stolen leader).
    CloseConnection,
    /// Post a heartbeat (with the connection's state) on the channel.
    SendHeartbeat,
    ScheduleWake {
        at_ms: f64,
    },
    Role(Role),
}

#[derive(Debug, Clone)]
pub struct Election {
    config: Config,
    role: Option<Role>,
    /// A non-steal request waits in the lock's queue.
    queued: bool,
    /// A steal was asked at this time and not yet granted.
    stealing_since: Option<f64>,
    last_heard: f64,
    leader: Option<String>,
}

impl Election {
    pub fn new(config: Config) -> Self {
        Election { config, role: None, queued: false, stealing_since: None, last_heard: 0.0, leader: None }
    }

    pub fn role(&self) -> Option<Role> {
        self.role
    }

    /// The leading tab as last heard (a follower), if any.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn handle(&mut self, now: f64, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match (self.role, event) {
            (None, Event::Start { supported: false }) => {
                self.role = Some(Role::Solo);
                out.extend([Action::Role(Role::Solo), Action::OpenConnection]);
            }
            (None, Event::Start { supported: true }) => {
                self.follow(now, &mut out);
            }
            (Some(Role::Follower), Event::LockGranted { steal }) => {
                if steal {
                    self.stealing_since = None;
                } else {
                    self.queued = false;
                }
                self.role = Some(Role::Leader);
                self.leader = None;
                out.extend([Action::Role(Role::Leader), Action::OpenConnection, Action::SendHeartbeat]);
                out.push(Action::ScheduleWake { at_ms: now + self.config.heartbeat_ms });
            }
            // A second grant while leading cannot happen (we hold the lock); let it go.
            (Some(Role::Leader), Event::LockGranted { steal }) => {
                if steal {
                    self.stealing_since = None;
                } else {
                    self.queued = false;
                }
            }
            (Some(Role::Leader), Event::LockLost) => {
                out.push(Action::CloseConnection);
                self.follow(now, &mut out);
            }
            (Some(Role::Leader), Event::Tick) => {
                out.push(Action::SendHeartbeat);
                out.push(Action::ScheduleWake { at_ms: now + self.config.heartbeat_ms });
            }
            (Some(Role::Follower), Event::Heartbeat { tab }) => {
                self.last_heard = now;
                self.leader = Some(tab);
            }
            (Some(Role::Follower), Event::Tick) => {
                let silent = now - self.last_heard >= self.config.leader_timeout_ms;
                let steal_pending = self.stealing_since.is_some_and(|t| now - t < self.config.leader_timeout_ms);
                if silent && !steal_pending {
                    self.leader = None;
                    self.stealing_since = Some(now);
                    out.push(Action::RequestLock { steal: true });
                }
                out.push(Action::ScheduleWake { at_ms: self.next_check(now) });
            }
            (Some(Role::Follower), Event::LeadHere) if self.stealing_since.is_none() => {
                self.stealing_since = Some(now);
                out.push(Action::RequestLock { steal: true });
            }
            _ => {}
        }
        out
    }

    fn follow(&mut self, now: f64, out: &mut Vec<Action>) {
        self.role = Some(Role::Follower);
        self.last_heard = now;
        out.push(Action::Role(Role::Follower));
        if !self.queued {
            self.queued = true;
            out.push(Action::RequestLock { steal: false });
        }
        out.push(Action::ScheduleWake { at_ms: self.next_check(now) });
    }

    fn next_check(&self, now: f64) -> f64 {
        (self.last_heard + self.config.leader_timeout_ms).max(now + self.config.heartbeat_ms)
    }
}

/// The connection's state as the leader tells it (LinkState has no serde form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "s", rename_all = "snake_case")]
pub enum SharedState {
    Connecting,
    Connected { latency_ms: Option<f64> },
    Reconnecting { attempt: u32, retry_in_ms: f64 },
    Polling,
    Offline,
    Disconnected,
}

impl SharedState {
    /// The leader's state, with times made relative (each tab has its own clock).
    pub fn of(state: &LinkState, now: f64) -> SharedState {
        match state {
            LinkState::Connecting => SharedState::Connecting,
            LinkState::Connected { latency_ms, .. } => SharedState::Connected { latency_ms: *latency_ms },
            LinkState::Reconnecting { attempt, retry_at_ms } => {
                SharedState::Reconnecting { attempt: *attempt, retry_in_ms: (retry_at_ms - now).max(0.0) }
            }
            LinkState::Polling => SharedState::Polling,
            LinkState::Offline => SharedState::Offline,
            LinkState::Disconnected => SharedState::Disconnected,
        }
    }

    /// In this tab's clock; `since_ms` of a connection it learns of is kept from before when
    /// it was already connected.
    pub fn to_link(&self, now: f64, since_ms: Option<f64>) -> LinkState {
        match self {
            SharedState::Connecting => LinkState::Connecting,
            SharedState::Connected { latency_ms } => {
                LinkState::Connected { since_ms: since_ms.unwrap_or(now), latency_ms: *latency_ms }
            }
            SharedState::Reconnecting { attempt, retry_in_ms } => {
                LinkState::Reconnecting { attempt: *attempt, retry_at_ms: now + retry_in_ms }
            }
            SharedState::Polling => LinkState::Polling,
            SharedState::Offline => LinkState::Offline,
            SharedState::Disconnected => LinkState::Disconnected,
        }
    }

    pub fn transport(&self) -> Option<Transport> {
        match self {
            SharedState::Connected { .. } => Some(Transport::WebSocket),
            SharedState::Polling => Some(Transport::Polling),
            _ => None,
        }
    }
}

/// What the tabs say to each other on the channel (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Relay {
    /// Leader → all: alive, and the connection's state.
    Beat { tab: String, state: SharedState },
    /// Leader → all: a frame from the server.
    Frame { tab: String, frame: ServerFrame },
    /// Leader → all: a transport is (again) up: rejoin and resend.
    Ready { tab: String, polling: bool },
    /// Leader → all: the poll cursor was too old.
    Resync { tab: String },
    /// Follower → leader: send this frame on the socket.
    Send { frame: ClientFrame },
    /// Follower → leader: the diagnostics buttons.
    Control { op: Control },
    /// Follower → leader: a tab that started after the connection did asks for what the
    /// server said only at its start (who is online); answered with `Frame`s to all.
    Sync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    RetryNow,
    Disconnect,
    ForcePolling,
    Offline,
    Online,
}

impl Relay {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn parse(text: &str) -> Option<Relay> {
        serde_json::from_str(text).ok()
    }
}

/// A channel's name: one per server and user (tabs of other users or servers never meet).
pub fn channel_name(base: &str, user_id: &str) -> String {
    format!("persona-chat.tabs.{base}.{user_id}")
}

/// The lock's name: the same pair.
pub fn lock_name(base: &str, user_id: &str) -> String {
    format!("persona-chat.connection.{base}.{user_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(now: f64) -> (Election, Vec<Action>) {
        let mut e = Election::new(Config::default());
        let a = e.handle(now, Event::Start { supported: true });
        (e, a)
    }

    #[test]
    fn without_locks_or_channel_a_tab_keeps_its_own_connection() {
        let mut e = Election::new(Config::default());
        assert_eq!(
            e.handle(0.0, Event::Start { supported: false }),
            vec![Action::Role(Role::Solo), Action::OpenConnection]
        );
        for ev in [Event::Tick, Event::LeadHere, Event::Heartbeat { tab: "x".into() }, Event::LockLost] {
            assert!(e.handle(5_000.0, ev).is_empty());
        }
        assert_eq!(e.role(), Some(Role::Solo));
    }

    #[test]
    fn a_tab_follows_queues_for_the_lock_and_leads_when_granted() {
        let (mut e, a) = started(0.0);
        assert_eq!(
            a,
            vec![
                Action::Role(Role::Follower),
                Action::RequestLock { steal: false },
                Action::ScheduleWake { at_ms: 2_500.0 }
            ]
        );
        let a = e.handle(3.0, Event::LockGranted { steal: false });
        assert_eq!(
            a,
            vec![
                Action::Role(Role::Leader),
                Action::OpenConnection,
                Action::SendHeartbeat,
                Action::ScheduleWake { at_ms: 353.0 }
            ]
        );
        assert_eq!(e.handle(353.0, Event::Tick), vec![Action::SendHeartbeat, Action::ScheduleWake { at_ms: 703.0 }]);
        // Other tabs' heartbeats do not shake a leader.
        assert!(e.handle(400.0, Event::Heartbeat { tab: "other".into() }).is_empty());
        assert_eq!(e.role(), Some(Role::Leader));
    }

    #[test]
    fn a_follower_hearing_heartbeats_never_steals() {
        let (mut e, _) = started(0.0);
        let mut t = 0.0;
        while t < 60_000.0 {
            // Throttled in the background: once a second.
            t += 1_000.0;
            e.handle(t, Event::Heartbeat { tab: "L".into() });
            let a = e.handle(t + 1.0, Event::Tick);
            assert!(!a.contains(&Action::RequestLock { steal: true }), "at {t}");
        }
        assert_eq!(e.leader(), Some("L"));
    }

    #[test]
    fn a_frozen_leader_is_replaced_after_the_timeout() {
        let (mut e, _) = started(0.0);
        e.handle(100.0, Event::Heartbeat { tab: "L".into() });
        // Woken at the deadline: it steals once, not again while the steal is pending.
        assert_eq!(e.handle(900.0, Event::Tick), vec![Action::ScheduleWake { at_ms: 2_600.0 }]);
        let a = e.handle(2_600.0, Event::Tick);
        assert!(a.contains(&Action::RequestLock { steal: true }), "{a:?}");
        assert_eq!(e.leader(), None);
        assert!(!e.handle(3_000.0, Event::Tick).contains(&Action::RequestLock { steal: true }));
        let a = e.handle(3_020.0, Event::LockGranted { steal: true });
        assert!(a.contains(&Action::OpenConnection));
        assert_eq!(e.role(), Some(Role::Leader));
        // Its old queued request is still queued: no second one later.
        let a = e.handle(4_000.0, Event::LockLost);
        assert_eq!(a[0], Action::CloseConnection);
        assert!(!a.contains(&Action::RequestLock { steal: false }), "still queued: {a:?}");
    }

    #[test]
    fn a_stolen_leader_steps_down_at_once_and_queues_again() {
        let (mut e, _) = started(0.0);
        e.handle(1.0, Event::LockGranted { steal: false });
        let a = e.handle(50.0, Event::LockLost);
        assert_eq!(
            a,
            vec![
                Action::CloseConnection,
                Action::Role(Role::Follower),
                Action::RequestLock { steal: false },
                Action::ScheduleWake { at_ms: 2_550.0 }
            ]
        );
        assert_eq!(e.role(), Some(Role::Follower));
        // It now follows the new leader and does not steal back.
        e.handle(300.0, Event::Heartbeat { tab: "N".into() });
        assert!(!e.handle(2_550.0, Event::Tick).contains(&Action::RequestLock { steal: true }));
    }

    #[test]
    fn lead_here_steals_once() {
        let (mut e, _) = started(0.0);
        e.handle(10.0, Event::Heartbeat { tab: "L".into() });
        assert_eq!(e.handle(20.0, Event::LeadHere), vec![Action::RequestLock { steal: true }]);
        assert!(e.handle(21.0, Event::LeadHere).is_empty());
        e.handle(30.0, Event::LockGranted { steal: true });
        assert_eq!(e.role(), Some(Role::Leader));
        assert!(e.handle(40.0, Event::LeadHere).is_empty(), "already leading");
    }

    /// Several tabs sharing one simulated lock, with random closes, freezes and steals: at
    /// every moment at most one tab holds the lock and has its connection open, and a
    /// leaderless time never lasts much more than the timeout.
    #[test]
    fn randomized_tabs_have_one_connection_and_fail_over_quickly() {
        let seed = std::env::var("TABS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7)
        });
        println!("randomized_tabs_have_one_connection_and_fail_over_quickly seed {seed} (TABS_SEED={seed} to repeat)");
        let mut rng = seed | 1;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        struct Tab {
            e: Election,
            open: bool,
            wake: f64,
            frozen_until: f64,
            alive: bool,
        }
        for round in 0..100 {
            let config = Config::default();
            let mut tabs: Vec<Tab> = Vec::new();
            // The lock: holder and queue of (tab, steal) requests.
            let mut holder: Option<usize> = None;
            let mut queue: Vec<usize> = Vec::new();
            let mut events: Vec<(usize, Event)> = Vec::new();
            let mut leaderless_since: Option<f64> = Some(0.0);
            let mut t = 0.0;
            while t < 20_000.0 {
                t += 10.0;
                // Random happenings.
                match next(400) {
                    0..=3 if tabs.iter().filter(|x| x.alive).count() < 5 => {
                        let mut e = Election::new(config.clone());
                        let a = e.handle(t, Event::Start { supported: true });
                        tabs.push(Tab { e, open: false, wake: f64::MAX, frozen_until: 0.0, alive: true });
                        let i = tabs.len() - 1;
                        apply(&mut tabs, i, a, t, &mut holder, &mut queue, &mut events);
                    }
                    4 | 5 => {
                        // Close a tab: the browser releases its lock and drops its requests.
                        if let Some(i) = (0..tabs.len()).find(|&i| tabs[i].alive && next(2) == 0) {
                            tabs[i].alive = false;
                            tabs[i].open = false;
                            queue.retain(|&q| q != i);
                            if holder == Some(i) {
                                holder = None;
                            }
                        }
                    }
                    6 => {
                        // Freeze a tab for a while (it keeps its lock, hears and says nothing).
                        if let Some(i) = (0..tabs.len()).find(|&i| tabs[i].alive && next(2) == 0) {
                            tabs[i].frozen_until = t + 500.0 + next(3_000) as f64;
                        }
                    }
                    7 => {
                        if let Some(i) =
                            (0..tabs.len()).find(|&i| tabs[i].alive && tabs[i].frozen_until <= t && next(2) == 0)
                        {
                            let a = tabs[i].e.handle(t, Event::LeadHere);
                            apply(&mut tabs, i, a, t, &mut holder, &mut queue, &mut events);
                        }
                    }
                    _ => {}
                }
                // Timers, then every event until none is left (a frozen tab gets its own
                // when it thaws): the checks below hold once the tabs have heard each other.
                for i in 0..tabs.len() {
                    if tabs[i].alive && tabs[i].frozen_until <= t && tabs[i].wake <= t {
                        tabs[i].wake = f64::MAX;
                        let a = tabs[i].e.handle(t, Event::Tick);
                        apply(&mut tabs, i, a, t, &mut holder, &mut queue, &mut events);
                    }
                }
                for _ in 0..20 {
                    let mut held = Vec::new();
                    let mut pending = std::mem::take(&mut events);
                    pending.retain(|(i, ev)| {
                        if !tabs[*i].alive {
                            return false;
                        }
                        if tabs[*i].frozen_until > t {
                            held.push((*i, ev.clone()));
                            return false;
                        }
                        true
                    });
                    let quiet = pending.is_empty();
                    for (i, ev) in pending {
                        let a = tabs[i].e.handle(t, ev);
                        apply(&mut tabs, i, a, t, &mut holder, &mut queue, &mut events);
                    }
                    if holder.is_none() {
                        if let Some(pos) = queue.iter().position(|&q| tabs[q].alive) {
                            let i = queue.remove(pos);
                            holder = Some(i);
                            events.push((i, Event::LockGranted { steal: false }));
                        }
                    }
                    events.extend(held);
                    if quiet && events.iter().all(|(i, _)| tabs[*i].frozen_until > t) {
                        break;
                    }
                }
                // At most one connection among the tabs that are not frozen, and it is the
                // lock holder's (a frozen stolen leader closes its own when it thaws).
                let open: Vec<usize> =
                    (0..tabs.len()).filter(|&i| tabs[i].alive && tabs[i].open && tabs[i].frozen_until <= t).collect();
                assert!(open.len() <= 1, "seed {seed} round {round} t {t}: connections in tabs {open:?}");
                if let Some(&i) = open.first() {
                    assert_eq!(
                        holder,
                        Some(i),
                        "seed {seed} round {round} t {t}: the open connection is not the lock holder's"
                    );
                }
                let live_leader = holder.is_some_and(|h| tabs[h].frozen_until <= t && tabs[h].open);
                let any_active = tabs.iter().any(|x| x.alive && x.frozen_until <= t);
                if live_leader || !any_active {
                    leaderless_since = None;
                } else {
                    // One timeout after the last beat, and once more when the tab that stole
                    // the lock froze before it could lead.
                    let since = *leaderless_since.get_or_insert(t);
                    assert!(
                        t - since <= 2.0 * (config.leader_timeout_ms + config.heartbeat_ms) + 50.0,
                        "seed {seed} round {round} t {t}: no live leader since {since}"
                    );
                }
            }
        }

        #[allow(clippy::too_many_arguments)]
        fn apply(
            tabs: &mut [Tab],
            i: usize,
            actions: Vec<Action>,
            t: f64,
            holder: &mut Option<usize>,
            queue: &mut Vec<usize>,
            events: &mut Vec<(usize, Event)>,
        ) {
            for a in actions {
                match a {
                    Action::RequestLock { steal: false } => queue.push(i),
                    Action::RequestLock { steal: true } => {
                        if let Some(h) = holder.take() {
                            if h != i {
                                events.push((h, Event::LockLost));
                            }
                        }
                        *holder = Some(i);
                        events.push((i, Event::LockGranted { steal: true }));
                    }
                    Action::ReleaseLock => {
                        if *holder == Some(i) {
                            *holder = None;
                        }
                    }
                    Action::OpenConnection => tabs[i].open = true,
                    Action::CloseConnection => tabs[i].open = false,
                    Action::SendHeartbeat => {
                        for (j, tab) in tabs.iter().enumerate() {
                            if j != i && tab.alive {
                                events.push((j, Event::Heartbeat { tab: format!("{i}") }));
                            }
                        }
                    }
                    Action::ScheduleWake { at_ms } => tabs[i].wake = at_ms,
                    Action::Role(_) => {}
                }
            }
            let _ = t;
        }
    }

    #[test]
    fn relay_messages_and_states_round_trip() {
        let msgs = [
            Relay::Beat { tab: "a".into(), state: SharedState::Connected { latency_ms: Some(3.5) } },
            Relay::Send { frame: ClientFrame::TypingStart { conversation_id: "c".into() } },
            Relay::Control { op: Control::ForcePolling },
            Relay::Ready { tab: "a".into(), polling: true },
            Relay::Resync { tab: "a".into() },
            Relay::Sync,
        ];
        for m in msgs {
            assert_eq!(Relay::parse(&m.to_json()), Some(m));
        }
        assert_eq!(Relay::parse("{\"t\":\"nope\"}"), None);
        let s = SharedState::of(&LinkState::Reconnecting { attempt: 2, retry_at_ms: 1_500.0 }, 1_000.0);
        assert_eq!(s, SharedState::Reconnecting { attempt: 2, retry_in_ms: 500.0 });
        assert_eq!(s.to_link(9_000.0, None), LinkState::Reconnecting { attempt: 2, retry_at_ms: 9_500.0 });
        assert_eq!(
            SharedState::Connected { latency_ms: None }.to_link(5.0, Some(2.0)),
            LinkState::Connected { since_ms: 2.0, latency_ms: None }
        );
        assert_eq!(SharedState::Polling.transport(), Some(Transport::Polling));
        assert_ne!(channel_name("http://a", "u"), channel_name("http://b", "u"));
        assert_ne!(lock_name("http://a", "u"), lock_name("http://a", "v"));
    }
}
