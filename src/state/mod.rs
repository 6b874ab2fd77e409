//! The app's state: small `Copy` contexts by concern for the views ([`contexts`]), and the
//! [`Engine`] behind them, the glue that carries out what the policies decide: the sync core
//! ([`sync`]: what to rejoin, when to resync, fill gaps, mark read, notify), the connection's
//! machine, the outbox and the typing timers. Frames flow one way: connection -> sync core ->
//! reducer -> signals -> views.

pub mod contexts;
#[cfg(test)]
mod converge;
pub mod gaps;
#[cfg(test)]
pub(crate) mod props;
pub mod reducer;
pub mod sync;
pub mod typing;

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use persona_chat_protocol::http::{ConversationKind, SessionResponse};
use persona_chat_protocol::{ClientFrame, ErrorCode, ServerFrame};
use sync::{Action, Event, SyncCore};

use crate::api;
use crate::socket::outbox::{OutStatus, Outbox, OutboxConfig, Outgoing, Refusal};
use crate::socket::relay::{SharedConnection, TabsInfo};
use crate::socket::shared_outbox::{self, Shared};
use crate::socket::{now_ms, ConnEvent, LinkState, Transport};
use reducer::{ChatState, Delivery, PendingMessage};
use typing::{IncomingTyping, OutgoingTyping, TypingConfig, TypingSignal, TypingStep};

/// How many messages a conversation shows when opened; older ones come with scrolling.
pub const HISTORY_PAGE: u32 = 50;

/// What the app says when the server refuses a socket for the per-user limit (1008).
pub const TOO_MANY: &str = "Too many open connections for this account: carrying on over polling.";

/// How many frames the diagnostics page keeps.
pub const FRAME_LOG: usize = 50;

/// Counters for the diagnostics page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Frames sent (either transport).
    pub sent: u64,
    /// Frames received (either transport).
    pub received: u64,
    /// When the current transport came up (ms since the epoch).
    pub connected_since: Option<f64>,
    /// Transports that came up (the first one, then every reconnect).
    readies: u64,
}

impl Stats {
    /// Transports that came up again after the first.
    pub fn reconnects(&self) -> u64 {
        self.readies.saturating_sub(1)
    }
}

/// A frame in or out, kept as it is: turned into text only when the diagnostics page shows
/// it, not on every frame.
#[derive(Debug, Clone, PartialEq)]
pub enum LoggedFrame {
    In(ServerFrame),
    Out(ClientFrame),
}

impl LoggedFrame {
    pub fn is_in(&self) -> bool {
        matches!(self, LoggedFrame::In(_))
    }

    pub fn to_json(&self) -> String {
        match self {
            LoggedFrame::In(f) => serde_json::to_string(f).unwrap_or_default(),
            LoggedFrame::Out(f) => f.to_json(),
        }
    }
}

/// A frame as the diagnostics page lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameEntry {
    pub number: u64,
    /// ms since the epoch.
    pub at: f64,
    pub frame: LoggedFrame,
}

/// The glue behind the contexts (see the module's doc). Views never hold it: they take the
/// small contexts of [`contexts`].
#[derive(Clone, Copy)]
pub struct Engine {
    pub status: RwSignal<LinkState>,
    pub chat: RwSignal<ChatState>,
    pub session: RwSignal<Option<SessionResponse>>,
    /// The conversation open in the chat view.
    pub active: RwSignal<Option<String>>,
    /// A problem to show in words (failed loads and the like).
    pub notice: RwSignal<Option<String>>,
    base: StoredValue<String>,
    /// The user's connection, shared by all their tabs (owned by the leading one).
    connection: StoredValue<Option<SharedConnection>, LocalStorage>,
    /// This tab's part in sharing it (diagnostics).
    pub tabs: RwSignal<TabsInfo>,
    /// The sync policy, and its wake-up.
    core: StoredValue<SyncCore>,
    core_timer: StoredValue<Option<(f64, gloo_timers::callback::Timeout)>, LocalStorage>,
    /// A conversation closed because it left the list (counted, so each closing is seen).
    pub closed: RwSignal<Option<(u64, String)>>,
    /// Every message not yet acknowledged, persisted in localStorage per user: the source of
    /// truth for sending (the chat state only shows it).
    outbox: StoredValue<Outbox>,
    /// What this tab knows of the per-message records every tab of the user shares.
    shared: StoredValue<Shared>,
    /// Merges other tabs' outbox records when they change.
    shared_listener: StoredValue<Option<shared_outbox::store::Listener>, LocalStorage>,
    /// An in-order HTTP flush is running (polling).
    http_flushing: StoredValue<bool>,
    /// The server refused our socket for the per-user limit (until a socket is up again).
    too_many: StoredValue<bool>,
    /// Wakes the outbox for rate-limited messages due later.
    outbox_timer: StoredValue<Option<gloo_timers::callback::Timeout>, LocalStorage>,
    /// Who is typing where (usernames, in the order they started), others only.
    pub typists: RwSignal<HashMap<String, Vec<String>>>,
    incoming_typing: StoredValue<IncomingTyping>,
    incoming_timer: StoredValue<Option<gloo_timers::callback::Timeout>, LocalStorage>,
    /// Our own typing: the conversation whose draft it is about, and its timing.
    outgoing_typing: StoredValue<(Option<String>, OutgoingTyping)>,
    outgoing_timer: StoredValue<Option<gloo_timers::callback::Timeout>, LocalStorage>,
    pub stats: RwSignal<Stats>,
    /// The last frames in and out, newest last.
    pub frames: RwSignal<VecDeque<FrameEntry>>,
    /// A short message about the connection ("Connection lost", "Back online").
    pub toast: RwSignal<Option<(u64, String)>>,
    /// Whether the user allowed notifications (and asked for them).
    pub notify: RwSignal<bool>,
}

