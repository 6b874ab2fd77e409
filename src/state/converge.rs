//! The randomized convergence test: a simulated server (an in-test model of the protocol:
//! conversations, seqs, list versions and tombstones, presence, persona statuses, replies in
//! progress) and several simulated clients (some of them tabs of one user), each a
//! [`SyncCore`] and a [`ChatState`], run under random faults: transports dying with frames
//! in flight (dropped), HTTP answers arriving late (reordered against the live frames),
//! duplicated frames, reconnects over either transport, reloads, another tab's sync answer
//! relayed, and conversations opened mid-reply. Once the server is quiet and the network
//! heals, every client must hold the server's state: the list (last message, last seq,
//! unread count, title), persona statuses, who is online, the messages of every conversation
//! it joined and the replies in progress there.
//!
//! Each run prints its seed; `PROPS_SEED=<n>` replays one, `PROPS_CASES` sets how many.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use persona_chat_protocol::http::{ConversationKind, ConversationSummary, Persona};
use persona_chat_protocol::{
    ClientFrame, LastMessage, Message, OnlineUser, PersonaState, PersonaStatusEntry, RemovalReason, ReplyInProgress,
    ServerFrame, SyncState, User,
};

use super::props::{seed, Rng};
use super::reducer::ChatState;
use super::sync::{Action, Config, Event, SyncCore};
use crate::socket::Transport;

const USERS: usize = 3;
const PERSONAS: [&str; 2] = ["Ada", "Grace"];

fn user_id(u: usize) -> String {
    format!("u{u}")
}

fn username(u: usize) -> String {
    format!("user{u}")
}

fn ts(n: u64) -> String {
    format!("2026-11-21T{:02}:{:02}:{:02}.000Z", 10 + n / 3600 % 10, n / 60 % 60, n % 60)
}

#[derive(Debug, Clone)]
struct Conv {
    kind: ConversationKind,
    title: String,
    members: BTreeSet<usize>,
    persona: Option<usize>,
    messages: Vec<Message>,
}

#[derive(Debug, Clone)]
struct Reply {
    conversation_id: String,
    message_id: String,
    persona: usize,
    full: Vec<char>,
    sent: usize,
}

/// A transport as the server sees it.
#[derive(Debug, Clone)]
struct Link {
    transport: Transport,
    joined: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Server {
    version: u64,
    clock: u64,
    conversations: BTreeMap<String, Conv>,
    last_read: HashMap<(usize, String), i64>,
    /// The list version each user's entry changed at; removals stay as tombstones.
    entries: HashMap<(usize, String), u64>,
    tombstones: HashMap<(usize, String), u64>,
    online: BTreeSet<usize>,
    personas: Vec<PersonaState>,
    replies: Vec<Reply>,
    next_id: u64,
}

impl Server {
    fn new() -> Server {
        let mut s = Server { personas: vec![PersonaState::Online; PERSONAS.len()], ..Default::default() };
        s.conversations.insert(
            "lobby".into(),
            Conv {
                kind: ConversationKind::Room,
                title: "Lobby".into(),
                members: (0..USERS).collect(),
                persona: None,
                messages: Vec::new(),
            },
        );
        s
    }

    fn persona_list() -> Vec<Persona> {
        PERSONAS
            .iter()
            .enumerate()
            .map(|(i, name)| Persona {
                id: format!("p{i}"),
                name: (*name).into(),
                tagline: String::new(),
                status: PersonaState::Online,
                last_seen: None,
            })
            .collect()
    }

    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.clock += 1;
        self.version
    }

    fn summary(&self, user: usize, id: &str) -> ConversationSummary {
        let c = &self.conversations[id];
        let read = self.last_read.get(&(user, id.to_owned())).copied().unwrap_or(0);
        let me = username(user);
        ConversationSummary {
            id: id.to_owned(),
            kind: c.kind,
            title: c.title.clone(),
            persona: c.persona.map(|p| Persona { status: self.personas[p], ..Server::persona_list()[p].clone() }),
            last_message: c.messages.last().map(LastMessage::from),
            last_seq: c.messages.last().map_or(0, |m| m.seq),
            unread_count: c.messages.iter().filter(|m| m.seq > read && m.sender_name != me).count() as i64,
        }
    }

