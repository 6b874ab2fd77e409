//! The connection machine and the outbox under seeded random events, against a model of the
//! browser and the server. Invariants after every step: one socket at most and Connected only
//! over a greeted one; no attempt or failure counted while the browser is offline; the server
//! stores the messages in the order written, each once; in the end every message is acked.
//! The seed is printed (`PROPS_SEED` replays it).

use super::machine::{Action, Config, Event, LinkState, Machine, Transport};
use super::outbox::{Outbox, OutboxConfig, Outgoing};
use crate::state::props::{seed, Rng};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Socket {
    Opening,
    Open,
    Greeted,
}

struct World {
    m: Machine,
    now: f64,
    wake: Option<f64>,
    socket: Option<Socket>,
    polling: bool,
    poll_in_flight: bool,
    online: bool,
    state: LinkState,
    outbox: Outbox,
    written: Vec<String>,
    stored: Vec<String>,
    log: Vec<String>,
    r: Rng,
    close_pending: bool,
}

impl World {
    fn event(&mut self, event: Event) {
        self.log.push(format!("{:.0} {event:?}", self.now));
        let (attempt, failures) = (self.m.attempt(), self.m.failures());
        let was_offline = !self.online;
        let actions = self.m.handle(self.now, event);
        let opens = actions.iter().filter(|a| matches!(a, Action::OpenSocket { .. })).count();
        assert!(opens <= 1, "two sockets opened at once: {actions:?}");
        for a in actions {
            self.log.push(format!("  -> {a:?}"));
            match a {
                Action::OpenSocket { .. } => self.socket = Some(Socket::Opening),
                Action::CloseSocket { .. } => {
                    self.socket = None;
                    self.outbox.requeue_in_flight();
                }
                Action::StartPolling => self.polling = true,
                Action::Poll { .. } => self.poll_in_flight = true,
                Action::AbortPoll => self.poll_in_flight = false,
                Action::StopPolling => {
                    self.polling = false;
                    self.poll_in_flight = false;
                }
                Action::ScheduleWake { at_ms } => self.wake = Some(at_ms),
                Action::TransportReady(_) => {
                    self.outbox.requeue_in_flight();
                    self.flush();
                }
                Action::State(s) => self.state = s,
                Action::SendPing { .. } | Action::TooManyConnections => {}
            }
        }
        if was_offline && !self.online {
            assert!(
                self.m.attempt() <= attempt && self.m.failures() <= failures,
                "counted while offline: {}",
                self.log.join("\n")
            );
        }
        if matches!(self.state, LinkState::Connected { .. }) && !self.close_pending {
            assert_eq!(
                self.socket,
                Some(Socket::Greeted),
                "Connected without a greeted socket: {}",
                self.log.join("\n")
            );
        }
        let n = self.stored.len();
        assert_eq!(self.stored[..], self.written[..n], "stored out of the written order: {}", self.log.join("\n"));
    }

    /// The glue's flush: what is sendable goes out on the transport up. A socket may die
    /// between frames (the server got a prefix; the acks of that prefix may be lost with it,
    /// and the close follows); over HTTP each POST may fail, before or after the server
    /// stored it. The server stores each client_id once.
    fn flush(&mut self) {
        let Some(transport) = self.m.transport() else { return };
        if transport == Transport::WebSocket && self.socket != Some(Socket::Greeted) {
            return;
        }
        let batch = self.outbox.take_sendable(self.now);
        let cut = self.r.chance(25);
        let through = if cut { self.r.below(batch.len() + 1) } else { batch.len() };
        for (i, item) in batch.iter().enumerate() {
            if i < through && !self.stored.contains(&item.client_id) {
                self.stored.push(item.client_id.clone());
            }
            match transport {
                Transport::WebSocket if !cut => {
                    self.outbox.ack(&item.client_id);
                }
                Transport::WebSocket => {
                    if i < through && self.r.chance(50) {
                        self.outbox.ack(&item.client_id);
                    }
                }
                Transport::Polling => {
                    if i < through && self.r.chance(80) {
                        self.outbox.ack(&item.client_id);
                    } else {
                        self.outbox.send_failed(&item.client_id, self.now);
                    }
                }
            }
        }
        if cut && transport == Transport::WebSocket {
            self.socket = None;
            self.outbox.requeue_in_flight();
            self.close_pending = true;
        }
    }

