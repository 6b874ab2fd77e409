//! One connection for every tab of a user: the glue of the [`tabs`](super::tabs) policy.
//!
//! [`SharedConnection`] offers the app what a [`Connection`] does. In the leading tab (or a
//! `Solo` one, where Web Locks or BroadcastChannel is missing) it owns a real `Connection`
//! and tells the other tabs, over a BroadcastChannel, every frame it receives, its state
//! (the heartbeat) and when a transport is ready. In the other tabs it is a relay link: frames
//! and states come from the leader, frames to send go to it. Outgoing messages do not travel
//! the channel: they are records in the shared outbox, which the leader merges and sends.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use gloo_timers::callback::Timeout;
use js_sys::{Function, Object, Promise, Reflect};
use persona_chat_protocol::{ClientFrame, ServerFrame};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};

use super::tabs::{self, Action, Control, Election, Event, Relay, Role, SharedState};
use super::{now_ms, ConnEvent, Connection, LinkState, Transport};

/// What the diagnostics page shows about the tabs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TabsInfo {
    pub role: Option<Role>,
    /// This tab's id.
    pub tab: String,
    /// The leading tab's id (this one when leading).
    pub leader: Option<String>,
}

struct Inner {
    election: Election,
    tab: String,
    base: String,
    token: String,
    user_id: String,
    on_event: Rc<dyn Fn(ConnEvent)>,
    /// A leader's answer to `Sync`: frames that rebuild what the server said at the start.
    snapshot: Rc<dyn Fn() -> Vec<ServerFrame>>,
    /// This tab's own connection (leading or solo).
    own: Option<Connection>,
    own_state: LinkState,
    channel: Option<web_sys::BroadcastChannel>,
    on_message: Option<Closure<dyn FnMut(web_sys::MessageEvent)>>,
    /// A follower's view of the leader's connection.
    leader_state: Option<SharedState>,
    leader_tab: Option<String>,
    connected_since: Option<f64>,
    /// `Ready` was reported for the leader's current transport.
    ready_reported: bool,
    wake: Option<Timeout>,
    /// Resolves the promise that keeps the lock held.
    release: Option<Function>,
    /// Which grant holds the lock now (a stolen one's rejection counts only if current).
    grant: u64,
    stopped: bool,
}

#[derive(Clone)]
pub struct SharedConnection {
    inner: Rc<RefCell<Inner>>,
}

fn locks() -> Option<JsValue> {
    let navigator = web_sys::window()?.navigator();
    let locks = Reflect::get(&navigator, &"locks".into()).ok()?;
    let request = Reflect::get(&locks, &"request".into()).ok()?;
    (request.is_function()).then_some(locks)
}