    fn list(&self, user: usize) -> Vec<String> {
        self.conversations.iter().filter(|(_, c)| c.members.contains(&user)).map(|(id, _)| id.clone()).collect()
    }

    fn sync(&self, user: usize, since: u64) -> SyncState {
        let full = since == 0 || since > self.version;
        let conversations = self
            .list(user)
            .into_iter()
            .filter(|id| full || self.entries.get(&(user, id.clone())).copied().unwrap_or(0) > since)
            .map(|id| self.summary(user, &id))
            .collect();
        let removed = if full {
            Vec::new()
        } else {
            self.tombstones
                .iter()
                .filter(|((u, _), v)| *u == user && **v > since)
                .map(|((_, id), _)| id.clone())
                .collect()
        };
        let mine: BTreeSet<String> = self.list(user).into_iter().collect();
        SyncState {
            since,
            version: self.version,
            full,
            conversations,
            removed,
            personas: self
                .personas
                .iter()
                .enumerate()
                .map(|(i, s)| PersonaStatusEntry { persona_id: format!("p{i}"), status: *s, last_seen: None })
                .collect(),
            online: self.online_users(),
            replies: self
                .replies
                .iter()
                .filter(|r| mine.contains(&r.conversation_id))
                .map(|r| ReplyInProgress {
                    conversation_id: r.conversation_id.clone(),
                    message_id: r.message_id.clone(),
                    persona_id: format!("p{}", r.persona),
                    text: r.full[..r.sent].iter().collect(),
                })
                .collect(),
            timestamp: ts(self.clock),
        }
    }

    fn online_users(&self) -> Vec<OnlineUser> {
        self.online.iter().map(|u| OnlineUser { user_id: user_id(*u), username: username(*u) }).collect()
    }
}

#[derive(Debug)]
enum Http {
    Sync(u64, Box<SyncState>),
    Fill { conversation_id: String, messages: Vec<Message> },
    Latest { conversation_id: String, messages: Vec<Message>, has_more: bool },
    Read { conversation_id: String, seq: i64 },
}

struct Client {
    user: usize,
    core: SyncCore,
    chat: ChatState,
    link: Option<Link>,
    /// Frames on their way on the current transport, in order.
    inbox: VecDeque<ServerFrame>,
    /// HTTP answers on their way, in any order.
    http: Vec<Http>,
}

impl Client {
    fn new(user: usize) -> Client {
        let mut chat = ChatState::default();
        chat.me = Some(User { id: user_id(user), username: username(user) });
        chat.set_personas(Server::persona_list());
        Client {
            user,
            core: SyncCore::new(Config::default()),
            chat,
            link: None,
            inbox: VecDeque::new(),
            http: Vec::new(),
        }
    }
}

struct World {
    rng: Rng,
    now: f64,
    server: Server,
    clients: Vec<Client>,
    faults: bool,
    log: Vec<String>,
}

impl World {
    /// Sends a frame to every client of these users whose transport takes it.
    fn send(&mut self, users: &BTreeSet<usize>, conversation: Option<&str>, frame: &ServerFrame) {
        for c in &mut self.clients {
            let Some(link) = &c.link else { continue };
            if !users.contains(&c.user) {
                continue;
            }
            // Sockets get a conversation's messages and replies once joined; polls get all of
            // the user's.
            if let Some(id) = conversation {
                if link.transport == Transport::WebSocket && !link.joined.contains(id) {
                    continue;
                }
            }
            c.inbox.push_back(frame.clone());
        }
    }

    fn members(&self, id: &str) -> BTreeSet<usize> {
        self.server.conversations[id].members.clone()
    }

    fn touch_entries(&mut self, users: &BTreeSet<usize>, id: &str, version: u64) {
        for u in users {
            self.server.entries.insert((*u, id.to_owned()), version);
            self.server.tombstones.remove(&(*u, id.to_owned()));
        }
    }

