//! The sync policy as a plain state machine, shaped like `socket/machine.rs`: the glue feeds
//! it events with the current time (ms) and the chat state to change, and carries out the
//! actions it returns. No I/O, no timers, no signals: every rule is a native `#[test]`.
//!
//! Rules, in short:
//! - **Resync when a transport comes up** (socket or poll, first time or again) and when the
//!   event poll says its cursor was too old: `sync {since: version}`, and every conversation
//!   joined before is joined again from the end of the unbroken run of seqs held.
//! - **Applying an answer**: `full` replaces the list; otherwise the changed conversations are
//!   upserted and the removed ones dropped; each entry only if the answer is not older than
//!   what is held for it (per-entry list versions). Another tab's answer (relayed by the
//!   leading tab) is applied only if `full` or its `since` ≤ this tab's version; otherwise
//!   this tab asks for its own.
//! - **Versions**: the next `since` is the newest answer's `version`, advanced by versioned
//!   live frames only once this transport's answer was applied (a live frame seen before
//!   could hide a change lost with the previous transport).
//! - **Gaps**: a message seq beyond the next one is filled over HTTP if still missing shortly
//!   after; a conversation's seq jumping in the list (an update lost) asks for a sync from the
//!   last answer; a reply's delta beyond what is held joins the conversation again (the reply
//!   resumes from offset 0), or asks for a sync while polling.
//! - **Read**: the open conversation, while the tab is visible, is reported read shortly
//!   after it changes (once for a burst).
//! - **Notify**: a message from someone else while the tab is hidden.
//! - **Left the list**: the open conversation closes; being removed says so.
//! - **An older server** that refuses `sync` (or has no `POST /api/sync`): the lists are
//!   reloaded over HTTP instead.

use std::collections::{BTreeSet, HashMap};

use persona_chat_protocol::http::{ConversationKind, ConversationSummary};
use persona_chat_protocol::{ClientFrame, ErrorCode, Message, RemovalReason, ServerFrame, SyncState};

use super::reducer::{Applied, ChatState};
use crate::socket::Transport;

/// The knobs of the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// How long after the open conversation changes it is reported read.
    pub read_delay_ms: f64,
    /// How long a seq gap may stay open before it is filled over HTTP.
    pub gap_delay_ms: f64,
    /// A conversation is joined again for a reply's gap at most this often.
    pub rejoin_every_ms: f64,
    /// A sync refused for the rate (or lost with a failed request) is asked again after this.
    pub sync_retry_ms: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config { read_delay_ms: 800.0, gap_delay_ms: 1_000.0, rejoin_every_ms: 3_000.0, sync_retry_ms: 2_000.0 }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Signed in (or reloaded): `remembered` is the conversation that was open.
    Start { remembered: Option<String> },
    /// A transport is (again) up.
    TransportUp(Transport),
    /// No transport is up.
    TransportDown,
    /// The event poll's cursor was too old: what came meanwhile is lost.
    Resync,
    /// A server frame, from either transport, this tab's or relayed by the leading tab (the
    /// answers of `POST /api/sync` come as `sync_state` frames too).
    Frame(ServerFrame),
    /// The answer of `PostSync` number `ask`.
    SyncAnswer { ask: u64, state: Box<SyncState> },
    /// `PostSync` number `ask` failed (the network): asked again when a transport is next up.
    SyncFailed { ask: u64 },
    /// The server cannot answer `sync` (`POST /api/sync` not found).
    SyncRefused,
    /// The conversation list over HTTP (the older server's way, after `ReloadLists`).
    ListLoaded(Vec<ConversationSummary>),
    /// The user opens a conversation.
    Open(String),
    /// The newest page of a conversation (`LoadLatest`); None if it could not be loaded.
    Loaded { conversation_id: String, page: Option<(Vec<Message>, bool)> },
    /// The user left a conversation (this tab's Leave succeeded).
    Left(String),
    /// The tab was hidden or shown.
    Visibility { hidden: bool },
    /// The server stored that a conversation is read up to `seq`.
    ReadReported { conversation_id: String, seq: i64 },
    /// A wake-up asked for with `WakeAt` (or any time: deadlines are checked against `now`).
    Tick,
}

