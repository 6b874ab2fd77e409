//! The connection to the server. The app talks to a [`Connection`]; only `websocket.rs`
//! touches the browser's socket. The policy (when to connect, ping, give up, poll, probe) is
//! [`machine::Machine`]; this glue feeds it what happens (socket and poll results, timers,
//! the browser going on- or offline, the tab becoming visible) and carries out its actions.

pub mod backoff;
pub mod machine;
pub mod outbox;
pub mod polling;
#[cfg(test)]
mod random_events;
pub mod relay;
pub mod shared_outbox;
pub mod tabs;
pub mod websocket;

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use gloo_timers::callback::Timeout;
use persona_chat_protocol::{ClientFrame, ServerFrame};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;

use machine::{Action, Event, Machine};
pub use machine::{LinkState, Transport};
use websocket::{WsEvent, WsHandle};

/// What the connection reports to the app.
#[derive(Debug, Clone)]
pub enum ConnEvent {
    State(LinkState),
    Frame(ServerFrame),
    /// A transport is (again) up: rejoin from the last seqs and resend what is pending.
    Ready(Transport),
    /// The poll cursor was too old: reload the lists and fill each conversation.
    Resync,
    /// Which tab leads the user's shared connection changed (see `relay.rs`).
    Tabs(relay::TabsInfo),
    /// The server refused the socket (too many for this account): polling instead.
    TooManyConnections,
}

struct Inner {
    machine: Machine,
    base: String,
    token: String,
    socket: Option<WsHandle>,
    /// Events of older sockets and polls are ignored.
    socket_gen: u64,
    poll_gen: u64,
    cursor: Option<u64>,
    wake: Option<Timeout>,
    on_event: Rc<dyn Fn(ConnEvent)>,
    listeners: Vec<Listener>,
}

/// A browser event listener this connection added: removed again on `stop`.
type Listener = (web_sys::EventTarget, &'static str, Closure<dyn FnMut(web_sys::Event)>);

#[derive(Clone)]
pub struct Connection {
    inner: Rc<RefCell<Inner>>,
}

/// The clock the machine runs on (ms, monotonic).
pub fn now_ms() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map(|p| p.now()).unwrap_or_else(js_sys::Date::now)
}

impl Connection {
    pub fn start(base: String, token: String, on_event: Rc<dyn Fn(ConnEvent)>) -> Connection {
        let seed = (js_sys::Math::random() * 9_007_199_254_740_991.0) as u64;
        let inner = Rc::new(RefCell::new(Inner {
            machine: Machine::new(machine::Config::default(), seed),
            base,
            token,
            socket: None,
            socket_gen: 0,
            poll_gen: 0,
            cursor: None,
            wake: None,
            on_event,
            listeners: Vec::new(),
        }));
        listen_to_browser(&inner);
        let online = web_sys::window().map(|w| w.navigator().on_line()).unwrap_or(true);
        if !online {
            feed(&inner, Event::BrowserOffline);
        }
        feed(&inner, Event::Start);
        Connection { inner }
    }

    /// The transport that is up, if any.
    pub fn transport(&self) -> Option<Transport> {
        self.inner.borrow().machine.transport()
    }

    /// Sends a frame on the socket; false if no socket is up (the caller keeps it pending).
    pub fn send(&self, frame: &ClientFrame) -> bool {
        let inner = self.inner.borrow();
        inner.machine.transport() == Some(Transport::WebSocket)
            && inner.socket.as_ref().is_some_and(|s| s.send(&frame.to_json()))
    }

    /// A refreshed token: the next socket and poll use it (an open socket stays open).
    pub fn set_token(&self, token: String) {
        self.inner.borrow_mut().token = token;
    }

    pub fn retry_now(&self) {
        feed(&self.inner, Event::RetryNow);
    }

    pub fn disconnect(&self) {
        feed(&self.inner, Event::Disconnect);
    }

    pub fn force_polling(&self) {
        feed(&self.inner, Event::ForcePolling);
    }

    /// Diagnostics: acts as if the browser went offline (or came back online).
    pub fn simulate_offline(&self, offline: bool) {
        feed(&self.inner, if offline { Event::BrowserOffline } else { Event::BrowserOnline });
    }

    /// Stops for good (sign-out): closes everything and forgets the browser listeners.
    pub fn stop(&self) {
        feed(&self.inner, Event::Disconnect);
        let mut inner = self.inner.borrow_mut();
        inner.socket = None;
        inner.wake = None;
        inner.poll_gen += 1;
        for (target, name, closure) in inner.listeners.drain(..) {
            let _ = target.remove_event_listener_with_callback(name, closure.as_ref().unchecked_ref());
        }
    }
}

/// Hands an event to the machine and carries out what it answers. No borrow is held while the
/// app hears about it, so the app may call back into the connection.
fn feed(inner: &Rc<RefCell<Inner>>, event: Event) {
    let actions = inner.borrow_mut().machine.handle(now_ms(), event);
    for action in actions {
        perform(inner, action);
    }
}