impl SharedConnection {
    pub fn start(
        base: String,
        token: String,
        user_id: String,
        on_event: Rc<dyn Fn(ConnEvent)>,
        snapshot: Rc<dyn Fn() -> Vec<ServerFrame>>,
    ) -> SharedConnection {
        let tab = crate::ids::new_client_id()[..8].to_owned();
        let channel = locks().and_then(|_| web_sys::BroadcastChannel::new(&tabs::channel_name(&base, &user_id)).ok());
        let inner = Rc::new(RefCell::new(Inner {
            election: Election::new(tabs::Config::default()),
            tab,
            base,
            token,
            user_id,
            on_event,
            snapshot,
            own: None,
            own_state: LinkState::Disconnected,
            channel,
            on_message: None,
            leader_state: None,
            leader_tab: None,
            connected_since: None,
            ready_reported: false,
            wake: None,
            release: None,
            grant: 0,
            stopped: false,
        }));
        let supported = inner.borrow().channel.is_some();
        if supported {
            let weak = Rc::downgrade(&inner);
            let closure = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
                if let (Some(inner), Some(text)) = (weak.upgrade(), e.data().as_string()) {
                    if let Some(message) = Relay::parse(&text) {
                        on_relay(&inner, message);
                    }
                }
            });
            let mut i = inner.borrow_mut();
            if let Some(channel) = &i.channel {
                channel.set_onmessage(Some(closure.as_ref().unchecked_ref()));
            }
            i.on_message = Some(closure);
        }
        feed(&inner, Event::Start { supported });
        SharedConnection { inner }
    }

    fn role(&self) -> Option<Role> {
        self.inner.borrow().election.role()
    }

    /// Whether this tab sends the outbox (it holds the connection).
    pub fn sends_outbox(&self) -> bool {
        self.role() != Some(Role::Follower)
    }

    pub fn info(&self) -> TabsInfo {
        info(&self.inner.borrow())
    }

    /// Diagnostics: take the lead from the leading tab.
    pub fn lead_here(&self) {
        feed(&self.inner, Event::LeadHere);
    }

    pub fn transport(&self) -> Option<Transport> {
        let i = self.inner.borrow();
        match &i.own {
            Some(own) => own.transport(),
            None => i.leader_state.as_ref().and_then(SharedState::transport),
        }
    }

    /// Sends a frame on the socket (the leader's, through the channel, in a follower).
    pub fn send(&self, frame: &ClientFrame) -> bool {
        let i = self.inner.borrow();
        if let Some(own) = &i.own {
            return own.send(frame);
        }
        if i.leader_state.as_ref().and_then(SharedState::transport) != Some(Transport::WebSocket) {
            return false;
        }
        post(&i, &Relay::Send { frame: frame.clone() })
    }

    fn control(&self, op: Control) {
        let own = self.inner.borrow().own.clone();
        match own {
            Some(own) => match op {
                Control::RetryNow => own.retry_now(),
                Control::Disconnect => own.disconnect(),
                Control::ForcePolling => own.force_polling(),
                Control::Offline => own.simulate_offline(true),
                Control::Online => own.simulate_offline(false),
            },
            None => drop(post(&self.inner.borrow(), &Relay::Control { op })),
        }
    }

    /// A refreshed token: the next socket and poll this tab opens use it (an open one stays).
    pub fn set_token(&self, token: String) {
        let own = {
            let mut i = self.inner.borrow_mut();
            i.token = token.clone();
            i.own.clone()
        };
        if let Some(own) = own {
            own.set_token(token);
        }
    }

    pub fn retry_now(&self) {
        self.control(Control::RetryNow);
    }

    pub fn disconnect(&self) {
        self.control(Control::Disconnect);
    }

    pub fn force_polling(&self) {
        self.control(Control::ForcePolling);
    }

    pub fn simulate_offline(&self, offline: bool) {
        self.control(if offline { Control::Offline } else { Control::Online });
    }

    /// Sign-out: closes the connection, lets go of the lock and the channel.
    pub fn stop(&self) {
        let (own, release, channel) = {
            let mut i = self.inner.borrow_mut();
            i.stopped = true;
            i.wake = None;
            (i.own.take(), i.release.take(), i.channel.take())
        };
        if let Some(own) = own {
            own.stop();
        }
        if let Some(release) = release {
            let _ = release.call0(&JsValue::NULL);
        }
        if let Some(channel) = channel {
            channel.set_onmessage(None);
            channel.close();
        }
    }
}

fn info(i: &Inner) -> TabsInfo {
    let role = i.election.role();
    let leader = match role {
        Some(Role::Leader) | Some(Role::Solo) => Some(i.tab.clone()),
        _ => i.leader_tab.clone(),
    };
    TabsInfo { role, tab: i.tab.clone(), leader }
}

fn post(i: &Inner, message: &Relay) -> bool {
    i.channel.as_ref().is_some_and(|c| c.post_message(&JsValue::from_str(&message.to_json())).is_ok())
}

fn feed(inner: &Rc<RefCell<Inner>>, event: Event) {
    if inner.borrow().stopped {
        return;
    }
    let actions = inner.borrow_mut().election.handle(now_ms(), event);
    for action in actions {
        perform(inner, action);
    }
}

