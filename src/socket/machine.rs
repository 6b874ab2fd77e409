//! The connection policy as a plain state machine: no I/O, no timers, no clock. The glue feeds
//! it events with the current time (`performance.now()` in ms) and carries out the actions it
//! returns. Every reconnect, heartbeat and fallback rule is therefore a native `#[test]`.
//!
//! Rules, in short:
//! - Backoff ([`backoff`], decorrelated jitter): the first retry after a lost connection
//!   waits a uniform delay in `[0, 250 ms)`; each later one is uniform between 0.5 s and twice
//!   the previous wait, capped at 30 s. A server that closes with 1012 (it is restarting) is
//!   retried after a uniform `[0.25 s, 1.75 s)`. The counters reset only on the server's `hello`.
//! - Heartbeat: a ping every `heartbeat_ms` (from `hello`); the pong's round trip is the
//!   latency. Silence (no frame at all) for 2 intervals starts a *check*: a ping that must be
//!   answered (by any frame) within the 5 s answer window, else the socket is dead.
//! - Hidden tabs: timers may fire a minute late, so deadlines are checked against the clock on
//!   every event, and a late wake-up never condemns a socket: a check found expired by a
//!   wake-up that came late gets one fresh ping and a new answer window (see [`Config::late_slack_ms`]).
//! - Visible / online again: a check at once; if it fails, reconnect without a backoff wait.
//! - Browser offline: nothing new is opened and nothing that fails meanwhile counts.
//! - Fallback: after `failures_before_polling` failed WebSocket attempts in a row, or when an
//!   attempt gets no `hello` within the connect timeout, poll over HTTP and probe WebSocket
//!   every `probe_interval_ms`; a probe that gets `hello` takes over. A fallback whose polls
//!   failed too (the server was unreachable, not only its WebSocket: a restart) probes at
//!   once when a poll gets through again.
//!
//! The glue keeps at most one socket (an attempt, the live socket, or a probe while polling)
//! and delivers only that socket's events: it drops a socket's handle (unsetting its handlers)
//! on `CloseSocket`, on `SocketClosed` and before each `OpenSocket`.

use persona_chat_protocol::{ServerFrame, DEFAULT_HEARTBEAT_MS};

use super::backoff;

/// The knobs of the policy; `Default` is the numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Failed WebSocket attempts in a row before falling back to polling.
    pub failures_before_polling: u32,
    /// An attempt without `hello` after this long failed, and we fall back to polling.
    pub connect_timeout_ms: u64,
    /// Used until `hello` announces the server's.
    pub default_heartbeat_ms: u64,
    /// How long a check ping may take to be answered.
    pub answer_window_ms: u64,
    /// A wake-up later than this past the deadline it serves is "late": its evidence is not
    /// trusted to condemn (the tab may have been throttled or frozen meanwhile).
    pub late_slack_ms: u64,
    /// How often a WebSocket probe is tried while polling.
    pub probe_interval_ms: u64,
    /// The long poll's server-side timeout.
    pub poll_timeout_ms: u64,
    /// A poll not answered `poll_timeout_ms + poll_grace_ms` after it went out is aborted.
    pub poll_grace_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            failures_before_polling: 5,
            connect_timeout_ms: 20_000,
            default_heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            answer_window_ms: 5_000,
            late_slack_ms: 2_000,
            probe_interval_ms: backoff::CAP_MS,
            poll_timeout_ms: 25_000,
            poll_grace_ms: 10_000,
        }
    }
}

/// The close code the server uses to refuse a socket over the per-user limit.
pub const POLICY_VIOLATION: u16 = 1008;

/// What happened. Socket events concern the one socket the glue holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Begin (from Disconnected).
    Start,
    SocketOpened,
    SocketClosed {
        code: u16,
    },
    /// The server's `hello` on the socket.
    Hello {
        heartbeat_ms: Option<u64>,
    },
    /// A `pong` on the socket, echoing the ping's `ts`.
    Pong {
        ts: f64,
    },
    /// Any other frame on the socket.
    Frame,
    /// A timer fired (any wake-up will do: deadlines are checked on every event).
    Tick,
    BrowserOnline,
    BrowserOffline,
    Visible,
    Hidden,
    /// The user asks for a connection now.
    RetryNow,
    /// The user stops the connection (until `RetryNow` or `Start`).
    Disconnect,
    /// Diagnostics: use the HTTP fallback (no probing) until `RetryNow`.
    ForcePolling,
    /// A long poll answered (with events or none).
    PollSucceeded,
    /// A long poll failed (network error, 5xx...).
    PollFailed,
}

impl Event {
    /// The event a parsed server frame makes.
    pub fn from_frame(frame: &ServerFrame) -> Event {
        match frame {
            ServerFrame::Hello { heartbeat_ms, .. } => Event::Hello { heartbeat_ms: Some(*heartbeat_ms) },
            ServerFrame::Pong { ts, .. } => Event::Pong { ts: *ts },
            _ => Event::Frame,
        }
    }
}

/// Why the machine closes a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A check ping got no answer in its window.
    Unresponsive,
    /// No `hello` within the connect timeout.
    ConnectTimeout,
    UserDisconnect,
    PollingForced,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Unresponsive => "unresponsive",
            CloseReason::ConnectTimeout => "connect timeout",
            CloseReason::UserDisconnect => "disconnected by the user",
            CloseReason::PollingForced => "polling forced",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Polling,
}

/// What the user sees.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkState {
    Connecting,
    Connected {
        since_ms: f64,
        latency_ms: Option<f64>,
    },
    /// Waiting to retry: `attempt` is the retry's number since the last confirmed connection
    /// (or the failed polls in a row, while polling).
    Reconnecting {
        attempt: u32,
        retry_at_ms: f64,
    },
    /// The HTTP fallback is live.
    Polling,
    /// The browser says it is offline and nothing works.
    Offline,
    Disconnected,
}

impl LinkState {
    /// Whether the state carries messages (either transport).
    pub fn is_up(&self) -> bool {
        matches!(self, LinkState::Connected { .. } | LinkState::Polling)
    }

    /// The machine-readable state name and the words for the state, at time `now_ms`.
    pub fn describe(&self, now_ms: f64) -> (&'static str, String) {
        match self {
            LinkState::Connected { latency_ms: Some(ms), .. } => {
                ("connected", format!("Connected · {} ms", ms.round() as i64))
            }
            LinkState::Connected { .. } => ("connected", "Connected".to_owned()),
            LinkState::Connecting => ("connecting", "Connecting…".to_owned()),
            LinkState::Reconnecting { attempt, retry_at_ms } => {
                let secs = ((retry_at_ms - now_ms) / 1000.0).ceil().max(0.0) as i64;
                if secs > 0 {
                    ("disconnected", format!("Reconnecting in {secs} s (attempt {attempt})"))
                } else {
                    ("disconnected", format!("Reconnecting… (attempt {attempt})"))
                }
            }
            LinkState::Polling => ("polling", "Live via polling".to_owned()),
            LinkState::Offline => ("offline", "Offline".to_owned()),
            LinkState::Disconnected => ("disconnected", "Disconnected".to_owned()),
        }
    }
}

/// What the glue must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Open a WebSocket (replacing any handle). `probe`: a background try while polling.
    OpenSocket {
        probe: bool,
    },
    CloseSocket {
        reason: CloseReason,
    },
    /// Send `ping {ts}` on the socket.
    SendPing {
        ts: f64,
    },
    /// Send over HTTP from now on (sends, typing).
    StartPolling,
    /// Issue one `GET /api/events` with this timeout; answer with PollSucceeded/PollFailed.
    Poll {
        timeout_ms: u64,
    },
    /// The poll in flight hangs: abort it (no PollFailed is expected for it).
    AbortPoll,
    /// Abort any poll in flight and stop polling; the socket carries everything again.
    StopPolling,
    /// Arm the one timer (replacing the previous) to deliver `Tick` at this time.
    ScheduleWake {
        at_ms: f64,
    },
    /// A transport is confirmed: rejoin conversations (after_seq) and flush the outbox.
    TransportReady(Transport),
    /// The visible state changed.
    State(LinkState),
    /// The server refused the socket with 1008 (the per-user socket limit): say so; the
    /// machine carries on over polling.
    TooManyConnections,
}

/// A tiny seeded PRNG (SplitMix64): enough for jitter, deterministic in tests.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A WebSocket attempt (or probe) waiting for `hello`.
#[derive(Debug, Clone)]
struct Attempt {
    deadline: f64,
    /// The deadline was pushed back once because a late wake-up found it.
    extended: bool,
}

/// A ping that must be answered (by any frame: each one clears the check) before `deadline`.
#[derive(Debug, Clone)]
struct Check {
    deadline: f64,
    /// Already a second chance given by a late wake-up: its expiry condemns.
    regranted: bool,
    /// Its failure reconnects at once, without a backoff wait.
    fast: bool,
}

#[derive(Debug, Clone)]
struct Link {
    since: f64,
    heartbeat_ms: u64,
    frames: u64,
    last_frame_at: f64,
    next_ping_at: f64,
    /// The latest ping: its ts and the frame count then. Only its pong measures latency (an
    /// older ping's pong may have waited out a frozen tab).
    last_ping: Option<(f64, u64)>,
    latency: Option<f64>,
    check: Option<Check>,
}

#[derive(Debug, Clone, PartialEq)]
enum PollStep {
    InFlight {
        deadline: f64,
    },
    RetryAt(f64),
    /// Failed while the browser is offline: wait for online.
    Parked,
}

