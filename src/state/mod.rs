//! The SocketContext: reactive state for the views, and the intents they call. Frames flow
//! one way: connection -> reducer -> signals -> views.

pub mod gaps;
pub mod reducer;
pub mod typing;

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use persona_chat_protocol::http::{ConversationKind, SessionResponse};
use persona_chat_protocol::{ClientFrame, ErrorCode, ServerFrame};

use crate::api;
use crate::socket::outbox::{self, OutStatus, Outbox, OutboxConfig, Outgoing, Refusal};
use crate::socket::{now_ms, ConnEvent, Connection, LinkState, Transport};
use reducer::{ChatState, Delivery, PendingMessage};
use typing::{IncomingTyping, OutgoingTyping, TypingConfig, TypingSignal, TypingStep};

/// How many messages a conversation shows when opened; older ones come with scrolling.
pub const HISTORY_PAGE: u32 = 50;

#[derive(Clone, Copy)]
pub struct SocketContext {
    pub status: RwSignal<LinkState>,
    pub chat: RwSignal<ChatState>,
    pub session: RwSignal<Option<SessionResponse>>,
    /// The conversation open in the chat view.
    pub active: RwSignal<Option<String>>,
    /// A problem to show in words (failed loads and the like).
    pub notice: RwSignal<Option<String>>,
    base: StoredValue<String>,
    connection: StoredValue<Option<Connection>, LocalStorage>,
    joined: StoredValue<BTreeSet<String>>,
    /// Every message not yet acknowledged, persisted in localStorage per user: the source of
    /// truth for sending (the chat state only shows it).
    outbox: StoredValue<Outbox>,
    /// Wakes the outbox for rate-limited messages due later.
    outbox_timer: StoredValue<Option<gloo_timers::callback::Timeout>, LocalStorage>,
    /// Who is typing where (usernames, in the order they started), others only.
    pub typists: RwSignal<HashMap<String, Vec<String>>>,
    incoming_typing: StoredValue<IncomingTyping>,
    incoming_timer: StoredValue<Option<gloo_timers::callback::Timeout>, LocalStorage>,
    /// Our own typing: the conversation whose draft it is about, and its timing.
    outgoing_typing: StoredValue<(Option<String>, OutgoingTyping)>,
    outgoing_timer: StoredValue<Option<gloo_timers::callback::Timeout>, LocalStorage>,
}