impl Engine {
    pub fn new(base: String) -> Self {
        Engine {
            status: RwSignal::new(LinkState::Disconnected),
            chat: RwSignal::new(ChatState::default()),
            session: RwSignal::new(None),
            active: RwSignal::new(None),
            notice: RwSignal::new(None),
            base: StoredValue::new(base),
            connection: StoredValue::new_local(None),
            tabs: RwSignal::new(TabsInfo::default()),
            core: StoredValue::new(SyncCore::new(sync::Config::default())),
            core_timer: StoredValue::new_local(None),
            closed: RwSignal::new(None),
            outbox: StoredValue::new(Outbox::new(OutboxConfig::default())),
            shared: StoredValue::new(Shared::new()),
            shared_listener: StoredValue::new_local(None),
            http_flushing: StoredValue::new(false),
            too_many: StoredValue::new(false),
            outbox_timer: StoredValue::new_local(None),
            typists: RwSignal::new(HashMap::new()),
            incoming_typing: StoredValue::new(IncomingTyping::new(&TypingConfig::default())),
            incoming_timer: StoredValue::new_local(None),
            outgoing_typing: StoredValue::new((None, OutgoingTyping::new(TypingConfig::default()))),
            outgoing_timer: StoredValue::new_local(None),
            stats: RwSignal::new(Stats::default()),
            frames: RwSignal::new(VecDeque::new()),
            toast: RwSignal::new(None),
            notify: RwSignal::new(crate::notify::permitted()),
        }
    }

    /// The user's draft in a conversation changed: typing_start at most every 3 s while it
    /// does, typing_stop after 2 s idle (and on send, and when switching conversations).
    pub fn draft_changed(&self, conversation_id: &str, draft: &str) {
        let previous = self.outgoing_typing.with_value(|(c, _)| c.clone());
        if previous.as_deref() != Some(conversation_id) {
            if let Some(previous) = previous {
                let step = self.outgoing_typing.try_update_value(|(_, t)| t.left()).unwrap_or_default();
                self.apply_typing_step(&previous, step);
            }
            self.outgoing_typing.update_value(|(c, _)| *c = Some(conversation_id.to_owned()));
        }
        let step = self
            .outgoing_typing
            .try_update_value(|(_, t)| t.draft_changed(now_ms(), draft.trim().is_empty()))
            .unwrap_or_default();
        self.apply_typing_step(conversation_id, step);
    }

    fn apply_typing_step(&self, conversation_id: &str, step: TypingStep) {
        match step.send {
            // Typing is best effort: not sent when no transport is up.
            Some(TypingSignal::Start) => {
                let _ = self.send_frame(&ClientFrame::TypingStart { conversation_id: conversation_id.to_owned() });
            }
            Some(TypingSignal::Stop) => {
                let _ = self.send_frame(&ClientFrame::TypingStop { conversation_id: conversation_id.to_owned() });
            }
            None => {}
        }
        let ctx = *self;
        let timer = step.wake_at.map(|at| {
            gloo_timers::callback::Timeout::new((at - now_ms()).max(0.0) as u32, move || {
                let (conversation, step) =
                    ctx.outgoing_typing.try_update_value(|(c, t)| (c.clone(), t.tick(now_ms()))).unwrap_or_default();
                if let Some(conversation) = conversation {
                    ctx.apply_typing_step(&conversation, step);
                }
            })
        });
        self.outgoing_timer.set_value(timer);
    }

    /// Recomputes who is typing, and wakes when the next typist expires.
    fn refresh_typists(&self) {
        let now = now_ms();
        self.incoming_typing.update_value(|t| {
            t.expire(now);
        });
        let conversations: Vec<String> =
            self.chat.with_untracked(|c| c.conversations.iter().map(|x| x.id.clone()).collect());
        let map: HashMap<String, Vec<String>> = self.incoming_typing.with_value(|t| {
            conversations
                .into_iter()
                .filter_map(|id| {
                    let names: Vec<String> = t.typists(&id, now).into_iter().map(|x| x.username.clone()).collect();
                    (!names.is_empty()).then_some((id, names))
                })
                .collect()
        });
        if self.typists.with_untracked(|m| m != &map) {
            self.typists.set(map);
        }
        let ctx = *self;
        let timer = self
            .incoming_typing
            .with_value(IncomingTyping::next_wake)
            .map(|at| gloo_timers::callback::Timeout::new((at - now).max(0.0) as u32, move || ctx.refresh_typists()));
        self.incoming_timer.set_value(timer);
    }

    pub fn base(&self) -> String {
        self.base.get_value()
    }

    /// The session's token, for requests made outside the context (searches, new rooms).
    pub fn token(&self) -> Option<String> {
        self.session.with_untracked(|s| s.as_ref().map(|s| s.token.clone()))
    }