fn perform(inner: &Rc<RefCell<Inner>>, action: Action) {
    let on_event = inner.borrow().on_event.clone();
    match action {
        Action::RequestLock { steal } => request_lock(inner, steal),
        Action::ReleaseLock => {
            let release = inner.borrow_mut().release.take();
            if let Some(release) = release {
                let _ = release.call0(&JsValue::NULL);
            }
        }
        Action::OpenConnection => {
            let (base, token) = {
                let mut i = inner.borrow_mut();
                i.leader_state = None;
                i.leader_tab = None;
                (i.base.clone(), i.token.clone())
            };
            let weak = Rc::downgrade(inner);
            let relay: Rc<dyn Fn(ConnEvent)> = Rc::new(move |event| {
                if let Some(inner) = weak.upgrade() {
                    on_own_event(&inner, event);
                }
            });
            let own = Connection::start(base, token, relay);
            inner.borrow_mut().own = Some(own);
        }
        Action::CloseConnection => {
            let own = inner.borrow_mut().own.take();
            if let Some(own) = own {
                own.stop();
            }
            let mut i = inner.borrow_mut();
            i.own_state = LinkState::Disconnected;
            i.ready_reported = false;
            drop(i);
            on_event(ConnEvent::State(LinkState::Connecting));
        }
        Action::SendHeartbeat => {
            let i = inner.borrow();
            post(&i, &Relay::Beat { tab: i.tab.clone(), state: SharedState::of(&i.own_state, now_ms()) });
        }
        Action::ScheduleWake { at_ms } => {
            let weak = Rc::downgrade(inner);
            let delay = (at_ms - now_ms()).clamp(0.0, 2_147_483_647.0) as u32;
            let timer = Timeout::new(delay, move || {
                if let Some(inner) = weak.upgrade() {
                    feed(&inner, Event::Tick);
                }
            });
            inner.borrow_mut().wake = Some(timer);
        }
        Action::Role(_) => {
            let tabs = info(&inner.borrow());
            on_event(ConnEvent::Tabs(tabs));
        }
    }
}

/// What this tab's own connection reports: to the app, and to the other tabs.
fn on_own_event(inner: &Rc<RefCell<Inner>>, event: ConnEvent) {
    {
        let mut i = inner.borrow_mut();
        let tab = i.tab.clone();
        let message = match &event {
            ConnEvent::State(state) => {
                i.own_state = state.clone();
                Some(Relay::Beat { tab, state: SharedState::of(state, now_ms()) })
            }
            ConnEvent::Frame(frame) => Some(Relay::Frame { tab, frame: frame.clone() }),
            ConnEvent::Ready(t) => Some(Relay::Ready { tab, polling: *t == Transport::Polling }),
            ConnEvent::Resync => Some(Relay::Resync { tab }),
            ConnEvent::Tabs(_) | ConnEvent::TooManyConnections => None,
        };
        if let (Some(message), Role::Leader) = (message, i.election.role().unwrap_or(Role::Solo)) {
            post(&i, &message);
        }
    }
    let on_event = inner.borrow().on_event.clone();
    on_event(event);
}

/// What another tab says.
fn on_relay(inner: &Rc<RefCell<Inner>>, message: Relay) {
    let role = inner.borrow().election.role();
    let on_event = inner.borrow().on_event.clone();
    match (role, message) {
        (Some(Role::Follower), Relay::Beat { tab, state }) => {
            feed(inner, Event::Heartbeat { tab: tab.clone() });
            let (changed_leader, old) = {
                let mut i = inner.borrow_mut();
                let changed = i.leader_tab.as_deref() != Some(tab.as_str());
                i.leader_tab = Some(tab);
                (changed, i.leader_state.replace(state.clone()))
            };
            if changed_leader {
                inner.borrow_mut().ready_reported = false;
                post(&inner.borrow(), &Relay::Sync);
                let tabs = info(&inner.borrow());
                on_event(ConnEvent::Tabs(tabs));
            }
            if old.as_ref() != Some(&state) || changed_leader {
                let now = now_ms();
                let link = {
                    let mut i = inner.borrow_mut();
                    if state.transport().is_none() {
                        i.ready_reported = false;
                        i.connected_since = None;
                    } else if i.connected_since.is_none() {
                        i.connected_since = Some(now);
                    }
                    state.to_link(now, i.connected_since)
                };
                on_event(ConnEvent::State(link));
                report_ready(inner, state.transport());
            }
        }
        (Some(Role::Follower), Relay::Frame { frame, .. }) => on_event(ConnEvent::Frame(frame)),
        (Some(Role::Follower), Relay::Ready { polling, .. }) => {
            inner.borrow_mut().ready_reported = false;
            report_ready(inner, Some(if polling { Transport::Polling } else { Transport::WebSocket }));
        }
        (Some(Role::Follower), Relay::Resync { .. }) => on_event(ConnEvent::Resync),
        (Some(Role::Leader), Relay::Send { frame }) => {
            let own = inner.borrow().own.clone();
            if let Some(own) = own {
                own.send(&frame);
            }
        }
        (Some(Role::Leader), Relay::Sync) => {
            let (tab, snapshot) = {
                let i = inner.borrow();
                (i.tab.clone(), i.snapshot.clone())
            };
            for frame in snapshot() {
                post(&inner.borrow(), &Relay::Frame { tab: tab.clone(), frame });
            }
        }
        (Some(Role::Leader), Relay::Control { op }) => SharedConnection { inner: inner.clone() }.control(op),
        _ => {}
    }
}

