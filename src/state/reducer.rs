//! The chat state and the one reducer that applies server frames to it. Plain Rust: tested
//! natively, frame by frame.

use std::collections::{BTreeMap, HashMap, HashSet};

use persona_chat_protocol::http::{ConversationSummary, Member, Persona};
use persona_chat_protocol::{
    Ack, LastMessage, Message, OnlineUser, PersonaState, RemovalReason, ReplyInProgress, ServerFrame, SyncState, User,
};

/// What applying a frame revealed, for the sync core to act on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// The list may have missed a change (a conversation's seq jumped, or an update for a
    /// conversation not in the list): ask for a sync.
    pub list_gap: bool,
    /// A reply's delta starts beyond what is held (or its start was missed): this
    /// conversation needs joining again, which resumes the reply from offset 0.
    pub stream_gap: Option<String>,
    /// A conversation that left the list now: (id, title, reason).
    pub removed: Vec<(String, String, Option<RemovalReason>)>,
    /// The frame was older than what is held (a duplicate, or overtaken): nothing changed.
    pub stale: bool,
}

/// Where an own message is on its way.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Pending,
    Sent,
    Failed(String),
}

/// What a line of the chat view is.
#[derive(Debug, Clone, PartialEq)]
pub enum LineKind {
    Message,
    /// A persona's reply still streaming (not stored yet).
    Streaming,
    /// "bob joined", "bob left": shown inline, not a message.
    Notice,
}

/// A line of the chat view: a stored message, an own message not stored yet, a reply being
/// streamed, or a notice.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatLine {
    /// Stable across the pending -> stored change: the client_id when there is one (the
    /// message id for streams, so a stream becomes its stored message in place).
    pub key: String,
    pub kind: LineKind,
    pub seq: Option<i64>,
    /// The stored message's id (the stream's message id while streaming).
    pub message_id: Option<String>,
    pub sender_id: String,
    pub sender_name: String,
    pub content: String,
    pub timestamp: String,
    pub is_ai: bool,
    /// A stored persona reply that was cut short (its text is what was streamed).
    pub interrupted: bool,
    pub delivery: Delivery,
    /// First line of a run by the same sender within a few minutes: shows the name.
    pub starts_group: bool,
    /// Says where it is on its way (a run of pending messages says so once, under the last).
    pub shows_delivery: bool,
}

/// An own message waiting for its ack.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingMessage {
    pub client_id: String,
    pub content: String,
    pub timestamp: String,
    pub delivery: Delivery,
}

/// An inline notice, shown after the message with seq `after_seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub key: String,
    pub after_seq: i64,
    pub text: String,
    pub timestamp: String,
}

/// A persona's reply being streamed.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    pub conversation_id: String,
    pub persona_id: String,
    pub persona_name: String,
    pub text: String,
    /// Characters (Unicode scalar values) received so far.
    pub chars: u64,
    pub started_at: String,
    /// A frame of this stream came on the current transport. After a reconnect every held
    /// stream is unconfirmed until one does: one the server no longer streams (it was
    /// restarted, or the reply ended while we were away) is dropped once the persona's
    /// fresh status says it is not responding.
    pub live: bool,
}

/// One conversation's messages: stored ones by seq (so each shows once, in order), own ones
/// still on their way, and notices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationLog {
    stored: BTreeMap<i64, Message>,
    pending: Vec<PendingMessage>,
    notices: Vec<Notice>,
    /// Whether older messages than the oldest held exist on the server (None: not asked yet).
    pub has_older: Option<bool>,
}

/// A run of messages by one sender within this long shows the name once.
const GROUP_GAP_MS: i64 = 5 * 60 * 1000;