    /// Signs in: connects; the first sync (or, from an older server, the list) opens the
    /// conversation that was open, or the Lobby.
    pub fn open_session(&self, session: SessionResponse) {
        self.close_session();
        let token = session.token.clone();
        let user_id = session.user.id.clone();
        self.restore_outbox(&session.user.id);
        self.chat.update(|c| c.me = Some(session.user.clone()));
        self.session.set(Some(session));
        let ctx = *self;
        let on_event: Rc<dyn Fn(ConnEvent)> = Rc::new(move |event| ctx.on_connection_event(event));
        // Where the user was: shown at once (with anything still unsent), even before the
        // server answers.
        let remembered = crate::storage::load_active();
        if let Some(active) = &remembered {
            self.active.set(Some(active.clone()));
        }
        self.feed(Event::Start { remembered });
        // What a tab opened after the connection needs from the leading one: who is online
        // (it then asks for a sync of its own through the leader).
        let snapshot: Rc<dyn Fn() -> Vec<ServerFrame>> = Rc::new(move || {
            let users = ctx.chat.with_untracked(|c| c.online.clone());
            vec![ServerFrame::OnlineUsers { users, timestamp: String::new() }]
        });
        let connection = SharedConnection::start(self.base(), token, user_id, on_event, snapshot);
        self.connection.set_value(Some(connection));
        // The list at once over HTTP (a transport may take a while); the first sync answer
        // replaces it.
        spawn_local(async move { ctx.load_conversations().await });
        spawn_local(async move { ctx.load_personas().await });
    }

    /// A refreshed token of the same session: new sockets and polls use it.
    pub fn replace_token(&self, session: SessionResponse) {
        if let Some(c) = self.connection.get_value() {
            c.set_token(session.token.clone());
        }
        self.session.set(Some(session));
    }

    /// Signs out locally: stops the connection and forgets the state.
    pub fn close_session(&self) {
        if let Some(c) = self.connection.get_value() {
            c.stop();
        }
        self.connection.set_value(None);
        self.shared_listener.set_value(None);
        self.tabs.set(TabsInfo::default());
        self.core.set_value(SyncCore::new(sync::Config::default()));
        self.core_timer.set_value(None);
        self.session.set(None);
        self.active.set(None);
        self.chat.set(ChatState::default());
        self.stats.set(Stats::default());
        self.frames.set(VecDeque::new());
    }

    /// Hands an event to the sync core and carries out what it answers.
    fn feed(&self, event: Event) {
        let now = now_ms();
        let quiet = matches!(event, Event::Tick);
        let step = |c: &mut ChatState| self.core.try_update_value(|core| core.handle(now, event, c));
        let actions = if quiet { self.chat.try_update_untracked(step) } else { self.chat.try_update(step) };
        for action in actions.flatten().unwrap_or_default() {
            self.perform(action);
        }
    }

    fn perform(&self, action: Action) {
        let ctx = *self;
        match action {
            Action::Send(frame) => {
                let _ = self.send_frame(&frame);
            }
            Action::PostSync { since, ask } => {
                let Some(token) = self.token() else { return };
                self.stats.update(|s| s.sent += 1);
                self.log_frame(LoggedFrame::Out(ClientFrame::Sync { since }));
                spawn_local(async move {
                    match api::sync(&ctx.base(), &token, since).await {
                        Ok(state) => {
                            ctx.stats.update(|s| s.received += 1);
                            ctx.log_frame(LoggedFrame::In(ServerFrame::SyncState(Box::new(state.clone()))));
                            ctx.feed(Event::SyncAnswer { ask, state: Box::new(state) })
                        }
                        Err(e) if e.status == 404 || e.status == 405 => ctx.feed(Event::SyncRefused),
                        Err(_) => ctx.feed(Event::SyncFailed { ask }),
                    }
                });
            }
            Action::LoadLatest(conversation_id) => spawn_local(async move {
                let Some(token) = ctx.token() else { return };
                let page = match api::latest_messages(&ctx.base(), &token, &conversation_id, HISTORY_PAGE).await {
                    Ok(page) => Some((page.messages, page.has_more)),
                    Err(e) => {
                        ctx.notice.set(Some(format!("Could not load messages: {e}")));
                        None
                    }
                };
                ctx.feed(Event::Loaded { conversation_id, page });
            }),
            Action::FillGap { conversation_id, from, upto } => {
                spawn_local(async move { ctx.fill_gaps(conversation_id, from, upto).await })
            }
            Action::ReportRead { conversation_id, seq } => {
                let Some(token) = self.token() else { return };
                spawn_local(async move {
                    if api::mark_read(&ctx.base(), &token, &conversation_id, seq).await.is_ok() {
                        ctx.feed(Event::ReadReported { conversation_id, seq });
                    }
                });
            }
            Action::Notify { title, body, conversation_id } => {
                if self.notify.get_untracked() {
                    crate::notify::show(&title, &body, &conversation_id);
                }
            }
            Action::ReloadLists => {
                spawn_local(async move { ctx.load_conversations().await });
                spawn_local(async move { ctx.load_personas().await });
            }
            Action::Show(Some(id)) => {
                crate::storage::save_active(&id);
                if self.active.get_untracked().as_ref() != Some(&id) {
                    self.active.set(Some(id.clone()));
                }
                let is_room =
                    self.chat.with_untracked(|c| c.conversation(&id).is_some_and(|c| c.kind == ConversationKind::Room));
                if is_room {
                    self.load_members(id);
                }
            }
            Action::Show(None) => {
                if let Some(id) = self.active.get_untracked() {
                    let n = self.closed.get_untracked().map_or(1, |(n, _)| n + 1);
                    self.closed.set(Some((n, id)));
                }
                self.active.set(None);
            }
            Action::Notice(text) => self.notice.set(Some(text)),
            Action::WakeAt(at) => {
                // Most events leave the wake-up where it was: the timer is kept then.
                if self.core_timer.with_value(|t| t.as_ref().map(|(when, _)| *when)) == at {
                    return;
                }
                let timer = at.map(|at| {
                    let delay = (at - now_ms()).clamp(0.0, 2_147_483_647.0) as u32;
                    (
                        at,
                        gloo_timers::callback::Timeout::new(delay, move || {
                            ctx.core_timer.set_value(None);
                            ctx.feed(Event::Tick)
                        }),
                    )
                });
                self.core_timer.set_value(timer);
            }
        }
    }

