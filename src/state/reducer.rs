//! The chat state and the one reducer that applies server frames to it. Plain Rust: tested
//! natively, frame by frame.

use std::collections::{BTreeMap, HashMap};

use persona_chat_protocol::http::ConversationSummary;
use persona_chat_protocol::{Ack, LastMessage, Message, OnlineUser, ServerFrame, User};

/// Where an own message is on its way.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Pending,
    Sent,
    Failed(String),
}

/// A line of the chat view: a stored message, or an own message not stored yet.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatLine {
    /// Stable across the pending -> stored change: the client_id when there is one.
    pub key: String,
    pub seq: Option<i64>,
    pub sender_id: String,
    pub sender_name: String,
    pub content: String,
    pub timestamp: String,
    pub is_ai: bool,
    pub delivery: Delivery,
}

/// An own message waiting for its ack.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingMessage {
    pub client_id: String,
    pub content: String,
    pub timestamp: String,
    pub delivery: Delivery,
}

/// One conversation's messages: stored ones by seq (so each shows once, in order), and own
/// ones still on their way.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationLog {
    stored: BTreeMap<i64, Message>,
    pending: Vec<PendingMessage>,
}

impl ConversationLog {
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

    pub fn len(&self) -> usize {
        self.stored.len() + self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stored messages in seq order, then own messages not stored yet.
    pub fn lines(&self, me: Option<&User>) -> Vec<ChatLine> {
        let stored = self.stored.values().map(|m| ChatLine {
            key: m.client_id.clone().unwrap_or_else(|| m.id.clone()),
            seq: Some(m.seq),
            sender_id: m.sender_id.clone(),
            sender_name: m.sender_name.clone(),
            content: m.content.clone(),
            timestamp: m.timestamp.clone(),
            is_ai: m.is_ai,
            delivery: Delivery::Sent,
        });
        let pending = self.pending.iter().map(|p| ChatLine {
            key: p.client_id.clone(),
            seq: None,
            sender_id: me.map(|u| u.id.clone()).unwrap_or_default(),
            sender_name: me.map(|u| u.username.clone()).unwrap_or_default(),
            content: p.content.clone(),
            timestamp: p.timestamp.clone(),
            is_ai: false,
            delivery: p.delivery.clone(),
        });
        stored.chain(pending).collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatState {
    pub me: Option<User>,
    pub conversations: Vec<ConversationSummary>,
    pub logs: HashMap<String, ConversationLog>,
    pub online: Vec<OnlineUser>,
}

impl ChatState {
    pub fn log(&self, conversation_id: &str) -> Option<&ConversationLog> {
        self.logs.get(conversation_id)
    }

    pub fn last_seq(&self, conversation_id: &str) -> i64 {
        self.logs.get(conversation_id).map_or(0, ConversationLog::last_seq)
    }

    /// A message the user just wrote: shown at once as pending.
    pub fn add_pending(&mut self, conversation_id: &str, pending: PendingMessage) {
        self.logs.entry(conversation_id.to_owned()).or_default().pending.push(pending);
    }

    /// Stored messages fetched over HTTP.
    pub fn add_history(&mut self, conversation_id: &str, messages: Vec<Message>) {
        let log = self.logs.entry(conversation_id.to_owned()).or_default();
        for m in messages {
            log.insert(m);
        }
    }

    /// Applies one server frame.
    pub fn apply(&mut self, frame: ServerFrame) {
        match frame {
            ServerFrame::Hello { user, .. } => self.me = Some(user),
            ServerFrame::NewMessage { conversation_id, message, .. } => {
                self.touch_conversation(&conversation_id, LastMessage::from(&message));
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
            ServerFrame::ConversationUpdate { conversation_id, last_message, .. } => {
                self.touch_conversation(&conversation_id, last_message);
            }
            ServerFrame::OnlineUsers { users, .. } => self.online = users,
            ServerFrame::PresenceUpdate { user_id, username, online, .. } => {
                self.online.retain(|u| u.user_id != user_id);
                if online {
                    self.online.push(OnlineUser { user_id, username });
                    self.online.sort_by(|a, b| a.username.cmp(&b.username));
                }
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
    }

    /// Moves a conversation to the top of the list with its newest message.
    fn touch_conversation(&mut self, conversation_id: &str, last: LastMessage) {
        if let Some(i) = self.conversations.iter().position(|c| c.id == conversation_id) {
            let mut c = self.conversations.remove(i);
            if c.last_message.as_ref().is_none_or(|m| m.seq <= last.seq) {
                c.last_seq = c.last_seq.max(last.seq);
                c.last_message = Some(last);
            }
            self.conversations.insert(0, c);
        }
    }
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
        s.add_pending("c", PendingMessage { client_id: "k1".into(), content: "hi".into(), timestamp: "t".into(), delivery: Delivery::Pending });
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
    fn a_refused_send_turns_failed_with_the_reason() {
        let mut s = ChatState::default();
        s.add_pending("c", PendingMessage { client_id: "k9".into(), content: "x".into(), timestamp: "t".into(), delivery: Delivery::Pending });
        s.apply(ServerFrame::Error { code: ErrorCode::TooLong, message: "too long".into(), reference: Some("k9".into()), timestamp: "t".into() });
        assert!(matches!(&s.log("c").unwrap().lines(None)[0].delivery, Delivery::Failed(r) if r.contains("too_long")));
    }

    #[test]
    fn presence_updates_the_online_list() {
        let mut s = ChatState::default();
        s.apply(ServerFrame::OnlineUsers { users: vec![OnlineUser { user_id: "a".into(), username: "ada".into() }], timestamp: "t".into() });
        s.apply(ServerFrame::PresenceUpdate { user_id: "b".into(), username: "bob".into(), online: true, last_seen: None, timestamp: "t".into() });
        assert_eq!(s.online.len(), 2);
        s.apply(ServerFrame::PresenceUpdate { user_id: "a".into(), username: "ada".into(), online: false, last_seen: Some("t".into()), timestamp: "t".into() });
        assert_eq!(s.online.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), vec!["bob"]);
    }
}