/// What the glue must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send on the transport that is up (while polling, each frame's HTTP twin: `sync` is
    /// `POST /api/sync`, a join fetches the messages after `after_seq`).
    Send(ClientFrame),
    /// While polling, `sync` is `POST /api/sync {since}`: tell its answer with `SyncAnswer`
    /// (or `SyncFailed`) and this number.
    PostSync { since: u64, ask: u64 },
    /// Fetch a conversation's newest page, then tell `Loaded`.
    LoadLatest(String),
    /// Fetch the messages still missing between these seqs (exclusive).
    FillGap { conversation_id: String, from: i64, upto: i64 },
    /// `POST /api/conversations/{id}/read`, then tell `ReadReported`.
    ReportRead { conversation_id: String, seq: i64 },
    /// A message from someone else while hidden (if the user allowed notifications).
    Notify { title: String, body: String, conversation_id: String },
    /// The older server's resync: the conversation list (then `ListLoaded`) and the personas.
    ReloadLists,
    /// Show this conversation (the chat view's selection, remembered across reloads).
    Show(Option<String>),
    /// A notice in words.
    Notice(String),
    /// Wake (with `Tick`) at this time; replaces any wake asked before. None: no wake needed.
    WakeAt(Option<f64>),
}

/// The sync policy's state.
#[derive(Debug, Clone)]
pub struct SyncCore {
    config: Config,
    transport: Option<Transport>,
    /// What to send as `since`.
    version: u64,
    /// The version of the last answer applied on this transport (None: none yet).
    answered: Option<u64>,
    /// The `since` of the `sync` sent and not answered yet.
    asked: Option<u64>,
    /// The server does not answer `sync`.
    refused: bool,
    /// Numbers the `PostSync`s; the one whose answer is awaited.
    asks: u64,
    posted: Option<u64>,
    /// Ask again once the sync awaited is answered.
    again: bool,
    /// When to ask again for a sync that was refused for the rate or failed.
    retry_at: Option<f64>,
    /// The frames that came (from the event poll) since the `PostSync` awaited went out: its
    /// answer is as old as its request, so they are applied again on top of it.
    since_post: Vec<ServerFrame>,
    /// Conversations joined (again after every reconnect).
    joined: BTreeSet<String>,
    /// Conversations whose newest page is being loaded.
    loading: BTreeSet<String>,
    /// The conversation shown, and whether the tab is hidden.
    open: Option<String>,
    hidden: bool,
    /// The list has been filled once (then a default conversation was opened).
    listed: bool,
    read_due: Option<f64>,
    /// How far each conversation was seen (open in a visible tab), and reported read.
    seen: HashMap<String, i64>,
    reported_read: HashMap<String, i64>,
    /// Seq gaps to look at again: (when, conversation, from, upto).
    gap_checks: Vec<(f64, String, i64, i64)>,
    rejoined_at: HashMap<String, f64>,
}

impl SyncCore {
    pub fn new(config: Config) -> Self {
        SyncCore {
            config,
            transport: None,
            version: 0,
            answered: None,
            asked: None,
            refused: false,
            asks: 0,
            posted: None,
            again: false,
            retry_at: None,
            since_post: Vec::new(),
            joined: BTreeSet::new(),
            loading: BTreeSet::new(),
            open: None,
            hidden: false,
            listed: false,
            read_due: None,
            seen: HashMap::new(),
            reported_read: HashMap::new(),
            gap_checks: Vec::new(),
            rejoined_at: HashMap::new(),
        }
    }

