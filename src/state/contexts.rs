//! The contexts the views take, small and `Copy`, one per concern: a component asks only for
//! what it uses (`ChatCtx::expect()`, …). Each is signals to read and the intents of its
//! concern; the [`Engine`] behind them is the glue that carries the intents out.

use std::collections::{HashMap, VecDeque};

use leptos::prelude::*;
use persona_chat_protocol::http::{ConversationSummary, SessionResponse};

use super::reducer::ChatState;
use super::{Engine, FrameEntry, Stats};
use crate::socket::outbox::Outgoing;
use crate::socket::relay::TabsInfo;
use crate::socket::LinkState;

/// Creates the engine and provides the four contexts; the engine itself is for the app's root
/// (the session's start, the page-wide listeners).
pub fn provide(base: String) -> Engine {
    let engine = Engine::new(base);
    provide_engine(engine);
    engine
}

/// Provides the four contexts of an engine made elsewhere (tests mount views with one).
pub fn provide_engine(engine: Engine) {
    provide_context(SessionCtx { session: engine.session, engine });
    provide_context(ChatCtx {
        chat: engine.chat,
        active: engine.active,
        notice: engine.notice,
        typists: engine.typists,
        notify: engine.notify,
        closed: engine.closed,
        engine,
    });
    provide_context(ConnectionCtx { status: engine.status, toast: engine.toast, engine });
    provide_context(DiagnosticsCtx { stats: engine.stats, frames: engine.frames, tabs: engine.tabs, engine });
}

/// Who is signed in, and the server: for sign-in, sign-out and the requests views make
/// themselves (searches, new rooms).
#[derive(Clone, Copy)]
pub struct SessionCtx {
    pub session: RwSignal<Option<SessionResponse>>,
    engine: Engine,
}

impl SessionCtx {
    pub fn expect() -> Self {
        expect_context::<SessionCtx>()
    }

    pub fn base(&self) -> String {
        self.engine.base()
    }

    pub fn token(&self) -> Option<String> {
        self.engine.token()
    }

    /// Signed in (the login page's answer).
    pub fn begin(&self, session: SessionResponse) {
        crate::session::begin(self.engine, session);
    }

    pub fn sign_out(&self, everywhere: bool) {
        crate::session::sign_out(self.engine, everywhere);
    }
}

/// The conversations: what the chat views show, and what the user does there.
#[derive(Clone, Copy)]
pub struct ChatCtx {
    pub chat: RwSignal<ChatState>,
    /// The conversation open in the chat view.
    pub active: RwSignal<Option<String>>,
    /// A problem or an event to show in words.
    pub notice: RwSignal<Option<String>>,
    /// Who is typing where (usernames, in the order they started), others only.
    pub typists: RwSignal<HashMap<String, Vec<String>>>,
    /// Whether the user allowed notifications (and asked for them).
    pub notify: RwSignal<bool>,
    /// The open conversation closed because it left the list (counted): the route goes back.
    pub closed: RwSignal<Option<(u64, String)>>,
    engine: Engine,
}

impl ChatCtx {
    pub fn expect() -> Self {
        expect_context::<ChatCtx>()
    }

    pub fn open_conversation(&self, conversation_id: String) {
        self.engine.open_conversation(conversation_id);
    }

    pub fn conversation_created(&self, summary: ConversationSummary) {
        self.engine.conversation_created(summary);
    }

    pub fn leave(&self, conversation_id: String) {
        self.engine.leave(conversation_id);
    }

    pub fn load_members(&self, conversation_id: String) {
        self.engine.load_members(conversation_id);
    }

    pub async fn load_older(&self, conversation_id: String) -> bool {
        self.engine.load_older(conversation_id).await
    }

    pub fn send_message(&self, conversation_id: String, content: String) -> bool {
        self.engine.send_message(conversation_id, content)
    }

    pub fn draft_changed(&self, conversation_id: &str, draft: &str) {
        self.engine.draft_changed(conversation_id, draft);
    }

    pub fn retry(&self, client_id: &str) {
        self.engine.retry(client_id);
    }

    pub fn discard(&self, client_id: &str) {
        self.engine.discard(client_id);
    }

    pub fn stop_response(&self, conversation_id: String, message_id: String) {
        self.engine.stop_response(conversation_id, message_id);
    }

    /// For the requests views make themselves.
    pub fn session(&self) -> SessionCtx {
        SessionCtx { session: self.engine.session, engine: self.engine }
    }
}

/// The connection's state in words and icons, the toasts, and the retry button.
#[derive(Clone, Copy)]
pub struct ConnectionCtx {
    pub status: RwSignal<LinkState>,
    /// A short message about the connection ("Connection lost", "Back online").
    pub toast: RwSignal<Option<(u64, String)>>,
    engine: Engine,
}

impl ConnectionCtx {
    pub fn expect() -> Self {
        expect_context::<ConnectionCtx>()
    }

    pub fn retry_now(&self) {
        self.engine.retry_now();
    }
}

/// The diagnostics page: counters, the frame log, the tabs, and the buttons that break things.
#[derive(Clone, Copy)]
pub struct DiagnosticsCtx {
    pub stats: RwSignal<Stats>,
    /// The last frames in and out, newest last.
    pub frames: RwSignal<VecDeque<FrameEntry>>,
    /// This tab's part in sharing the connection.
    pub tabs: RwSignal<TabsInfo>,
    engine: Engine,
}

impl DiagnosticsCtx {
    pub fn expect() -> Self {
        expect_context::<DiagnosticsCtx>()
    }

    pub fn disconnect(&self) {
        self.engine.disconnect();
    }

    pub fn force_polling(&self) {
        self.engine.force_polling();
    }

    pub fn lead_here(&self) {
        self.engine.lead_here();
    }

    pub fn simulate_offline(&self, offline: bool) {
        self.engine.simulate_offline(offline);
    }

    pub fn clear_outbox(&self) {
        self.engine.clear_outbox();
    }

    pub fn outbox_items(&self) -> Vec<Outgoing> {
        self.engine.outbox_items()
    }
}