    fn store(&mut self, id: &str, message_id: String, sender: (String, String, bool), content: String) -> Message {
        let seq = self.server.conversations[id].messages.len() as i64 + 1;
        let clock = self.server.clock;
        let message = Message {
            id: message_id,
            seq,
            client_id: None,
            sender_id: sender.0,
            sender_name: sender.1,
            content,
            timestamp: ts(clock),
            is_ai: sender.2,
            interrupted: false,
        };
        self.server.conversations.get_mut(id).unwrap().messages.push(message.clone());
        message
    }

    fn publish(&mut self, id: &str, message: &Message, end: bool) {
        let version = self.server.bump();
        let members = self.members(id);
        self.touch_entries(&members, id, version);
        let frame = if end {
            ServerFrame::StreamEnd {
                conversation_id: id.into(),
                message_id: message.id.clone(),
                interrupted: false,
                message: message.clone(),
            }
        } else {
            ServerFrame::NewMessage { conversation_id: id.into(), message: message.clone(), timestamp: String::new() }
        };
        self.send(&members, Some(id), &frame);
        let update = ServerFrame::ConversationUpdate {
            conversation_id: id.into(),
            last_message: LastMessage::from(message),
            version,
            timestamp: String::new(),
        };
        self.send(&members, None, &update);
    }

    fn upsert_to(&mut self, users: &BTreeSet<usize>, id: &str, version: u64) {
        for u in users.clone() {
            let summary = self.server.summary(u, id);
            let frame = ServerFrame::ConversationUpserted {
                conversation: Box::new(summary),
                version,
                timestamp: String::new(),
            };
            self.send(&BTreeSet::from([u]), None, &frame);
        }
    }

    fn remove_member(&mut self, id: &str, user: usize, reason: RemovalReason) {
        let version = self.server.bump();
        self.server.conversations.get_mut(id).unwrap().members.remove(&user);
        self.server.entries.remove(&(user, id.to_owned()));
        self.server.tombstones.insert((user, id.to_owned()), version);
        for c in self.clients.iter_mut().filter(|c| c.user == user) {
            if let Some(link) = &mut c.link {
                link.joined.remove(id);
            }
        }
        let frame =
            ServerFrame::ConversationRemoved { conversation_id: id.into(), reason, version, timestamp: String::new() };
        self.send(&BTreeSet::from([user]), None, &frame);
        let members = self.members(id);
        self.touch_entries(&members, id, version);
        self.upsert_to(&members, id, version);
    }