#[derive(Debug, Clone)]
struct Fallback {
    /// Forced by the user: no probing.
    forced: bool,
    /// The last poll succeeded.
    live: bool,
    /// Failed polls in a row.
    failures: u32,
    /// The last wait after a failed poll (the next one grows from it).
    last_delay: Option<u64>,
    /// A poll failed since the fallback began or last went live: the server was unreachable.
    unreachable: bool,
    poll: PollStep,
    probe: Option<Attempt>,
    next_probe_at: Option<f64>,
}

#[derive(Debug, Clone)]
enum Phase {
    /// Not started, or stopped by the user.
    Idle,
    Opening(Attempt),
    Connected(Link),
    Waiting {
        retry_at: f64,
    },
    /// No socket and the browser is offline: wait for online.
    Offline,
    Polling(Fallback),
}

/// What a due deadline calls for (decided first, then done, to keep borrows simple).
enum Due {
    Open,
    GoOffline,
    ExtendAttempt,
    AttemptTimedOut,
    Dead { fast: bool },
    Regrant,
    SilenceCheck,
    Ping,
    PollHung,
    PollNow,
    ParkPoll,
    ExtendProbe,
    ProbeTimedOut,
    OpenProbe,
}

#[derive(Debug, Clone)]
pub struct Machine {
    config: Config,
    rng: SplitMix64,
    phase: Phase,
    online: bool,
    visible: bool,
    /// Failed WebSocket attempts since the last `hello`.
    failures: u32,
    /// Retries scheduled since the last `hello`.
    retries: u32,
    /// The last backoff wait since the last `hello` (the next one grows from it).
    last_delay: Option<u64>,
    reported: LinkState,
    scheduled: Option<f64>,
}

impl Machine {
    pub fn new(config: Config, seed: u64) -> Machine {
        Machine {
            config,
            rng: SplitMix64(seed),
            phase: Phase::Idle,
            online: true,
            visible: true,
            failures: 0,
            retries: 0,
            last_delay: None,
            reported: LinkState::Disconnected,
            scheduled: None,
        }
    }

    pub fn state(&self) -> &LinkState {
        &self.reported
    }

    /// Where sends go now; `None`: queue them.
    pub fn transport(&self) -> Option<Transport> {
        match &self.phase {
            Phase::Connected(_) => Some(Transport::WebSocket),
            Phase::Polling(f) if f.live => Some(Transport::Polling),
            _ => None,
        }
    }

    /// Failed WebSocket attempts in a row since the last `hello`.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Retries since the last `hello`.
    pub fn attempt(&self) -> u32 {
        self.retries
    }

    /// In the HTTP fallback (live or not).
    pub fn is_polling(&self) -> bool {
        matches!(self.phase, Phase::Polling(_))
    }

    pub fn is_online(&self) -> bool {
        self.online
    }

    pub fn is_visible(&self) -> bool {
        self.visible
    }

    /// The heartbeat in force, while connected.
    pub fn heartbeat_ms(&self) -> Option<u64> {
        match &self.phase {
            Phase::Connected(l) => Some(l.heartbeat_ms),
            _ => None,
        }
    }

    /// When the machine next needs a `Tick`.
    pub fn next_wake(&self) -> Option<f64> {
        self.next_deadline()
    }

    /// Feeds one event at time `now` (ms); returns what to do, in order.
    pub fn handle(&mut self, now: f64, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        let tick = event == Event::Tick;
        self.apply(now, event, &mut out);
        // Every event is a wake-up: settle whatever is due (each step moves its deadline on).
        for _ in 0..16 {
            match self.due(now) {
                Some(due) => self.fire(now, due, &mut out),
                None => break,
            }
        }
        self.report(tick, &mut out);
        out
    }

    fn apply(&mut self, now: f64, event: Event, out: &mut Vec<Action>) {
        match event {
            Event::Start => {
                if matches!(self.phase, Phase::Idle) {
                    self.failures = 0;
                    self.retries = 0;
                    self.last_delay = None;
                    if self.online {
                        self.open(now, out);
                    } else {
                        self.phase = Phase::Offline;
                    }
                }
            }
            Event::SocketOpened => {}
            Event::Hello { heartbeat_ms } => self.on_hello(now, heartbeat_ms, out),
            Event::Pong { ts } => self.on_frame(now, Some(ts)),
            Event::Frame => self.on_frame(now, None),
            Event::SocketClosed { code } => self.on_closed(now, code, out),
            Event::Tick => {}
            Event::BrowserOnline => {
                let was = self.online;
                self.online = true;
                if !was {
                    self.fast_path(now, out);
                }
            }
            Event::BrowserOffline => {
                self.online = false;
                self.went_offline(now, out);
            }
            Event::Visible => {
                let was = self.visible;
                self.visible = true;
                if !was {
                    self.fast_path(now, out);
                }
            }
            Event::Hidden => self.visible = false,
            Event::RetryNow => self.retry_now(now, out),
            Event::Disconnect => self.disconnect(out),
            Event::ForcePolling => self.force_polling(now, out),
            Event::PollSucceeded => {
                let timeout = self.config.poll_timeout_ms;
                let grace = self.config.poll_grace_ms;
                // Accepted whatever the machine expected: a glue whose poller loops by itself
                // (ignoring `Poll`) works too, as long as it reports every answer.
                if let Phase::Polling(f) = &mut self.phase {
                    f.failures = 0;
                    f.last_delay = None;
                    if !f.live {
                        f.live = true;
                        out.push(Action::TransportReady(Transport::Polling));
                        // The polls failed too: the server was away, not only its WebSocket
                        // (a restart). Now that it answers, try the WebSocket at once.
                        if f.unreachable && !f.forced && f.probe.is_none() {
                            f.next_probe_at = Some(now);
                        }
                        f.unreachable = false;
                    }
                    out.push(Action::Poll { timeout_ms: timeout });
                    f.poll = PollStep::InFlight { deadline: now + (timeout + grace) as f64 };
                }
            }
            Event::PollFailed => {
                if matches!(&self.phase, Phase::Polling(f) if f.poll != PollStep::Parked) {
                    self.poll_failed(now);
                }
            }
        }
    }

    fn on_hello(&mut self, now: f64, heartbeat_ms: Option<u64>, out: &mut Vec<Action>) {
        let heartbeat = heartbeat_ms.filter(|&h| h > 0).unwrap_or(self.config.default_heartbeat_ms);
        match &mut self.phase {
            Phase::Opening(_) => self.connected(now, heartbeat, out),
            Phase::Polling(f) if f.probe.is_some() => {
                out.push(Action::StopPolling);
                self.connected(now, heartbeat, out);
            }
            Phase::Connected(link) => {
                link.heartbeat_ms = heartbeat;
                self.on_frame(now, None);
            }
            _ => {}
        }
    }

    fn connected(&mut self, now: f64, heartbeat_ms: u64, out: &mut Vec<Action>) {
        self.failures = 0;
        self.retries = 0;
        self.last_delay = None;
        let mut link = Link {
            since: now,
            heartbeat_ms,
            frames: 1,
            last_frame_at: now,
            next_ping_at: now,
            last_ping: None,
            latency: None,
            check: None,
        };
        // A first ping at once: the latency is known right away.
        send_ping(&mut link, now, out);
        self.phase = Phase::Connected(link);
        out.push(Action::TransportReady(Transport::WebSocket));
    }

    fn on_frame(&mut self, now: f64, pong_ts: Option<f64>) {
        if let Phase::Connected(link) = &mut self.phase {
            link.frames += 1;
            link.last_frame_at = now;
            // Any frame after the check ping went out proves the socket alive.
            link.check = None;
            if let (Some(ts), Some((last, _))) = (pong_ts, link.last_ping) {
                if ts == last {
                    link.latency = Some((now - ts).max(0.0));
                }
            }
        }
    }

    fn on_closed(&mut self, now: f64, code: u16, out: &mut Vec<Action>) {
        let interval = self.config.probe_interval_ms as f64;
        match &mut self.phase {
            // Refused for the socket limit (before hello): retrying soon would be refused
            // again; poll, and probe now and then (another tab or device may let go).
            Phase::Opening(_) if code == POLICY_VIOLATION && self.online => {
                self.failures += 1;
                self.retries += 1;
                out.push(Action::TooManyConnections);
                self.enter_polling(now, false, out);
            }
            Phase::Opening(_) => self.attempt_failed(now, false, out),
            // The server is restarting: back after a short random wait, not a failure.
            Phase::Connected(_) if code == backoff::SERVICE_RESTART && self.online => {
                self.retries += 1;
                let delay = backoff::restart_delay_ms(self.rng.unit());
                self.last_delay = Some(delay);
                self.phase = Phase::Waiting { retry_at: now + delay as f64 };
            }
            Phase::Connected(_) => self.lose(now, None, false, out),
            Phase::Polling(f) if f.probe.is_some() => {
                f.probe = None;
                f.next_probe_at = (!f.forced).then_some(now + interval);
            }
            _ => {}
        }
    }

    /// Visible again, or online again: find out at once.
    fn fast_path(&mut self, now: f64, out: &mut Vec<Action>) {
        let online = self.online;
        let window = self.config.answer_window_ms;
        match &mut self.phase {
            Phase::Connected(link) => start_check(link, now, window, true, out),
            Phase::Waiting { .. } | Phase::Offline if online => self.open(now, out),
            Phase::Polling(f) if online => {
                if matches!(f.poll, PollStep::RetryAt(_) | PollStep::Parked) {
                    self.poll_now(now, out);
                }
                if let Phase::Polling(f) = &mut self.phase {
                    if !f.forced && f.probe.is_none() {
                        f.next_probe_at = Some(now);
                    }
                }
            }
            _ => {}
        }
    }

