//! Where a message is written: Enter sends, Shift+Enter is a new line.

use leptos::prelude::*;
use persona_chat_protocol::validate_content;

use crate::state::SocketContext;

#[component]
pub fn Composer(conversation_id: Signal<Option<String>>) -> impl IntoView {
    let ctx = SocketContext::expect();
    let draft = RwSignal::new(String::new());
    let send = move || {
        let Some(id) = conversation_id.get_untracked() else { return };
        let text = draft.get_untracked();
        if let Ok(content) = validate_content(&text) {
            // The draft stays when the message could not even be queued.
            if ctx.send_message(id, content.to_owned()) {
                draft.set(String::new());
            }
        }
    };
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
            ev.prevent_default();
            send();
        }
    };
    view! {
        <form class="composer" on:submit=move |ev| { ev.prevent_default(); send(); }>
            <label for="composer-input" class="visually-hidden">"Message"</label>
            <textarea
                id="composer-input"
                rows="1"
                placeholder="Write a message…"
                prop:value=move || draft.get()
                on:input=move |ev| {
                    let value = event_target_value(&ev);
                    if let Some(id) = conversation_id.get_untracked() {
                        ctx.draft_changed(&id, &value);
                    }
                    draft.set(value);
                }
                on:keydown=on_keydown
            ></textarea>
            <button type="submit" disabled=move || validate_content(&draft.get()).is_err()>"Send"</button>
        </form>
    }
}