    /// The `since` this tab would send.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn joined(&self) -> &BTreeSet<String> {
        &self.joined
    }

    pub fn is_joined(&self, conversation_id: &str) -> bool {
        self.joined.contains(conversation_id)
    }

    /// Whether a list over HTTP is still wanted: until the first sync answer (or always, from
    /// a server that refuses sync). An answer is newer than a list fetched alongside.
    pub fn wants_list(&self) -> bool {
        self.refused || self.version == 0
    }

    pub fn open(&self) -> Option<&str> {
        self.open.as_deref()
    }

    /// Handles one event at time `now` (ms), changing `chat`, and says what to do.
    pub fn handle(&mut self, now: f64, event: Event, chat: &mut ChatState) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start { remembered } => {
                self.open = remembered;
            }
            Event::TransportUp(transport) => {
                self.transport = Some(transport);
                self.answered = None;
                self.asked = None;
                self.posted = None;
                self.again = false;
                // Streams seen before may have died with the server: the answer says which
                // go on (its replies are whole).
                chat.transport_up();
                // A read report that failed meanwhile goes again.
                self.read_soon(now);
                self.resync(&mut out);
                for id in &self.joined {
                    out.push(join(chat, id));
                }
            }
            Event::TransportDown => {
                self.transport = None;
                self.answered = None;
                self.asked = None;
                self.posted = None;
                self.again = false;
            }
            Event::Resync => {
                self.asked = None;
                self.posted = None;
                self.again = false;
                self.resync(&mut out);
                for id in &self.joined {
                    out.push(join(chat, id));
                }
            }
            Event::Frame(frame) => {
                if self.posted.is_some() && !matches!(frame, ServerFrame::SyncState(_)) {
                    self.since_post.push(frame.clone());
                }
                self.on_frame(now, frame, chat, &mut out)
            }
            Event::SyncAnswer { ask, state } => {
                // Only the answer awaited: an earlier one may be older than frames lost since.
                if self.posted == Some(ask) {
                    self.posted = None;
                    // The answer is newer than all this tab held when asking; what came since
                    // is applied again on top of it.
                    chat.rewind_list_versions(state.version);
                    let since = std::mem::take(&mut self.since_post);
                    self.on_frame(now, ServerFrame::SyncState(state), chat, &mut out);
                    for frame in since {
                        let applied = chat.apply(frame);
                        self.after_apply(now, applied, chat, &mut out);
                    }
                }
            }
            Event::SyncFailed { ask } => {
                if self.posted == Some(ask) {
                    self.posted = None;
                    self.asked = None;
                    self.since_post.clear();
                    self.retry_at = Some(now + self.config.sync_retry_ms);
                }
            }
            Event::SyncRefused => self.on_refused(&mut out),
            Event::ListLoaded(list) => {
                chat.set_conversations(list);
                self.after_list(now, chat, &mut out);
            }
            Event::Open(id) => self.show(now, id, chat, &mut out),
            Event::Loaded { conversation_id, page } => {
                self.loading.remove(&conversation_id);
                if chat.conversation(&conversation_id).is_some() || chat.conversations.is_empty() {
                    if let Some((messages, has_more)) = page {
                        chat.add_latest(&conversation_id, messages, has_more);
                    }
                    self.joined.insert(conversation_id.clone());
                    out.push(join(chat, &conversation_id));
                    // Over the socket the join resumes the replies in progress there; while
                    // polling a sync brings them (its replies are whole).
                    if self.transport == Some(Transport::Polling) && !self.refused {
                        self.ask_for_replies(&mut out);
                    }
                    self.read_soon(now);
                }
            }
            Event::Left(id) => {
                if chat.remove_conversation(&id, 0).is_some() {
                    self.forget(&id, None, &mut out);
                }
            }
            Event::Visibility { hidden } => {
                self.hidden = hidden;
                chat.set_active(if hidden { None } else { self.open.clone() });
                if !hidden {
                    self.read_soon(now);
                }
            }
            Event::ReadReported { conversation_id, seq } => {
                let r = self.reported_read.entry(conversation_id).or_insert(0);
                *r = (*r).max(seq);
            }
            Event::Tick => {}
        }
        // What the open conversation shows, in a visible tab, is read (it shows no unread).
        if let Some(active) = chat.active.clone() {
            let seq = chat.last_seq(&active).max(chat.conversation(&active).map_or(0, |c| c.last_seq));
            let seen = self.seen.entry(active).or_insert(0);
            if seq > *seen {
                *seen = seq;
                self.read_soon(now);
            }
        }
        self.due(now, chat, &mut out);
        out.push(Action::WakeAt(self.next_wake()));
        out
    }

    fn on_frame(&mut self, now: f64, frame: ServerFrame, chat: &mut ChatState, out: &mut Vec<Action>) {
        match &frame {
            ServerFrame::SyncState(state) => {
                let covers = state.full || state.since <= self.version;
                if !covers {
                    // Another tab's answer, older than what this tab holds: ask for ours.
                    if self.asked.is_none() && self.transport.is_some() {
                        self.ask(self.version, out);
                    }
                    return;
                }
                if self.asked.is_some_and(|since| state.full || state.since <= since) {
                    self.asked = None;
                    if std::mem::take(&mut self.again) && self.transport.is_some() {
                        self.ask(self.version.max(state.version), out);
                    }
                }
                self.version = self.version.max(state.version);
                if self.transport.is_some() {
                    self.answered = Some(self.answered.unwrap_or(0).max(state.version));
                }
                let applied = chat.apply(frame);
                self.after_apply(now, applied, chat, out);
                self.after_list(now, chat, out);
                return;
            }
            ServerFrame::Error { code, reference: Some(reference), .. } if reference == "sync" => {
                if *code == ErrorCode::RateLimited {
                    // Asked too often: again shortly.
                    self.asked = None;
                    self.retry_at = Some(now + self.config.sync_retry_ms);
                } else {
                    self.on_refused(out);
                }
                return;
            }
            ServerFrame::NewMessage { conversation_id, message, .. }
            | ServerFrame::StreamEnd { conversation_id, message, .. } => {
                let last = chat.last_seq(conversation_id);
                if last > 0 && message.seq > last + 1 {
                    let due = now + self.config.gap_delay_ms;
                    self.gap_checks.push((due, conversation_id.clone(), last, message.seq));
                }
                let mine = chat.me.as_ref().is_some_and(|u| u.id == message.sender_id);
                let new = chat.log(conversation_id).is_none_or(|l| !l.stored().any(|m| m.seq == message.seq));
                if !mine && new {
                    if self.hidden {
                        let title = chat.conversation(conversation_id).map(|c| c.title.clone()).unwrap_or_default();
                        out.push(Action::Notify {
                            title: format!("{} in {title}", message.sender_name),
                            body: message.content.clone(),
                            conversation_id: conversation_id.clone(),
                        });
                    } else if self.open.as_deref() == Some(conversation_id.as_str()) {
                        self.read_soon(now);
                    }
                }
            }
            _ => {}
        }
        let version = match &frame {
            ServerFrame::ConversationUpdate { version, .. }
            | ServerFrame::ConversationUpserted { version, .. }
            | ServerFrame::ConversationRemoved { version, .. } => *version,
            _ => 0,
        };
        let applied = chat.apply(frame);
        if version > 0 && self.answered.is_some() && !applied.list_gap {
            self.version = self.version.max(version);
        }
        self.after_apply(now, applied, chat, out);
    }

    fn after_apply(&mut self, now: f64, applied: Applied, chat: &mut ChatState, out: &mut Vec<Action>) {
        if applied.list_gap {
            if self.refused {
                out.push(Action::ReloadLists);
            } else if self.asked.is_none() && self.transport.is_some() {
                // From the last answer: everything since comes again (older entries are
                // kept by their versions).
                let since = self.answered.unwrap_or(0).min(self.version);
                self.ask(since, out);
            }
        }
        if let Some(id) = applied.stream_gap {
            let recent = self.rejoined_at.get(&id).is_some_and(|at| now - at < self.config.rejoin_every_ms);
            if !recent && self.transport.is_some() {
                if self.transport == Some(Transport::WebSocket) && self.joined.contains(&id) {
                    self.rejoined_at.insert(id.clone(), now);
                    out.push(join(chat, &id));
                } else if !self.refused {
                    // The answer's replies are whole, with their text so far.
                    self.rejoined_at.insert(id.clone(), now);
                    self.ask_for_replies(out);
                }
            }
        }
        for (id, title, reason) in applied.removed {
            let notice = (reason == Some(RemovalReason::Removed)).then(|| format!("You were removed from {title}"));
            self.forget(&id, notice, out);
        }
    }

    /// A conversation left the list: no more joins, and the chat view closes it if open.
    fn forget(&mut self, id: &str, notice: Option<String>, out: &mut Vec<Action>) {
        self.joined.remove(id);
        self.loading.remove(id);
        self.gap_checks.retain(|(_, c, _, _)| c != id);
        if self.open.as_deref() == Some(id) {
            self.open = None;
            out.push(Action::Show(None));
        }
        if let Some(notice) = notice {
            out.push(Action::Notice(notice));
        }
    }

    /// The list is filled: the first time, the remembered conversation (or the Lobby, or the
    /// first) opens.
    fn after_list(&mut self, now: f64, chat: &mut ChatState, out: &mut Vec<Action>) {
        if self.listed || chat.conversations.is_empty() {
            return;
        }
        self.listed = true;
        let remembered = self.open.clone().filter(|id| chat.conversation(id).is_some());
        let pick = remembered.or_else(|| {
            chat.conversations
                .iter()
                .find(|c| c.kind == ConversationKind::Room && c.title == "Lobby")
                .or(chat.conversations.first())
                .map(|c| c.id.clone())
        });
        if let Some(id) = pick {
            self.show(now, id, chat, out);
        }
    }

    fn show(&mut self, now: f64, id: String, chat: &mut ChatState, out: &mut Vec<Action>) {
        if self.open.as_deref() != Some(id.as_str()) || !self.listed {
            out.push(Action::Show(Some(id.clone())));
        }
        self.open = Some(id.clone());
        chat.set_active((!self.hidden).then(|| id.clone()));
        if self.joined.contains(&id) {
            self.read_soon(now);
        } else if self.loading.insert(id.clone()) {
            out.push(Action::LoadLatest(id));
        }
    }

    fn resync(&mut self, out: &mut Vec<Action>) {
        if self.refused {
            out.push(Action::ReloadLists);
        } else {
            self.ask(self.version, out);
        }
    }

    fn ask(&mut self, since: u64, out: &mut Vec<Action>) {
        self.asked = Some(since);
        if self.transport == Some(Transport::Polling) {
            self.asks += 1;
            self.posted = Some(self.asks);
            self.since_post.clear();
            out.push(Action::PostSync { since, ask: self.asks });
        } else {
            out.push(Action::Send(ClientFrame::Sync { since }));
        }
    }

    /// A sync for the replies in progress: now, or once the one awaited is answered (it may
    /// have been answered before they began).
    fn ask_for_replies(&mut self, out: &mut Vec<Action>) {
        if self.asked.is_none() {
            self.ask(self.version, out);
        } else {
            self.again = true;
        }
    }

    fn on_refused(&mut self, out: &mut Vec<Action>) {
        self.asked = None;
        if !self.refused {
            self.refused = true;
            out.push(Action::ReloadLists);
        }
    }

    fn read_soon(&mut self, now: f64) {
        if self.read_due.is_none() {
            self.read_due = Some(now + self.config.read_delay_ms);
        }
    }

    fn due(&mut self, now: f64, chat: &ChatState, out: &mut Vec<Action>) {
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            if self.asked.is_none() && self.transport.is_some() && !self.refused {
                self.ask(self.version, out);
            }
        }
        if self.read_due.is_some_and(|at| at <= now) {
            self.read_due = None;
            let mut seen: Vec<(&String, &i64)> = self.seen.iter().collect();
            seen.sort();
            for (id, &seq) in seen {
                if seq > self.reported_read.get(id).copied().unwrap_or(0) && chat.conversation(id).is_some() {
                    out.push(Action::ReportRead { conversation_id: id.clone(), seq });
                }
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = self.gap_checks.drain(..).partition(|(at, ..)| *at <= now);
        self.gap_checks = later;
        for (_, conversation_id, from, upto) in due {
            if chat.complete_through(&conversation_id) < upto - 1 {
                out.push(Action::FillGap { conversation_id, from, upto });
            }
        }
    }

    fn next_wake(&self) -> Option<f64> {
        self.gap_checks.iter().map(|(at, ..)| *at).chain(self.read_due).chain(self.retry_at).min_by(f64::total_cmp)
    }
}