    fn went_offline(&mut self, now: f64, out: &mut Vec<Action>) {
        let window = self.config.answer_window_ms;
        match &mut self.phase {
            Phase::Waiting { .. } => self.phase = Phase::Offline,
            // It may still work (a local server): a check decides.
            Phase::Connected(link) => start_check(link, now, window, false, out),
            Phase::Polling(f) => {
                if matches!(f.poll, PollStep::RetryAt(_)) {
                    f.poll = PollStep::Parked;
                }
            }
            _ => {}
        }
    }

    fn retry_now(&mut self, now: f64, out: &mut Vec<Action>) {
        let window = self.config.answer_window_ms;
        match &mut self.phase {
            Phase::Idle => {
                self.failures = 0;
                self.retries = 0;
                self.last_delay = None;
                self.open(now, out);
            }
            // The user insists: try even if the browser says offline (it can be wrong, and a
            // failure while offline does not count).
            Phase::Waiting { .. } | Phase::Offline => self.open(now, out),
            Phase::Opening(_) => {}
            Phase::Connected(link) => start_check(link, now, window, true, out),
            Phase::Polling(f) => {
                f.forced = false;
                let probe = f.probe.is_none();
                if matches!(f.poll, PollStep::RetryAt(_) | PollStep::Parked) {
                    self.poll_now(now, out);
                }
                if probe {
                    self.open_probe(now, out);
                }
            }
        }
    }

    fn disconnect(&mut self, out: &mut Vec<Action>) {
        match &self.phase {
            Phase::Opening(_) | Phase::Connected(_) => {
                out.push(Action::CloseSocket { reason: CloseReason::UserDisconnect })
            }
            Phase::Polling(f) => {
                if f.probe.is_some() {
                    out.push(Action::CloseSocket { reason: CloseReason::UserDisconnect });
                }
                out.push(Action::StopPolling);
            }
            _ => {}
        }
        self.phase = Phase::Idle;
    }

    fn force_polling(&mut self, now: f64, out: &mut Vec<Action>) {
        match &mut self.phase {
            Phase::Polling(f) => {
                f.forced = true;
                f.next_probe_at = None;
                if f.probe.take().is_some() {
                    out.push(Action::CloseSocket { reason: CloseReason::PollingForced });
                }
            }
            Phase::Opening(_) | Phase::Connected(_) => {
                out.push(Action::CloseSocket { reason: CloseReason::PollingForced });
                self.enter_polling(now, true, out);
            }
            Phase::Idle => {
                self.failures = 0;
                self.retries = 0;
                self.last_delay = None;
                self.enter_polling(now, true, out);
            }
            Phase::Waiting { .. } | Phase::Offline => self.enter_polling(now, true, out),
        }
    }

    fn open(&mut self, now: f64, out: &mut Vec<Action>) {
        out.push(Action::OpenSocket { probe: false });
        self.phase = Phase::Opening(Attempt { deadline: now + self.config.connect_timeout_ms as f64, extended: false });
    }

    fn open_probe(&mut self, now: f64, out: &mut Vec<Action>) {
        let deadline = now + self.config.connect_timeout_ms as f64;
        if let Phase::Polling(f) = &mut self.phase {
            out.push(Action::OpenSocket { probe: true });
            f.probe = Some(Attempt { deadline, extended: false });
            f.next_probe_at = None;
        }
    }

    /// A WebSocket attempt failed: count it (unless offline), then back off or fall back.
    fn attempt_failed(&mut self, now: f64, timed_out: bool, out: &mut Vec<Action>) {
        if timed_out {
            out.push(Action::CloseSocket { reason: CloseReason::ConnectTimeout });
        }
        if !self.online {
            self.phase = Phase::Offline;
            return;
        }
        self.failures += 1;
        self.retries += 1;
        if timed_out || self.failures >= self.config.failures_before_polling {
            self.enter_polling(now, false, out);
        } else {
            self.wait_retry(now);
        }
    }

    /// A confirmed connection is gone.
    fn lose(&mut self, now: f64, close: Option<CloseReason>, fast: bool, out: &mut Vec<Action>) {
        if let Some(reason) = close {
            out.push(Action::CloseSocket { reason });
        }
        if !self.online {
            self.phase = Phase::Offline;
            return;
        }
        self.retries += 1;
        if fast {
            self.open(now, out);
        } else {
            self.wait_retry(now);
        }
    }

    fn wait_retry(&mut self, now: f64) {
        let delay = backoff::next_delay_ms(self.last_delay, self.retries, self.rng.unit());
        self.last_delay = Some(delay);
        self.phase = Phase::Waiting { retry_at: now + delay as f64 };
    }

    fn enter_polling(&mut self, now: f64, forced: bool, out: &mut Vec<Action>) {
        out.push(Action::StartPolling);
        let poll = if self.online {
            // A quick first poll: it proves the fallback without waiting out a long poll.
            out.push(Action::Poll { timeout_ms: 0 });
            PollStep::InFlight { deadline: now + self.config.poll_grace_ms as f64 }
        } else {
            PollStep::Parked
        };
        let next_probe_at = (!forced).then_some(now + self.config.probe_interval_ms as f64);
        self.phase = Phase::Polling(Fallback {
            forced,
            live: false,
            failures: 0,
            last_delay: None,
            unreachable: false,
            poll,
            probe: None,
            next_probe_at,
        });
    }

    fn poll_now(&mut self, now: f64, out: &mut Vec<Action>) {
        let config = &self.config;
        if let Phase::Polling(f) = &mut self.phase {
            let timeout = if f.live { config.poll_timeout_ms } else { 0 };
            out.push(Action::Poll { timeout_ms: timeout });
            f.poll = PollStep::InFlight { deadline: now + (timeout + config.poll_grace_ms) as f64 };
        }
    }

    fn poll_failed(&mut self, now: f64) {
        let online = self.online;
        if let Phase::Polling(f) = &mut self.phase {
            f.live = false;
            if online {
                f.failures += 1;
                f.unreachable = true;
                let delay = backoff::next_delay_ms(f.last_delay, f.failures, self.rng.unit());
                f.last_delay = Some(delay);
                f.poll = PollStep::RetryAt(now + delay as f64);
            } else {
                f.poll = PollStep::Parked;
            }
        }
    }

    fn late(&self, now: f64, deadline: f64) -> bool {
        now - deadline > self.config.late_slack_ms as f64
    }

    /// The first deadline due at `now`, if any.
    fn due(&self, now: f64) -> Option<Due> {
        match &self.phase {
            Phase::Idle | Phase::Offline => None,
            Phase::Waiting { retry_at } => {
                (now >= *retry_at).then_some(if self.online { Due::Open } else { Due::GoOffline })
            }
            Phase::Opening(a) => (now >= a.deadline).then_some(if self.late(now, a.deadline) && !a.extended {
                Due::ExtendAttempt
            } else {
                Due::AttemptTimedOut
            }),
            Phase::Connected(link) => {
                if let Some(check) = &link.check {
                    if now >= check.deadline {
                        // A late wake-up proves nothing about the socket: one more chance.
                        return Some(if check.regranted || !self.late(now, check.deadline) {
                            Due::Dead { fast: check.fast }
                        } else {
                            Due::Regrant
                        });
                    }
                } else if now >= link.last_frame_at + 2.0 * link.heartbeat_ms as f64 {
                    return Some(Due::SilenceCheck);
                }
                (now >= link.next_ping_at).then_some(Due::Ping)
            }
            Phase::Polling(f) => {
                match f.poll {
                    PollStep::InFlight { deadline } if now >= deadline => return Some(Due::PollHung),
                    PollStep::RetryAt(t) if now >= t => {
                        return Some(if self.online { Due::PollNow } else { Due::ParkPoll });
                    }
                    _ => {}
                }
                if let Some(p) = &f.probe {
                    if now >= p.deadline {
                        return Some(if self.late(now, p.deadline) && !p.extended {
                            Due::ExtendProbe
                        } else {
                            Due::ProbeTimedOut
                        });
                    }
                } else if !f.forced && self.online && f.next_probe_at.is_some_and(|t| now >= t) {
                    return Some(Due::OpenProbe);
                }
                None
            }
        }
    }

    fn fire(&mut self, now: f64, due: Due, out: &mut Vec<Action>) {
        let window = self.config.answer_window_ms;
        let interval = self.config.probe_interval_ms as f64;
        match due {
            Due::Open => self.open(now, out),
            Due::GoOffline => self.phase = Phase::Offline,
            Due::ExtendAttempt => {
                if let Phase::Opening(a) = &mut self.phase {
                    a.deadline = now + window as f64;
                    a.extended = true;
                }
            }
            Due::AttemptTimedOut => self.attempt_failed(now, true, out),
            Due::Dead { fast } => self.lose(now, Some(CloseReason::Unresponsive), fast, out),
            Due::Regrant => {
                if let Phase::Connected(link) = &mut self.phase {
                    let fast = link.check.as_ref().is_some_and(|c| c.fast);
                    send_ping(link, now, out);
                    link.check = Some(Check { deadline: now + window as f64, regranted: true, fast });
                }
            }
            Due::SilenceCheck => {
                if let Phase::Connected(link) = &mut self.phase {
                    start_check(link, now, window, false, out);
                }
            }
            Due::Ping => {
                if let Phase::Connected(link) = &mut self.phase {
                    send_ping(link, now, out);
                }
            }
            Due::PollHung => {
                out.push(Action::AbortPoll);
                self.poll_failed(now);
            }
            Due::PollNow => self.poll_now(now, out),
            Due::ParkPoll => {
                if let Phase::Polling(f) = &mut self.phase {
                    f.poll = PollStep::Parked;
                }
            }
            Due::ExtendProbe => {
                if let Phase::Polling(Fallback { probe: Some(p), .. }) = &mut self.phase {
                    p.deadline = now + window as f64;
                    p.extended = true;
                }
            }
            Due::ProbeTimedOut => {
                if let Phase::Polling(f) = &mut self.phase {
                    out.push(Action::CloseSocket { reason: CloseReason::ConnectTimeout });
                    f.probe = None;
                    f.next_probe_at = (!f.forced).then_some(now + interval);
                }
            }
            Due::OpenProbe => self.open_probe(now, out),
        }
    }