    async fn load_personas(&self) {
        let Some(token) = self.token() else { return };
        if let Ok(list) = api::personas(&self.base(), &token).await {
            self.chat.update(|c| c.set_personas(list));
        }
    }

    /// The list over HTTP: at the start (until the first sync answer), and instead of sync
    /// from an older server.
    async fn load_conversations(&self) {
        let Some(token) = self.token() else { return };
        match api::conversations(&self.base(), &token).await {
            Ok(list) => {
                self.notice.update(|n| drop(n.take_if(|text| text.starts_with("Could not load your conversations"))));
                if self.core.with_value(SyncCore::wants_list) {
                    self.feed(Event::ListLoaded(list));
                }
            }
            Err(e) => self.notice.set(Some(format!(
                "Could not load your conversations yet ({e}); trying again when the connection is back."
            ))),
        }
    }

    /// Shows a conversation: its recent history over HTTP, then live frames over the socket.
    pub fn open_conversation(&self, conversation_id: String) {
        crate::storage::save_active(&conversation_id);
        if self.active.get_untracked().as_ref() != Some(&conversation_id) {
            // Leaving a draft: typing stops there.
            if let Some(previous) =
                self.outgoing_typing.with_value(|(c, _)| c.clone()).filter(|c| c != &conversation_id)
            {
                let step = self.outgoing_typing.try_update_value(|(_, t)| t.left()).unwrap_or_default();
                self.apply_typing_step(&previous, step);
            }
            self.active.set(Some(conversation_id.clone()));
        }
        let is_room = self
            .chat
            .with_untracked(|c| c.conversation(&conversation_id).is_some_and(|c| c.kind == ConversationKind::Room));
        if is_room {
            self.load_members(conversation_id.clone());
        }
        self.feed(Event::Open(conversation_id));
    }

    /// Leaves a room: gone from this tab at once, and from the others when the server says so.
    pub fn leave(&self, conversation_id: String) {
        let Some(token) = self.token() else { return };
        let ctx = *self;
        spawn_local(async move {
            match api::leave(&ctx.base(), &token, &conversation_id).await {
                Ok(()) => ctx.feed(Event::Left(conversation_id)),
                Err(e) => ctx.notice.set(Some(format!("Could not leave: {e}"))),
            }
        });
    }

    /// Who is in a conversation (for the header's count and the members panel).
    pub fn load_members(&self, conversation_id: String) {
        let ctx = *self;
        spawn_local(async move {
            let Some(token) = ctx.token() else { return };
            if let Ok(members) = api::members(&ctx.base(), &token, &conversation_id).await {
                ctx.chat.update(|c| {
                    c.members.insert(conversation_id, members);
                });
            }
        });
    }

    /// Loads the page of messages before the oldest held; false if there is none to load.
    pub async fn load_older(&self, conversation_id: String) -> bool {
        let Some(token) = self.token() else { return false };
        let (first, has_older) = self
            .chat
            .with_untracked(|c| c.log(&conversation_id).map(|l| (l.first_seq(), l.has_older)).unwrap_or((None, None)));
        let Some(first) = first else { return false };
        if has_older == Some(false) || first <= 1 {
            return false;
        }
        match api::messages_before(&self.base(), &token, &conversation_id, first, HISTORY_PAGE).await {
            Ok(page) => {
                let any = !page.messages.is_empty();
                self.chat.update(|c| c.add_older(&conversation_id, page.messages, page.has_more));
                any
            }
            Err(e) => {
                self.notice.set(Some(format!("Could not load older messages: {e}")));
                false
            }
        }
    }

    /// The tab was hidden or shown: while hidden, nothing counts as read.
    pub fn visibility_changed(&self, hidden: bool) {
        self.feed(Event::Visibility { hidden });
    }

    /// Sends a failed message again.
    pub fn retry(&self, client_id: &str) {
        // Failed in the outbox: due again. Still pending there: it goes out anyway.
        let _ = self.with_outbox(|o| o.retry(client_id));
        if self.outbox.with_value(|o| o.get(client_id).is_some()) {
            self.chat.update(|c| c.retry_pending(client_id));
            self.flush_outbox();
        }
    }

    /// Gives up on a failed message.
    pub fn discard(&self, client_id: &str) {
        self.with_outbox(|o| o.discard(client_id));
        self.chat.update(|c| c.discard_pending(client_id));
    }

    /// Diagnostics: forgets every unsent message.
    pub fn clear_outbox(&self) {
        let ids: Vec<String> = self.outbox.with_value(|o| o.items().iter().map(|i| i.client_id.clone()).collect());
        for id in ids {
            self.discard(&id);
        }
    }

