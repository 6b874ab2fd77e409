//! The connection to the server. The app talks to a [`Connection`]; only `websocket.rs`
//! touches the browser's socket.
//!
//! This is the walking skeleton's policy: reconnect with jittered exponential backoff, reset
//! once the server's `hello` confirms the connection.

pub mod backoff;
pub mod machine;
pub mod outbox;
pub mod polling;
pub mod websocket;

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use gloo_timers::callback::Timeout;
use persona_chat_protocol::{ClientFrame, ServerFrame};

use websocket::{WsEvent, WsHandle};

/// What the user sees of the connection.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkStatus {
    Connecting,
    Connected,
    /// Lost; the next attempt is `attempt`, in `retry_in_ms`.
    Reconnecting { attempt: u32, retry_in_ms: u64 },
    /// Stopped on purpose.
    Disconnected,
}

/// What the connection reports to the app.
#[derive(Debug, Clone)]
pub enum ConnEvent {
    Status(LinkStatus),
    Frame(ServerFrame),
}

struct Inner {
    url: String,
    socket: Option<WsHandle>,
    /// Failed attempts since the last confirmed connection.
    attempt: u32,
    retry: Option<Timeout>,
    stopped: bool,
    on_event: Rc<dyn Fn(ConnEvent)>,
}

#[derive(Clone)]
pub struct Connection {
    inner: Rc<RefCell<Inner>>,
}

impl Connection {
    pub fn start(url: String, on_event: Rc<dyn Fn(ConnEvent)>) -> Connection {
        let inner = Rc::new(RefCell::new(Inner { url, socket: None, attempt: 0, retry: None, stopped: false, on_event }));
        connect(&inner);
        Connection { inner }
    }

    /// Sends a frame now; false if no socket is open.
    pub fn send(&self, frame: &ClientFrame) -> bool {
        let inner = self.inner.borrow();
        inner.socket.as_ref().is_some_and(|s| s.send(&frame.to_json()))
    }

    pub fn stop(&self) {
        let on_event = {
            let mut inner = self.inner.borrow_mut();
            inner.stopped = true;
            inner.retry = None;
            inner.socket = None;
            inner.on_event.clone()
        };
        on_event(ConnEvent::Status(LinkStatus::Disconnected));
    }
}

fn connect(inner: &Rc<RefCell<Inner>>) {
    let weak = Rc::downgrade(inner);
    let (url, on_event) = {
        let i = inner.borrow();
        (i.url.clone(), i.on_event.clone())
    };
    on_event(ConnEvent::Status(LinkStatus::Connecting));
    let handler: Rc<dyn Fn(WsEvent)> = Rc::new(move |event| on_ws_event(&weak, event));
    match WsHandle::open(&url, handler) {
        Ok(socket) => inner.borrow_mut().socket = Some(socket),
        Err(_) => schedule_retry(inner),
    }
}

fn on_ws_event(weak: &Weak<RefCell<Inner>>, event: WsEvent) {
    let Some(inner) = weak.upgrade() else { return };
    let on_event = inner.borrow().on_event.clone();
    match event {
        WsEvent::Opened => {}
        WsEvent::Text(text) => {
            if let Ok(Some(frame)) = ServerFrame::parse(&text) {
                if matches!(frame, ServerFrame::Hello { .. }) {
                    inner.borrow_mut().attempt = 0;
                    on_event(ConnEvent::Status(LinkStatus::Connected));
                }
                on_event(ConnEvent::Frame(frame));
            }
        }
        WsEvent::Closed { .. } => {
            if !inner.borrow().stopped {
                schedule_retry(&inner);
            }
        }
    }
}

fn schedule_retry(inner: &Rc<RefCell<Inner>>) {
    let (attempt, on_event) = {
        let mut i = inner.borrow_mut();
        i.attempt += 1;
        (i.attempt, i.on_event.clone())
    };
    let delay = backoff::delay_ms(attempt, js_sys::Math::random());
    let weak = Rc::downgrade(inner);
    // The old socket is dropped from the timer, never from inside its own close handler.
    let timer = Timeout::new(delay as u32, move || {
        if let Some(inner) = weak.upgrade() {
            if inner.borrow().stopped {
                return;
            }
            inner.borrow_mut().socket = None;
            connect(&inner);
        }
    });
    inner.borrow_mut().retry = Some(timer);
    on_event(ConnEvent::Status(LinkStatus::Reconnecting { attempt, retry_in_ms: delay }));
}
