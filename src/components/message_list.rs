//! The messages of one conversation, in seq order, own ones on the right with their delivery.

use leptos::prelude::*;

use crate::state::reducer::{ChatLine, Delivery};
use crate::state::SocketContext;

#[component]
pub fn MessageList(conversation_id: Signal<Option<String>>) -> impl IntoView {
    let ctx = SocketContext::expect();
    let lines = Memo::new(move |_| {
        let id = conversation_id.get();
        ctx.chat.with(|c| match id.as_deref().and_then(|id| c.log(id)) {
            Some(log) => log.lines(c.me.as_ref()),
            None => Vec::new(),
        })
    });
    let me = Memo::new(move |_| ctx.chat.with(|c| c.me.as_ref().map(|u| u.id.clone())));
    view! {
        <ol class="messages" aria-live="polite" aria-label="Messages">
            <For
                each=move || lines.get()
                key=|line: &ChatLine| (line.key.clone(), line.seq, delivery_tag(&line.delivery))
                children=move |line| {
                    let own = me.get_untracked().as_deref() == Some(line.sender_id.as_str());
                    view! { <MessageRow line=line own=own /> }
                }
            />
        </ol>
    }
}

fn delivery_tag(d: &Delivery) -> &'static str {
    match d {
        Delivery::Pending => "pending",
        Delivery::Sent => "sent",
        Delivery::Failed(_) => "failed",
    }
}

#[component]
fn MessageRow(line: ChatLine, own: bool) -> impl IntoView {
    let time = line.timestamp.get(11..16).unwrap_or_default().to_owned();
    let status = match &line.delivery {
        Delivery::Pending => Some("Sending…".to_owned()),
        Delivery::Failed(reason) => Some(format!("Not sent: {reason}")),
        Delivery::Sent => None,
    };
    view! {
        <li class="message" class:own=own class:ai=line.is_ai data-delivery=delivery_tag(&line.delivery) data-seq=line.seq.map(|s| s.to_string())>
            <div class="meta">
                <span class="sender">{line.sender_name}</span>
                <time datetime=line.timestamp.clone()>{time}</time>
            </div>
            // Text, never HTML: Leptos inserts it as a text node.
            <p class="content">{line.content}</p>
            {status.map(|s| view! { <span class="delivery">{s}</span> })}
        </li>
    }
}