    /// What the outbox holds, for the diagnostics page.
    pub fn outbox_items(&self) -> Vec<Outgoing> {
        self.outbox.with_value(|o| o.items().to_vec())
    }

    /// Asks a persona to stop the reply it is streaming.
    pub fn stop_response(&self, conversation_id: String, message_id: String) {
        self.send_frame(&ClientFrame::StopResponse { conversation_id, message_id });
    }

    /// Diagnostics: behave as if the browser went offline (or came back).
    pub fn simulate_offline(&self, offline: bool) {
        self.connection.with_value(|c| c.as_ref().map(|c| c.simulate_offline(offline)));
    }

    /// A conversation created or found (a persona picked, a room made): listed and opened.
    pub fn conversation_created(&self, summary: persona_chat_protocol::http::ConversationSummary) {
        let id = summary.id.clone();
        self.chat.update(|c| {
            if c.conversation(&id).is_none() {
                c.upsert(summary, 0);
            }
        });
        self.open_conversation(id);
    }

    /// What this tab holds, as JSON (see `window.personaChatState` in app.rs).
    pub fn snapshot_json(&self) -> String {
        let link = self.status.get_untracked().describe(now_ms()).0;
        let (user_id, active, conversations, streams) = self.chat.with_untracked(|c| {
            let conversations: serde_json::Map<String, serde_json::Value> = c
                .logs
                .iter()
                .map(|(id, log)| {
                    let messages: Vec<serde_json::Value> = log
                        .stored()
                        .map(|m| serde_json::json!({ "seq": m.seq, "id": m.id, "client_id": m.client_id, "content": m.content }))
                        .collect();
                    (id.clone(), serde_json::Value::Array(messages))
                })
                .collect();
            // Replies streaming (not stored): a test checks none is left once all is quiet.
            let streams: Vec<serde_json::Value> =
                c.streams.iter().map(|(id, s)| serde_json::json!({ "id": id, "conversation_id": s.conversation_id, "persona_id": s.persona_id, "text": s.text })).collect();
            (c.me.as_ref().map(|u| u.id.clone()), self.active.get_untracked(), conversations, streams)
        });
        let pending: Vec<serde_json::Value> = self.outbox.with_value(|o| {
            o.items()
                .iter()
                .map(|i| {
                    let status = if matches!(i.status, OutStatus::Failed { .. }) { "failed" } else { "pending" };
                    serde_json::json!({ "client_id": i.client_id, "conversation_id": i.conversation_id, "content": i.content, "status": status })
                })
                .collect()
        });
        let online: Vec<String> = self.chat.with_untracked(|c| c.online.iter().map(|u| u.username.clone()).collect());
        // The conversation list as shown: titles, previews, unread counts.
        let list: Vec<serde_json::Value> = self.chat.with_untracked(|c| {
            c.conversations
                .iter()
                .map(|x| serde_json::json!({ "id": x.id, "title": x.title, "last_seq": x.last_seq, "unread": x.unread_count, "last": x.last_message.as_ref().map(|m| m.content.clone()) }))
                .collect()
        });
        let version = self.core.with_value(SyncCore::version);
        let tabs = self.tabs.get_untracked();
        let tab = serde_json::json!({ "id": tabs.tab, "role": tabs.role.map(|r| r.as_str()), "leader": tabs.leader });
        serde_json::json!({ "user_id": user_id, "active": active, "link": link, "conversations": conversations, "streams": streams, "pending": pending, "tab": tab, "online": online, "list": list, "version": version }).to_string()
    }

    /// Sends a message: shown at once as pending, sent now if connected, else when the
    /// connection is back.
    /// Sends a message: shown at once as pending, kept (across reloads too) until the server
    /// acknowledges it, sent now if a transport is up, else when one is. False (and a notice)
    /// when the outbox is full: nothing is dropped silently.
    pub fn send_message(&self, conversation_id: String, content: String) -> bool {
        let client_id = crate::ids::new_client_id();
        let timestamp = js_sys::Date::new_0().to_iso_string().as_string().unwrap_or_default();
        let item = Outgoing::new(client_id.clone(), conversation_id.clone(), content.clone(), timestamp.clone());
        if let Err(e) = self.with_outbox(|o| o.push(item)) {
            self.notice.set(Some(format!("Not sent: {e}. Wait until the connection is back.")));
            return false;
        }
        self.chat.update(|c| {
            c.add_pending(
                &conversation_id,
                PendingMessage { client_id, content, timestamp, delivery: Delivery::Pending },
            )
        });
        self.flush_outbox();
        let step = self.outgoing_typing.try_update_value(|(_, t)| t.message_sent()).unwrap_or_default();
        self.apply_typing_step(&conversation_id, step);
        true
    }

    /// Changes the outbox and saves it: the records of the messages it changed, one per
    /// message (other tabs' records are never touched).
    fn with_outbox<T>(&self, f: impl FnOnce(&mut Outbox) -> T) -> T {
        let out = self.outbox.try_update_value(f).expect("the outbox lives as long as the context");
        let user = self.chat.with_untracked(|c| c.me.as_ref().map(|u| u.id.clone()));
        if let Some(user) = user {
            let now = js_sys::Date::now();
            let writes =
                self.outbox.with_value(|o| self.shared.try_update_value(|s| s.sync(o, now))).unwrap_or_default();
            shared_outbox::store::apply(&user, &writes);
        }
        out
    }

