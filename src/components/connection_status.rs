//! Always-visible connection indicator: an icon and the state in words, with Retry now /
//! Reconnect, and a toast when the connection drops and when it is back.

use leptos::prelude::*;

use super::icons::{Icon, CONNECTED, DISCONNECTED, POLLING};
use crate::clock::Clock;
use crate::socket::{now_ms, LinkState};
use crate::state::contexts::ConnectionCtx;

/// The toast for a change of state, if it is one worth telling.
pub fn toast_for(was_up: bool, ever_up: bool, now: &LinkState) -> Option<&'static str> {
    match (was_up, now.is_up()) {
        (true, false) if matches!(now, LinkState::Offline) => {
            Some("You are offline. Messages will be sent when you are back.")
        }
        (true, false) if !matches!(now, LinkState::Disconnected) => Some("Connection lost. Reconnecting…"),
        (false, true) if ever_up => Some("Connected again."),
        _ => None,
    }
}

#[component]
pub fn ConnectionStatus() -> impl IntoView {
    let ctx = ConnectionCtx::expect();
    let clock = Clock::expect();
    let described = Memo::new(move |_| {
        let state = ctx.status.get();
        // The countdown follows the clock.
        if matches!(state, LinkState::Reconnecting { .. }) {
            clock.0.track();
        }
        state.describe(now_ms())
    });
    let icon = move || match described.get().0 {
        "connected" => CONNECTED,
        "polling" => POLLING,
        _ => DISCONNECTED,
    };
    // Toasts on drops and returns.
    Effect::new(move |previous: Option<(bool, bool)>| {
        let state = ctx.status.get();
        let (was_up, ever_up) = previous.unwrap_or((false, false));
        if let Some(text) = toast_for(was_up, ever_up, &state) {
            let n = ctx.toast.get_untracked().map_or(1, |(n, _)| n + 1);
            ctx.toast.set(Some((n, text.to_owned())));
            set_timeout(
                move || {
                    if ctx.toast.get_untracked().is_some_and(|(m, _)| m == n) {
                        ctx.toast.set(None);
                    }
                },
                std::time::Duration::from_millis(4000),
            );
        }
        (state.is_up(), ever_up || state.is_up())
    });
    view! {
        <div class="connection" data-state=move || described.get().0 role="status">
            {move || view! { <Icon svg=icon() /> }}
            <span class="connection-text">{move || described.get().1}</span>
            {move || match ctx.status.get() {
                LinkState::Reconnecting { .. } | LinkState::Connecting => Some(view! { <button class="link" on:click=move |_| ctx.retry_now()>"Retry now"</button> }.into_any()),
                LinkState::Disconnected => Some(view! { <button class="link" on:click=move |_| ctx.retry_now()>"Reconnect"</button> }.into_any()),
                _ => None,
            }}
        </div>
    }
}

/// The toast itself (announced politely).
#[component]
pub fn Toast() -> impl IntoView {
    let ctx = ConnectionCtx::expect();
    view! {
        <div class="toast-region" aria-live="polite">
            {move || ctx.toast.get().map(|(_, text)| view! { <div class="toast">{text}</div> })}
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toasts_when_the_connection_drops_and_returns() {
        let up = LinkState::Connected { since_ms: 0.0, latency_ms: None };
        let retrying = LinkState::Reconnecting { attempt: 1, retry_at_ms: 0.0 };
        assert_eq!(toast_for(false, false, &up), None, "the first connection is not news");
        assert_eq!(toast_for(true, true, &retrying), Some("Connection lost. Reconnecting…"));
        assert!(toast_for(true, true, &LinkState::Offline).unwrap().contains("offline"));
        assert_eq!(toast_for(false, true, &up), Some("Connected again."));
        assert_eq!(toast_for(false, true, &LinkState::Polling), Some("Connected again."));
        assert_eq!(toast_for(true, true, &LinkState::Disconnected), None, "the user's own doing");
    }
}