    /// Delivers the close of a socket that died during a flush.
    fn settle(&mut self) {
        if std::mem::take(&mut self.close_pending) {
            self.event(Event::SocketClosed { code: 1006 });
        }
    }
}

#[test]
fn random_events_keep_the_invariants() {
    let (seed, cases) = seed("machine random events");
    let mut rng = Rng(seed);
    for case in 0..cases {
        let mut w = World {
            m: Machine::new(Config::default(), rng.next()),
            now: 0.0,
            wake: None,
            socket: None,
            polling: false,
            poll_in_flight: false,
            online: true,
            state: LinkState::Disconnected,
            outbox: Outbox::new(OutboxConfig::default()),
            written: Vec::new(),
            stored: Vec::new(),
            log: vec![format!("case {case}, seed {seed}")],
            r: Rng(rng.next()),
            close_pending: false,
        };
        w.event(Event::Start);
        for _ in 0..300 {
            match w.r.below(16) {
                0 | 1 => {
                    // Time passes to the wake (or a little).
                    w.now = w.wake.filter(|&at| at > w.now).unwrap_or(w.now + 500.0);
                    w.wake = None;
                    w.event(Event::Tick);
                }
                2 if w.socket == Some(Socket::Opening) && w.online => {
                    w.socket = Some(Socket::Open);
                    w.event(Event::SocketOpened);
                }
                3 if w.socket == Some(Socket::Open) => {
                    w.socket = Some(Socket::Greeted);
                    w.event(Event::Hello { heartbeat_ms: Some(30_000) });
                }
                4 if w.socket.is_some() && (w.r.chance(30) || !w.online) => {
                    w.socket = None;
                    w.outbox.requeue_in_flight();
                    w.event(Event::SocketClosed { code: 1006 });
                }
                5 if w.socket == Some(Socket::Greeted) => w.event(Event::Frame),
                6 if w.r.chance(20) => {
                    w.online = !w.online;
                    w.event(if w.online { Event::BrowserOnline } else { Event::BrowserOffline });
                }
                7 if w.poll_in_flight => {
                    w.poll_in_flight = false;
                    let ok = w.online && w.r.chance(70);
                    w.event(if ok { Event::PollSucceeded } else { Event::PollFailed });
                }
                8 => {
                    let visible = w.r.chance(50);
                    w.event(if visible { Event::Visible } else { Event::Hidden })
                }
                9 if w.r.chance(10) => w.event(Event::RetryNow),
                10 if w.r.chance(3) => w.event(Event::ForcePolling),
                11..=13 if w.written.len() < 60 => {
                    let id = format!("k{:02}", w.written.len());
                    w.outbox.push(Outgoing::new(id.clone(), "c", "hello", "t")).expect("room in the outbox");
                    w.written.push(id);
                    w.flush();
                }
                _ => {
                    // The outbox's own timer (rate limits, failed sends).
                    if let Some(at) = w.outbox.next_wake() {
                        w.now = w.now.max(at);
                    }
                    w.flush();
                }
            }
            w.settle();
        }
        // Everything comes back: every message ends up stored once and acked.
        if !w.online {
            w.online = true;
            w.event(Event::BrowserOnline);
        }
        w.event(Event::RetryNow);
        for _ in 0..200 {
            if w.outbox.is_empty() {
                break;
            }
            match w.socket {
                Some(Socket::Opening) => {
                    w.socket = Some(Socket::Open);
                    w.event(Event::SocketOpened);
                }
                Some(Socket::Open) => {
                    w.socket = Some(Socket::Greeted);
                    w.event(Event::Hello { heartbeat_ms: Some(30_000) });
                }
                _ if w.poll_in_flight => {
                    w.poll_in_flight = false;
                    w.event(Event::PollSucceeded);
                }
                _ => {
                    w.now = w.outbox.next_wake().unwrap_or(w.now).max(w.wake.unwrap_or(w.now)).max(w.now + 100.0);
                    w.event(Event::Tick);
                }
            }
            w.flush();
            w.settle();
        }
        assert!(w.outbox.is_empty(), "not all acked: {:?}\n{}", w.outbox.items(), w.log.join("\n"));
        assert_eq!(w.stored, w.written, "each message stored once, in order");
    }
}