    /// Brings in what other tabs wrote, closed ones too: their messages (sent from here when
    /// this tab holds the connection), and acks, refusals and retries of ours.
    fn merge_shared_outbox(&self) {
        let Some(user) = self.chat.with_untracked(|c| c.me.as_ref().map(|u| u.id.clone())) else { return };
        let Some(records) = shared_outbox::store::load(&user) else { return };
        let Some(merged) =
            self.outbox.try_update_value(|o| self.shared.try_update_value(|s| s.merge(o, records))).flatten()
        else {
            return;
        };
        if merged.is_empty() {
            return;
        }
        shared_outbox::store::apply(&user, &merged.writes);
        // A record whose message this tab already saw stored (the ack was relayed before the
        // record arrived): acknowledged here too, so it is neither shown nor sent again.
        let stored: Vec<String> = merged
            .added
            .iter()
            .filter(|i| self.chat.with_untracked(|c| c.holds_client_id(&i.conversation_id, &i.client_id)))
            .map(|i| i.client_id.clone())
            .collect();
        for client_id in &stored {
            self.with_outbox(|o| o.ack(client_id));
        }
        self.chat.update(|c| {
            for item in &merged.added {
                c.add_pending(&item.conversation_id, pending_of(item));
            }
            for (client_id, reason) in &merged.failed {
                let line = c.logs.iter().find_map(|(id, log)| {
                    log.pending().iter().find(|p| &p.client_id == client_id).map(|p| (id.clone(), p.clone()))
                });
                if let Some((conversation_id, mut line)) = line {
                    c.discard_pending(client_id);
                    line.delivery = Delivery::Failed(reason.clone());
                    c.add_pending(&conversation_id, line);
                }
            }
            for client_id in &merged.requeued {
                c.retry_pending(client_id);
            }
            // Discarded elsewhere: a failed line goes (an acknowledged one is replaced by the
            // stored message when its frame arrives).
            for client_id in &merged.removed {
                let failed = c.logs.values().any(|log| {
                    log.pending().iter().any(|p| &p.client_id == client_id && matches!(p.delivery, Delivery::Failed(_)))
                });
                if failed {
                    c.discard_pending(client_id);
                }
            }
        });
        if !merged.added.is_empty() || !merged.requeued.is_empty() {
            self.flush_outbox();
        }
    }

    /// After a reload: what was not acknowledged shows again as pending (or failed) and goes
    /// out once a transport is up.
    fn restore_outbox(&self, user_id: &str) {
        // Every tab's records (the writing tab may be closed), and an outbox kept as one blob
        // by an older build, taken over as records.
        let mut stored =
            shared_outbox::store::take_legacy(user_id).unwrap_or_else(|| Outbox::new(OutboxConfig::default()));
        let mut shared = Shared::new();
        shared_outbox::store::apply(user_id, &shared.sync(&stored, js_sys::Date::now()));
        let records = shared_outbox::store::load(user_id).unwrap_or_default();
        let merged = shared.merge(&mut stored, records);
        shared_outbox::store::apply(user_id, &merged.writes);
        let shown: Vec<(String, PendingMessage)> =
            stored.items().iter().map(|i| (i.conversation_id.clone(), pending_of(i))).collect();
        self.outbox.set_value(stored);
        self.shared.set_value(shared);
        let ctx = *self;
        self.shared_listener.set_value(shared_outbox::store::listen(user_id, move || ctx.merge_shared_outbox()));
        self.chat.update(|c| {
            for (conversation_id, pending) in shown {
                c.add_pending(&conversation_id, pending);
            }
        });
    }

    /// Sends what the outbox holds for sending, in order, if a transport is up.
    fn flush_outbox(&self) {
        // Sent by the tab that holds the connection (every tab's messages are records it merges).
        if self.transport().is_none()
            || !self.connection.with_value(|c| c.as_ref().is_some_and(SharedConnection::sends_outbox))
        {
            return;
        }
        let now = now_ms();
        if self.transport() == Some(Transport::Polling) {
            self.flush_over_http(now);
        } else {
            for item in self.with_outbox(|o| o.take_sendable(now)) {
                if !self.send_frame(&item.to_frame()) {
                    self.with_outbox(|o| o.not_sent(&item.client_id));
                }
            }
        }
        // Rate-limited messages are due later: wake then.
        let ctx = *self;
        let timer = self
            .outbox
            .with_value(Outbox::next_wake)
            .map(|at| gloo_timers::callback::Timeout::new((at - now).max(0.0) as u32, move || ctx.flush_outbox()));
        self.outbox_timer.set_value(timer);
    }

    /// While polling: one HTTP send at a time, in order (requests in parallel may be stored
    /// in any order); after a send that did not get through, the rest wait for the next flush.
    fn flush_over_http(&self, now: f64) {
        if self.http_flushing.get_value() {
            return; // the running flush looks again when it is done
        }
        let items = self.with_outbox(|o| o.take_sendable(now));
        if items.is_empty() {
            return;
        }
        self.http_flushing.set_value(true);
        let ctx = *self;
        spawn_local(async move {
            let mut through = true;
            for item in items {
                if !through {
                    ctx.with_outbox(|o| o.not_sent(&item.client_id));
                    continue;
                }
                let frame = item.to_frame();
                ctx.stats.update(|s| s.sent += 1);
                ctx.log_frame(LoggedFrame::Out(frame.clone()));
                through = ctx.post_over_http(item.conversation_id, item.content, item.client_id).await;
            }
            ctx.http_flushing.set_value(false);
            // Onwards, or (after a send that did not get through) the timer for its retry.
            ctx.flush_outbox();
        });
    }