    /// One random thing happens on the server.
    fn server_step(&mut self) {
        let ids: Vec<String> = self.server.conversations.keys().cloned().collect();
        let id = ids[self.rng.below(ids.len())].clone();
        match self.rng.below(20) {
            0..=5 => {
                let members: Vec<usize> = self.members(&id).into_iter().collect();
                if members.is_empty() {
                    return;
                }
                let u = members[self.rng.below(members.len())];
                self.server.clock += 1;
                let n = self.server.next_id;
                self.server.next_id += 1;
                let m = self.store(&id, format!("m{n}"), (user_id(u), username(u), false), format!("hi {n} from {u}"));
                self.log.push(format!("message {id}#{} by {u}", m.seq));
                self.publish(&id, &m, false);
            }
            6 => {
                // A reader elsewhere (another device) reads it.
                let members: Vec<usize> = self.members(&id).into_iter().collect();
                if members.is_empty() {
                    return;
                }
                let u = members[self.rng.below(members.len())];
                let seq = self.server.conversations[&id].messages.len() as i64;
                self.read(u, &id, seq);
            }
            7 => {
                let creator = self.rng.below(USERS);
                let mut members = BTreeSet::from([creator]);
                for u in 0..USERS {
                    if self.rng.chance(50) {
                        members.insert(u);
                    }
                }
                let persona = self.rng.chance(50).then(|| self.rng.below(PERSONAS.len()));
                let n = self.server.next_id;
                self.server.next_id += 1;
                let new_id = format!("c{n}");
                let (kind, members) = match persona {
                    Some(_) if self.rng.chance(50) => (ConversationKind::Direct, BTreeSet::from([creator])),
                    _ => (ConversationKind::Room, members),
                };
                let version = self.server.bump();
                self.server.conversations.insert(
                    new_id.clone(),
                    Conv { kind, title: format!("room {n}"), members: members.clone(), persona, messages: Vec::new() },
                );
                self.log.push(format!("create {new_id} {members:?}"));
                self.touch_entries(&members, &new_id, version);
                self.upsert_to(&members, &new_id, version);
            }
            8 => {
                let c = &self.server.conversations[&id];
                if c.kind != ConversationKind::Room || id == "lobby" {
                    return;
                }
                let u = self.rng.below(USERS);
                if c.members.contains(&u) {
                    let reason = if self.rng.chance(50) { RemovalReason::Left } else { RemovalReason::Removed };
                    self.log.push(format!("remove {u} from {id}"));
                    self.remove_member(&id, u, reason);
                } else {
                    self.log.push(format!("add {u} to {id}"));
                    let version = self.server.bump();
                    self.server.conversations.get_mut(&id).unwrap().members.insert(u);
                    let members = self.members(&id);
                    self.touch_entries(&members, &id, version);
                    self.upsert_to(&members, &id, version);
                }
            }
            9 => {
                let c = &self.server.conversations[&id];
                if c.kind != ConversationKind::Room || id == "lobby" || c.members.is_empty() {
                    return;
                }
                let version = self.server.bump();
                let title = format!("renamed {version}");
                self.server.conversations.get_mut(&id).unwrap().title = title;
                let members = self.members(&id);
                self.touch_entries(&members, &id, version);
                self.upsert_to(&members, &id, version);
            }
            10 => {
                let u = self.rng.below(USERS);
                let online = !self.server.online.contains(&u);
                if online {
                    self.server.online.insert(u);
                } else {
                    self.server.online.remove(&u);
                }
                let frame = ServerFrame::PresenceUpdate {
                    user_id: user_id(u),
                    username: username(u),
                    online,
                    last_seen: None,
                    timestamp: String::new(),
                };
                self.send(&(0..USERS).collect(), None, &frame);
            }
            11 => {
                let p = self.rng.below(PERSONAS.len());
                let status = [PersonaState::Online, PersonaState::Busy, PersonaState::Offline][self.rng.below(3)];
                self.set_persona(p, status);
            }
            12 | 13 => {
                // A persona starts a reply.
                let c = &self.server.conversations[&id];
                if c.members.is_empty() || self.server.replies.iter().any(|r| r.conversation_id == id) {
                    return;
                }
                let persona = c.persona.unwrap_or_else(|| self.rng.below(PERSONAS.len()));
                let n = self.server.next_id;
                self.server.next_id += 1;
                let words = 3 + self.rng.below(12);
                let full: Vec<char> = (0..words).map(|w| format!("wörd{w}-{n} ")).collect::<String>().chars().collect();
                let message_id = format!("r{n}");
                self.log.push(format!("reply {message_id} starts in {id}"));
                self.server.replies.push(Reply {
                    conversation_id: id.clone(),
                    message_id: message_id.clone(),
                    persona,
                    full,
                    sent: 0,
                });
                self.set_persona(persona, PersonaState::Responding);
                let members = self.members(&id);
                let frame = ServerFrame::StreamStart {
                    conversation_id: id.clone(),
                    message_id,
                    persona_id: format!("p{persona}"),
                };
                self.send(&members, Some(&id), &frame);
            }
            _ => {
                // A reply goes on, or ends.
                if self.server.replies.is_empty() {
                    return;
                }
                let i = self.rng.below(self.server.replies.len());
                let r = &mut self.server.replies[i];
                if r.sent < r.full.len() {
                    let n = (1 + self.rng.below(6)).min(r.full.len() - r.sent);
                    let frame = ServerFrame::StreamDelta {
                        conversation_id: r.conversation_id.clone(),
                        message_id: r.message_id.clone(),
                        offset: r.sent as u64,
                        text: r.full[r.sent..r.sent + n].iter().collect(),
                    };
                    r.sent += n;
                    let id = r.conversation_id.clone();
                    let members = self.members(&id);
                    self.send(&members, Some(&id), &frame);
                } else {
                    let r = self.server.replies.remove(i);
                    let persona = r.persona;
                    let text: String = r.full.iter().collect();
                    self.server.clock += 1;
                    let m = self.store(
                        &r.conversation_id,
                        r.message_id.clone(),
                        (format!("p{persona}"), PERSONAS[persona].into(), true),
                        text,
                    );
                    self.log.push(format!("reply {} ends as {}#{}", r.message_id, r.conversation_id, m.seq));
                    self.publish(&r.conversation_id, &m, true);
                    if !self.server.replies.iter().any(|x| x.persona == persona) {
                        self.set_persona(persona, PersonaState::Online);
                    }
                }
            }
        }
    }

