//! The messages of one conversation. Only a window of lines near the viewport is in the page
//! (a conversation of 10,000 messages stays light); scrolling moves the window and, at the
//! oldest held message, loads older history, keeping the reader's place. At the bottom it
//! follows new messages; scrolled up, it counts them on a "N new messages" button instead.

use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;

use super::icons::{Icon, STOP};
use super::time::clock_time;
use crate::state::contexts::ChatCtx;
use crate::state::reducer::{ChatLine, Delivery, LineKind};

/// Lines in the page at once.
pub const WINDOW: usize = 120;
/// Lines the window moves by.
pub const STEP: usize = 40;
/// Within this many pixels of the bottom counts as at the bottom.
const BOTTOM_SLACK: f64 = 48.0;
/// Within this many pixels of the top, older lines are brought in.
const TOP_SLACK: f64 = 400.0;

fn delivery_tag(d: &Delivery) -> &'static str {
    match d {
        Delivery::Pending => "pending",
        Delivery::Sent => "sent",
        Delivery::Failed(_) => "failed",
    }
}

/// "1 new message", "3 new messages".
pub fn new_messages_text(n: usize) -> String {
    if n == 1 {
        "1 new message".to_owned()
    } else {
        format!("{n} new messages")
    }
}

struct Scroller(web_sys::HtmlElement);

impl Scroller {
    fn near_bottom(&self) -> bool {
        let e = &self.0;
        (e.scroll_height() as f64 - e.scroll_top() as f64 - e.client_height() as f64) < BOTTOM_SLACK
    }
    fn to_bottom(&self) {
        self.0.set_scroll_top(self.0.scroll_height());
    }
    fn rows(&self) -> Vec<web_sys::HtmlElement> {
        let Ok(Some(list)) = self.0.query_selector("ol.messages") else { return Vec::new() };
        let children = list.children();
        (0..children.length()).filter_map(|i| children.item(i)?.dyn_into::<web_sys::HtmlElement>().ok()).collect()
    }
    /// The first row in view and how far below the top it sits.
    fn anchor(&self) -> Option<(String, f64)> {
        let top = self.0.scroll_top() as f64;
        self.rows()
            .into_iter()
            .find(|r| (r.offset_top() + r.offset_height()) as f64 > top)
            .and_then(|r| Some((r.get_attribute("data-key")?, r.offset_top() as f64 - top)))
    }
    fn restore(&self, (key, offset): &(String, f64)) {
        if let Some(row) =
            self.rows().into_iter().find(|r| r.get_attribute("data-key").as_deref() == Some(key.as_str()))
        {
            self.0.set_scroll_top((row.offset_top() as f64 - offset).round() as i32);
        }
    }
}