    /// Sends one message over HTTP; false if it did not get through (due again after a
    /// doubling wait: polling may well go on, and the outbox's timer sends it).
    async fn post_over_http(&self, conversation_id: String, content: String, client_id: String) -> bool {
        let Some(token) = self.token() else { return false };
        match api::post_message(&self.base(), &token, &conversation_id, &content, &client_id).await {
            Ok(ack) => self.on_frame(ServerFrame::MessageAck(ack)),
            // Refused (not a network failure): the message failed, with the reason (or waits,
            // when rate limited).
            Err(e) if (400..500).contains(&e.status) => {
                let code = if e.status == 429 { ErrorCode::RateLimited } else { e.code.unwrap_or(ErrorCode::Unknown) };
                self.on_frame(ServerFrame::Error {
                    code,
                    message: e.message,
                    reference: Some(client_id),
                    timestamp: String::new(),
                })
            }
            Err(_) => {
                self.with_outbox(|o| o.send_failed(&client_id, now_ms()));
                return false;
            }
        }
        true
    }

    /// Every server frame, from either transport: the outbox learns of acks and refusals,
    /// the chat state of everything.
    fn on_frame(&self, frame: ServerFrame) {
        self.stats.update(|s| s.received += 1);
        self.log_frame(LoggedFrame::In(frame.clone()));
        match &frame {
            ServerFrame::MessageAck(ack) => {
                self.with_outbox(|o| o.ack(&ack.client_id));
            }
            ServerFrame::TypingIndicator { conversation_id, user_id, username, is_typing, .. } => {
                let me = self.chat.with_untracked(|c| c.me.as_ref().map(|u| u.id.clone()));
                if me.as_deref() != Some(user_id.as_str()) {
                    self.incoming_typing.update_value(|t| {
                        t.indicator(now_ms(), conversation_id, user_id, username, *is_typing);
                    });
                    self.refresh_typists();
                }
            }
            ServerFrame::NewMessage { conversation_id, message, .. } => {
                if let Some(cid) = &message.client_id {
                    // A message ends its sender's typing at once.
                    if self
                        .incoming_typing
                        .try_update_value(|t| t.message_from(conversation_id, &message.sender_id))
                        .unwrap_or(false)
                    {
                        self.refresh_typists();
                    }
                    // Our own message stored (its ack may have been lost with a connection).
                    let mine = self.chat.with_untracked(|c| c.me.as_ref().is_some_and(|u| u.id == message.sender_id));
                    if mine && self.outbox.with_value(|o| o.get(cid).is_some()) {
                        self.with_outbox(|o| o.ack(cid));
                    }
                }
            }
            ServerFrame::Error { code, message, reference: Some(reference), .. } => {
                let refusal = self.with_outbox(|o| o.refuse(reference, *code, message, now_ms()));
                if let Some(Refusal::RetryAt(_)) = refusal {
                    // Transient: it stays pending and goes out again when due.
                    self.flush_outbox();
                    return;
                }
                // About a conversation, not a message of ours (a persona that will not
                // answer this one): in words.
                if refusal.is_none() && self.chat.with_untracked(|c| c.conversation(reference).is_some()) {
                    self.notice.set(Some(message.clone()));
                }
            }
            // A refusal about nothing of ours: in words.
            ServerFrame::Error { message, reference: None, .. } => self.notice.set(Some(message.clone())),
            _ => {}
        }
        // The rest (the reducer, gaps, reads, notifications, resyncs) is the sync core's.
        self.feed(Event::Frame(frame));
    }

    fn transport(&self) -> Option<Transport> {
        self.connection.with_value(|c| c.as_ref().and_then(SharedConnection::transport))
    }

    /// Sends a frame on whichever transport is up: the socket, or the HTTP routes while
    /// polling. False when none is up (a message then stays pending and goes out on `Ready`).
    fn send_frame(&self, frame: &ClientFrame) -> bool {
        let sent = if self.transport() == Some(Transport::Polling) {
            self.send_over_http(frame.clone());
            true
        } else {
            self.connection.with_value(|c| c.as_ref().is_some_and(|c| c.send(frame)))
        };
        if sent {
            self.stats.update(|s| s.sent += 1);
            self.log_frame(LoggedFrame::Out(frame.clone()));
        }
        sent
    }

    fn log_frame(&self, frame: LoggedFrame) {
        let at = js_sys::Date::now();
        self.frames.update(|f| {
            let number = f.back().map_or(1, |e| e.number + 1);
            f.push_back(FrameEntry { number, at, frame });
            while f.len() > FRAME_LOG {
                f.pop_front();
            }
        });
    }

