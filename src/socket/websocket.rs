//! The one place that touches `web_sys::WebSocket`. A [`WsHandle`] owns the socket and its
//! four closures; dropping it unsets the handlers, closes the socket and frees the closures,
//! so reconnecting never leaks (unlike closures leaked with `.forget()`).

use std::cell::Cell;
use std::rc::Rc;

use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{CloseEvent, Event, MessageEvent, WebSocket};

/// What the socket reports.
#[derive(Debug, Clone, PartialEq)]
pub enum WsEvent {
    Opened,
    Text(String),
    Closed { code: u16, reason: String },
}

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
}

/// How many handles are alive (each holds a socket and four closures): a leak check.
pub fn live_handles() -> usize {
    LIVE.with(Cell::get)
}

pub struct WsHandle {
    socket: WebSocket,
    _on_open: Closure<dyn FnMut(Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
    _on_error: Closure<dyn FnMut(Event)>,
}

impl WsHandle {
    /// Opens a socket; `on_event` hears about it. Events are only delivered while the handle
    /// lives. `on_event` must not drop this handle synchronously (defer it, e.g. with
    /// `spawn_local`): a closure cannot be freed while it runs.
    pub fn open(url: &str, on_event: Rc<dyn Fn(WsEvent)>) -> Result<WsHandle, String> {
        let socket = WebSocket::new(url).map_err(|e| format!("{e:?}"))?;
        let cb = on_event.clone();
        let on_open = Closure::<dyn FnMut(Event)>::new(move |_| cb(WsEvent::Opened));
        let cb = on_event.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            if let Some(text) = e.data().as_string() {
                cb(WsEvent::Text(text));
            }
        });
        let cb = on_event.clone();
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
            cb(WsEvent::Closed { code: e.code(), reason: e.reason() })
        });
        // An error is always followed by a close event, which carries what we act on.
        let on_error = Closure::<dyn FnMut(Event)>::new(|_| {});
        socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        socket.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        LIVE.with(|n| n.set(n.get() + 1));
        Ok(WsHandle { socket, _on_open: on_open, _on_message: on_message, _on_close: on_close, _on_error: on_error })
    }

    /// Sends a text frame; false when the socket is not open.
    pub fn send(&self, text: &str) -> bool {
        self.socket.ready_state() == WebSocket::OPEN && self.socket.send_with_str(text).is_ok()
    }

    pub fn is_open(&self) -> bool {
        self.socket.ready_state() == WebSocket::OPEN
    }

    /// The browser's socket (for checks that its handlers are gone after a drop).
    pub fn raw(&self) -> WebSocket {
        self.socket.clone()
    }
}

impl Drop for WsHandle {
    fn drop(&mut self) {
        self.socket.set_onopen(None);
        self.socket.set_onmessage(None);
        self.socket.set_onclose(None);
        self.socket.set_onerror(None);
        let _ = self.socket.close_with_code_and_reason(1000, "client closed");
        LIVE.with(|n| n.set(n.get().saturating_sub(1)));
    }
}
