//! The conversation list: avatar and status badge, the last message, its time and the unread
//! count, newest activity first (rows move as conversation_update frames arrive).

use leptos::prelude::*;
use persona_chat_protocol::http::{ConversationKind, ConversationSummary};

use super::avatar::{status_line, Avatar};
use super::time::short_time;
use crate::clock::Clock;
use crate::state::contexts::{ChatCtx, ConnectionCtx};

/// The preview line: "bob: see you", "You: see you" for own messages.
pub fn preview(summary: &ConversationSummary, me: Option<&str>) -> String {
    match &summary.last_message {
        None => "No messages yet".to_owned(),
        Some(m) => {
            let who = if Some(m.sender_name.as_str()) == me { "You" } else { m.sender_name.as_str() };
            let text: String = m.content.chars().take(80).collect::<String>().replace('\n', " ");
            format!("{who}: {text}")
        }
    }
}

/// How many members of a room are online, when its members are known (the Lobby holds
/// everyone, so it counts all online users) and a socket is up: who is online is only known
/// on a socket.
pub fn online_in(ctx: &ChatCtx, connection: &ConnectionCtx, conversation_id: &str) -> Option<usize> {
    if !matches!(connection.status.get(), crate::socket::LinkState::Connected { .. }) {
        return None;
    }
    ctx.chat.with(|c| {
        let summary = c.conversation(conversation_id)?;
        if summary.kind != ConversationKind::Room {
            return None;
        }
        if summary.title == "Lobby" {
            // Everyone is in the Lobby.
            return Some(c.online.len());
        }
        c.members.get(conversation_id).map(|members| {
            members.iter().filter(|m| m.kind == "user" && c.online.iter().any(|u| u.user_id == m.id)).count()
        })
    })
}

#[component]
pub fn ConversationList(#[prop(into)] selected: Signal<Option<String>>) -> impl IntoView {
    let ctx = ChatCtx::expect();
    let ids = Memo::new(move |_| ctx.chat.with(|c| c.conversations.iter().map(|c| c.id.clone()).collect::<Vec<_>>()));
    view! {
        <nav class="conversation-list" aria-label="Conversations">
            <ul>
                <For each=move || ids.get() key=|id| id.clone() children=move |id| view! { <ConversationRow id=id selected=selected /> } />
            </ul>
            {move || ids.with(Vec::is_empty).then(|| view! { <p class="empty">"Loading conversations…"</p> })}
        </nav>
    }
}

#[component]
fn ConversationRow(id: String, selected: Signal<Option<String>>) -> impl IntoView {
    let ctx = ChatCtx::expect();
    let connection = ConnectionCtx::expect();
    let clock = Clock::expect();
    let summary = {
        let id = id.clone();
        Memo::new(move |_| ctx.chat.with(|c| c.conversation(&id).cloned()))
    };
    let persona_status = {
        let id = id.clone();
        Memo::new(move |_| ctx.chat.with(|c| c.persona_status_of(&id)))
    };
    let badge = Signal::derive(move || persona_status.get().map(|(s, _)| s));
    let me = Memo::new(move |_| ctx.chat.with(|c| c.me.as_ref().map(|u| u.username.clone())));
    let is_selected = {
        let id = id.clone();
        Memo::new(move |_| selected.get().as_deref() == Some(id.as_str()))
    };
    let online = {
        let id = id.clone();
        Memo::new(move |_| online_in(&ctx, &connection, &id))
    };
    let href = format!("/c/{id}");
    move || {
        let s = summary.get()?;
        let room = s.kind == ConversationKind::Room;
        let title = s.title.clone();
        let unread = s.unread_count;
        Some(view! {
            <li>
                <a class="conversation-row" href=href.clone() data-id=s.id.clone() data-unread=unread
                    class:selected=move || is_selected.get()
                    aria-current=move || is_selected.get().then_some("page")>
                    <Avatar name=title.clone() room=room status=badge />
                    <span class="row-main">
                        <span class="row-top">
                            <span class="row-title">{title}</span>
                            <time class="row-time">{move || summary.with(|s| s.as_ref().and_then(|s| s.last_message.as_ref().map(|m| short_time(&m.timestamp, clock.0.get())))).unwrap_or_default()}</time>
                        </span>
                        <span class="row-bottom">
                            <span class="row-preview">{move || summary.with(|s| s.as_ref().map(|s| preview(s, me.get().as_deref()))).unwrap_or_default()}</span>
                            {(unread > 0).then(|| view! {
                                <span class="unread" aria-label=format!("{unread} unread")>{if unread > 99 { "99+".to_owned() } else { unread.to_string() }}</span>
                            })}
                        </span>
                        <span class="row-status">
                            {move || match persona_status.get() {
                                Some((status, last_seen)) => Some(status_line(status, last_seen.as_deref(), clock.0.get() as i64)),
                                None => online.get().map(|n| format!("{n} online")),
                            }}
                        </span>
                    </span>
                </a>
            </li>
        })
    }
}

/// People online now, as dots with names.
#[component]
pub fn OnlineStrip() -> impl IntoView {
    let ctx = ChatCtx::expect();
    let connection = ConnectionCtx::expect();
    let live = Memo::new(move |_| matches!(connection.status.get(), crate::socket::LinkState::Connected { .. }));
    let people = Memo::new(move |_| ctx.chat.with(|c| c.online.iter().map(|u| u.username.clone()).collect::<Vec<_>>()));
    view! {
        <section class="online-strip" aria-label="Online now">
            <h3>{move || if live.get() { format!("Online now · {}", people.with(Vec::len)) } else { "Online now: shown when connected".to_owned() }}</h3>
            <ul>
                {move || live.get().then(|| people.get().into_iter().map(|name| view! {
                    <li><span class="dot" aria-hidden="true"></span>{name}</li>
                }).collect_view())}
            </ul>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use persona_chat_protocol::LastMessage;

    #[test]
    fn previews_name_the_sender_and_call_own_messages_you() {
        let mut s = ConversationSummary {
            id: "c".into(),
            kind: ConversationKind::Room,
            title: "Lobby".into(),
            persona: None,
            last_message: None,
            last_seq: 0,
            unread_count: 0,
        };
        assert_eq!(preview(&s, Some("me")), "No messages yet");
        s.last_message = Some(LastMessage {
            id: "m".into(),
            seq: 1,
            sender_name: "bob".into(),
            content: "line one\nline two".into(),
            timestamp: "t".into(),
        });
        assert_eq!(preview(&s, Some("me")), "bob: line one line two");
        assert_eq!(preview(&s, Some("bob")), "You: line one line two");
    }
}