#[component]
pub fn MessageList(#[prop(into)] conversation_id: Signal<Option<String>>) -> impl IntoView {
    let ctx = ChatCtx::expect();
    let scroller_ref = NodeRef::<leptos::html::Div>::new();
    let scroller = move || scroller_ref.get_untracked().map(|e| Scroller(e.unchecked_into()));
    // Lines skipped from the newest (0: the window ends at the newest line).
    let back = RwSignal::new(0usize);
    let at_bottom = StoredValue::new(true);
    let anchor = StoredValue::new(None::<(String, f64)>);
    let last_top = StoredValue::new(0.0f64);
    let new_count = RwSignal::new(0usize);
    let loading_older = RwSignal::new(false);
    let announce = RwSignal::new(String::new());
    let me = Memo::new(move |_| ctx.chat.with(|c| c.me.as_ref().map(|u| u.id.clone())));

    let window = Memo::new(move |_| {
        let id = conversation_id.get();
        let back = back.get();
        ctx.chat.with(|c| match id.as_deref().and_then(|id| c.log(id).map(|log| (id, log))) {
            Some((id, log)) => {
                let (lines, total) = log.window(c.me.as_ref(), id, &c.streams, back, WINDOW);
                (lines, total, log.has_older)
            }
            None => (Vec::new(), 0, None),
        })
    });

    // Another conversation: start at its newest message.
    Effect::new(move |_| {
        conversation_id.track();
        back.set(0);
        new_count.set(0);
        at_bottom.set_value(true);
    });

    // After each change of the lines: follow the bottom, or keep the reader's place; count
    // what arrived below while scrolled up.
    Effect::new(move |previous: Option<(Option<String>, Option<String>, usize)>| {
        let conversation = conversation_id.get();
        let (newest, total, newest_line) =
            window.with(|(lines, total, _)| (lines.last().map(|l| l.key.clone()), *total, lines.last().cloned()));
        if let Some((prev_conv, prev_newest, prev_total)) = &previous {
            let arrived = *prev_conv == conversation && *prev_newest != newest && total > *prev_total;
            if arrived {
                if let Some(line) = &newest_line {
                    let own = me.get_untracked().as_deref() == Some(line.sender_id.as_str());
                    if own && line.delivery == Delivery::Pending {
                        // The user just sent: show it.
                        back.set(0);
                        at_bottom.set_value(true);
                    } else if !at_bottom.get_value() {
                        new_count.update(|n| *n += total - prev_total);
                    }
                    if !own && line.kind == LineKind::Message {
                        announce.set(format!("{}: {}", line.sender_name, line.content));
                    }
                }
            }
        }
        let follow = at_bottom.get_value();
        request_animation_frame(move || {
            let Some(s) = scroller() else { return };
            if follow {
                s.to_bottom();
            } else if let Some(a) = anchor.get_value() {
                s.restore(&a);
            }
            anchor.set_value(s.anchor());
        });
        (conversation, newest, total)
    });

    let on_scroll = move |_| {
        let Some(s) = scroller() else { return };
        let near_bottom = s.near_bottom();
        let current_back = back.get_untracked();
        // Only the reader scrolling up stops the following: while messages pour in, our own
        // scroll to the bottom may land short of a bottom that has moved on meanwhile.
        let top = s.0.scroll_top() as f64;
        let went_up = top < last_top.get_value() - 1.0;
        last_top.set_value(top);
        if near_bottom && current_back == 0 {
            at_bottom.set_value(true);
        } else if went_up || current_back > 0 {
            at_bottom.set_value(false);
        }
        anchor.set_value(s.anchor());
        if near_bottom {
            if current_back > 0 {
                back.set(current_back.saturating_sub(STEP));
            } else {
                new_count.set(0);
            }
            return;
        }
        if (s.0.scroll_top() as f64) < TOP_SLACK {
            let (shown, total, has_older) = window.with_untracked(|(l, t, h)| (l.len(), *t, *h));
            let start = total.saturating_sub(current_back).saturating_sub(shown);
            if start > 0 {
                back.set(current_back + start.min(STEP));
            } else if has_older != Some(false) && !loading_older.get_untracked() {
                let Some(id) = conversation_id.get_untracked() else { return };
                loading_older.set(true);
                spawn_local(async move {
                    let more = ctx.load_older(id).await;
                    loading_older.set(false);
                    if more {
                        // Bring the loaded lines into the window at once.
                        let (shown, total) = window.with_untracked(|(l, t, _)| (l.len(), *t));
                        let b = back.get_untracked();
                        let start = total.saturating_sub(b).saturating_sub(shown);
                        if start > 0 {
                            back.set(b + start.min(STEP));
                        }
                    }
                });
            }
        }
    };

    let jump_to_newest = move |_| {
        back.set(0);
        new_count.set(0);
        at_bottom.set_value(true);
        if let Some(s) = scroller() {
            s.to_bottom();
        }
    };

    view! {
        <div class="scroller" node_ref=scroller_ref on:scroll=on_scroll tabindex="0" aria-label="Messages">
            {move || {
                let (has_older, empty, at_start) = window.with(|(l, t, h)| (*h, l.is_empty(), t.saturating_sub(back.get()) <= l.len()));
                if loading_older.get() {
                    Some(view! { <p class="history-edge">"Loading older messages…"</p> }.into_any())
                } else if has_older == Some(false) && !empty && at_start {
                    Some(view! { <p class="history-edge">"The beginning of the conversation"</p> }.into_any())
                } else if empty && conversation_id.get().is_some() {
                    Some(view! { <p class="history-edge">"No messages yet. Say hello!"</p> }.into_any())
                } else {
                    None
                }
            }}
            <ol class="messages">
                <For
                    each=move || window.get().0
                    key=|line: &ChatLine| (line.key.clone(), line.seq, delivery_tag(&line.delivery), line.starts_group, line.shows_delivery, matches!(line.kind, LineKind::Streaming).then(|| line.content.len()))
                    children=move |line| {
                        let own = me.get_untracked().as_deref() == Some(line.sender_id.as_str());
                        view! { <MessageRow line=line own=own conversation_id=conversation_id /> }
                    }
                />
            </ol>
        </div>
        {move || (new_count.get() > 0).then(|| view! {
            <button class="new-messages" on:click=jump_to_newest>"↓ " {new_messages_text(new_count.get())}</button>
        })}
        <div class="visually-hidden" aria-live="polite" aria-atomic="true">{move || announce.get()}</div>
    }
}