fn perform(inner: &Rc<RefCell<Inner>>, action: Action) {
    let on_event = inner.borrow().on_event.clone();
    match action {
        Action::OpenSocket { .. } => open_socket(inner),
        Action::CloseSocket { .. } => {
            let old = {
                let mut i = inner.borrow_mut();
                i.socket_gen += 1;
                i.socket.take()
            };
            drop(old);
        }
        Action::SendPing { ts } => {
            let i = inner.borrow();
            if let Some(socket) = &i.socket {
                socket.send(&ClientFrame::Ping { ts }.to_json());
            }
        }
        Action::StartPolling => inner.borrow_mut().cursor = None,
        Action::Poll { timeout_ms } => start_poll(inner, timeout_ms),
        Action::AbortPoll | Action::StopPolling => inner.borrow_mut().poll_gen += 1,
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
        Action::TransportReady(transport) => on_event(ConnEvent::Ready(transport)),
        Action::TooManyConnections => on_event(ConnEvent::TooManyConnections),
        Action::State(state) => on_event(ConnEvent::State(state)),
    }
}

fn open_socket(inner: &Rc<RefCell<Inner>>) {
    let (url, gen, old) = {
        let mut i = inner.borrow_mut();
        i.socket_gen += 1;
        (crate::config::socket_url(&i.base, &i.token), i.socket_gen, i.socket.take())
    };
    drop(old);
    let weak = Rc::downgrade(inner);
    let handler: Rc<dyn Fn(WsEvent)> = Rc::new(move |event| on_socket_event(&weak, gen, event));
    match WsHandle::open(&url, handler) {
        Ok(socket) => inner.borrow_mut().socket = Some(socket),
        Err(_) => {
            // Reported after this action list is done, as a real close would be.
            let weak = Rc::downgrade(inner);
            leptos::task::spawn_local(async move {
                if let Some(inner) = weak.upgrade() {
                    if inner.borrow().socket_gen == gen {
                        feed(&inner, Event::SocketClosed { code: 1006 });
                    }
                }
            });
        }
    }
}

fn on_socket_event(weak: &Weak<RefCell<Inner>>, gen: u64, event: WsEvent) {
    let Some(inner) = weak.upgrade() else { return };
    if inner.borrow().socket_gen != gen {
        return; // an old socket's late event
    }
    match event {
        WsEvent::Opened => feed(&inner, Event::SocketOpened),
        WsEvent::Text(text) => match ServerFrame::parse(&text) {
            Ok(Some(frame)) => {
                let event = Event::from_frame(&frame);
                let on_event = inner.borrow().on_event.clone();
                // The app sees the frame (hello sets who we are) before the machine acts on it.
                on_event(ConnEvent::Frame(frame));
                feed(&inner, event);
            }
            // Still a sign of life, even if this build cannot read it.
            _ => feed(&inner, Event::Frame),
        },
        WsEvent::Closed { code, .. } => {
            if code == persona_chat_protocol::CLOSE_SIGNED_OUT {
                crate::api::token_refused();
            }
            let old = inner.borrow_mut().socket.take();
            // Freed after this handler returns, never inside it.
            leptos::task::spawn_local(async move { drop(old) });
            feed(&inner, Event::SocketClosed { code });
        }
    }
}

fn start_poll(inner: &Rc<RefCell<Inner>>, timeout_ms: u64) {
    let (base, token, cursor, gen) = {
        let mut i = inner.borrow_mut();
        i.poll_gen += 1;
        (i.base.clone(), i.token.clone(), i.cursor, i.poll_gen)
    };
    let weak = Rc::downgrade(inner);
    leptos::task::spawn_local(async move {
        let answer = polling::poll_once(&base, &token, cursor, timeout_ms).await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.borrow().poll_gen != gen {
            return; // aborted or stopped meanwhile
        }
        match answer {
            Ok((frames, resync, next)) => {
                inner.borrow_mut().cursor = Some(next);
                let on_event = inner.borrow().on_event.clone();
                if resync {
                    on_event(ConnEvent::Resync);
                }
                for frame in frames {
                    on_event(ConnEvent::Frame(frame));
                }
                feed(&inner, Event::PollSucceeded);
            }
            Err(_) => feed(&inner, Event::PollFailed),
        }
    });
}

/// The browser's online/offline events and the tab's visibility go to the machine.
fn listen_to_browser(inner: &Rc<RefCell<Inner>>) {
    let Some(window) = web_sys::window() else { return };
    let document = window.document();
    let add = |target: web_sys::EventTarget, name: &'static str, make: fn(&web_sys::Document) -> Event| {
        let weak = Rc::downgrade(inner);
        let doc = document.clone();
        let closure = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            if let (Some(inner), Some(doc)) = (weak.upgrade(), doc.as_ref()) {
                feed(&inner, make(doc));
            }
        });
        if target.add_event_listener_with_callback(name, closure.as_ref().unchecked_ref()).is_ok() {
            inner.borrow_mut().listeners.push((target, name, closure));
        }
    };
    add(window.clone().into(), "online", |_| Event::BrowserOnline);
    add(window.clone().into(), "offline", |_| Event::BrowserOffline);
    if let Some(doc) = &document {
        add(doc.clone().into(), "visibilitychange", |d| if d.hidden() { Event::Hidden } else { Event::Visible });
    }
}
