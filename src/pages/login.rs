//! Sign in, or create an account: two modes of one form. Signing in never registers a name.

use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_navigate;

use persona_chat_protocol::http::PASSWORD_MIN;

use crate::api;
use crate::session::SessionNotice;
use crate::state::contexts::SessionCtx;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    SignIn,
    SignUp,
}

/// What is wrong with the form before asking the server, in words.
fn check(mode: Mode, username: &str, password: &str) -> Option<String> {
    if username.trim().is_empty() {
        return Some("Enter a username.".to_owned());
    }
    if mode == Mode::SignUp && password.chars().count() < PASSWORD_MIN {
        return Some(format!("A password has at least {PASSWORD_MIN} characters."));
    }
    None
}

#[component]
pub fn LoginPage() -> impl IntoView {
    let ctx = SessionCtx::expect();
    let notice = SessionNotice::expect();
    let mode = RwSignal::new(Mode::SignIn);
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let navigate = use_navigate();

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        if busy.get_untracked() {
            return;
        }
        let (m, name, pass) =
            (mode.get_untracked(), username.get_untracked().trim().to_owned(), password.get_untracked());
        if let Some(problem) = check(m, &name, &pass) {
            error.set(Some(problem));
            return;
        }
        busy.set(true);
        error.set(None);
        let navigate = navigate.clone();
        spawn_local(async move {
            let answer = match m {
                Mode::SignIn => api::sign_in(&ctx.base(), &name, &pass).await,
                Mode::SignUp => api::sign_up(&ctx.base(), &name, &pass).await,
            };
            match answer {
                Ok(session) => {
                    notice.ended.set(None);
                    ctx.begin(session);
                    navigate("/", Default::default());
                }
                Err(e) => error.set(Some(e.message)),
            }
            busy.set(false);
        });
    };
    let switch = move |to: Mode| {
        mode.set(to);
        error.set(None);
    };

    view! {
        <main class="login">
            <form class="login-card" on:submit=submit>
                <h1>"persona-chat"</h1>
                <div class="mode-switch" role="tablist">
                    <button type="button" role="tab" id="mode-sign-in" aria-selected=move || (mode.get() == Mode::SignIn).to_string()
                        class:active=move || mode.get() == Mode::SignIn on:click=move |_| switch(Mode::SignIn)>"Sign in"</button>
                    <button type="button" role="tab" id="mode-sign-up" aria-selected=move || (mode.get() == Mode::SignUp).to_string()
                        class:active=move || mode.get() == Mode::SignUp on:click=move |_| switch(Mode::SignUp)>"Create account"</button>
                </div>
                {move || notice.ended.get().map(|why| view! { <p class="info" role="status">{why}</p> })}
                {move || notice.refused_server.get().map(|asked| view! {
                    <p class="error" role="alert" id="refused-server">
                        {format!("This link asks to use another server ({asked}), which this app is not allowed to use. You are on {}.", ctx.base())}
                    </p>
                })}
                <p class="hint">{move || match mode.get() {
                    Mode::SignIn => "Welcome back. Sign in with your username and password.",
                    Mode::SignUp => "Pick a username, and a password of at least 8 characters.",
                }}</p>
                <label for="username">"Username"</label>
                <input id="username" name="username" autocomplete="username" required maxlength="32"
                    prop:value=move || username.get() on:input=move |ev| username.set(event_target_value(&ev)) />
                <label for="password">"Password"</label>
                <input id="password" name="password" type="password" required
                    autocomplete=move || if mode.get() == Mode::SignUp { "new-password" } else { "current-password" }
                    prop:value=move || password.get() on:input=move |ev| password.set(event_target_value(&ev)) />
                {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
                <button type="submit" id="submit" disabled=move || busy.get()>
                    {move || match (mode.get(), busy.get()) {
                        (Mode::SignIn, false) => "Sign in",
                        (Mode::SignIn, true) => "Signing in…",
                        (Mode::SignUp, false) => "Create account",
                        (Mode::SignUp, true) => "Creating your account…",
                    }}
                </button>
            </form>
        </main>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_says_what_is_missing_before_asking() {
        assert!(check(Mode::SignIn, " ", "whatever").is_some());
        // Signing in leaves password rules to the server (older accounts may have short ones).
        assert_eq!(check(Mode::SignIn, "ada", "short"), None);
        assert!(check(Mode::SignUp, "ada", "short").unwrap().contains("at least 8"));
        assert_eq!(check(Mode::SignUp, "ada", "long enough"), None);
    }
}