impl SocketContext {
    pub fn new(base: String) -> Self {
        SocketContext {
            status: RwSignal::new(LinkState::Disconnected),
            chat: RwSignal::new(ChatState::default()),
            session: RwSignal::new(None),
            active: RwSignal::new(None),
            notice: RwSignal::new(None),
            base: StoredValue::new(base),
            connection: StoredValue::new_local(None),
            joined: StoredValue::new(BTreeSet::new()),
            outbox: StoredValue::new(Outbox::new(OutboxConfig::default())),
            outbox_timer: StoredValue::new_local(None),
            typists: RwSignal::new(HashMap::new()),
            incoming_typing: StoredValue::new(IncomingTyping::new(&TypingConfig::default())),
            incoming_timer: StoredValue::new_local(None),
            outgoing_typing: StoredValue::new((None, OutgoingTyping::new(TypingConfig::default()))),
            outgoing_timer: StoredValue::new_local(None),
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
            Some(TypingSignal::Start) => drop(self.send_frame(&ClientFrame::TypingStart { conversation_id: conversation_id.to_owned() })),
            Some(TypingSignal::Stop) => drop(self.send_frame(&ClientFrame::TypingStop { conversation_id: conversation_id.to_owned() })),
            None => {}
        }
        let ctx = *self;
        let timer = step.wake_at.map(|at| {
            gloo_timers::callback::Timeout::new((at - now_ms()).max(0.0) as u32, move || {
                let (conversation, step) = ctx
                    .outgoing_typing
                    .try_update_value(|(c, t)| (c.clone(), t.tick(now_ms())))
                    .unwrap_or_default();
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
        let conversations: Vec<String> = self.chat.with_untracked(|c| c.conversations.iter().map(|x| x.id.clone()).collect());
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
        let timer = self.incoming_typing.with_value(IncomingTyping::next_wake).map(|at| {
            gloo_timers::callback::Timeout::new((at - now).max(0.0) as u32, move || ctx.refresh_typists())
        });
        self.incoming_timer.set_value(timer);
    }

    pub fn expect() -> Self {
        expect_context::<SocketContext>()
    }

    pub fn base(&self) -> String {
        self.base.get_value()
    }

    fn token(&self) -> Option<String> {
        self.session.with_untracked(|s| s.as_ref().map(|s| s.token.clone()))
    }

    /// Signs in: connects, loads the conversation list and opens the Lobby.
    pub fn open_session(&self, session: SessionResponse) {
        self.close_session();
        let token = session.token.clone();
        self.restore_outbox(&session.user.id);
        self.chat.update(|c| c.me = Some(session.user.clone()));
        self.session.set(Some(session));
        let ctx = *self;
        let on_event: Rc<dyn Fn(ConnEvent)> = Rc::new(move |event| ctx.on_connection_event(event));
        // Where the user was: shown at once (with anything still unsent), even before the
        // server answers.
        if let Some(active) = crate::storage::load_active() {
            self.active.set(Some(active));
        }
        let connection = Connection::start(self.base(), token, on_event);
        self.connection.set_value(Some(connection));
        spawn_local(async move { ctx.load_conversations().await });
    }

    /// Signs out locally: stops the connection and forgets the state.
    pub fn close_session(&self) {
        if let Some(c) = self.connection.get_value() {
            c.stop();
        }
        self.connection.set_value(None);
        self.joined.set_value(BTreeSet::new());
        self.session.set(None);
        self.active.set(None);
        self.chat.set(ChatState::default());
    }

    async fn load_conversations(&self) {
        let Some(token) = self.token() else { return };
        match api::conversations(&self.base(), &token).await {
            Ok(list) => {
                let remembered = self.active.get_untracked().filter(|id| list.iter().any(|c| &c.id == id));
                let lobby = remembered.or_else(|| {
                    list.iter().find(|c| c.kind == ConversationKind::Room && c.title == "Lobby").or(list.first()).map(|c| c.id.clone())
                });
                self.chat.update(|c| c.conversations = list);
                self.notice.set(None);
                if let Some(id) = lobby {
                    self.open_conversation(id);
                }
            }
            Err(e) => self.notice.set(Some(format!("Could not load your conversations yet ({e}); trying again when the connection is back."))),
        }
    }

    /// Shows a conversation: its recent history over HTTP, then live frames over the socket.
    pub fn open_conversation(&self, conversation_id: String) {
        crate::storage::save_active(&conversation_id);
        self.active.set(Some(conversation_id.clone()));
        let ctx = *self;
        spawn_local(async move {
            let Some(token) = ctx.token() else { return };
            match api::latest_messages(&ctx.base(), &token, &conversation_id, HISTORY_PAGE).await {
                Ok(page) => ctx.chat.update(|c| c.add_history(&conversation_id, page.messages)),
                Err(e) => ctx.notice.set(Some(format!("Could not load messages: {e}"))),
            }
            ctx.join(conversation_id);
        });
    }

    /// Joins a conversation on the socket (again after every reconnect), asking for what came
    /// after the last message we have.
    pub fn join(&self, conversation_id: String) {
        self.joined.update_value(|j| {
            j.insert(conversation_id.clone());
        });
        let last = self.chat.with_untracked(|c| c.last_seq(&conversation_id));
        self.send_frame(&ClientFrame::JoinConversation { conversation_id, after_seq: Some(last) });
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
        self.chat.update(|c| c.add_pending(&conversation_id, PendingMessage { client_id, content, timestamp, delivery: Delivery::Pending }));
        self.flush_outbox();
        let step = self.outgoing_typing.try_update_value(|(_, t)| t.message_sent()).unwrap_or_default();
        self.apply_typing_step(&conversation_id, step);
        true
    }

    /// Changes the outbox and saves it.
    fn with_outbox<T>(&self, f: impl FnOnce(&mut Outbox) -> T) -> T {
        let out = self.outbox.try_update_value(f).expect("the outbox lives as long as the context");
        let user = self.chat.with_untracked(|c| c.me.as_ref().map(|u| u.id.clone()));
        if let Some(user) = user {
            crate::storage::save_outbox(&outbox::storage_key(&user), &self.outbox.with_value(Outbox::to_json));
        }
        out
    }

    /// After a reload: what was not acknowledged shows again as pending (or failed) and goes
    /// out once a transport is up.
    fn restore_outbox(&self, user_id: &str) {
        let stored = crate::storage::load_outbox(&outbox::storage_key(user_id))
            .and_then(|text| Outbox::from_json(&text, OutboxConfig::default()).ok())
            .unwrap_or_else(|| Outbox::new(OutboxConfig::default()));
        let shown: Vec<(String, PendingMessage)> = stored
            .items()
            .iter()
            .map(|i| {
                let delivery = match &i.status {
                    OutStatus::Failed { reason, .. } => Delivery::Failed(reason.clone()),
                    _ => Delivery::Pending,
                };
                (i.conversation_id.clone(), PendingMessage { client_id: i.client_id.clone(), content: i.content.clone(), timestamp: i.written_at.clone(), delivery })
            })
            .collect();
        self.outbox.set_value(stored);
        self.chat.update(|c| {
            for (conversation_id, pending) in shown {
                c.add_pending(&conversation_id, pending);
            }
        });
    }

    /// Sends what the outbox holds for sending, in order, if a transport is up.
    fn flush_outbox(&self) {
        if self.transport().is_none() {
            return;
        }
        let now = now_ms();
        for item in self.with_outbox(|o| o.take_sendable(now)) {
            if !self.send_frame(&item.to_frame()) {
                self.with_outbox(|o| o.not_sent(&item.client_id));
            }
        }
        // Rate-limited messages are due later: wake then.
        let ctx = *self;
        let timer = self.outbox.with_value(Outbox::next_wake).map(|at| {
            gloo_timers::callback::Timeout::new((at - now).max(0.0) as u32, move || ctx.flush_outbox())
        });
        self.outbox_timer.set_value(timer);
    }

    /// Every server frame, from either transport: the outbox learns of acks and refusals,
    /// the chat state of everything.
    fn on_frame(&self, frame: ServerFrame) {
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
            ServerFrame::NewMessage { conversation_id, message, .. } if message.client_id.is_some() => {
                // A message ends its sender's typing at once.
                if self.incoming_typing.try_update_value(|t| t.message_from(conversation_id, &message.sender_id)).unwrap_or(false) {
                    self.refresh_typists();
                }
                // Our own message stored (its ack may have been lost with a connection).
                let mine = self.chat.with_untracked(|c| c.me.as_ref().is_some_and(|u| u.id == message.sender_id));
                if mine {
                    let cid = message.client_id.clone().unwrap_or_default();
                    if self.outbox.with_value(|o| o.get(&cid).is_some()) {
                        self.with_outbox(|o| o.ack(&cid));
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
            }
            _ => {}
        }
        self.chat.update(|c| c.apply(frame));
    }

    fn transport(&self) -> Option<Transport> {
        self.connection.with_value(|c| c.as_ref().and_then(Connection::transport))
    }

    /// Sends a frame on whichever transport is up: the socket, or the HTTP routes while
    /// polling. False when none is up (a message then stays pending and goes out on `Ready`).
    fn send_frame(&self, frame: &ClientFrame) -> bool {
        if self.transport() == Some(Transport::Polling) {
            self.send_over_http(frame.clone());
            return true;
        }
        self.connection.with_value(|c| c.as_ref().is_some_and(|c| c.send(frame)))
    }

    /// The polling transport's way to send: each frame has its HTTP twin.
    fn send_over_http(&self, frame: ClientFrame) {
        let Some(token) = self.token() else { return };
        let (ctx, base) = (*self, self.base());
        spawn_local(async move {
            match frame {
                ClientFrame::SendMessage { conversation_id, content, client_id: Some(client_id), .. } => {
                    match api::post_message(&base, &token, &conversation_id, &content, &client_id).await {
                        Ok(ack) => ctx.on_frame(ServerFrame::MessageAck(ack)),
                        // Refused (not a network failure): the message failed, with the reason
                        // (or waits, when rate limited).
                        Err(e) if (400..500).contains(&e.status) => {
                            let code = if e.status == 429 { ErrorCode::RateLimited } else { e.code.unwrap_or(ErrorCode::Unknown) };
                            ctx.on_frame(ServerFrame::Error { code, message: e.message, reference: Some(client_id), timestamp: String::new() })
                        }
                        // Not through: queued again, sent when a transport is ready.
                        Err(_) => {
                            ctx.with_outbox(|o| o.not_sent(&client_id));
                        }
                    }
                }
                ClientFrame::TypingStart { conversation_id } => drop(api::set_typing(&base, &token, &conversation_id, true).await),
                ClientFrame::TypingStop { conversation_id } => drop(api::set_typing(&base, &token, &conversation_id, false).await),
                ClientFrame::JoinConversation { conversation_id, after_seq } => ctx.fill(conversation_id, after_seq.unwrap_or(0)).await,
                _ => {}
            }
        });
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
        self.connection.with_value(|c| c.as_ref().map(Connection::retry_now));
    }

    pub fn disconnect(&self) {
        self.connection.with_value(|c| c.as_ref().map(Connection::disconnect));
    }

    pub fn force_polling(&self) {
        self.connection.with_value(|c| c.as_ref().map(Connection::force_polling));
    }

    fn on_connection_event(&self, event: ConnEvent) {
        match event {
            ConnEvent::State(state) => self.status.set(state),
            ConnEvent::Frame(frame) => self.on_frame(frame),
            ConnEvent::Ready(_) => {
                // The first load may have failed (started while the server was away).
                if self.chat.with_untracked(|c| c.conversations.is_empty()) {
                    let ctx = *self;
                    spawn_local(async move { ctx.load_conversations().await });
                }
                self.resume();
            }
            ConnEvent::Resync => {
                let ctx = *self;
                spawn_local(async move { ctx.reload_conversations().await });
            }
        }
    }

    /// After a resync: the list again, and each joined conversation from its last seq.
    async fn reload_conversations(&self) {
        let Some(token) = self.token() else { return };
        if let Ok(list) = api::conversations(&self.base(), &token).await {
            self.chat.update(|c| c.conversations = list);
        }
        for id in self.joined.get_value() {
            let last = self.chat.with_untracked(|c| c.last_seq(&id));
            self.fill(id, last).await;
        }
    }

    /// When a transport is (again) up: rejoin from the last seq we have and resend what is
    /// still pending. Resending is safe: the server stores each client_id once.
    fn resume(&self) {
        for id in self.joined.get_value() {
            self.join(id);
        }
        // What was in flight on the lost transport may not have arrived: send it again (the
        // server stores each client_id once).
        self.with_outbox(Outbox::requeue_in_flight);
        self.flush_outbox();
    }
}
