//! Starting something new: a conversation with a persona (from a picker), or a room with
//! people and personas.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_navigate;
use persona_chat_protocol::http::CreateConversationRequest;
use wasm_bindgen::JsCast;

use super::avatar::{status_words, Avatar};
use crate::api;
use crate::state::contexts::ChatCtx;

/// The enabled controls inside `root`, in document order.
fn focusables(root: &web_sys::Element) -> Vec<web_sys::HtmlElement> {
    let Ok(list) = root.query_selector_all(
        "button:not([disabled]), input:not([disabled]), a[href], textarea, [tabindex]:not([tabindex='-1'])",
    ) else {
        return Vec::new();
    };
    (0..list.length()).filter_map(|i| list.item(i)?.dyn_into::<web_sys::HtmlElement>().ok()).collect()
}

#[component]
pub fn NewConversationDialog(on_close: Callback<()>) -> impl IntoView {
    let ctx = ChatCtx::expect();
    let session = ctx.session();
    let navigate = use_navigate();
    let personas = Memo::new(move |_| ctx.chat.with(|c| c.personas.clone()));
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let title = RwSignal::new(String::new());
    let picked_personas = RwSignal::new(Vec::<String>::new());
    let picked_people = RwSignal::new(Vec::<persona_chat_protocol::User>::new());
    let query = RwSignal::new(String::new());
    let results = RwSignal::new(Vec::<persona_chat_protocol::User>::new());

    let create = {
        let navigate = navigate.clone();
        move |body: CreateConversationRequest| {
            let navigate = navigate.clone();
            busy.set(true);
            spawn_local(async move {
                let Some(token) = session.token() else { return };
                match api::create_conversation(&session.base(), &token, &body).await {
                    Ok(summary) => {
                        let id = summary.id.clone();
                        ctx.conversation_created(summary);
                        on_close.run(());
                        navigate(&format!("/c/{id}"), Default::default());
                    }
                    Err(e) => error.set(Some(e.message)),
                }
                busy.set(false);
            });
        }
    };
    let search = move |text: String| super::members::search_users(session, text, query, results, error);
    let me = Memo::new(move |_| ctx.chat.with(|c| c.me.as_ref().map(|u| u.id.clone())));
    let create_room = {
        let create = create.clone();
        move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            let name = title.get_untracked().trim().to_owned();
            if name.is_empty() {
                error.set(Some("Give the room a name.".into()));
                return;
            }
            create(CreateConversationRequest {
                persona_id: None,
                title: Some(name),
                member_ids: picked_people.get_untracked().into_iter().map(|u| u.id).collect(),
                persona_ids: picked_personas.get_untracked(),
            });
        }
    };
    // Focus moves into the dialog, stays there while it is open (Tab wraps around), and goes
    // back to where it was when it closes.
    let dialog_ref = NodeRef::<leptos::html::Div>::new();
    let opener = web_sys::window().and_then(|w| w.document()).and_then(|d| d.active_element());
    Effect::new(move |_| {
        if let Some(first) = dialog_ref.get().and_then(|d| focusables(&d).into_iter().next()) {
            let _ = first.focus();
        }
    });
    on_cleanup(move || {
        if let Some(el) = opener.as_ref().and_then(|e| e.dyn_ref::<web_sys::HtmlElement>()) {
            let _ = el.focus();
        }
    });
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Escape" {
            on_close.run(());
        } else if ev.key() == "Tab" {
            let Some(dialog) = dialog_ref.get_untracked() else { return };
            let items = focusables(&dialog);
            let active = web_sys::window().and_then(|w| w.document()).and_then(|d| d.active_element());
            let (Some(first), Some(last)) = (items.first(), items.last()) else { return };
            let is = |el: &web_sys::HtmlElement| {
                active.as_ref().is_some_and(|a| a == el.unchecked_ref::<web_sys::Element>())
            };
            if ev.shift_key() && is(first) {
                ev.prevent_default();
                let _ = last.focus();
            } else if !ev.shift_key() && is(last) {
                ev.prevent_default();
                let _ = first.focus();
            }
        }
    };
    view! {
        <div class="dialog-backdrop" on:click=move |_| on_close.run(())></div>
        <div class="dialog" role="dialog" aria-modal="true" aria-labelledby="new-title" node_ref=dialog_ref on:keydown=on_key>
            <header>
                <h2 id="new-title">"New conversation"</h2>
                <button class="link" on:click=move |_| on_close.run(())>"Close"</button>
            </header>
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
            <h3>"Talk to a persona"</h3>
            <ul class="persona-picker">
                {move || personas.get().into_iter().map(|p| {
                    let create = create.clone();
                    let id = p.id.clone();
                    let status = p.status;
                    view! {
                        <li>
                            <button class="persona-choice" data-persona=p.id.clone() disabled=move || busy.get()
                                on:click=move |_| create(CreateConversationRequest { persona_id: Some(id.clone()), title: None, member_ids: vec![], persona_ids: vec![] })>
                                <Avatar name=p.name.clone() status=Signal::derive(move || Some(status)) />
                                <span class="choice-text">
                                    <strong>{p.name.clone()}</strong>
                                    <span class="tagline">{p.tagline.clone()}</span>
                                </span>
                                <span class="choice-status">{status_words(p.status)}</span>
                            </button>
                        </li>
                    }
                }).collect_view()}
            </ul>
            <h3>"Or create a room"</h3>
            <form class="room-form" on:submit=create_room>
                <label for="room-title">"Room name"</label>
                <input id="room-title" maxlength="80" prop:value=move || title.get() on:input=move |ev| title.set(event_target_value(&ev)) />
                <label for="room-people">"Add people"</label>
                <input id="room-people" type="search" autocomplete="off" placeholder="Type 2 letters of a username…" prop:value=move || query.get() on:input=move |ev| search(event_target_value(&ev)) />
                <ul class="search-results">
                    {move || results.get().into_iter()
                        .filter(|u| Some(&u.id) != me.get().as_ref() && !picked_people.with(|p| p.iter().any(|x| x.id == u.id)))
                        .map(|u| {
                            let user = u.clone();
                            view! { <li><button type="button" class="chip" on:click=move |_| { picked_people.update(|p| p.push(user.clone())); query.set(String::new()); results.set(Vec::new()); }>"Add " {u.username.clone()}</button></li> }
                        }).collect_view()}
                </ul>
                <ul class="picked">
                    {move || picked_people.get().into_iter().map(|u| {
                        let id = u.id.clone();
                        view! { <li class="chip">{u.username.clone()}<button type="button" class="link" aria-label=format!("Remove {}", u.username) on:click=move |_| picked_people.update(|p| p.retain(|x| x.id != id))>"×"</button></li> }
                    }).collect_view()}
                </ul>
                <fieldset class="persona-checks">
                    <legend>"Personas in the room"</legend>
                    {move || personas.get().into_iter().map(|p| {
                        let id = p.id.clone();
                        let id2 = p.id.clone();
                        view! {
                            <label class="check">
                                <input type="checkbox" prop:checked=move || picked_personas.with(|v| v.contains(&id))
                                    on:change=move |ev| { let on = event_target_checked(&ev); picked_personas.update(|v| { v.retain(|x| x != &id2); if on { v.push(id2.clone()); } }); } />
                                {p.name.clone()}
                            </label>
                        }
                    }).collect_view()}
                </fieldset>
                <button type="submit" class="primary" disabled=move || busy.get()>"Create room"</button>
            </form>
        </div>
    }
}