/// A line of the log before it is turned into a [`ChatLine`] (cheap: references only).
enum Item<'a> {
    Stored(&'a Message),
    Notice(&'a Notice),
    Stream(&'a str, &'a Stream),
    Pending(&'a PendingMessage),
}

impl ConversationLog {
    /// Whether the stored message sent with `client_id` is held.
    fn holds_client_id(&self, client_id: &str) -> bool {
        self.stored.values().rev().any(|m| m.client_id.as_deref() == Some(client_id))
    }

    /// Adds a stored message; false if it was already there.
    pub fn insert(&mut self, message: Message) -> bool {
        if let Some(cid) = &message.client_id {
            self.pending.retain(|p| &p.client_id != cid);
        }
        if self.stored.contains_key(&message.seq) {
            return false;
        }
        self.stored.insert(message.seq, message);
        true
    }

    pub fn last_seq(&self) -> i64 {
        self.stored.keys().next_back().copied().unwrap_or(0)
    }

    /// The end of the unbroken run of seqs from the oldest held: everything after it may be
    /// missing something (0 when nothing is held).
    pub fn complete_through(&self) -> i64 {
        let mut seqs = self.stored.keys();
        let Some(&first) = seqs.next() else { return 0 };
        let mut last = first;
        for &s in seqs {
            if s != last + 1 {
                break;
            }
            last = s;
        }
        last
    }

    pub fn first_seq(&self) -> Option<i64> {
        self.stored.keys().next().copied()
    }

    /// The stored messages, ascending by seq.
    pub fn stored(&self) -> impl Iterator<Item = &Message> {
        self.stored.values()
    }

    pub fn pending(&self) -> &[PendingMessage] {
        &self.pending
    }

    pub fn len(&self) -> usize {
        self.stored.len() + self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn items<'a>(&'a self, conversation_id: &str, streams: &'a HashMap<String, Stream>) -> Vec<Item<'a>> {
        let mut out = Vec::with_capacity(self.stored.len() + self.notices.len() + self.pending.len() + 1);
        let mut notices = self.notices.iter().peekable();
        while let Some(n) = notices.next_if(|n| n.after_seq <= 0) {
            out.push(Item::Notice(n));
        }
        for (seq, m) in &self.stored {
            out.push(Item::Stored(m));
            while let Some(n) = notices.next_if(|n| n.after_seq <= *seq) {
                out.push(Item::Notice(n));
            }
        }
        out.extend(notices.map(Item::Notice));
        let mut live: Vec<(&String, &Stream)> =
            streams.iter().filter(|(_, s)| s.conversation_id == conversation_id).collect();
        live.sort_by(|a, b| a.1.started_at.cmp(&b.1.started_at).then(a.0.cmp(b.0)));
        out.extend(live.into_iter().map(|(id, s)| Item::Stream(id, s)));
        out.extend(self.pending.iter().map(Item::Pending));
        out
    }

    /// Every line: stored messages in seq order (notices among them), then replies being
    /// streamed, then own messages not stored yet.
    pub fn lines(&self, me: Option<&User>) -> Vec<ChatLine> {
        self.window(me, "", &HashMap::new(), 0, usize::MAX).0
    }

    /// The lines of a window: `size` lines ending `back` lines before the newest, and how
    /// many lines there are in all. Only the window's lines are built, so a conversation of
    /// 10,000 messages costs little per update.
    pub fn window(
        &self,
        me: Option<&User>,
        conversation_id: &str,
        streams: &HashMap<String, Stream>,
        back: usize,
        size: usize,
    ) -> (Vec<ChatLine>, usize) {
        let items = self.items(conversation_id, streams);
        let total = items.len();
        let end = total.saturating_sub(back);
        let start = end.saturating_sub(size);
        let mut previous: Option<(String, i64)> = start.checked_sub(1).and_then(|i| sender_and_time(&items[i], me));
        let mut lines: Vec<ChatLine> = items[start..end]
            .iter()
            .map(|item| {
                let mut line = to_line(item, me);
                let current = sender_and_time(item, me);
                line.starts_group = match (&previous, &current) {
                    (Some((ps, pt)), Some((cs, ct))) => ps != cs || (ct - pt).abs() > GROUP_GAP_MS,
                    _ => true,
                };
                previous = current;
                line
            })
            .collect();
        for i in 1..lines.len() {
            if lines[i].delivery == Delivery::Pending && lines[i - 1].delivery == Delivery::Pending {
                lines[i - 1].shows_delivery = false;
            }
        }
        (lines, total)
    }
}

fn sender_and_time(item: &Item<'_>, me: Option<&User>) -> Option<(String, i64)> {
    let (sender, ts) = match item {
        Item::Stored(m) => (m.sender_id.clone(), m.timestamp.as_str()),
        Item::Notice(_) => return None,
        Item::Stream(_, s) => (s.persona_id.clone(), s.started_at.as_str()),
        Item::Pending(p) => (me.map(|u| u.id.clone()).unwrap_or_default(), p.timestamp.as_str()),
    };
    Some((sender, crate::clock::timestamp_ms(ts).unwrap_or(0)))
}

fn to_line(item: &Item<'_>, me: Option<&User>) -> ChatLine {
    match item {
        Item::Stored(m) => ChatLine {
            key: m.client_id.clone().unwrap_or_else(|| m.id.clone()),
            kind: LineKind::Message,
            seq: Some(m.seq),
            message_id: Some(m.id.clone()),
            sender_id: m.sender_id.clone(),
            sender_name: m.sender_name.clone(),
            content: m.content.clone(),
            timestamp: m.timestamp.clone(),
            is_ai: m.is_ai,
            interrupted: m.interrupted,
            delivery: Delivery::Sent,
            starts_group: true,
            shows_delivery: true,
        },
        Item::Notice(n) => ChatLine {
            key: n.key.clone(),
            kind: LineKind::Notice,
            seq: None,
            message_id: None,
            sender_id: String::new(),
            sender_name: String::new(),
            content: n.text.clone(),
            timestamp: n.timestamp.clone(),
            is_ai: false,
            interrupted: false,
            delivery: Delivery::Sent,
            starts_group: true,
            shows_delivery: true,
        },
        Item::Stream(id, s) => ChatLine {
            key: (*id).to_owned(),
            kind: LineKind::Streaming,
            seq: None,
            message_id: Some((*id).to_owned()),
            sender_id: s.persona_id.clone(),
            sender_name: s.persona_name.clone(),
            content: s.text.clone(),
            timestamp: s.started_at.clone(),
            is_ai: true,
            interrupted: false,
            delivery: Delivery::Sent,
            starts_group: true,
            shows_delivery: true,
        },
        Item::Pending(p) => ChatLine {
            key: p.client_id.clone(),
            kind: LineKind::Message,
            seq: None,
            message_id: None,
            sender_id: me.map(|u| u.id.clone()).unwrap_or_default(),
            sender_name: me.map(|u| u.username.clone()).unwrap_or_default(),
            content: p.content.clone(),
            timestamp: p.timestamp.clone(),
            is_ai: false,
            interrupted: false,
            delivery: p.delivery.clone(),
            starts_group: true,
            shows_delivery: true,
        },
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatState {
    pub me: Option<User>,
    pub conversations: Vec<ConversationSummary>,
    pub logs: HashMap<String, ConversationLog>,
    pub online: Vec<OnlineUser>,
    /// Every persona with its status (from `GET /api/personas`, then `persona_status`).
    pub personas: Vec<Persona>,
    /// Replies being streamed, by message id.
    pub streams: HashMap<String, Stream>,
    /// The conversation the user is looking at: its messages do not count as unread.
    pub active: Option<String>,
    /// Members of conversations, fetched on demand.
    pub members: HashMap<String, Vec<Member>>,
    notice_counter: u64,
    /// The list version each conversation's entry was last set at (kept after it left the
    /// list, as a tombstone): a versioned change older than this is stale.
    list_versions: HashMap<String, u64>,
    /// The version of the last whole list: a conversation without an entry of its own is as
    /// of this version (a change older than it is stale: it was in that list, or gone).
    list_floor: u64,
    /// Replies that ended (stored or gone): never resurrected by an older answer.
    ended: HashSet<String>,
}

impl ChatState {
    pub fn log(&self, conversation_id: &str) -> Option<&ConversationLog> {
        self.logs.get(conversation_id)
    }

    pub fn last_seq(&self, conversation_id: &str) -> i64 {
        self.logs.get(conversation_id).map_or(0, ConversationLog::last_seq)
    }

    /// Where to ask for more from: the end of the unbroken run held (see
    /// [`ConversationLog::complete_through`]).
    pub fn complete_through(&self, conversation_id: &str) -> i64 {
        self.logs.get(conversation_id).map_or(0, ConversationLog::complete_through)
    }

    pub fn conversation(&self, conversation_id: &str) -> Option<&ConversationSummary> {
        self.conversations.iter().find(|c| c.id == conversation_id)
    }

    pub fn persona(&self, persona_id: &str) -> Option<&Persona> {
        self.personas.iter().find(|p| p.id == persona_id)
    }

    /// The persona's current status (the list's copy is only as new as the list).
    pub fn persona_status(&self, persona_id: &str) -> Option<(PersonaState, Option<String>)> {
        self.persona(persona_id).map(|p| (p.status, p.last_seen.clone())).or_else(|| {
            self.conversations
                .iter()
                .filter_map(|c| c.persona.as_ref())
                .find(|p| p.id == persona_id)
                .map(|p| (p.status, p.last_seen.clone()))
        })
    }

    /// The status of a direct conversation's persona (None for rooms).
    pub fn persona_status_of(&self, conversation_id: &str) -> Option<(PersonaState, Option<String>)> {
        let persona_id = &self.conversation(conversation_id)?.persona.as_ref()?.id;
        self.persona_status(persona_id)
    }

    /// The sum of unread counts, for the document title.
    pub fn unread_total(&self) -> i64 {
        self.conversations.iter().map(|c| c.unread_count).sum()
    }

    /// Names of personas streaming a reply in a conversation (they count as typing).
    pub fn responding_in(&self, conversation_id: &str) -> Vec<String> {
        let mut names: Vec<&Stream> = self.streams.values().filter(|s| s.conversation_id == conversation_id).collect();
        names.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        names.into_iter().map(|s| s.persona_name.clone()).collect()
    }

    /// A transport came up (again): the streams held were seen on the previous one, and the
    /// server may have stopped (or ended them) meanwhile. Each needs a frame on this
    /// transport, or a fresh persona status saying the persona still responds.
    pub fn transport_up(&mut self) {
        for s in self.streams.values_mut() {
            s.live = false;
        }
    }

    /// The personas with their current status (from `GET /api/personas`): replaces what the
    /// directory and the conversation list said, and drops the unconfirmed streams of
    /// personas that are not responding.
    pub fn set_personas(&mut self, list: Vec<Persona>) {
        for p in self.conversations.iter_mut().filter_map(|c| c.persona.as_mut()) {
            if let Some(fresh) = list.iter().find(|f| f.id == p.id) {
                p.status = fresh.status;
                p.last_seen = fresh.last_seen.clone();
            }
        }
        let responding: Vec<String> =
            list.iter().filter(|p| p.status == PersonaState::Responding).map(|p| p.id.clone()).collect();
        self.personas = list;
        self.drop_dead_streams(|id| !responding.iter().any(|r| r == id));
    }

    /// Removes the streams not confirmed on the current transport whose persona matches.
    fn drop_dead_streams(&mut self, persona: impl Fn(&str) -> bool) {
        self.streams.retain(|_, s| s.live || !persona(&s.persona_id));
    }

    /// Replaces the conversation list (from the server), keeping what is newer locally.
    pub fn set_conversations(&mut self, mut list: Vec<ConversationSummary>) {
        for c in &mut list {
            if self.active.as_deref() == Some(c.id.as_str()) {
                c.unread_count = 0;
            }
        }
        list.sort_by(|a, b| activity(b).cmp(activity(a)));
        self.conversations = list;
    }

    /// The user opens a conversation: it is read.
    pub fn set_active(&mut self, conversation_id: Option<String>) {
        if let Some(c) = conversation_id.as_deref().and_then(|id| self.conversations.iter_mut().find(|c| c.id == id)) {
            c.unread_count = 0;
        }
        self.active = conversation_id;
    }

    /// A message the user just wrote: shown at once as pending.
    pub fn add_pending(&mut self, conversation_id: &str, pending: PendingMessage) {
        let log = self.logs.entry(conversation_id.to_owned()).or_default();
        // Already stored (its frame came first, e.g. relayed by another tab): shown once.
        if log.holds_client_id(&pending.client_id) {
            return;
        }
        if !log.pending.iter().any(|p| p.client_id == pending.client_id) {
            log.pending.push(pending);
        }
    }

    /// Whether a conversation already holds the stored message sent with `client_id`.
    pub fn holds_client_id(&self, conversation_id: &str, client_id: &str) -> bool {
        self.logs.get(conversation_id).is_some_and(|log| log.holds_client_id(client_id))
    }

    /// A failed message is being sent again.
    pub fn retry_pending(&mut self, client_id: &str) {
        for log in self.logs.values_mut() {
            if let Some(p) = log.pending.iter_mut().find(|p| p.client_id == client_id) {
                p.delivery = Delivery::Pending;
            }
        }
    }

    /// A failed message the user gave up on.
    pub fn discard_pending(&mut self, client_id: &str) {
        for log in self.logs.values_mut() {
            log.pending.retain(|p| p.client_id != client_id);
        }
    }

    /// Stored messages fetched over HTTP.
    pub fn add_history(&mut self, conversation_id: &str, messages: Vec<Message>) {
        let log = self.logs.entry(conversation_id.to_owned()).or_default();
        for m in messages {
            if self.streams.remove(&m.id).is_some() || m.is_ai {
                self.ended.insert(m.id.clone());
            }
            log.insert(m);
        }
    }

    /// The newest page of a conversation, when it is opened.
    pub fn add_latest(&mut self, conversation_id: &str, messages: Vec<Message>, has_more: bool) {
        let older_than_held = self
            .logs
            .get(conversation_id)
            .and_then(ConversationLog::first_seq)
            .is_none_or(|first| messages.first().is_none_or(|m| m.seq <= first));
        self.add_history(conversation_id, messages);
        let log = self.logs.entry(conversation_id.to_owned()).or_default();
        if older_than_held || log.has_older.is_none() {
            log.has_older = Some(has_more);
        }
    }

    /// An older page, fetched when the user scrolls up.
    pub fn add_older(&mut self, conversation_id: &str, messages: Vec<Message>, has_more: bool) {
        self.add_history(conversation_id, messages);
        self.logs.entry(conversation_id.to_owned()).or_default().has_older = Some(has_more);
    }

    /// Applies one server frame, and says what it revealed.
    pub fn apply(&mut self, frame: ServerFrame) -> Applied {
        let mut out = Applied::default();
        match frame {
            ServerFrame::Hello { user, .. } => self.me = Some(user),
            ServerFrame::NewMessage { conversation_id, message, .. } => {
                self.touch_conversation(&conversation_id, LastMessage::from(&message));
                self.stored(&message);
                self.logs.entry(conversation_id).or_default().insert(message);
            }
            ServerFrame::MessageAck(Ack { client_id, conversation_id, .. }) => {
                if let Some(p) = self
                    .logs
                    .get_mut(&conversation_id)
                    .and_then(|log| log.pending.iter_mut().find(|p| p.client_id == client_id))
                {
                    p.delivery = Delivery::Sent;
                }
            }
            ServerFrame::ConversationUpdate { conversation_id, last_message, version, .. } => {
                let held = self.list_version(&conversation_id);
                if version > 0 && version <= held {
                    out.stale = true;
                } else {
                    match self.conversation(&conversation_id) {
                        // Every stored message is told to every member: a seq beyond the next
                        // one means updates were missed (their unread count with them).
                        Some(c) if c.last_seq > 0 && last_message.seq > c.last_seq + 1 => out.list_gap = true,
                        Some(_) => {}
                        None => out.list_gap = version > 0 || !self.conversations.is_empty(),
                    }
                    // A reply that ended where this tab has not joined (its end went to joined
                    // sockets only): over.
                    if self.streams.remove(&last_message.id).is_some() {
                        self.ended.insert(last_message.id.clone());
                    }
                    self.touch_conversation(&conversation_id, last_message);
                    if version > 0 {
                        self.list_versions.insert(conversation_id, version);
                    }
                }
            }
            ServerFrame::ConversationUpserted { conversation, version, .. } => {
                out.stale = !self.upsert(*conversation, version);
            }
            ServerFrame::ConversationRemoved { conversation_id, reason, version, .. } => {
                match self.remove_conversation(&conversation_id, version) {
                    Some(title) => out.removed.push((conversation_id, title, Some(reason))),
                    None => out.stale = true,
                }
            }
            ServerFrame::SyncState(state) => out = self.apply_sync(*state),
            ServerFrame::OnlineUsers { users, .. } => self.online = users,
            ServerFrame::PresenceUpdate { user_id, username, online, .. } => {
                self.online.retain(|u| u.user_id != user_id);
                if online {
                    self.online.push(OnlineUser { user_id: user_id.clone(), username });
                    self.online.sort_by(|a, b| a.username.cmp(&b.username));
                }
                for members in self.members.values_mut() {
                    for m in members.iter_mut().filter(|m| m.id == user_id) {
                        m.online = online;
                    }
                }
            }
            ServerFrame::PersonaStatus { persona_id, status, last_seen, .. } => {
                if status != PersonaState::Responding {
                    self.drop_dead_streams(|id| id == persona_id);
                }
                let personas = self.personas.iter_mut().filter(|p| p.id == persona_id);
                let in_list =
                    self.conversations.iter_mut().filter_map(|c| c.persona.as_mut()).filter(|p| p.id == persona_id);
                for p in personas.chain(in_list) {
                    p.status = status;
                    if last_seen.is_some() {
                        p.last_seen = last_seen.clone();
                    }
                }
            }
            ServerFrame::UserJoined { conversation_id, user_id, username } => {
                self.notice(&conversation_id, format!("{username} joined"));
                let members = self.members.get_mut(&conversation_id);
                if let Some(members) = members.filter(|m| !m.iter().any(|m| m.id == user_id)) {
                    let online = self.online.iter().any(|u| u.user_id == user_id);
                    members.push(Member { id: user_id, name: username, kind: "user".into(), online });
                }
            }
            ServerFrame::UserLeft { conversation_id, user_id, username } => {
                self.notice(&conversation_id, format!("{username} left"));
                if let Some(members) = self.members.get_mut(&conversation_id) {
                    members.retain(|m| m.id != user_id);
                }
            }
            ServerFrame::StreamStart { conversation_id, message_id, persona_id } => {
                if self.ended.contains(&message_id) || self.left(&conversation_id) {
                    return out;
                }
                let persona_name =
                    self.persona(&persona_id).map(|p| p.name.clone()).unwrap_or_else(|| "Persona".into());
                let started_at = stream_start_time(&self.logs, &conversation_id);
                self.streams
                    .entry(message_id)
                    .or_insert(Stream {
                        conversation_id,
                        persona_id,
                        persona_name,
                        text: String::new(),
                        chars: 0,
                        started_at,
                        live: true,
                    })
                    .live = true;
            }
            ServerFrame::StreamDelta { conversation_id, message_id, offset, text } => {
                let left = self.left(&conversation_id);
                match self.streams.get_mut(&message_id) {
                    Some(s) => {
                        s.live = true;
                        // Applied by offset: the part already held is skipped (a repeat, or
                        // the text so far of a resumed reply); a delta beyond what is held is
                        // a gap, filled by joining again (the reply resumes from offset 0).
                        if !extend_by_offset(s, offset, &text) {
                            out.stream_gap = Some(conversation_id);
                        }
                    }
                    None if !self.ended.contains(&message_id) && !left => out.stream_gap = Some(conversation_id),
                    None => {}
                }
            }
            ServerFrame::StreamEnd { conversation_id, message_id, message, .. } => {
                self.end_stream(&message_id);
                self.touch_conversation(&conversation_id, LastMessage::from(&message));
                self.logs.entry(conversation_id).or_default().insert(message);
            }
            ServerFrame::Error { code, message, reference: Some(reference), .. } => {
                // A refused send names its client_id: that message failed, with the reason.
                for log in self.logs.values_mut() {
                    if let Some(p) = log.pending.iter_mut().find(|p| p.client_id == reference) {
                        p.delivery = Delivery::Failed(format!("{message} ({})", code.as_str()));
                    }
                }
            }
            _ => {}
        }
        out
    }

    fn end_stream(&mut self, message_id: &str) {
        self.streams.remove(message_id);
        self.ended.insert(message_id.to_owned());
    }

    /// A stored message: a persona's ends its reply.
    fn stored(&mut self, message: &Message) {
        if self.streams.remove(&message.id).is_some() || message.is_ai {
            self.ended.insert(message.id.clone());
        }
    }

    /// Entries set by versions newer than `version` count as set at `version`: an answer as
    /// of `version` then replaces them, and the frames that set them, applied again after it,
    /// set them again (see the sync core's `PostSync`).
    pub fn rewind_list_versions(&mut self, version: u64) {
        for v in self.list_versions.values_mut() {
            *v = (*v).min(version);
        }
        self.list_floor = self.list_floor.min(version);
    }

    /// Whether a conversation left the list (a frame about it is an old one).
    fn left(&self, conversation_id: &str) -> bool {
        self.list_versions.contains_key(conversation_id) && self.conversation(conversation_id).is_none()
    }

    /// The list version a conversation's entry was last set at (0: never by a versioned change).
    pub fn list_version(&self, conversation_id: &str) -> u64 {
        self.list_versions.get(conversation_id).copied().unwrap_or(self.list_floor)
    }

    /// A conversation new to the list or changed, as of list version `version` (0: unknown,
    /// always applied). False if what is held is newer.
    pub fn upsert(&mut self, mut summary: ConversationSummary, version: u64) -> bool {
        let held = self.list_version(&summary.id);
        if version > 0 && version < held {
            return false;
        }
        if version > 0 {
            self.list_versions.insert(summary.id.clone(), version);
        }
        if self.active.as_deref() == Some(summary.id.as_str()) {
            summary.unread_count = 0;
        }
        if let Some(p) = summary.persona.as_mut() {
            // The directory's status is the newest this tab has.
            if let Some(fresh) = self.personas.iter().find(|f| f.id == p.id) {
                p.status = fresh.status;
                p.last_seen = fresh.last_seen.clone();
            }
        }
        self.conversations.retain(|c| c.id != summary.id);
        let at = self
            .conversations
            .iter()
            .position(|x| activity(x) <= activity(&summary))
            .unwrap_or(self.conversations.len());
        self.conversations.insert(at, summary);
        true
    }

    /// A conversation leaves the list as of `version` (0: unknown, always applied). Its title
    /// if it was listed and the removal is not older than what is held.
    pub fn remove_conversation(&mut self, conversation_id: &str, version: u64) -> Option<String> {
        let held = self.list_version(conversation_id);
        if version > 0 && version < held {
            return None;
        }
        if version > 0 {
            self.list_versions.insert(conversation_id.to_owned(), version);
        }
        let i = self.conversations.iter().position(|c| c.id == conversation_id)?;
        let c = self.conversations.remove(i);
        self.logs.remove(conversation_id);
        self.members.remove(conversation_id);
        self.streams.retain(|_, s| s.conversation_id != conversation_id);
        if self.active.as_deref() == Some(conversation_id) {
            self.active = None;
        }
        Some(c.title)
    }

    /// A `sync_state` answer (the caller checked that it covers what this tab holds): the list
    /// (whole, or what changed), persona statuses, who is online and the replies in progress.
    pub fn apply_sync(&mut self, state: SyncState) -> Applied {
        let mut out = Applied::default();
        let version = state.version;
        if state.full {
            let listed: HashSet<&str> = state.conversations.iter().map(|c| c.id.as_str()).collect();
            let gone: Vec<String> = self
                .conversations
                .iter()
                .filter(|c| !listed.contains(c.id.as_str()) && self.list_version(&c.id) <= version)
                .map(|c| c.id.clone())
                .collect();
            for id in gone {
                if let Some(title) = self.remove_conversation(&id, version) {
                    out.removed.push((id, title, None));
                }
            }
        }
        for summary in state.conversations {
            self.upsert(summary, version);
        }
        for id in state.removed {
            if let Some(title) = self.remove_conversation(&id, version) {
                out.removed.push((id, title, None));
            }
        }
        if state.full {
            self.list_floor = self.list_floor.max(version);
        }
        for entry in state.personas {
            self.apply(ServerFrame::PersonaStatus {
                persona_id: entry.persona_id,
                status: entry.status,
                last_seen: entry.last_seen,
                timestamp: String::new(),
            });
        }
        self.online = state.online;
        self.online.sort_by(|a, b| a.username.cmp(&b.username));
        self.set_replies(state.replies);
        out
    }

    /// The replies in progress, whole: the ones held and not listed are over (their end
    /// comes, or came, as a stored message); listed ones show their text so far.
    fn set_replies(&mut self, replies: Vec<ReplyInProgress>) {
        let listed: HashSet<&str> = replies.iter().map(|r| r.message_id.as_str()).collect();
        self.streams.retain(|id, _| listed.contains(id.as_str()));
        for r in replies {
            if self.ended.contains(&r.message_id) {
                continue;
            }
            self.apply(ServerFrame::StreamStart {
                conversation_id: r.conversation_id.clone(),
                message_id: r.message_id.clone(),
                persona_id: r.persona_id,
            });
            if let Some(s) = self.streams.get_mut(&r.message_id) {
                extend_by_offset(s, 0, &r.text);
            }
        }
    }

    fn notice(&mut self, conversation_id: &str, text: String) {
        self.notice_counter += 1;
        let key = format!("notice-{}", self.notice_counter);
        let log = self.logs.entry(conversation_id.to_owned()).or_default();
        let after_seq = log.last_seq();
        let timestamp = log.stored.values().next_back().map(|m| m.timestamp.clone()).unwrap_or_default();
        log.notices.push(Notice { key, after_seq, text, timestamp });
    }

    /// Moves a conversation to the top of the list with its newest message, counting it as
    /// unread unless the user is looking at it or wrote it.
    fn touch_conversation(&mut self, conversation_id: &str, last: LastMessage) {
        let Some(i) = self.conversations.iter().position(|c| c.id == conversation_id) else { return };
        let me = self.me.as_ref().map(|u| u.username.as_str());
        let active = self.active.as_deref() == Some(conversation_id);
        let c = &mut self.conversations[i];
        if last.seq > c.last_seq {
            if !active && me != Some(last.sender_name.as_str()) {
                c.unread_count += 1;
            }
            c.last_seq = last.seq;
        }
        if c.last_message.as_ref().is_none_or(|m| m.seq <= last.seq) {
            c.last_message = Some(last);
        }
        let c = self.conversations.remove(i);
        let at =
            self.conversations.iter().position(|x| activity(x) <= activity(&c)).unwrap_or(self.conversations.len());
        self.conversations.insert(at, c);
    }
}

/// Adds a delta's new part to a stream; false if it starts beyond what is held (a gap).
fn extend_by_offset(s: &mut Stream, offset: u64, text: &str) -> bool {
    if offset > s.chars {
        return false;
    }
    let len = text.chars().count() as u64;
    if offset + len > s.chars {
        s.text.extend(text.chars().skip((s.chars - offset) as usize));
        s.chars = offset + len;
    }
    true
}

/// When a conversation was last active (its newest message's time; empty sorts last).
fn activity(c: &ConversationSummary) -> &str {
    c.last_message.as_ref().map_or("", |m| m.timestamp.as_str())
}

/// A stream's start time for ordering and grouping: the newest stored message's time is a
/// good enough stand-in (the frame carries none).
fn stream_start_time(logs: &HashMap<String, ConversationLog>, conversation_id: &str) -> String {
    logs.get(conversation_id)
        .and_then(|l| l.stored.values().next_back())
        .map(|m| m.timestamp.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use persona_chat_protocol::ErrorCode;

    fn msg(seq: i64, client_id: Option<&str>) -> Message {
        Message {
            id: format!("m{seq}"),
            seq,
            client_id: client_id.map(str::to_owned),
            sender_id: "u1".into(),
            sender_name: "ada".into(),
            content: format!("hello {seq}"),
            timestamp: "2026-11-21T10:00:00.000Z".into(),
            is_ai: false,
            interrupted: false,
        }
    }

    fn new_message(seq: i64, client_id: Option<&str>) -> ServerFrame {
        ServerFrame::NewMessage { conversation_id: "c".into(), message: msg(seq, client_id), timestamp: "t".into() }
    }

    fn seqs(state: &ChatState) -> Vec<Option<i64>> {
        state.log("c").unwrap().lines(None).iter().map(|l| l.seq).collect()
    }

    #[test]
    fn messages_show_once_in_seq_order_whatever_the_arrival_order() {
        let mut s = ChatState::default();
        for seq in [3, 1, 2, 3, 1] {
            s.apply(new_message(seq, None));
        }
        s.add_history("c", vec![msg(2, None), msg(4, None)]);
        assert_eq!(seqs(&s), vec![Some(1), Some(2), Some(3), Some(4)]);
        assert_eq!(s.last_seq("c"), 4);
    }

    #[test]
    fn a_pending_echo_becomes_the_stored_message() {
        let mut s = ChatState::default();
        s.add_pending(
            "c",
            PendingMessage {
                client_id: "k1".into(),
                content: "hi".into(),
                timestamp: "t".into(),
                delivery: Delivery::Pending,
            },
        );
        assert_eq!(s.log("c").unwrap().lines(None)[0].delivery, Delivery::Pending);
        s.apply(ServerFrame::MessageAck(Ack {
            client_id: "k1".into(),
            conversation_id: "c".into(),
            message_id: "m1".into(),
            seq: 1,
            timestamp: "t".into(),
        }));
        assert_eq!(s.log("c").unwrap().lines(None)[0].delivery, Delivery::Sent);
        s.apply(new_message(1, Some("k1")));
        let lines = s.log("c").unwrap().lines(None);
        assert_eq!(lines.len(), 1, "the echo is replaced, not doubled");
        assert_eq!((lines[0].seq, lines[0].key.as_str()), (Some(1), "k1"));
    }

    #[test]
    fn a_pending_line_added_after_its_stored_message_is_not_shown() {
        // Another tab's record can arrive after the relayed frame of the stored message.
        let mut s = ChatState::default();
        s.apply(new_message(1, Some("k1")));
        let pending = PendingMessage {
            client_id: "k1".into(),
            content: "hi".into(),
            timestamp: "t".into(),
            delivery: Delivery::Pending,
        };
        assert!(s.holds_client_id("c", "k1"));
        s.add_pending("c", pending.clone());
        let lines = s.log("c").unwrap().lines(None);
        assert_eq!(lines.len(), 1, "shown once: {lines:?}");
        assert_eq!(lines[0].delivery, Delivery::Sent);
        // Another message's pending line still shows.
        s.add_pending("c", PendingMessage { client_id: "k2".into(), ..pending });
        assert_eq!(s.log("c").unwrap().lines(None).len(), 2);
    }

    #[test]
    fn a_refused_send_turns_failed_with_the_reason() {
        let mut s = ChatState::default();
        s.add_pending(
            "c",
            PendingMessage {
                client_id: "k9".into(),
                content: "x".into(),
                timestamp: "t".into(),
                delivery: Delivery::Pending,
            },
        );
        s.apply(ServerFrame::Error {
            code: ErrorCode::TooLong,
            message: "too long".into(),
            reference: Some("k9".into()),
            timestamp: "t".into(),
        });
        assert!(matches!(&s.log("c").unwrap().lines(None)[0].delivery, Delivery::Failed(r) if r.contains("too_long")));
    }

    #[test]
    fn presence_updates_the_online_list() {
        let mut s = ChatState::default();
        s.apply(ServerFrame::OnlineUsers {
            users: vec![OnlineUser { user_id: "a".into(), username: "ada".into() }],
            timestamp: "t".into(),
        });
        s.apply(ServerFrame::PresenceUpdate {
            user_id: "b".into(),
            username: "bob".into(),
            online: true,
            last_seen: None,
            timestamp: "t".into(),
        });
        assert_eq!(s.online.len(), 2);
        s.apply(ServerFrame::PresenceUpdate {
            user_id: "a".into(),
            username: "ada".into(),
            online: false,
            last_seen: Some("t".into()),
            timestamp: "t".into(),
        });
        assert_eq!(s.online.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), vec!["bob"]);
    }

    fn summary(id: &str, last_seq: i64) -> ConversationSummary {
        ConversationSummary {
            id: id.into(),
            kind: persona_chat_protocol::http::ConversationKind::Room,
            title: id.into(),
            persona: None,
            last_message: None,
            last_seq,
            unread_count: 0,
        }
    }

    fn update(id: &str, seq: i64, sender: &str, ts: &str) -> ServerFrame {
        ServerFrame::ConversationUpdate {
            conversation_id: id.into(),
            last_message: LastMessage {
                id: format!("m{seq}"),
                seq,
                sender_name: sender.into(),
                content: "x".into(),
                timestamp: ts.into(),
            },
            version: 0,
            timestamp: ts.into(),
        }
    }

    #[test]
    fn unread_counts_rise_for_other_conversations_only_once_per_message() {
        let mut s = ChatState { me: Some(User { id: "u0".into(), username: "me".into() }), ..Default::default() };
        s.set_conversations(vec![summary("a", 0), summary("b", 0)]);
        s.set_active(Some("a".into()));
        s.apply(update("b", 1, "ada", "2026-11-21T10:00:01.000Z"));
        // The same message again (new_message after conversation_update) does not count twice.
        s.apply(ServerFrame::NewMessage {
            conversation_id: "b".into(),
            message: Message { seq: 1, ..msg(1, None) },
            timestamp: "t".into(),
        });
        s.apply(update("b", 2, "me", "2026-11-21T10:00:02.000Z"));
        s.apply(update("a", 1, "ada", "2026-11-21T10:00:03.000Z"));
        assert_eq!(s.conversation("b").unwrap().unread_count, 1, "own messages are not unread");
        assert_eq!(s.conversation("a").unwrap().unread_count, 0, "the open conversation is read");
        assert_eq!(
            s.conversations.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            vec!["a", "b"],
            "newest activity first"
        );
        assert_eq!(s.unread_total(), 1);
        s.set_active(Some("b".into()));
        assert_eq!(s.unread_total(), 0);
    }

    #[test]
    fn persona_status_reaches_the_list_and_the_directory() {
        let mut s = ChatState::default();
        let persona = Persona {
            id: "p1".into(),
            name: "Ada".into(),
            tagline: String::new(),
            status: PersonaState::Online,
            last_seen: None,
        };
        s.personas = vec![persona.clone()];
        s.set_conversations(vec![ConversationSummary { persona: Some(persona), ..summary("d", 0) }]);
        s.apply(ServerFrame::PersonaStatus {
            persona_id: "p1".into(),
            status: PersonaState::Responding,
            last_seen: None,
            timestamp: "t".into(),
        });
        assert_eq!(s.persona_status("p1").unwrap().0, PersonaState::Responding);
        assert_eq!(s.persona_status_of("d").unwrap().0, PersonaState::Responding, "through the conversation");
        assert_eq!(s.conversation("d").unwrap().persona.as_ref().unwrap().status, PersonaState::Responding);
        s.apply(ServerFrame::PersonaStatus {
            persona_id: "p1".into(),
            status: PersonaState::Offline,
            last_seen: Some("2026-11-21T10:00:00.000Z".into()),
            timestamp: "t".into(),
        });
        assert_eq!(s.persona_status("p1"), Some((PersonaState::Offline, Some("2026-11-21T10:00:00.000Z".into()))));
    }

    #[test]
    fn a_stream_grows_by_offset_and_becomes_its_stored_message() {
        let mut s = ChatState {
            personas: vec![Persona {
                id: "p1".into(),
                name: "Ada".into(),
                tagline: String::new(),
                status: PersonaState::Online,
                last_seen: None,
            }],
            ..ChatState::default()
        };
        s.apply(new_message(1, None));
        s.apply(ServerFrame::StreamStart {
            conversation_id: "c".into(),
            message_id: "r1".into(),
            persona_id: "p1".into(),
        });
        let delta = |offset: u64, text: &str| ServerFrame::StreamDelta {
            conversation_id: "c".into(),
            message_id: "r1".into(),
            offset,
            text: text.into(),
        };
        s.apply(delta(0, "Hé"));
        s.apply(delta(0, "Hé")); // a repeat: nothing doubles
        s.apply(delta(1, "é, w")); // overlaps: only the new tail
        s.apply(delta(9, "lost?")); // beyond what is held: waits for the end
        let lines = s.log("c").unwrap().window(None, "c", &s.streams, 0, 10).0;
        assert_eq!(
            lines.last().map(|l| (l.kind.clone(), l.content.as_str(), l.sender_name.as_str())),
            Some((LineKind::Streaming, "Hé, w", "Ada"))
        );
        assert_eq!(s.responding_in("c"), vec!["Ada".to_string()]);
        let stored = Message {
            id: "r1".into(),
            seq: 2,
            sender_id: "p1".into(),
            sender_name: "Ada".into(),
            is_ai: true,
            content: "Hé, world".into(),
            ..msg(2, None)
        };
        s.apply(ServerFrame::StreamEnd {
            conversation_id: "c".into(),
            message_id: "r1".into(),
            interrupted: false,
            message: stored,
        });
        let lines = s.log("c").unwrap().window(None, "c", &s.streams, 0, 10).0;
        assert_eq!(
            lines.iter().map(|l| (l.seq, l.content.as_str())).collect::<Vec<_>>(),
            vec![(Some(1), "hello 1"), (Some(2), "Hé, world")]
        );
        assert!(s.streams.is_empty() && s.responding_in("c").is_empty());
    }

    fn ada(status: PersonaState) -> Persona {
        Persona { id: "p1".into(), name: "Ada".into(), tagline: String::new(), status, last_seen: None }
    }

    /// Ada streams "Hel" in direct conversation "d"; the list and the directory say she is
    /// responding.
    fn mid_stream() -> ChatState {
        let mut s = ChatState { personas: vec![ada(PersonaState::Online)], ..Default::default() };
        s.set_conversations(vec![ConversationSummary { persona: Some(ada(PersonaState::Online)), ..summary("d", 0) }]);
        s.apply(ServerFrame::PersonaStatus {
            persona_id: "p1".into(),
            status: PersonaState::Responding,
            last_seen: None,
            timestamp: "t".into(),
        });
        s.apply(ServerFrame::StreamStart {
            conversation_id: "d".into(),
            message_id: "r1".into(),
            persona_id: "p1".into(),
        });
        s.apply(ServerFrame::StreamDelta {
            conversation_id: "d".into(),
            message_id: "r1".into(),
            offset: 0,
            text: "Hel".into(),
        });
        assert_eq!(s.responding_in("d"), vec!["Ada".to_string()]);
        s
    }

    fn streaming_lines(s: &ChatState, conversation_id: &str) -> usize {
        s.log(conversation_id).map_or(0, |l| {
            l.window(None, conversation_id, &s.streams, 0, 100)
                .0
                .iter()
                .filter(|l| l.kind == LineKind::Streaming)
                .count()
        }) + usize::from(
            s.log(conversation_id).is_none() && s.streams.values().any(|st| st.conversation_id == conversation_id),
        )
    }

    #[test]
    fn a_stream_the_restarted_server_no_longer_knows_ends_after_the_reconnect() {
        // The server was killed mid-reply: after the reconnect nothing more of r1 comes, and
        // the personas fetched fresh say Ada is online.
        let mut s = mid_stream();
        s.transport_up();
        s.set_personas(vec![ada(PersonaState::Online)]);
        assert!(s.streams.is_empty(), "the ghost stream is gone: {:?}", s.streams);
        assert_eq!(streaming_lines(&s, "d"), 0);
        assert!(s.responding_in("d").is_empty(), "no \"Ada is responding\" left");
        assert_eq!(s.persona_status_of("d").unwrap().0, PersonaState::Online, "the badge comes from the fresh status");
        assert_eq!(s.conversation("d").unwrap().persona.as_ref().unwrap().status, PersonaState::Online);
    }

    #[test]
    fn a_stream_still_going_after_a_reconnect_stays() {
        // Only the socket dropped: the persona still responds, the stream goes on.
        let mut s = mid_stream();
        s.transport_up();
        s.set_personas(vec![ada(PersonaState::Responding)]);
        assert_eq!(s.streams.len(), 1, "the server says she still responds");
        // Its end then comes as usual; or her status turns, which ends an unconfirmed stream.
        s.apply(ServerFrame::PersonaStatus {
            persona_id: "p1".into(),
            status: PersonaState::Online,
            last_seen: None,
            timestamp: "t".into(),
        });
        assert!(s.streams.is_empty(), "not responding any more and no frame of it since the reconnect");

        // A frame of the stream on the new transport confirms it, whatever an older fetch says.
        let mut s = mid_stream();
        s.transport_up();
        s.apply(ServerFrame::StreamDelta {
            conversation_id: "d".into(),
            message_id: "r1".into(),
            offset: 9,
            text: "later".into(),
        });
        s.set_personas(vec![ada(PersonaState::Busy)]);
        assert_eq!(s.streams.len(), 1, "confirmed by a delta after the reconnect");
        // Without a reconnect a status change does not cut a stream short (the end is on its way).
        let mut s = mid_stream();
        s.apply(ServerFrame::PersonaStatus {
            persona_id: "p1".into(),
            status: PersonaState::Online,
            last_seen: None,
            timestamp: "t".into(),
        });
        assert_eq!(s.streams.len(), 1);
    }

    #[test]
    fn joins_and_leaves_show_inline_after_the_message_they_followed() {
        let mut s = ChatState::default();
        s.apply(new_message(1, None));
        s.apply(ServerFrame::UserJoined { conversation_id: "c".into(), user_id: "u2".into(), username: "bob".into() });
        s.apply(new_message(2, None));
        s.apply(ServerFrame::UserLeft { conversation_id: "c".into(), user_id: "u2".into(), username: "bob".into() });
        let lines = s.log("c").unwrap().lines(None);
        let shown: Vec<String> = lines
            .iter()
            .map(|l| match l.kind {
                LineKind::Notice => l.content.clone(),
                _ => format!("#{}", l.seq.unwrap()),
            })
            .collect();
        assert_eq!(shown, vec!["#1", "bob joined", "#2", "bob left"]);
    }

    #[test]
    fn runs_by_one_sender_group_until_someone_else_or_five_minutes() {
        let mut s = ChatState::default();
        let at = |seq: i64, sender: &str, ts: &str| Message {
            sender_id: sender.into(),
            timestamp: ts.into(),
            ..msg(seq, None)
        };
        s.add_history(
            "c",
            vec![
                at(1, "a", "2026-11-21T10:00:00.000Z"),
                at(2, "a", "2026-11-21T10:04:59.000Z"),
                at(3, "b", "2026-11-21T10:05:00.000Z"),
                at(4, "b", "2026-11-21T10:11:00.000Z"),
            ],
        );
        let starts: Vec<bool> = s.log("c").unwrap().lines(None).iter().map(|l| l.starts_group).collect();
        assert_eq!(starts, vec![true, false, true, true]);
        // A window that starts mid-run knows the line before it.
        let (window, total) = s.log("c").unwrap().window(None, "c", &s.streams, 2, 1);
        assert_eq!((window[0].seq, window[0].starts_group, total), (Some(2), false, 4));
    }

    #[test]
    fn a_window_builds_only_its_lines_of_a_long_conversation() {
        let mut s = ChatState::default();
        s.add_latest("c", (1..=10_000).map(|i| msg(i, None)).collect(), true);
        let log = s.log("c").unwrap();
        let (lines, total) = log.window(None, "c", &s.streams, 0, 60);
        assert_eq!((lines.len(), total, lines[0].seq, lines[59].seq), (60, 10_000, Some(9_941), Some(10_000)));
        let (lines, _) = log.window(None, "c", &s.streams, 9_990, 60);
        assert_eq!((lines.len(), lines[0].seq), (10, Some(1)));
        assert_eq!(log.has_older, Some(true));
        s.add_older("c", vec![], false);
        assert_eq!(s.log("c").unwrap().has_older, Some(false));
    }

    #[test]
    fn retry_and_discard_of_a_failed_message() {
        let mut s = ChatState::default();
        s.add_pending(
            "c",
            PendingMessage {
                client_id: "k".into(),
                content: "x".into(),
                timestamp: "t".into(),
                delivery: Delivery::Failed("no".into()),
            },
        );
        s.add_pending(
            "c",
            PendingMessage {
                client_id: "k".into(),
                content: "x".into(),
                timestamp: "t".into(),
                delivery: Delivery::Pending,
            },
        );
        assert_eq!(s.log("c").unwrap().pending().len(), 1, "restoring twice does not double");
        s.add_pending(
            "c",
            PendingMessage {
                client_id: "k2".into(),
                content: "y".into(),
                timestamp: "t".into(),
                delivery: Delivery::Pending,
            },
        );
        s.retry_pending("k");
        let shows: Vec<bool> = s.log("c").unwrap().lines(None).iter().map(|l| l.shows_delivery).collect();
        assert_eq!(shows, vec![false, true], "a run of pending messages says so once, under the last");
        s.retry_pending("k");
        assert_eq!(s.log("c").unwrap().pending()[0].delivery, Delivery::Pending);
        s.discard_pending("k");
        s.discard_pending("k2");
        assert!(s.log("c").unwrap().is_empty());
    }

    fn sync_state(since: u64, version: u64, full: bool, conversations: Vec<ConversationSummary>) -> SyncState {
        SyncState {
            since,
            version,
            full,
            conversations,
            removed: Vec::new(),
            personas: Vec::new(),
            online: Vec::new(),
            replies: Vec::new(),
            timestamp: String::new(),
        }
    }

    #[test]
    fn list_changes_older_than_what_is_held_are_stale() {
        let mut s = ChatState::default();
        s.apply_sync(sync_state(0, 10, true, vec![summary("a", 3), summary("b", 1)]));
        // A late upsert of a conversation the whole list no longer has: stale.
        let late = |id: &str, version: u64| ServerFrame::ConversationUpserted {
            conversation: Box::new(summary(id, 0)),
            version,
            timestamp: String::new(),
        };
        assert!(s.apply(late("gone", 7)).stale);
        assert!(s.conversation("gone").is_none());
        // Removed at 12: an upsert of version 11 does not bring it back; one of 13 does.
        let removed = s.apply(ServerFrame::ConversationRemoved {
            conversation_id: "b".into(),
            reason: RemovalReason::Left,
            version: 12,
            timestamp: String::new(),
        });
        assert_eq!(removed.removed, vec![("b".to_owned(), "b".to_owned(), Some(RemovalReason::Left))]);
        assert!(s.apply(late("b", 11)).stale && s.conversation("b").is_none());
        assert!(!s.apply(late("b", 13)).stale && s.conversation("b").is_some());
        // A versioned update counts once; a seq jump says updates were missed.
        let update = |seq: i64, version: u64| ServerFrame::ConversationUpdate {
            conversation_id: "a".into(),
            last_message: LastMessage {
                id: format!("m{seq}"),
                seq,
                sender_name: "bob".into(),
                content: "x".into(),
                timestamp: "t".into(),
            },
            version,
            timestamp: "t".into(),
        };
        assert!(!s.apply(update(4, 14)).list_gap);
        assert!(s.apply(update(4, 14)).stale);
        assert_eq!(s.conversation("a").unwrap().unread_count, 1);
        assert!(s.apply(update(6, 15)).list_gap, "seq 5 was missed");
        // A delta answer: upserts and removals, entries older than held kept.
        let mut delta = sync_state(10, 16, false, vec![ConversationSummary { unread_count: 0, ..summary("a", 6) }]);
        delta.removed = vec!["b".into()];
        let applied = s.apply_sync(delta);
        assert_eq!(applied.removed.len(), 1);
        assert_eq!(s.conversation("a").map(|c| (c.last_seq, c.unread_count)), Some((6, 0)));
    }

    #[test]
    fn replies_in_progress_come_whole_and_an_ended_one_is_not_brought_back() {
        let mut s = ChatState::default();
        s.set_conversations(vec![summary("d", 0)]);
        let reply = |text: &str| ReplyInProgress {
            conversation_id: "d".into(),
            message_id: "r1".into(),
            persona_id: "p1".into(),
            text: text.into(),
        };
        let mut state = sync_state(0, 1, false, vec![]);
        state.replies = vec![reply("Once upon")];
        s.apply_sync(state.clone());
        assert_eq!(s.streams["r1"].text, "Once upon");
        // The live deltas go on from there; one beyond what is held is a gap.
        s.apply(ServerFrame::StreamDelta {
            conversation_id: "d".into(),
            message_id: "r1".into(),
            offset: 4,
            text: " upon a time".into(),
        });
        assert_eq!(s.streams["r1"].text, "Once upon a time");
        let gap = s.apply(ServerFrame::StreamDelta {
            conversation_id: "d".into(),
            message_id: "r1".into(),
            offset: 30,
            text: "later".into(),
        });
        assert_eq!(gap.stream_gap.as_deref(), Some("d"));
        // It ends; an older answer that still lists it does not bring it back.
        s.apply(ServerFrame::StreamEnd {
            conversation_id: "d".into(),
            message_id: "r1".into(),
            interrupted: false,
            message: Message { id: "r1".into(), is_ai: true, ..msg(1, None) },
        });
        s.apply_sync(state);
        assert!(s.streams.is_empty());
        // An answer without it drops a reply held (it is over).
        s.apply(ServerFrame::StreamStart {
            conversation_id: "d".into(),
            message_id: "r2".into(),
            persona_id: "p1".into(),
        });
        s.apply_sync(sync_state(1, 2, false, vec![]));
        assert!(s.streams.is_empty());
    }

    #[test]
    fn rejoins_ask_from_the_end_of_the_unbroken_run() {
        let mut s = ChatState::default();
        assert_eq!(s.complete_through("c"), 0);
        s.add_history("c", vec![msg(5, None), msg(6, None), msg(8, None)]);
        assert_eq!((s.complete_through("c"), s.last_seq("c")), (6, 8), "7 is missing: ask again from 6");
        s.apply(new_message(7, None));
        assert_eq!(s.complete_through("c"), 8);
    }
}