    fn next_deadline(&self) -> Option<f64> {
        let min = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, None) => x,
            (None, y) => y,
        };
        match &self.phase {
            Phase::Idle | Phase::Offline => None,
            Phase::Waiting { retry_at } => Some(*retry_at),
            Phase::Opening(a) => Some(a.deadline),
            Phase::Connected(link) => {
                let liveness = match &link.check {
                    Some(c) => c.deadline,
                    None => link.last_frame_at + 2.0 * link.heartbeat_ms as f64,
                };
                Some(liveness.min(link.next_ping_at))
            }
            Phase::Polling(f) => {
                let poll = match f.poll {
                    PollStep::InFlight { deadline } => Some(deadline),
                    PollStep::RetryAt(t) => Some(t),
                    PollStep::Parked => None,
                };
                let probe = match &f.probe {
                    Some(p) => Some(p.deadline),
                    None if !f.forced && self.online => f.next_probe_at,
                    None => None,
                };
                min(poll, probe)
            }
        }
    }

    fn derive_state(&self) -> LinkState {
        match &self.phase {
            Phase::Idle => LinkState::Disconnected,
            Phase::Opening(_) if self.online => LinkState::Connecting,
            Phase::Opening(_) | Phase::Offline => LinkState::Offline,
            Phase::Connected(link) => LinkState::Connected { since_ms: link.since, latency_ms: link.latency },
            Phase::Waiting { retry_at } => LinkState::Reconnecting { attempt: self.retries, retry_at_ms: *retry_at },
            Phase::Polling(f) if f.live => LinkState::Polling,
            Phase::Polling(_) if !self.online => LinkState::Offline,
            Phase::Polling(f) => match f.poll {
                PollStep::RetryAt(t) => LinkState::Reconnecting { attempt: f.failures, retry_at_ms: t },
                _ => LinkState::Connecting,
            },
        }
    }

    fn report(&mut self, tick: bool, out: &mut Vec<Action>) {
        let state = self.derive_state();
        if state != self.reported {
            self.reported = state.clone();
            out.push(Action::State(state));
        }
        match self.next_deadline() {
            // After a Tick the glue's timer is spent: arm it again even if unchanged.
            Some(at) if tick || self.scheduled != Some(at) => {
                self.scheduled = Some(at);
                out.push(Action::ScheduleWake { at_ms: at });
            }
            Some(_) => {}
            None => self.scheduled = None,
        }
    }
}

fn send_ping(link: &mut Link, now: f64, out: &mut Vec<Action>) {
    out.push(Action::SendPing { ts: now });
    link.last_ping = Some((now, link.frames));
    link.next_ping_at = now + link.heartbeat_ms as f64;
}