    /// The polling transport's way to send: each frame has its HTTP twin.
    fn send_over_http(&self, frame: ClientFrame) {
        let Some(token) = self.token() else { return };
        let (ctx, base) = (*self, self.base());
        spawn_local(async move {
            match frame {
                ClientFrame::SendMessage { conversation_id, content, client_id: Some(client_id), .. } => {
                    let through = ctx.post_over_http(conversation_id, content, client_id).await;
                    if !through {
                        ctx.flush_outbox(); // sets the timer for its retry
                    }
                }
                ClientFrame::TypingStart { conversation_id } => {
                    drop(api::set_typing(&base, &token, &conversation_id, true).await)
                }
                ClientFrame::TypingStop { conversation_id } => {
                    drop(api::set_typing(&base, &token, &conversation_id, false).await)
                }
                ClientFrame::JoinConversation { conversation_id, after_seq } => {
                    ctx.fill(conversation_id, after_seq.unwrap_or(0)).await
                }
                ClientFrame::StopResponse { conversation_id, message_id } => {
                    drop(api::stop_response(&base, &token, &conversation_id, &message_id).await)
                }
                _ => {}
            }
        });
    }

    /// Fetches the messages still missing with seqs between `from` and `upto` (exclusive).
    async fn fill_gaps(&self, conversation_id: String, from: i64, upto: i64) {
        let Some(token) = self.token() else { return };
        let ranges = self.chat.with_untracked(|c| {
            let held: Vec<i64> = c
                .log(&conversation_id)
                .map(|l| l.stored().map(|m| m.seq).filter(|s| (from..=upto).contains(s)).collect())
                .unwrap_or_default();
            gaps::missing(std::iter::once(from).chain(held), upto)
        });
        for q in gaps::queries(&ranges, gaps::MAX_PAGE) {
            match api::messages_between(&self.base(), &token, &conversation_id, q.after_seq, q.before_seq, q.limit)
                .await
            {
                Ok(page) => self.chat.update(|c| c.add_history(&conversation_id, page.messages)),
                Err(_) => return, // the next rejoin asks again from the last seq
            }
        }
    }

    /// Fetches over HTTP what a conversation has after `after_seq`, page by page.
    async fn fill(&self, conversation_id: String, mut after_seq: i64) {
        let Some(token) = self.token() else { return };
        loop {
            match api::messages_after(&self.base(), &token, &conversation_id, after_seq).await {
                Ok(page) => {
                    after_seq = page.messages.last().map_or(after_seq, |m| m.seq);
                    let more = page.has_more && !page.messages.is_empty();
                    self.chat.update(|c| c.add_history(&conversation_id, page.messages));
                    if !more {
                        return;
                    }
                }
                Err(e) => {
                    self.notice.set(Some(format!("Could not load messages: {e}")));
                    return;
                }
            }
        }
    }

    pub fn retry_now(&self) {
        self.connection.with_value(|c| c.as_ref().map(SharedConnection::retry_now));
    }

    pub fn disconnect(&self) {
        self.connection.with_value(|c| c.as_ref().map(SharedConnection::disconnect));
    }

    pub fn force_polling(&self) {
        self.connection.with_value(|c| c.as_ref().map(SharedConnection::force_polling));
    }

    /// Diagnostics: this tab takes the lead of the shared connection.
    pub fn lead_here(&self) {
        self.connection.with_value(|c| c.as_ref().map(SharedConnection::lead_here));
    }

    fn on_connection_event(&self, event: ConnEvent) {
        match event {
            ConnEvent::State(state) => {
                let was_up = self.status.with_untracked(LinkState::is_up);
                let up = state.is_up();
                if !up {
                    self.stats.update(|s| s.connected_since = None);
                } else if !was_up {
                    self.stats.update(|s| s.connected_since = Some(js_sys::Date::now()));
                }
                self.status.set(state);
                if was_up && !up {
                    self.feed(Event::TransportDown);
                }
            }
            ConnEvent::Frame(frame) => self.on_frame(frame),
            ConnEvent::Ready(transport) => {
                self.stats.update(|s| s.readies += 1);
                // Refused for the socket limit: said again once polling is up (the first
                // load of the list may have cleared the notice meanwhile).
                let refused = self.too_many.get_value();
                if refused && transport == Transport::Polling {
                    self.notice.set(Some(TOO_MANY.to_owned()));
                } else if refused {
                    self.too_many.set_value(false);
                    self.notice.update(|n| drop(n.take_if(|text| text == TOO_MANY)));
                }
                // The sync core resyncs and rejoins (streams seen before may have died with
                // the server: the answer's replies are whole).
                self.feed(Event::TransportUp(transport));
                self.resume();
            }
            ConnEvent::Resync => self.feed(Event::Resync),
            ConnEvent::Tabs(info) => self.tabs.set(info),
            ConnEvent::TooManyConnections => {
                self.too_many.set_value(true);
                self.notice.set(Some(TOO_MANY.to_owned()));
            }
        }
    }

    /// When a transport is (again) up: resend what is still pending (the sync core rejoins).
    /// Resending is safe: the server stores each client_id once.
    fn resume(&self) {
        // What was in flight on the lost transport may not have arrived: send it again (the
        // server stores each client_id once).
        self.with_outbox(Outbox::requeue_in_flight);
        self.merge_shared_outbox();
        self.flush_outbox();
    }
}

/// How an outbox message shows in its conversation.
fn pending_of(i: &Outgoing) -> PendingMessage {
    let delivery = match &i.status {
        OutStatus::Failed { reason, .. } => Delivery::Failed(reason.clone()),
        _ => Delivery::Pending,
    };
    PendingMessage {
        client_id: i.client_id.clone(),
        content: i.content.clone(),
        timestamp: i.written_at.clone(),
        delivery,
    }
}