    fn set_persona(&mut self, p: usize, status: PersonaState) {
        if self.server.personas[p] == status {
            return;
        }
        // A persona streaming stays responding until its replies end.
        if self.server.replies.iter().any(|r| r.persona == p) && status != PersonaState::Responding {
            return;
        }
        self.server.personas[p] = status;
        let frame = ServerFrame::PersonaStatus {
            persona_id: format!("p{p}"),
            status,
            last_seen: None,
            timestamp: String::new(),
        };
        self.send(&(0..USERS).collect(), None, &frame);
    }

    fn read(&mut self, user: usize, id: &str, seq: i64) {
        if !self.server.conversations[id].members.contains(&user) {
            return;
        }
        let key = (user, id.to_owned());
        if self.server.last_read.get(&key).copied().unwrap_or(0) >= seq {
            return;
        }
        self.log.push(format!("read {id} by {user} to {seq}"));
        self.server.last_read.insert(key, seq);
        let version = self.server.bump();
        let users = BTreeSet::from([user]);
        self.touch_entries(&users, id, version);
        self.upsert_to(&users, id, version);
    }

    /// A client's request reaches the server.
    fn request(&mut self, c: usize, action: Action) {
        let user = self.clients[c].user;
        let Some(transport) = self.clients[c].link.as_ref().map(|l| l.transport) else {
            // Nothing is up: sends fail (HTTP fetches still go out; they may fail too).
            match action {
                Action::Send(_) => return,
                _ if self.faults && self.rng.chance(50) => return,
                _ => {}
            }
            return self.http_request(c, action);
        };
        match action {
            Action::PostSync { since, ask } => {
                let answer = self.server.sync(user, since);
                self.clients[c].http.push(Http::Sync(ask, Box::new(answer)));
            }
            Action::Send(ClientFrame::Sync { since }) => {
                let answer = self.server.sync(user, since);
                assert_eq!(transport, Transport::WebSocket, "sync goes by POST while polling");
                self.clients[c].inbox.push_back(ServerFrame::SyncState(Box::new(answer.clone())));
                // The leading tab relays frames to the others.
                if self.rng.chance(30) {
                    for (i, other) in self.clients.iter_mut().enumerate() {
                        if i != c && other.user == user && other.link.is_some() {
                            other.inbox.push_back(ServerFrame::SyncState(Box::new(answer.clone())));
                        }
                    }
                }
            }
            Action::Send(ClientFrame::JoinConversation { conversation_id, after_seq }) => {
                let Some(conv) = self.server.conversations.get(&conversation_id) else { return };
                if !conv.members.contains(&user) {
                    return;
                }
                let after = after_seq.unwrap_or(0);
                let messages: Vec<Message> = conv.messages.iter().filter(|m| m.seq > after).cloned().collect();
                if transport == Transport::Polling {
                    self.clients[c].http.push(Http::Fill { conversation_id, messages });
                    return;
                }
                let client = &mut self.clients[c];
                client.link.as_mut().unwrap().joined.insert(conversation_id.clone());
                for m in messages {
                    client.inbox.push_back(ServerFrame::NewMessage {
                        conversation_id: conversation_id.clone(),
                        message: m,
                        timestamp: String::new(),
                    });
                }
                for r in self.server.replies.iter().filter(|r| r.conversation_id == conversation_id) {
                    client.inbox.push_back(ServerFrame::StreamStart {
                        conversation_id: conversation_id.clone(),
                        message_id: r.message_id.clone(),
                        persona_id: format!("p{}", r.persona),
                    });
                    client.inbox.push_back(ServerFrame::StreamDelta {
                        conversation_id: conversation_id.clone(),
                        message_id: r.message_id.clone(),
                        offset: 0,
                        text: r.full[..r.sent].iter().collect(),
                    });
                }
            }
            Action::Send(_) => {}
            other => self.http_request(c, other),
        }
    }