/// A follower learns that the leader's transport is up: the app rejoins (through the
/// leader) from its last seqs, once per transport.
fn report_ready(inner: &Rc<RefCell<Inner>>, transport: Option<Transport>) {
    let Some(transport) = transport else { return };
    let fire = {
        let mut i = inner.borrow_mut();
        let fire = !i.ready_reported && i.leader_state.as_ref().and_then(SharedState::transport).is_some();
        i.ready_reported = true;
        fire
    };
    if fire {
        let on_event = inner.borrow().on_event.clone();
        on_event(ConnEvent::Ready(transport));
    }
}

/// `navigator.locks.request(name, { steal }, lock => held until released)`.
fn request_lock(inner: &Rc<RefCell<Inner>>, steal: bool) {
    let Some(locks) = locks() else { return };
    let Ok(request) = Reflect::get(&locks, &"request".into()).and_then(|f| f.dyn_into::<Function>()) else { return };
    let name = {
        let i = inner.borrow();
        tabs::lock_name(&i.base, &i.user_id)
    };
    let options = Object::new();
    let _ = Reflect::set(&options, &"steal".into(), &JsValue::from_bool(steal));
    let granted_as: Rc<RefCell<Option<u64>>> = Rc::new(RefCell::new(None));
    let weak: Weak<RefCell<Inner>> = Rc::downgrade(inner);
    let granted = granted_as.clone();
    let callback = Closure::once_into_js(move |_lock: JsValue| -> JsValue {
        let mut resolve: Option<Function> = None;
        let hold = Promise::new(&mut |res, _rej| resolve = Some(res));
        match weak.upgrade() {
            Some(inner) if !inner.borrow().stopped => {
                let grant = {
                    let mut i = inner.borrow_mut();
                    i.grant += 1;
                    i.release = resolve;
                    i.grant
                };
                *granted.borrow_mut() = Some(grant);
                // Acted on after this callback returns, as the lock is then held.
                leptos::task::spawn_local(async move { feed(&inner, Event::LockGranted { steal }) });
            }
            // Signed out meanwhile: let go at once.
            _ => {
                if let Some(resolve) = resolve {
                    let _ = resolve.call0(&JsValue::NULL);
                }
            }
        }
        hold.into()
    });
    let Ok(answer) = request.call3(&locks, &JsValue::from_str(&name), &options, &callback) else { return };
    let Ok(answer) = answer.dyn_into::<Promise>() else { return };
    let weak = Rc::downgrade(inner);
    leptos::task::spawn_local(async move {
        // Rejected (AbortError) when another tab steals the lock from this grant.
        if wasm_bindgen_futures::JsFuture::from(answer).await.is_err() {
            let Some(inner) = weak.upgrade() else { return };
            let current = granted_as.borrow().is_some_and(|g| g == inner.borrow().grant);
            if current {
                inner.borrow_mut().release = None;
                feed(&inner, Event::LockLost);
            }
        }
    });
}
