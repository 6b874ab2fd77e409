//! Where a message is written: Enter sends, Shift+Enter is a new line. The draft of each
//! conversation is kept (switching and reloads); a counter shows near the limit; while the
//! connection is down, sending still works and a banner says when it will go out.

use leptos::prelude::*;
use persona_chat_protocol::{validate_content, MAX_CONTENT_CHARS};

use super::icons::{Icon, SEND};
use crate::socket::LinkState;
use crate::state::contexts::{ChatCtx, ConnectionCtx};

/// Shown from this many characters on.
pub const COUNTER_FROM: usize = MAX_CONTENT_CHARS - 500;

/// The counter's text, when near or over the limit: "4,812 / 5,000".
pub fn counter_text(chars: usize) -> Option<String> {
    (chars >= COUNTER_FROM).then(|| format!("{} / {}", thousands(chars), thousands(MAX_CONTENT_CHARS)))
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Rows for the text area: grows with the text, up to 8.
fn rows_for(text: &str) -> u32 {
    (text.lines().count().max(1) + usize::from(text.ends_with('\n'))).min(8) as u32
}

#[component]
pub fn Composer(#[prop(into)] conversation_id: Signal<Option<String>>) -> impl IntoView {
    let ctx = ChatCtx::expect();
    let connection = ConnectionCtx::expect();
    let draft = RwSignal::new(String::new());
    let me = Memo::new(move |_| ctx.chat.with(|c| c.me.as_ref().map(|u| u.id.clone())));
    let input_ref = NodeRef::<leptos::html::Textarea>::new();
    // Each conversation's draft comes back when it is opened.
    Effect::new(move |_| {
        let (Some(user), Some(id)) = (me.get(), conversation_id.get()) else { return };
        draft.set(crate::storage::load_draft(&user, &id));
    });
    let save = move |text: &str| {
        if let (Some(user), Some(id)) = (me.get_untracked(), conversation_id.get_untracked()) {
            crate::storage::save_draft(&user, &id, text);
        }
    };
    let send = move || {
        let Some(id) = conversation_id.get_untracked() else { return };
        let text = draft.get_untracked();
        if let Ok(content) = validate_content(&text) {
            // The draft stays when the message could not even be queued.
            if ctx.send_message(id, content.to_owned()) {
                draft.set(String::new());
                save("");
            }
        }
        if let Some(input) = input_ref.get_untracked() {
            let _ = input.focus();
        }
    };
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            send();
        }
    };
    let chars = Memo::new(move |_| draft.with(|d| d.chars().count()));
    let invalid = Memo::new(move |_| draft.with(|d| validate_content(d).is_err()));
    let down = Memo::new(move |_| !connection.status.with(LinkState::is_up));
    let waiting = Memo::new(move |_| {
        let id = conversation_id.get();
        ctx.chat.with(|c| {
            id.as_deref().and_then(|id| c.log(id)).map_or(0, |l| {
                l.pending().iter().filter(|p| p.delivery == crate::state::reducer::Delivery::Pending).count()
            })
        })
    });
    view! {
        {move || down.get().then(|| view! {
            <p class="offline-banner" role="status">
                {move || match waiting.get() {
                    0 => "You are offline. You can still write: messages will be sent when the connection is back.".to_owned(),
                    1 => "You are offline. 1 message will be sent when the connection is back.".to_owned(),
                    n => format!("You are offline. {n} messages will be sent when the connection is back."),
                }}
            </p>
        })}
        <form class="composer" on:submit=move |ev| { ev.prevent_default(); send(); }>
            <label for="composer-input" class="visually-hidden">"Message"</label>
            <textarea
                id="composer-input"
                node_ref=input_ref
                rows=move || draft.with(|d| rows_for(d))
                placeholder="Write a message…"
                title="Enter sends, Shift+Enter starts a new line"
                aria-describedby="composer-counter"
                prop:value=move || draft.get()
                on:input=move |ev| {
                    let value = event_target_value(&ev);
                    if let Some(id) = conversation_id.get_untracked() {
                        ctx.draft_changed(&id, &value);
                    }
                    save(&value);
                    draft.set(value);
                }
                on:keydown=on_keydown
            ></textarea>
            <span id="composer-counter" class="counter" class:over=move || { chars.get() > MAX_CONTENT_CHARS } aria-live="polite">
                {move || counter_text(chars.get())}
            </span>
            <button type="submit" class="send" disabled=move || invalid.get() aria-label="Send"><Icon svg=SEND /><span class="send-text">"Send"</span></button>
        </form>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_shows_near_the_limit() {
        assert_eq!(counter_text(10), None);
        assert_eq!(counter_text(COUNTER_FROM - 1), None);
        assert_eq!(counter_text(4_812).as_deref(), Some("4,812 / 5,000"));
        assert_eq!(counter_text(5_001).as_deref(), Some("5,001 / 5,000"));
    }

    #[test]
    fn the_text_area_grows_with_lines() {
        assert_eq!(rows_for(""), 1);
        assert_eq!(rows_for("a\nb"), 2);
        assert_eq!(rows_for("a\n"), 2);
        assert_eq!(rows_for(&"x\n".repeat(20)), 8);
    }
}