    fn http_request(&mut self, c: usize, action: Action) {
        let user = self.clients[c].user;
        let member = |s: &Server, id: &str| s.conversations.get(id).is_some_and(|x| x.members.contains(&user));
        match action {
            Action::LoadLatest(id) if member(&self.server, &id) => {
                let all = &self.server.conversations[&id].messages;
                let messages = all[all.len().saturating_sub(50)..].to_vec();
                let has_more = all.len() > 50;
                self.clients[c].http.push(Http::Latest { conversation_id: id, messages, has_more });
            }
            Action::FillGap { conversation_id, from, upto } if member(&self.server, &conversation_id) => {
                let messages = self.server.conversations[&conversation_id]
                    .messages
                    .iter()
                    .filter(|m| m.seq > from && m.seq < upto)
                    .cloned()
                    .collect();
                self.clients[c].http.push(Http::Fill { conversation_id, messages });
            }
            Action::ReportRead { conversation_id, seq } => {
                self.read(user, &conversation_id, seq);
                self.clients[c].http.push(Http::Read { conversation_id, seq });
            }
            _ => {}
        }
    }

    fn feed(&mut self, c: usize, event: Event) {
        if let Ok(t) = std::env::var("CONVERGE_TRACE") {
            if t == c.to_string() && !matches!(event, Event::Tick) {
                let held: Vec<_> = self.clients[c]
                    .chat
                    .conversations
                    .iter()
                    .map(|x| (x.id.clone(), x.last_seq, x.unread_count))
                    .collect();
                self.log.push(format!("  client {c} <- {event:?}\n     held {held:?}"));
            }
        }
        let client = &mut self.clients[c];
        let actions = client.core.handle(self.now, event, &mut client.chat);
        if std::env::var("CONVERGE_TRACE").is_ok_and(|t| t == c.to_string()) {
            let shown: Vec<&Action> = actions.iter().filter(|a| !matches!(a, Action::WakeAt(_))).collect();
            if !shown.is_empty() {
                self.log.push(format!("  client {c} -> {shown:?}"));
            }
        }
        for a in actions {
            self.request(c, a);
        }
    }

    fn connect(&mut self, c: usize) {
        let transport = if self.rng.chance(60) { Transport::WebSocket } else { Transport::Polling };
        self.log.push(format!("client {c} up over {transport:?}"));
        self.clients[c].link = Some(Link { transport, joined: BTreeSet::new() });
        self.clients[c].inbox.clear();
        self.feed(c, Event::TransportUp(transport));
    }

