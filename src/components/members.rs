//! Who is in a room, on demand, and adding people to it.

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api;
use crate::state::contexts::{ChatCtx, SessionCtx};

/// A people search as the user types: the newest answer wins (older ones are ignored).
pub fn search_users(
    session: SessionCtx,
    text: String,
    query: RwSignal<String>,
    results: RwSignal<Vec<persona_chat_protocol::User>>,
    error: RwSignal<Option<String>>,
) {
    query.set(text.clone());
    spawn_local(async move {
        let Some(token) = session.token() else { return };
        // The server searches from 2 characters on (fewer would list everyone).
        if text.trim().chars().count() < persona_chat_protocol::http::USER_SEARCH_MIN_CHARS {
            results.set(Vec::new());
            error.set(None);
            return;
        }
        match api::search_users(&session.base(), &token, text.trim()).await {
            Ok(found) if query.get_untracked() == text => results.set(found),
            Ok(_) => {}
            Err(e) => error.set(Some(format!("Could not search: {e}"))),
        }
    });
}

#[component]
pub fn MembersPanel(conversation_id: String, on_close: Callback<()>) -> impl IntoView {
    let ctx = ChatCtx::expect();
    let session = ctx.session();
    let members = {
        let id = conversation_id.clone();
        Memo::new(move |_| ctx.chat.with(|c| c.members.get(&id).cloned().unwrap_or_default()))
    };
    let query = RwSignal::new(String::new());
    let results = RwSignal::new(Vec::<persona_chat_protocol::User>::new());
    let error = RwSignal::new(None::<String>);
    let search = move |text: String| search_users(session, text, query, results, error);
    let add = {
        let id = conversation_id.clone();
        move |user_id: String| {
            let id = id.clone();
            spawn_local(async move {
                let Some(token) = session.token() else { return };
                match api::add_members(&session.base(), &token, &id, vec![user_id]).await {
                    Ok(_) => {
                        query.set(String::new());
                        results.set(Vec::new());
                        ctx.load_members(id);
                    }
                    Err(e) => error.set(Some(format!("Could not add: {e}"))),
                }
            });
        }
    };
    view! {
        <aside class="members-panel" aria-label="Members">
            <header>
                <h3>"Members"</h3>
                <button class="link" on:click=move |_| on_close.run(())>"Close"</button>
            </header>
            <ul class="members">
                {move || members.get().into_iter().map(|m| {
                    let status = if m.kind == "persona" { "persona" } else if m.online { "online" } else { "offline" };
                    view! {
                        <li data-kind=m.kind.clone()>
                            <span class="dot" data-status=status aria-hidden="true"></span>
                            <span>{m.name.clone()}</span>
                            <span class="member-state">{match status { "persona" => "AI persona", "online" => "online", _ => "offline" }}</span>
                        </li>
                    }
                }).collect_view()}
            </ul>
            <label for="add-people">"Add people"</label>
            <input id="add-people" type="search" placeholder="Type 2 letters of a username…" autocomplete="off"
                prop:value=move || query.get() on:input=move |ev| search(event_target_value(&ev)) />
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <ul class="search-results">
                {move || {
                    let present: Vec<String> = members.with(|m| m.iter().map(|m| m.id.clone()).collect());
                    results.get().into_iter().filter(|u| !present.contains(&u.id)).map(|u| {
                        let add = add.clone();
                        let id = u.id.clone();
                        view! { <li><button class="chip" on:click=move |_| add(id.clone())>"Add " {u.username.clone()}</button></li> }
                    }).collect_view()
                }}
            </ul>
        </aside>
    }
}