/// Joins a conversation from the end of the unbroken run of seqs held (a message missed
/// before a newer one arrived comes again).
fn join(chat: &ChatState, id: &str) -> Action {
    Action::Send(ClientFrame::JoinConversation {
        conversation_id: id.to_owned(),
        after_seq: Some(chat.complete_through(id)),
    })
}

#[cfg(test)]
mod tests {
    use persona_chat_protocol::http::ConversationKind;
    use persona_chat_protocol::{ErrorCode, LastMessage, User};

    use super::*;

    fn summary(id: &str, title: &str, last_seq: i64, unread: i64) -> ConversationSummary {
        ConversationSummary {
            id: id.into(),
            kind: ConversationKind::Room,
            title: title.into(),
            persona: None,
            last_message: (last_seq > 0).then(|| LastMessage {
                id: format!("{id}-{last_seq}"),
                seq: last_seq,
                sender_name: "bob".into(),
                content: "hi".into(),
                timestamp: format!("2026-11-21T10:00:{last_seq:02}.000Z"),
            }),
            last_seq,
            unread_count: unread,
        }
    }

    fn answer(since: u64, version: u64, full: bool, conversations: Vec<ConversationSummary>) -> ServerFrame {
        ServerFrame::SyncState(Box::new(SyncState {
            since,
            version,
            full,
            conversations,
            removed: Vec::new(),
            personas: Vec::new(),
            online: Vec::new(),
            replies: Vec::new(),
            timestamp: String::new(),
        }))
    }