    /// One random thing happens to a client.
    fn client_step(&mut self, c: usize) {
        let roll = self.rng.below(100);
        let client = &mut self.clients[c];
        if self.faults && roll < 3 && client.link.is_some() {
            // The transport dies: what was on its way is lost.
            self.log.push(format!("client {c} down"));
            client.link = None;
            client.inbox.clear();
            self.feed(c, Event::TransportDown);
        } else if roll < 6 && client.link.is_none() {
            self.connect(c);
        } else if self.faults && roll < 8 && client.link.is_some() {
            // Switches transport (a probe took over, or polling was forced).
            self.clients[c].link = None;
            self.clients[c].inbox.clear();
            self.feed(c, Event::TransportDown);
            self.connect(c);
        } else if self.faults && roll < 9 {
            // Reloaded: all it held is gone but the open conversation.
            self.log.push(format!("client {c} reloads"));
            let open = client.core.open().map(str::to_owned);
            let user = client.user;
            self.clients[c] = Client::new(user);
            self.feed(c, Event::Start { remembered: open });
            self.connect(c);
        } else if self.faults && roll < 12 && !client.inbox.is_empty() {
            let i = self.rng.below(client.inbox.len());
            let frame = client.inbox[i].clone();
            client.inbox.insert(i, frame);
        } else if roll < 16 {
            // The user opens a conversation (maybe mid-reply).
            let ids: Vec<String> = client.chat.conversations.iter().map(|x| x.id.clone()).collect();
            if !ids.is_empty() {
                let id = ids[self.rng.below(ids.len())].clone();
                self.log.push(format!("client {c} opens {id}"));
                self.feed(c, Event::Open(id));
            }
        } else if roll < 18 {
            let hidden = self.rng.chance(30);
            self.feed(c, Event::Visibility { hidden });
        } else if roll < 30 && !client.http.is_empty() {
            let i = self.rng.below(client.http.len());
            let answer = client.http.remove(i);
            self.answer(c, answer);
        } else if let Some(frame) = client.inbox.pop_front() {
            self.feed(c, Event::Frame(frame));
        }
    }

    fn answer(&mut self, c: usize, answer: Http) {
        match answer {
            Http::Sync(ask, state) => self.feed(c, Event::SyncAnswer { ask, state }),
            Http::Fill { conversation_id, messages } => {
                self.clients[c].chat.add_history(&conversation_id, messages);
            }
            Http::Latest { conversation_id, messages, has_more } => {
                self.feed(c, Event::Loaded { conversation_id, page: Some((messages, has_more)) })
            }
            Http::Read { conversation_id, seq } => self.feed(c, Event::ReadReported { conversation_id, seq }),
        }
    }

    /// Nothing more happens on the server; the network heals and every client catches up.
    fn settle(&mut self) {
        self.faults = false;
        for c in 0..self.clients.len() {
            if self.clients[c].link.is_none() {
                self.connect(c);
            }
        }
        for _ in 0..200 {
            let mut busy = false;
            for c in 0..self.clients.len() {
                while let Some(frame) = self.clients[c].inbox.pop_front() {
                    busy = true;
                    self.feed(c, Event::Frame(frame));
                }
                while !self.clients[c].http.is_empty() {
                    busy = true;
                    let answer = self.clients[c].http.remove(0);
                    self.answer(c, answer);
                }
            }
            self.now += 1_000.0;
            for c in 0..self.clients.len() {
                self.feed(c, Event::Tick);
            }
            if !busy && self.clients.iter().all(|c| c.inbox.is_empty() && c.http.is_empty()) {
                return;
            }
        }
    }