/// Starts a check: a ping that must be answered within the window. An unanswered ping sent
/// less than a window ago serves (its own deadline counts from when it went out).
fn start_check(link: &mut Link, now: f64, window: u64, fast: bool, out: &mut Vec<Action>) {
    if let Some(check) = &mut link.check {
        check.fast |= fast;
        return;
    }
    if let Some((at, frames)) = link.last_ping {
        if frames == link.frames && now - at < window as f64 {
            link.check = Some(Check { deadline: at + window as f64, regranted: false, fast });
            return;
        }
    }
    send_ping(link, now, out);
    link.check = Some(Check { deadline: now + window as f64, regranted: false, fast });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_has_words() {
        assert_eq!(
            LinkState::describe(&LinkState::Connected { since_ms: 0.0, latency_ms: None }, 0.0),
            ("connected", "Connected".into())
        );
        assert_eq!(
            LinkState::describe(&LinkState::Connected { since_ms: 0.0, latency_ms: Some(12.4) }, 0.0).1,
            "Connected · 12 ms"
        );
        let (state, text) = LinkState::describe(&LinkState::Reconnecting { attempt: 2, retry_at_ms: 2500.0 }, 1000.0);
        assert_eq!((state, text.as_str()), ("disconnected", "Reconnecting in 2 s (attempt 2)"));
        assert_eq!(
            LinkState::describe(&LinkState::Reconnecting { attempt: 3, retry_at_ms: 0.0 }, 1000.0).1,
            "Reconnecting… (attempt 3)"
        );
        assert_eq!(LinkState::describe(&LinkState::Polling, 0.0), ("polling", "Live via polling".into()));
        assert_eq!(LinkState::describe(&LinkState::Offline, 0.0), ("offline", "Offline".into()));
        assert_eq!(LinkState::describe(&LinkState::Connecting, 0.0), ("connecting", "Connecting…".into()));
        assert_eq!(LinkState::describe(&LinkState::Disconnected, 0.0), ("disconnected", "Disconnected".into()));
    }

    const HB: f64 = 30_000.0;

    fn machine(seed: u64) -> Machine {
        Machine::new(Config::default(), seed)
    }

    fn opens(actions: &[Action]) -> usize {
        actions.iter().filter(|a| matches!(a, Action::OpenSocket { .. })).count()
    }

    fn closes(actions: &[Action]) -> Vec<CloseReason> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::CloseSocket { reason } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    fn pings(actions: &[Action]) -> Vec<f64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::SendPing { ts } => Some(*ts),
                _ => None,
            })
            .collect()
    }

    fn wake(actions: &[Action]) -> Option<f64> {
        actions.iter().rev().find_map(|a| match a {
            Action::ScheduleWake { at_ms } => Some(*at_ms),
            _ => None,
        })
    }

    /// A machine connected at t=0 (hello with the default heartbeat), first ping answered.
    fn connected() -> Machine {
        let mut m = machine(7);
        m.handle(0.0, Event::Start);
        m.handle(0.0, Event::SocketOpened);
        let a = m.handle(0.0, Event::Hello { heartbeat_ms: Some(30_000) });
        assert_eq!(pings(&a), vec![0.0]);
        m.handle(0.0, Event::Pong { ts: 0.0 });
        m
    }

    /// Runs the machine like the glue would: a Tick at each scheduled wake-up, until `until`.
    /// Returns every action.
    fn run_ticks(m: &mut Machine, from: f64, until: f64) -> Vec<(f64, Action)> {
        let mut all = Vec::new();
        let mut t = from;
        while let Some(at) = m.next_wake() {
            if at > until {
                break;
            }
            t = at.max(t);
            for a in m.handle(t, Event::Tick) {
                all.push((t, a));
            }
        }
        all
    }

    // ---- backoff ----------------------------------------------------------------------

    /// The retry delays seen through the machine for `n` failed attempts from a fresh start.
    fn delays(seed: u64, n: u32) -> Vec<f64> {
        let mut m = Machine::new(Config { failures_before_polling: 100, ..Config::default() }, seed);
        let mut t = 0.0;
        m.handle(t, Event::Start);
        let mut out = Vec::new();
        for _ in 0..n {
            let a = m.handle(t, Event::SocketClosed { code: 1006 });
            if opens(&a) == 1 {
                // A zero delay: the retry is due at once and goes out in the same step.
                out.push(0.0);
                continue;
            }
            let LinkState::Reconnecting { retry_at_ms, .. } = m.state().clone() else {
                panic!("expected Reconnecting, got {:?} after {a:?}", m.state())
            };
            out.push(retry_at_ms - t);
            assert_eq!(opens(&m.handle(retry_at_ms - 1.0, Event::Tick)), 0, "not before it is due");
            t = retry_at_ms;
            let a = m.handle(t, Event::Tick);
            assert_eq!(opens(&a), 1, "the retry opens a socket when due");
        }
        out
    }

    /// The bounds of a retry's delay given the previous one (decorrelated jitter).
    fn delay_range(previous: Option<f64>, retry: u32) -> (f64, f64) {
        match previous {
            None => (0.0, backoff::FIRST_MS as f64),
            Some(p) => {
                let base = backoff::BASE_MS as f64;
                (base, (p.max(base) * backoff::growth(retry)).min(backoff::CAP_MS as f64))
            }
        }
    }

    #[test]
    fn backoff_delays_stay_within_the_decorrelated_bounds_capped_at_30s() {
        for seed in 0..300 {
            let mut previous = None;
            for (i, d) in delays(seed, 12).into_iter().enumerate() {
                let (low, high) = delay_range(previous, i as u32 + 1);
                assert!((low..high).contains(&d), "seed {seed} attempt {}: {d} not in [{low}, {high})", i + 1);
                assert!(d < backoff::CAP_MS as f64);
                previous = Some(d);
            }
        }
        let first: Vec<f64> = (0..300).map(|seed| delays(seed, 1)[0]).collect();
        assert!(first.iter().all(|&d| d < 250.0), "the first retry within 250 ms");
    }

    #[test]
    fn backoff_is_jitter_spread_over_each_range() {
        // For each attempt, where each delay falls within its own range (0 = low end, 1 = high
        // end): spread evenly, so clients do not come back together.
        let seeds = 2_000;
        let mut per_attempt: Vec<Vec<f64>> = vec![Vec::new(); 7];
        for seed in 0..seeds {
            let mut previous = None;
            for (i, d) in delays(seed, 7).into_iter().enumerate() {
                let (low, high) = delay_range(previous, i as u32 + 1);
                per_attempt[i].push((d - low) / (high - low));
                previous = Some(d);
            }
        }
        for (i, xs) in per_attempt.iter().enumerate() {
            let mean = xs.iter().sum::<f64>() / xs.len() as f64;
            assert!((mean - 0.5).abs() < 0.04, "attempt {}: mean position {mean}", i + 1);
            let min = xs.iter().cloned().fold(f64::MAX, f64::min);
            let max = xs.iter().cloned().fold(0.0, f64::max);
            assert!(min < 0.02 && max > 0.98, "attempt {}: positions in [{min}, {max}]", i + 1);
            let low_half = xs.iter().filter(|&&x| x < 0.5).count() as f64 / xs.len() as f64;
            assert!((0.45..0.55).contains(&low_half), "attempt {}: {low_half} below half", i + 1);
        }
    }

    /// `n` clients connected to a server that goes away at t=0 (each socket closed with
    /// `code`) and is back at `back_ms`: attempts before that are refused at once (1 ms),
    /// after it they get `hello` 5 ms later; polls likewise. Returns each client's time of
    /// `hello` and how many fell back to polling on the way.
    fn herd(n: u64, code: u16, back_ms: f64) -> (Vec<f64>, usize) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        // (time in µs, client, what): the earliest first.
        let mut queue: BinaryHeap<Reverse<(u64, usize, u8)>> = BinaryHeap::new();
        const TICK: u8 = 0;
        const CLOSED: u8 = 1;
        const HELLO: u8 = 2;
        const POLL_OK: u8 = 3;
        const POLL_FAILED: u8 = 4;
        let at = |t: f64| (t * 1_000.0).round() as u64;
        let mut machines = Vec::new();
        for i in 0..n as usize {
            let mut m = machine(1_000 + i as u64 * 7_919);
            m.handle(-1_000.0, Event::Start);
            m.handle(-1_000.0, Event::Hello { heartbeat_ms: None });
            machines.push(m);
            queue.push(Reverse((0, i, CLOSED)));
        }
        let mut arrived = vec![None; n as usize];
        let mut polled = vec![false; n as usize];
        let mut first_close = vec![true; n as usize];
        while let Some(Reverse((micros, i, what))) = queue.pop() {
            let t = micros as f64 / 1_000.0;
            if arrived[i].is_some() || t > 300_000.0 {
                continue;
            }
            let event = match what {
                CLOSED if std::mem::take(&mut first_close[i]) => Event::SocketClosed { code },
                CLOSED => Event::SocketClosed { code: 1006 },
                HELLO => Event::Hello { heartbeat_ms: None },
                POLL_OK => Event::PollSucceeded,
                POLL_FAILED => Event::PollFailed,
                _ => Event::Tick,
            };
            for action in machines[i].handle(t, event) {
                match action {
                    Action::OpenSocket { .. } if t < back_ms => queue.push(Reverse((at(t + 1.0), i, CLOSED))),
                    Action::OpenSocket { .. } => queue.push(Reverse((at(t + 5.0), i, HELLO))),
                    Action::Poll { timeout_ms: 0 } if t < back_ms => queue.push(Reverse((at(t + 1.0), i, POLL_FAILED))),
                    Action::Poll { timeout_ms: 0 } => queue.push(Reverse((at(t + 5.0), i, POLL_OK))),
                    Action::StartPolling => polled[i] = true,
                    Action::ScheduleWake { at_ms } => queue.push(Reverse((at(at_ms.max(t)), i, TICK))),
                    _ => {}
                }
            }
            if matches!(machines[i].state(), LinkState::Connected { .. }) {
                arrived[i] = Some(t);
            }
        }
        let times: Vec<f64> = arrived.iter().map(|a| a.expect("every client came back")).collect();
        (times, polled.iter().filter(|&&p| p).count())
    }

    /// Prints the arrivals after the server's return in 100 ms buckets; answers the busiest
    /// bucket's count, the median and the worst time after the return.
    fn histogram(title: &str, times: &[f64], back_ms: f64) -> (usize, f64, f64) {
        let mut after: Vec<f64> = times.iter().map(|t| t - back_ms).collect();
        after.sort_by(f64::total_cmp);
        let buckets = (after.last().unwrap() / 100.0) as usize + 1;
        let mut counts = vec![0usize; buckets];
        for t in &after {
            counts[(t / 100.0) as usize] += 1;
        }
        println!("{title}: {} clients, arrivals after the server is back (100 ms buckets)", after.len());
        for (b, c) in counts.iter().enumerate() {
            println!("  {:>6} ms  {:>4}  {}", b * 100, c, "#".repeat(c.div_ceil(5)));
        }
        let median = after[after.len() / 2];
        let worst = *after.last().unwrap();
        println!("  median {median:.0} ms, worst {worst:.0} ms, busiest bucket {}", counts.iter().max().unwrap());
        (*counts.iter().max().unwrap(), median, worst)
    }

    #[test]
    fn a_thousand_clients_after_a_crash_come_back_spread_out() {
        // Killed: sockets end without a close frame (1006); back 2.3 s later, as in bench-app.
        let back = 2_300.0;
        let (times, polled) = herd(1_000, 1006, back);
        let (busiest, median, _) = histogram("crash", &times, back);
        println!("  {polled} of them fell back to polling on the way");
        assert!(times.iter().all(|&t| t >= back), "nobody connects to a server that is away");
        assert!(busiest <= 150, "the busiest 100 ms holds {busiest} of 1000 clients");
        assert!(median <= 1_000.0, "median {median} ms");
        assert!(polled <= 100, "{polled} fell back to polling");
    }

    #[test]
    fn a_thousand_clients_after_a_clean_restart_come_back_spread_out() {
        // The server closes every socket with 1012 and is back 0.8 s later.
        let back = 800.0;
        let (times, polled) = herd(1_000, backoff::SERVICE_RESTART, back);
        let (busiest, median, worst) = histogram("restart (1012)", &times, back);
        assert!(busiest <= 150, "the busiest 100 ms holds {busiest} of 1000 clients");
        assert!(median <= 1_000.0 && worst <= 2_500.0, "median {median} ms, worst {worst} ms");
        assert_eq!(polled, 0, "a restart is no reason to poll");
    }

    #[test]
    fn different_seeds_give_different_delays_and_the_same_seed_the_same() {
        assert_eq!(delays(42, 5), delays(42, 5));
        assert_ne!(delays(42, 5), delays(43, 5));
    }

    // ---- reset rule ---------------------------------------------------------------------

    #[test]
    fn the_attempt_count_resets_only_on_hello() {
        let mut m = machine(1);
        m.handle(0.0, Event::Start);
        assert_eq!(m.state(), &LinkState::Connecting);
        // Three failures, the third one after the socket opened (but no hello came).
        let mut t = 0.0;
        for i in 1..=3 {
            if i == 3 {
                m.handle(t, Event::SocketOpened);
                m.handle(t, Event::Frame); // online_users before hello, say
            }
            m.handle(t, Event::SocketClosed { code: 1006 });
            assert_eq!(m.failures(), i);
            assert!(matches!(m.state(), LinkState::Reconnecting { attempt, .. } if *attempt == i), "{:?}", m.state());
            t = m.next_wake().unwrap();
            m.handle(t, Event::Tick);
        }
        // Opened but closed before hello: still counting.
        assert_eq!(m.attempt(), 3);
        m.handle(t, Event::SocketOpened);
        let a = m.handle(t, Event::Hello { heartbeat_ms: None });
        assert!(a.contains(&Action::TransportReady(Transport::WebSocket)));
        assert_eq!((m.failures(), m.attempt()), (0, 0));
        assert_eq!(m.heartbeat_ms(), Some(30_000));
        // The next loss starts again from a 1 s bound.
        m.handle(t + 5.0, Event::SocketClosed { code: 1001 });
        match m.state() {
            LinkState::Reconnecting { attempt: 1, retry_at_ms } => assert!(*retry_at_ms - (t + 5.0) < 1_000.0),
            s => panic!("{s:?}"),
        }
    }

    // ---- heartbeat ----------------------------------------------------------------------

    #[test]
    fn pings_every_heartbeat_and_measures_latency() {
        let mut m = connected();
        assert_eq!(m.state(), &LinkState::Connected { since_ms: 0.0, latency_ms: Some(0.0) });
        let a = m.handle(HB, Event::Tick);
        assert_eq!(pings(&a), vec![HB]);
        let a = m.handle(HB + 42.0, Event::Pong { ts: HB });
        assert_eq!(a, vec![Action::State(LinkState::Connected { since_ms: 0.0, latency_ms: Some(42.0) })]);
        // A pong for a ping we never sent changes nothing.
        m.handle(HB + 50.0, Event::Pong { ts: 123.0 });
        assert_eq!(m.state(), &LinkState::Connected { since_ms: 0.0, latency_ms: Some(42.0) });
        assert_eq!(m.next_wake(), Some(2.0 * HB));
    }

    #[test]
    fn the_heartbeat_from_hello_is_used() {
        let mut m = machine(1);
        m.handle(0.0, Event::Start);
        m.handle(0.0, Event::Hello { heartbeat_ms: Some(10_000) });
        m.handle(1.0, Event::Pong { ts: 0.0 });
        assert_eq!(m.next_wake(), Some(10_000.0));
        assert_eq!(pings(&m.handle(10_000.0, Event::Tick)), vec![10_000.0]);
    }

    #[test]
    fn a_silent_socket_dies_after_two_intervals_and_the_answer_window() {
        let mut m = connected();
        // The server stops answering after the first pong (at t=0).
        let all = run_ticks(&mut m, 0.0, 2.0 * HB + 5_000.0);
        let close_at = all.iter().find(|(_, a)| matches!(a, Action::CloseSocket { .. })).map(|(t, _)| *t);
        assert_eq!(close_at, Some(2.0 * HB + 5_000.0), "{all:?}");
        let (_, close) = all.iter().find(|(_, a)| matches!(a, Action::CloseSocket { .. })).unwrap();
        assert_eq!(close, &Action::CloseSocket { reason: CloseReason::Unresponsive });
        // Pings went out at 30 s and 60 s; the 60 s one served as the check (no extra ping).
        let sent: Vec<f64> =
            all.iter().filter_map(|(_, a)| if let Action::SendPing { ts } = a { Some(*ts) } else { None }).collect();
        assert_eq!(sent[..2], [HB, 2.0 * HB]);
        // Then a normal backoff.
        let after: Vec<&Action> = all.iter().filter(|(t, _)| *t == 2.0 * HB + 5_000.0).map(|(_, a)| a).collect();
        assert!(
            after.iter().any(|a| matches!(a, Action::State(LinkState::Reconnecting { attempt: 1, .. }))),
            "{after:?}"
        );
        assert_eq!(m.failures(), 0, "losing a confirmed connection is not a failed attempt");
    }

    #[test]
    fn any_frame_keeps_the_socket_alive() {
        let mut m = connected();
        // The server never answers pings but chats constantly.
        let mut t = 0.0;
        while t < 600_000.0 {
            t += 7_000.0;
            let a = m.handle(t, Event::Frame);
            assert!(closes(&a).is_empty());
            let a = m.handle(t + 1.0, Event::Tick);
            assert!(closes(&a).is_empty(), "at {t}: {a:?}");
        }
        assert!(matches!(m.state(), LinkState::Connected { .. }));
    }

    // ---- the hidden tab -----------------------------------------------------------------

    #[test]
    fn a_hidden_tab_with_late_timers_never_kills_a_healthy_socket() {
        let mut m = connected();
        m.handle(1_000.0, Event::Hidden);
        // Chromium's intensive throttling: timers fire on the next whole minute, whatever we asked.
        let mut t = 0.0;
        for _ in 0..60 {
            t = ((m.next_wake().unwrap() / 60_000.0).floor() + 1.0) * 60_000.0 + 17.0;
            let a = m.handle(t, Event::Tick);
            assert!(closes(&a).is_empty(), "killed at {t}: {a:?}");
            // The healthy server answers every ping promptly.
            for ts in pings(&a) {
                let a = m.handle(ts + 80.0, Event::Pong { ts });
                assert!(closes(&a).is_empty());
            }
        }
        assert!(t > 3_000_000.0);
        assert!(matches!(m.state(), LinkState::Connected { since_ms, .. } if *since_ms == 0.0));
    }

    #[test]
    fn a_late_wakeup_that_finds_the_check_expired_gives_one_more_ping_first() {
        let mut m = connected();
        m.handle(1_000.0, Event::Hidden);
        // The check starts on time: silence since 0, at 60 s.
        let a = m.handle(2.0 * HB, Event::Tick);
        assert_eq!(pings(&a), vec![2.0 * HB]);
        assert_eq!(wake(&a), Some(2.0 * HB + 5_000.0));
        // The tab was frozen: the wake-up comes 50 s late, before the (queued) pong is delivered.
        let late = 2.0 * HB + 55_000.0;
        let a = m.handle(late, Event::Tick);
        assert!(closes(&a).is_empty(), "a late wake-up must not condemn: {a:?}");
        assert_eq!(pings(&a), vec![late], "a fresh ping gets its own window");
        assert_eq!(wake(&a), Some(late + 5_000.0));
        // The queued pong arrives: healthy.
        m.handle(late + 3.0, Event::Pong { ts: 2.0 * HB });
        let a = m.handle(late + 5_001.0, Event::Tick);
        assert!(closes(&a).is_empty());
        assert!(matches!(m.state(), LinkState::Connected { .. }));
    }

    #[test]
    fn a_dead_socket_in_a_hidden_tab_is_still_found_after_the_second_chance() {
        let mut m = connected();
        m.handle(1_000.0, Event::Hidden);
        let mut closed_at = None;
        // Every wake-up comes a minute late; the server is gone.
        for _ in 0..10 {
            let t = m.next_wake().unwrap() + 60_000.0;
            let a = m.handle(t, Event::Tick);
            if !closes(&a).is_empty() {
                closed_at = Some(t);
                assert_eq!(closes(&a), vec![CloseReason::Unresponsive]);
                break;
            }
        }
        // Wake-ups: 90 s (silence: check ping), 155 s (late: second chance), 220 s: dead.
        assert_eq!(closed_at, Some(220_000.0));
        assert!(matches!(m.state(), LinkState::Reconnecting { attempt: 1, .. }));
    }

    #[test]
    fn an_on_time_wakeup_after_the_window_condemns_at_once() {
        let mut m = connected();
        m.handle(2.0 * HB, Event::Tick);
        // 1.5 s late is within the slack (a busy main thread, a 1 s-aligned background timer).
        let a = m.handle(2.0 * HB + 6_500.0, Event::Tick);
        assert_eq!(closes(&a), vec![CloseReason::Unresponsive]);
    }

    #[test]
    fn a_late_connect_timeout_gets_one_answer_window_more() {
        let mut m = machine(3);
        m.handle(0.0, Event::Start);
        m.handle(0.0, Event::Hidden);
        let a = m.handle(80_000.0, Event::Tick);
        assert!(closes(&a).is_empty() && !a.contains(&Action::StartPolling), "{a:?}");
        assert_eq!(wake(&a), Some(85_000.0));
        let a = m.handle(85_000.0, Event::Hello { heartbeat_ms: None });
        assert!(a.contains(&Action::TransportReady(Transport::WebSocket)));
    }

    // ---- visibility and online fast paths -----------------------------------------------

    #[test]
    fn visible_again_checks_at_once_and_reconnects_without_backoff_when_stale() {
        let mut m = connected();
        m.handle(1_000.0, Event::Hidden);
        // Hidden long enough for nothing to have been checked (timers starved).
        let t = 400_000.0;
        let a = m.handle(t, Event::Visible);
        assert_eq!(pings(&a), vec![t]);
        assert!(closes(&a).is_empty(), "staleness alone is not death: {a:?}");
        assert_eq!(wake(&a), Some(t + 5_000.0));
        let a = m.handle(t + 5_000.0, Event::Tick);
        assert_eq!(closes(&a), vec![CloseReason::Unresponsive]);
        assert_eq!(opens(&a), 1, "reconnect at once, no backoff wait");
        assert_eq!(m.state(), &LinkState::Connecting);
    }

    #[test]
    fn visible_again_with_a_healthy_socket_changes_nothing() {
        let mut m = connected();
        m.handle(1_000.0, Event::Hidden);
        let t = 400_000.0;
        let a = m.handle(t, Event::Visible);
        assert_eq!(pings(&a), vec![t]);
        m.handle(t + 30.0, Event::Pong { ts: t });
        let a = m.handle(t + 5_000.0, Event::Tick);
        assert!(closes(&a).is_empty() && opens(&a) == 0, "{a:?}");
        assert_eq!(m.state(), &LinkState::Connected { since_ms: 0.0, latency_ms: Some(30.0) });
        // A second Visible without Hidden in between is not a transition.
        assert!(pings(&m.handle(t + 6_000.0, Event::Visible)).is_empty());
    }

    #[test]
    fn online_again_checks_the_socket_and_reconnects_at_once_if_stale() {
        let mut m = connected();
        let a = m.handle(10_000.0, Event::BrowserOffline);
        assert_eq!(pings(&a), vec![10_000.0], "offline: a check decides (a local server still works)");
        m.handle(10_010.0, Event::Pong { ts: 10_000.0 });
        assert!(matches!(m.state(), LinkState::Connected { .. }));
        let a = m.handle(20_000.0, Event::BrowserOnline);
        assert_eq!(pings(&a), vec![20_000.0]);
        let a = m.handle(25_000.0, Event::Tick);
        assert_eq!(closes(&a), vec![CloseReason::Unresponsive]);
        assert_eq!(opens(&a), 1);
    }

    #[test]
    fn visible_while_waiting_skips_the_backoff() {
        // A seed whose first delay is long enough to see it skipped (the first retry comes
        // within 250 ms now: 150 ms is long enough).
        let (mut m, retry_at) = (0..100)
            .find_map(|seed| {
                let mut m = machine(seed);
                m.handle(0.0, Event::Start);
                m.handle(0.0, Event::Hidden);
                m.handle(10.0, Event::SocketClosed { code: 1006 });
                match m.state().clone() {
                    LinkState::Reconnecting { attempt: 1, retry_at_ms } if retry_at_ms > 150.0 => {
                        Some((m, retry_at_ms))
                    }
                    _ => None,
                }
            })
            .unwrap();
        // A stale close (no socket now) changes nothing.
        assert!(m.handle(20.0, Event::SocketClosed { code: 1006 }).is_empty());
        let a = m.handle(100.0, Event::Visible);
        assert!(100.0 < retry_at);
        assert_eq!(opens(&a), 1, "{a:?}");
        assert_eq!(m.state(), &LinkState::Connecting);
        assert_eq!(m.failures(), 1);
    }

    // ---- offline ------------------------------------------------------------------------

    #[test]
    fn offline_burns_no_attempts() {
        let mut m = machine(9);
        m.handle(0.0, Event::Start);
        m.handle(100.0, Event::SocketClosed { code: 1006 });
        assert_eq!(m.failures(), 1);
        let a = m.handle(200.0, Event::BrowserOffline);
        assert!(a.contains(&Action::State(LinkState::Offline)), "{a:?}");
        assert_eq!(m.next_wake(), None);
        // Ten minutes of wake-ups: nothing opened, nothing counted.
        for i in 1..=600 {
            let a = m.handle(200.0 + i as f64 * 1_000.0, Event::Tick);
            assert_eq!(opens(&a), 0);
        }
        assert_eq!((m.failures(), m.attempt()), (1, 1));
        assert_eq!(m.state(), &LinkState::Offline);
        // Back online: at once, and a failure now counts as the second.
        let a = m.handle(700_000.0, Event::BrowserOnline);
        assert_eq!(opens(&a), 1);
        m.handle(700_100.0, Event::SocketClosed { code: 1006 });
        assert_eq!(m.failures(), 2);
    }

    #[test]
    fn an_attempt_failing_while_offline_does_not_count_nor_fall_back() {
        let mut m = machine(9);
        m.handle(0.0, Event::Start);
        m.handle(10.0, Event::BrowserOffline);
        assert_eq!(m.state(), &LinkState::Offline);
        m.handle(50.0, Event::SocketClosed { code: 1006 });
        assert_eq!(m.failures(), 0);
        // Even a connect timeout while offline goes to Offline, not to polling.
        let mut m = machine(9);
        m.handle(0.0, Event::Start);
        m.handle(10.0, Event::BrowserOffline);
        let a = m.handle(20_000.0, Event::Tick);
        assert_eq!(closes(&a), vec![CloseReason::ConnectTimeout]);
        assert!(!m.is_polling());
        assert_eq!((m.failures(), m.state()), (0, &LinkState::Offline));
    }

    #[test]
    fn starting_while_offline_waits_for_online() {
        let mut m = machine(2);
        m.handle(0.0, Event::BrowserOffline);
        let a = m.handle(1.0, Event::Start);
        assert_eq!(opens(&a), 0);
        assert_eq!(m.state(), &LinkState::Offline);
        assert_eq!(opens(&m.handle(5.0, Event::BrowserOnline)), 1);
    }

    #[test]
    fn a_connected_socket_lost_while_offline_goes_offline_without_counting() {
        let mut m = connected();
        m.handle(1_000.0, Event::BrowserOffline);
        let a = m.handle(6_000.0, Event::Tick);
        assert_eq!(closes(&a), vec![CloseReason::Unresponsive]);
        assert_eq!(opens(&a), 0);
        assert_eq!((m.state(), m.attempt()), (&LinkState::Offline, 0));
    }

    // ---- polling fallback ---------------------------------------------------------------

    /// Fails `n` attempts from a fresh start, ticking through each backoff. Returns the time.
    fn fail_attempts(m: &mut Machine, n: u32) -> (f64, Vec<Action>) {
        let mut t = 0.0;
        m.handle(t, Event::Start);
        let mut last = Vec::new();
        for i in 0..n {
            t += 50.0;
            last = m.handle(t, Event::SocketClosed { code: 1006 });
            if i + 1 < n {
                t = m.next_wake().unwrap();
                assert_eq!(opens(&m.handle(t, Event::Tick)), 1);
            }
        }
        (t, last)
    }

    #[test]
    fn falls_back_to_polling_after_five_failed_attempts() {
        let mut m = machine(11);
        let (t, a) = fail_attempts(&mut m, 4);
        assert!(!m.is_polling() && !a.contains(&Action::StartPolling));
        let t2 = m.next_wake().unwrap();
        m.handle(t2, Event::Tick);
        let a = m.handle(t2 + 50.0, Event::SocketClosed { code: 1006 });
        assert!(t2 > t);
        assert_eq!(a[..2], [Action::StartPolling, Action::Poll { timeout_ms: 0 }]);
        assert_eq!(m.failures(), 5);
        assert_eq!(m.state(), &LinkState::Connecting);
        assert_eq!(m.transport(), None);
        let a = m.handle(t2 + 80.0, Event::PollSucceeded);
        assert_eq!(
            a[..3],
            [
                Action::TransportReady(Transport::Polling),
                Action::Poll { timeout_ms: 25_000 },
                Action::State(LinkState::Polling)
            ]
        );
        assert_eq!(m.transport(), Some(Transport::Polling));
    }

    #[test]
    fn a_fallback_whose_polls_failed_too_probes_at_once_when_the_server_answers_again() {
        // An outage longer than five attempts (a restart): the WebSocket fails, then the polls.
        let mut m = machine(11);
        let (t, a) = fail_attempts(&mut m, 5);
        assert!(a.contains(&Action::StartPolling));
        let mut now = t + 1.0;
        let mut a = m.handle(now, Event::PollFailed);
        while !a.contains(&Action::Poll { timeout_ms: 0 }) {
            now = m.next_wake().unwrap();
            a = m.handle(now, Event::Tick);
        }
        assert!(now - t < 300.0, "the first poll retry within 250 ms");
        // The server is back: the poll gets through, and the WebSocket is tried at once rather
        // than a probe interval later.
        let a = m.handle(now + 5.0, Event::PollSucceeded);
        assert!(a.contains(&Action::TransportReady(Transport::Polling)));
        assert!(a.contains(&Action::OpenSocket { probe: true }), "{a:?}");
        let a = m.handle(now + 10.0, Event::Hello { heartbeat_ms: None });
        assert_eq!(a[0], Action::StopPolling);
        assert!(matches!(m.state(), LinkState::Connected { .. }));
    }

    #[test]
    fn a_clean_restart_comes_back_after_a_short_random_wait_without_counting_a_failure() {
        let mut m = connected();
        let a = m.handle(1_000.0, Event::SocketClosed { code: backoff::SERVICE_RESTART });
        assert_eq!(opens(&a), 0);
        let LinkState::Reconnecting { attempt: 1, retry_at_ms } = m.state().clone() else { panic!("{a:?}") };
        let wait = retry_at_ms - 1_000.0;
        assert!((backoff::RESTART_MIN_MS as f64..backoff::RESTART_MAX_MS as f64).contains(&wait), "{wait}");
        assert_eq!(m.failures(), 0);
        assert_eq!(opens(&m.handle(retry_at_ms, Event::Tick)), 1);
    }

    #[test]
    fn the_failure_threshold_is_configurable() {
        let mut m = Machine::new(Config { failures_before_polling: 2, ..Config::default() }, 1);
        let (_, a) = fail_attempts(&mut m, 2);
        assert!(a.contains(&Action::StartPolling));
    }

    #[test]
    fn falls_back_when_no_socket_opens_within_the_connect_timeout() {
        let mut m = machine(12);
        let a = m.handle(0.0, Event::Start);
        assert_eq!(wake(&a), Some(20_000.0));
        assert!(closes(&m.handle(19_999.0, Event::Tick)).is_empty());
        let a = m.handle(20_000.0, Event::Tick);
        assert_eq!(
            a[..3],
            [
                Action::CloseSocket { reason: CloseReason::ConnectTimeout },
                Action::StartPolling,
                Action::Poll { timeout_ms: 0 }
            ]
        );
        assert!(m.is_polling());
        assert_eq!(m.failures(), 1);
        // An opened socket that never says hello times out too.
        let mut m = machine(12);
        m.handle(0.0, Event::Start);
        m.handle(100.0, Event::SocketOpened);
        assert!(m.handle(20_000.0, Event::Tick).contains(&Action::StartPolling));
    }

    #[test]
    fn while_polling_probes_websocket_at_the_capped_interval_and_switches_back_on_hello() {
        let mut m = machine(13);
        m.handle(0.0, Event::Start);
        let t0 = 20_000.0;
        m.handle(t0, Event::Tick); // connect timeout: polling
        m.handle(t0 + 10.0, Event::PollSucceeded);
        // The long poll answers empty every 25 s; probes every 30 s.
        assert_eq!(m.next_wake(), Some(t0 + 30_000.0));
        let a = m.handle(t0 + 30_000.0, Event::Tick);
        assert_eq!(a.iter().filter(|a| **a == Action::OpenSocket { probe: true }).count(), 1, "{a:?}");
        assert_eq!(m.state(), &LinkState::Polling, "still polling while probing");
        assert_eq!(m.transport(), Some(Transport::Polling));
        // The probe fails: the next one a capped interval later.
        m.handle(t0 + 31_000.0, Event::SocketClosed { code: 1006 });
        assert_eq!(m.failures(), 1, "probes do not count");
        assert_eq!(m.next_wake(), Some(t0 + 35_010.0)); // the poll's own deadline comes first
        m.handle(t0 + 35_000.0, Event::PollSucceeded);
        assert_eq!(m.next_wake(), Some(t0 + 61_000.0));
        let a = m.handle(t0 + 61_000.0, Event::Tick);
        assert_eq!(opens(&a), 1);
        m.handle(t0 + 61_050.0, Event::SocketOpened);
        m.handle(t0 + 61_060.0, Event::Frame);
        assert!(m.is_polling());
        let a = m.handle(t0 + 61_070.0, Event::Hello { heartbeat_ms: Some(30_000) });
        assert_eq!(a[0], Action::StopPolling);
        assert!(a.contains(&Action::TransportReady(Transport::WebSocket)));
        assert!(a.contains(&Action::State(LinkState::Connected { since_ms: t0 + 61_070.0, latency_ms: None })));
        assert!(!m.is_polling());
        assert_eq!((m.failures(), m.transport()), (0, Some(Transport::WebSocket)));
        // A stale poll answer after the switch is ignored.
        assert!(m.handle(t0 + 61_080.0, Event::PollSucceeded).is_empty());
    }

    #[test]
    fn a_hanging_probe_is_closed_at_the_connect_timeout() {
        let mut m = machine(14);
        m.handle(0.0, Event::Start);
        m.handle(20_000.0, Event::Tick);
        m.handle(20_010.0, Event::PollSucceeded);
        assert_eq!(opens(&m.handle(50_000.0, Event::Tick)), 1); // the probe
        m.handle(50_010.0, Event::PollSucceeded); // the next long poll: deadline 85 010
        assert_eq!(m.next_wake(), Some(70_000.0));
        let a = m.handle(70_000.0, Event::Tick);
        assert_eq!(closes(&a), vec![CloseReason::ConnectTimeout]);
        assert_eq!(m.state(), &LinkState::Polling);
        assert_eq!(m.next_wake(), Some(85_010.0));
        assert_eq!(opens(&m.handle(100_000.0, Event::Tick)), 1, "the next probe a capped interval later");
    }

    #[test]
    fn failed_polls_back_off_and_show_reconnecting_and_a_hung_poll_is_aborted() {
        let mut m = machine(15);
        m.handle(0.0, Event::Start);
        m.handle(20_000.0, Event::Tick);
        m.handle(20_010.0, Event::PollSucceeded);
        let a = m.handle(21_000.0, Event::PollFailed);
        let LinkState::Reconnecting { attempt: 1, retry_at_ms } = m.state().clone() else { panic!("{a:?}") };
        assert!((21_000.0..22_000.0).contains(&retry_at_ms));
        assert_eq!(m.transport(), None);
        let a = m.handle(retry_at_ms, Event::Tick);
        assert!(a.contains(&Action::Poll { timeout_ms: 0 }), "{a:?}");
        // This one hangs past its deadline.
        let a = m.handle(retry_at_ms + 10_000.0, Event::Tick);
        assert_eq!(a[0], Action::AbortPoll);
        assert!(matches!(m.state(), LinkState::Reconnecting { attempt: 2, .. }));
    }

    #[test]
    fn a_forced_fallback_does_not_probe_until_retry_now() {
        let mut m = connected();
        let a = m.handle(1_000.0, Event::ForcePolling);
        assert_eq!(
            a[..3],
            [
                Action::CloseSocket { reason: CloseReason::PollingForced },
                Action::StartPolling,
                Action::Poll { timeout_ms: 0 }
            ]
        );
        m.handle(1_010.0, Event::PollSucceeded);
        let all = run_ticks(&mut m, 1_010.0, 1_000_000.0);
        assert!(all.iter().all(|(_, a)| !matches!(a, Action::OpenSocket { .. })), "no probe");
        let a = m.handle(1_000_000.0, Event::RetryNow);
        assert_eq!(opens(&a), 1);
        let a = m.handle(1_000_050.0, Event::Hello { heartbeat_ms: None });
        assert_eq!(a[0], Action::StopPolling);
        assert!(matches!(m.state(), LinkState::Connected { .. }));
    }

    #[test]
    fn offline_while_polling_parks_the_retries_and_online_resumes_them() {
        let mut m = machine(16);
        m.handle(0.0, Event::Start);
        m.handle(20_000.0, Event::Tick);
        m.handle(20_010.0, Event::BrowserOffline);
        m.handle(20_020.0, Event::PollFailed);
        assert_eq!(m.state(), &LinkState::Offline);
        assert_eq!(m.next_wake(), None, "no poll and no probe while offline");
        let a = m.handle(500_000.0, Event::BrowserOnline);
        assert!(a.contains(&Action::Poll { timeout_ms: 0 }));
        assert!(a.contains(&Action::OpenSocket { probe: true }), "online again: probe at once: {a:?}");
    }

    // ---- disconnect and retry now -------------------------------------------------------

    #[test]
    fn disconnect_stops_everything_until_retry_now() {
        let mut m = connected();
        let a = m.handle(5_000.0, Event::Disconnect);
        assert_eq!(
            a,
            vec![Action::CloseSocket { reason: CloseReason::UserDisconnect }, Action::State(LinkState::Disconnected)]
        );
        assert_eq!(m.next_wake(), None);
        m.handle(5_500.0, Event::Hidden);
        for (i, e) in [
            Event::Tick,
            Event::SocketClosed { code: 1000 },
            Event::Visible,
            Event::Hello { heartbeat_ms: None },
            Event::PollSucceeded,
        ]
        .into_iter()
        .enumerate()
        {
            assert!(m.handle(6_000.0 + i as f64 * 100_000.0, e.clone()).is_empty(), "{e:?}");
        }
        let a = m.handle(100_000.0, Event::RetryNow);
        assert_eq!(
            a,
            vec![
                Action::OpenSocket { probe: false },
                Action::State(LinkState::Connecting),
                Action::ScheduleWake { at_ms: 120_000.0 }
            ]
        );
        // Start works too.
        m.handle(100_001.0, Event::Disconnect);
        assert_eq!(opens(&m.handle(100_002.0, Event::Start)), 1);
    }

    #[test]
    fn disconnect_while_polling_stops_the_poll_and_the_probe() {
        let mut m = machine(17);
        m.handle(0.0, Event::Start);
        m.handle(20_000.0, Event::Tick);
        m.handle(50_000.0, Event::Tick); // probe
        let a = m.handle(50_001.0, Event::Disconnect);
        assert_eq!(a[..2], [Action::CloseSocket { reason: CloseReason::UserDisconnect }, Action::StopPolling]);
        assert_eq!(m.state(), &LinkState::Disconnected);
    }

    #[test]
    fn retry_now_skips_the_backoff_but_keeps_counting() {
        let mut m = machine(18);
        m.handle(0.0, Event::Start);
        m.handle(10.0, Event::SocketClosed { code: 1006 });
        assert!(matches!(m.state(), LinkState::Reconnecting { attempt: 1, .. }));
        let a = m.handle(11.0, Event::RetryNow);
        assert_eq!(opens(&a), 1);
        assert_eq!(m.state(), &LinkState::Connecting);
        m.handle(30.0, Event::SocketClosed { code: 1006 });
        assert_eq!(m.failures(), 2);
    }

    #[test]
    fn retry_now_while_connected_checks_the_socket() {
        let mut m = connected();
        let a = m.handle(1_000.0, Event::RetryNow);
        assert_eq!(pings(&a), vec![1_000.0]);
        assert_eq!(opens(&a), 0);
    }

    #[test]
    fn ticks_rearm_the_timer_and_other_events_only_when_it_moves() {
        let mut m = connected();
        assert_eq!(wake(&m.handle(10.0, Event::Tick)), Some(HB));
        assert_eq!(wake(&m.handle(11.0, Event::Frame)), None, "unchanged deadline: no new timer");
        assert_eq!(wake(&m.handle(HB, Event::Tick)), Some(2.0 * HB));
    }

    #[test]
    fn event_from_frame() {
        let pong = ServerFrame::Pong { ts: 12.5, server_time: "t".into() };
        assert_eq!(Event::from_frame(&pong), Event::Pong { ts: 12.5 });
        let other = ServerFrame::ConversationLeft { conversation_id: "c".into() };
        assert_eq!(Event::from_frame(&other), Event::Frame);
    }

    #[test]
    fn refused_for_the_socket_limit_it_says_so_and_carries_on_over_polling() {
        let mut m = machine(3);
        m.handle(0.0, Event::Start);
        m.handle(5.0, Event::SocketOpened);
        let a = m.handle(6.0, Event::SocketClosed { code: POLICY_VIOLATION });
        assert_eq!(a[..3], [Action::TooManyConnections, Action::StartPolling, Action::Poll { timeout_ms: 0 }], "{a:?}");
        let a = m.handle(30.0, Event::PollSucceeded);
        assert!(a.contains(&Action::TransportReady(Transport::Polling)), "{a:?}");
        assert_eq!(m.state(), &LinkState::Polling);
        // The probe later is refused again: no second message, still polling.
        let mut t;
        loop {
            t = m.next_wake().unwrap();
            let a = m.handle(t, Event::Tick);
            if a.iter().any(|x| matches!(x, Action::OpenSocket { probe: true })) {
                break;
            }
            assert!(t < 600_000.0, "never probed");
            if a.iter().any(|x| matches!(x, Action::Poll { .. })) {
                m.handle(t, Event::PollSucceeded);
            }
        }
        let a = m.handle(t + 1.0, Event::SocketClosed { code: POLICY_VIOLATION });
        assert!(!a.contains(&Action::TooManyConnections), "{a:?}");
        assert_eq!(m.transport(), Some(Transport::Polling));
        // Other close codes while connecting still retry with backoff, not polling at once.
        let mut m = machine(4);
        m.handle(0.0, Event::Start);
        let a = m.handle(5.0, Event::SocketClosed { code: 1006 });
        assert!(!a.contains(&Action::StartPolling) && !a.contains(&Action::TooManyConnections));
    }
}