#[component]
fn MessageRow(line: ChatLine, own: bool, conversation_id: Signal<Option<String>>) -> impl IntoView {
    let ctx = ChatCtx::expect();
    if line.kind == LineKind::Notice {
        return view! { <li class="notice-line" data-key=line.key.clone()><span>{line.content}</span></li> }.into_any();
    }
    let time = clock_time(&line.timestamp);
    let streaming = line.kind == LineKind::Streaming;
    let key = line.key.clone();
    let delivery = match &line.delivery {
        _ if !own || streaming || !line.shows_delivery => None,
        Delivery::Pending => Some(view! { <span class="delivery">"Sending…"</span> }.into_any()),
        Delivery::Sent if line.seq.is_none() => Some(view! { <span class="delivery">"Sent"</span> }.into_any()),
        Delivery::Sent => None,
        Delivery::Failed(reason) => {
            let (retry_id, discard_id) = (key.clone(), key.clone());
            Some(
                view! {
                    <span class="delivery failed" role="alert">
                        "Not sent: " {reason.clone()}
                        <button class="inline-action" on:click=move |_| ctx.retry(&retry_id)>"Retry"</button>
                        <button class="inline-action" on:click=move |_| ctx.discard(&discard_id)>"Discard"</button>
                    </span>
                }
                .into_any(),
            )
        }
    };
    let stop = streaming.then(|| {
        let message_id = line.message_id.clone().unwrap_or_default();
        view! {
            <button class="stop" on:click=move |_| {
                if let Some(c) = conversation_id.get_untracked() { ctx.stop_response(c, message_id.clone()); }
            }><Icon svg=STOP />"Stop"</button>
        }
    });
    let show_meta = line.starts_group;
    view! {
        <li class="message" class:own=own class:ai=line.is_ai class:streaming=streaming class:continued=!show_meta
            class:interrupted=line.interrupted data-key=line.key.clone() data-delivery=delivery_tag(&line.delivery) data-seq=line.seq.map(|s| s.to_string())>
            {show_meta.then(|| view! {
                <div class="meta">
                    <span class="sender">{if own { "You".to_owned() } else { line.sender_name.clone() }}</span>
                    {line.is_ai.then(|| view! { <span class="ai-tag">"AI"</span> })}
                    <time datetime=line.timestamp.clone()>{time.clone()}</time>
                </div>
            })}
            <div class="bubble" title=(!show_meta).then(|| time.clone())>
                // Text, never HTML: Leptos inserts it as a text node.
                <p class="content">{line.content}{streaming.then(|| view! { <span class="caret" aria-hidden="true"></span> })}</p>
            </div>
            {line.interrupted.then(|| view! { <span class="interrupted-tag">"Interrupted"</span> })}
            {delivery}
            {stop}
        </li>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    #[test]
    fn new_message_counts_in_words() {
        assert_eq!(super::new_messages_text(1), "1 new message");
        assert_eq!(super::new_messages_text(4), "4 new messages");
    }
}