    /// What differs between a client and the server (empty: converged).
    fn differences(&self, c: usize) -> Vec<String> {
        let client = &self.clients[c];
        let (u, chat, s) = (client.user, &client.chat, &self.server);
        let mut out = Vec::new();
        let want: Vec<ConversationSummary> = s.list(u).iter().map(|id| s.summary(u, id)).collect();
        let key = |x: &ConversationSummary| {
            (x.id.clone(), x.title.clone(), x.last_seq, x.last_message.as_ref().map(|m| m.id.clone()), x.unread_count)
        };
        let mut have: Vec<_> = chat.conversations.iter().map(key).collect();
        have.sort();
        let want: Vec<_> = want.iter().map(key).collect();
        if have != want {
            out.push(format!("list:\n  have {have:?}\n  want {want:?}"));
        }
        let statuses: Vec<PersonaState> =
            (0..PERSONAS.len()).map(|p| chat.persona_status(&format!("p{p}")).unwrap().0).collect();
        if statuses != s.personas {
            out.push(format!("personas: have {statuses:?} want {:?}", s.personas));
        }
        for x in chat.conversations.iter().filter(|x| x.persona.is_some()) {
            let p: usize = x.persona.as_ref().unwrap().id[1..].parse().unwrap();
            if x.persona.as_ref().unwrap().status != s.personas[p] {
                out.push(format!("{}'s persona badge is {:?}", x.id, x.persona.as_ref().unwrap().status));
            }
        }
        if chat.online != s.online_users() {
            out.push(format!("online: have {:?} want {:?}", chat.online, s.online_users()));
        }
        for id in client.core.joined() {
            let Some(conv) = s.conversations.get(id) else { continue };
            let log: Vec<(i64, String)> =
                chat.log(id).map(|l| l.stored().map(|m| (m.seq, m.content.clone())).collect()).unwrap_or_default();
            let first = log.first().map_or(1, |m| m.0);
            let server: Vec<(i64, String)> =
                conv.messages.iter().filter(|m| m.seq >= first).map(|m| (m.seq, m.content.clone())).collect();
            if log != server {
                out.push(format!("messages of {id}:\n  have {log:?}\n  want {server:?}"));
            }
        }
        for r in &s.replies {
            let text: String = r.full[..r.sent].iter().collect();
            let held = chat.streams.get(&r.message_id).map(|x| x.text.clone());
            let listed = chat.conversation(&r.conversation_id).is_some();
            if client.core.is_joined(&r.conversation_id) && held.as_deref() != Some(text.as_str()) {
                out.push(format!("reply {} in {}: have {held:?} want {text:?}", r.message_id, r.conversation_id));
            } else if listed && held.is_some_and(|h| !text.starts_with(&h)) {
                out.push(format!("reply {} is not a prefix", r.message_id));
            }
        }
        for (id, st) in &chat.streams {
            if !s.replies.iter().any(|r| &r.message_id == id) {
                out.push(format!("a ghost reply {id} in {} ({:?})", st.conversation_id, st.text));
            }
        }
        out
    }
}

fn run(seed: u64) -> Result<(), String> {
    let mut rng = Rng(seed);
    // Three users; the first has two tabs.
    let clients = vec![Client::new(0), Client::new(0), Client::new(1), Client::new(2)];
    let steps = 150 + rng.below(250);
    let mut w = World { rng, now: 0.0, server: Server::new(), clients, faults: true, log: Vec::new() };
    for c in 0..w.clients.len() {
        w.feed(c, Event::Start { remembered: None });
        if w.rng.chance(70) {
            w.connect(c);
        }
    }
    for _ in 0..steps {
        w.now += w.rng.below(400) as f64;
        if w.rng.chance(45) {
            w.server_step();
        } else {
            let c = w.rng.below(w.clients.len());
            w.client_step(c);
        }
        if w.rng.chance(10) {
            for c in 0..w.clients.len() {
                w.feed(c, Event::Tick);
            }
        }
    }
    w.settle();
    let mut report = Vec::new();
    for c in 0..w.clients.len() {
        for d in w.differences(c) {
            report.push(format!("client {c} (user {}): {d}", w.clients[c].user));
        }
    }
    if report.is_empty() {
        Ok(())
    } else {
        let keep = if std::env::var("CONVERGE_TRACE").is_ok() { usize::MAX } else { 25 };
        let tail: Vec<&String> = w.log.iter().rev().take(keep).rev().collect();
        Err(format!("{}\nlast events: {tail:#?}", report.join("\n")))
    }
}

#[test]
fn every_client_converges_to_the_servers_state_under_faults() {
    let (first, cases) = seed("every_client_converges_to_the_servers_state_under_faults");
    for case in 0..cases as u64 {
        let seed = first.wrapping_add(case);
        if let Err(e) = run(seed) {
            panic!("seed {seed} did not converge (replay with PROPS_SEED={seed} PROPS_CASES=1):\n{e}");
        }
    }
}