    fn sent(actions: &[Action]) -> Vec<ClientFrame> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(f) => Some(f.clone()),
                _ => None,
            })
            .collect()
    }

    fn started() -> (SyncCore, ChatState) {
        let mut core = SyncCore::new(Config::default());
        let mut chat = ChatState::default();
        chat.me = Some(User { id: "u1".into(), username: "ada".into() });
        core.handle(0.0, Event::Start { remembered: None }, &mut chat);
        (core, chat)
    }

    #[test]
    fn every_transport_that_comes_up_syncs_and_rejoins_what_was_joined() {
        let (mut core, mut chat) = started();
        let actions = core.handle(0.0, Event::TransportUp(Transport::WebSocket), &mut chat);
        assert_eq!(sent(&actions), vec![ClientFrame::Sync { since: 0 }]);
        // The full answer lists the Lobby, which opens.
        let actions = core.handle(1.0, Event::Frame(answer(0, 7, true, vec![summary("l", "Lobby", 3, 1)])), &mut chat);
        assert!(actions.contains(&Action::Show(Some("l".into()))) && actions.contains(&Action::LoadLatest("l".into())));
        core.handle(2.0, Event::Loaded { conversation_id: "l".into(), page: Some((vec![], false)) }, &mut chat);
        assert!(core.is_joined("l"));
        core.handle(3.0, Event::TransportDown, &mut chat);
        // Polling now: the sync is a POST, the join its HTTP twin.
        let actions = core.handle(4.0, Event::TransportUp(Transport::Polling), &mut chat);
        assert_eq!(actions[0], Action::PostSync { since: 7, ask: 1 });
        assert_eq!(
            sent(&actions),
            vec![ClientFrame::JoinConversation { conversation_id: "l".into(), after_seq: Some(0) }]
        );
        // The event poll's resync asks again.
        let actions = core.handle(5.0, Event::Resync, &mut chat);
        assert!(actions.contains(&Action::PostSync { since: 7, ask: 2 }));
    }

    #[test]
    fn another_tabs_answer_is_applied_only_when_it_covers_this_tab() {
        let (mut core, mut chat) = started();
        core.handle(0.0, Event::TransportUp(Transport::WebSocket), &mut chat);
        core.handle(1.0, Event::Frame(answer(0, 10, true, vec![summary("a", "A", 1, 0)])), &mut chat);
        assert_eq!(core.version(), 10);
        // Asked since 12 by another tab: this tab holds 10, so it asks for its own.
        let actions = core.handle(2.0, Event::Frame(answer(12, 15, false, vec![summary("b", "B", 1, 1)])), &mut chat);
        assert_eq!(sent(&actions), vec![ClientFrame::Sync { since: 10 }]);
        assert!(chat.conversation("b").is_none());
        // Asked since 4: it covers (older entries are kept by their versions).
        core.handle(3.0, Event::Frame(answer(4, 16, false, vec![summary("b", "B", 1, 1)])), &mut chat);
        assert!(chat.conversation("b").is_some());
        assert_eq!(core.version(), 16);
    }

    #[test]
    fn a_conversation_one_is_added_to_appears_and_one_removed_from_closes_with_a_notice() {
        let (mut core, mut chat) = started();
        core.handle(0.0, Event::TransportUp(Transport::WebSocket), &mut chat);
        core.handle(1.0, Event::Frame(answer(0, 1, true, vec![summary("l", "Lobby", 0, 0)])), &mut chat);
        let up = ServerFrame::ConversationUpserted {
            conversation: Box::new(summary("r", "Plans", 0, 0)),
            version: 2,
            timestamp: String::new(),
        };
        core.handle(2.0, Event::Frame(up.clone()), &mut chat);
        assert_eq!(chat.conversation("r").map(|c| c.title.as_str()), Some("Plans"));
        core.handle(3.0, Event::Open("r".into()), &mut chat);
        let removed = ServerFrame::ConversationRemoved {
            conversation_id: "r".into(),
            reason: RemovalReason::Removed,
            version: 3,
            timestamp: String::new(),
        };
        let actions = core.handle(4.0, Event::Frame(removed), &mut chat);
        assert!(actions.contains(&Action::Show(None)));
        assert!(actions.contains(&Action::Notice("You were removed from Plans".into())));
        assert!(chat.conversation("r").is_none() && core.open().is_none());
        // The upsert again (a duplicate, older than the removal) does not bring it back.
        core.handle(5.0, Event::Frame(up), &mut chat);
        assert!(chat.conversation("r").is_none());
    }

    #[test]
    fn a_server_that_refuses_sync_gets_the_lists_reloaded() {
        let (mut core, mut chat) = started();
        core.handle(0.0, Event::TransportUp(Transport::WebSocket), &mut chat);
        let refusal = ServerFrame::Error {
            code: ErrorCode::UnknownType,
            message: "no".into(),
            reference: Some("sync".into()),
            timestamp: String::new(),
        };
        let actions = core.handle(1.0, Event::Frame(refusal), &mut chat);
        assert!(actions.contains(&Action::ReloadLists));
        let actions = core.handle(2.0, Event::TransportUp(Transport::WebSocket), &mut chat);
        assert!(actions.contains(&Action::ReloadLists) && sent(&actions).is_empty());
        let actions = core.handle(3.0, Event::ListLoaded(vec![summary("l", "Lobby", 0, 0)]), &mut chat);
        assert!(actions.contains(&Action::Show(Some("l".into()))));
    }

    #[test]
    fn a_sync_refused_for_the_rate_is_asked_again_shortly() {
        let (mut core, mut chat) = started();
        core.handle(0.0, Event::TransportUp(Transport::WebSocket), &mut chat);
        let limited = ServerFrame::Error {
            code: ErrorCode::RateLimited,
            message: "slow down".into(),
            reference: Some("sync".into()),
            timestamp: String::new(),
        };
        let actions = core.handle(10.0, Event::Frame(limited), &mut chat);
        assert!(!actions.contains(&Action::ReloadLists));
        assert!(sent(&core.handle(1_000.0, Event::Tick, &mut chat)).is_empty());
        let actions = core.handle(2_010.0, Event::Tick, &mut chat);
        assert_eq!(sent(&actions), vec![ClientFrame::Sync { since: 0 }]);
    }

    #[test]
    fn the_open_conversation_is_reported_read_once_for_a_burst() {
        let (mut core, mut chat) = started();
        core.handle(0.0, Event::TransportUp(Transport::WebSocket), &mut chat);
        core.handle(0.0, Event::Frame(answer(0, 1, true, vec![summary("l", "Lobby", 4, 4)])), &mut chat);
        core.handle(10.0, Event::Loaded { conversation_id: "l".into(), page: Some((vec![], false)) }, &mut chat);
        assert_eq!(chat.conversation("l").unwrap().unread_count, 0, "open: nothing unread");
        let actions = core.handle(500.0, Event::Tick, &mut chat);
        assert!(!actions.iter().any(|a| matches!(a, Action::ReportRead { .. })));
        assert_eq!(actions.last(), Some(&Action::WakeAt(Some(800.0))));
        let actions = core.handle(800.0, Event::Tick, &mut chat);
        assert!(actions.contains(&Action::ReportRead { conversation_id: "l".into(), seq: 4 }));
        core.handle(900.0, Event::ReadReported { conversation_id: "l".into(), seq: 4 }, &mut chat);
        let actions = core.handle(2_000.0, Event::Tick, &mut chat);
        assert!(!actions.iter().any(|a| matches!(a, Action::ReportRead { .. })));
        // Hidden: a message notifies and is not read.
        core.handle(2_000.0, Event::Visibility { hidden: true }, &mut chat);
        let message = Message {
            id: "m5".into(),
            seq: 5,
            client_id: None,
            sender_id: "u2".into(),
            sender_name: "bob".into(),
            content: "there?".into(),
            timestamp: String::new(),
            is_ai: false,
            interrupted: false,
        };
        let actions = core.handle(
            2_100.0,
            Event::Frame(ServerFrame::NewMessage { conversation_id: "l".into(), message, timestamp: String::new() }),
            &mut chat,
        );
        assert!(actions.iter().any(|a| matches!(a, Action::Notify { title, .. } if title == "bob in Lobby")));
        assert_eq!(chat.conversation("l").unwrap().unread_count, 1);
    }

    #[test]
    fn a_reply_delta_beyond_what_is_held_rejoins_and_the_resumed_reply_shows_no_word_twice() {
        let (mut core, mut chat) = started();
        core.handle(0.0, Event::TransportUp(Transport::WebSocket), &mut chat);
        core.handle(0.0, Event::Frame(answer(0, 1, true, vec![summary("d", "Ada", 0, 0)])), &mut chat);
        core.handle(0.0, Event::Loaded { conversation_id: "d".into(), page: Some((vec![], false)) }, &mut chat);
        let start =
            ServerFrame::StreamStart { conversation_id: "d".into(), message_id: "r".into(), persona_id: "p".into() };
        let delta = |offset: u64, text: &str| ServerFrame::StreamDelta {
            conversation_id: "d".into(),
            message_id: "r".into(),
            offset,
            text: text.into(),
        };
        core.handle(1.0, Event::Frame(start.clone()), &mut chat);
        core.handle(2.0, Event::Frame(delta(0, "Once upon")), &mut chat);
        // " a time" was lost: the next delta is beyond what is held.
        let actions = core.handle(3.0, Event::Frame(delta(16, " there")), &mut chat);
        assert_eq!(
            sent(&actions),
            vec![ClientFrame::JoinConversation { conversation_id: "d".into(), after_seq: Some(0) }]
        );
        // Rejoined: stream_start, then the text so far at offset 0, then the live deltas.
        core.handle(4.0, Event::Frame(start), &mut chat);
        core.handle(5.0, Event::Frame(delta(0, "Once upon a time there")), &mut chat);
        core.handle(6.0, Event::Frame(delta(16, " there")), &mut chat);
        core.handle(7.0, Event::Frame(delta(22, " was")), &mut chat);
        assert_eq!(chat.streams["r"].text, "Once upon a time there was");
    }

    #[test]
    fn a_posted_syncs_answer_gets_what_came_since_on_top() {
        let (mut core, mut chat) = started();
        core.handle(0.0, Event::TransportUp(Transport::Polling), &mut chat);
        // The poll brings a message (version 9) before the answer (version 8) arrives.
        let update = ServerFrame::ConversationUpdate {
            conversation_id: "x".into(),
            last_message: summary("x", "X", 3, 0).last_message.unwrap(),
            version: 9,
            timestamp: String::new(),
        };
        core.handle(1.0, Event::Frame(update), &mut chat);
        let list = vec![summary("l", "Lobby", 0, 0), summary("x", "X", 2, 2)];
        let ServerFrame::SyncState(state) = answer(0, 8, true, list) else { panic!() };
        core.handle(2.0, Event::SyncAnswer { ask: 1, state }, &mut chat);
        let l = chat.conversation("x").unwrap();
        assert_eq!((l.last_seq, l.unread_count), (3, 3), "the answer, then the message on top");
        // An answer to an earlier ask is not applied.
        let ServerFrame::SyncState(old) = answer(0, 5, true, vec![]) else { panic!() };
        core.handle(3.0, Event::SyncAnswer { ask: 1, state: old }, &mut chat);
        assert!(chat.conversation("l").is_some());
    }
}
