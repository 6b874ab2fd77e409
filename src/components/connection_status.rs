//! Always-visible connection indicator: an icon and the state in words, with Retry now /
//! Reconnect, and a toast when the connection drops and when it is back.

use leptos::prelude::*;

use super::icons::{Icon, CONNECTED, DISCONNECTED, POLLING};
use crate::app::Clock;
use crate::socket::{now_ms, LinkState};
use crate::state::SocketContext;

/// The machine-readable state name and the words for a state, at time `now_ms`.
pub fn describe(state: &LinkState, now_ms: f64) -> (&'static str, String) {
    match state {
        LinkState::Connected { latency_ms: Some(ms), .. } => {
            ("connected", format!("Connected · {} ms", ms.round() as i64))
        }
        LinkState::Connected { .. } => ("connected", "Connected".to_owned()),
        LinkState::Connecting => ("connecting", "Connecting…".to_owned()),
        LinkState::Reconnecting { attempt, retry_at_ms } => {
            let secs = ((retry_at_ms - now_ms) / 1000.0).ceil().max(0.0) as i64;
            if secs > 0 {
                ("disconnected", format!("Reconnecting in {secs} s (attempt {attempt})"))
            } else {
                ("disconnected", format!("Reconnecting… (attempt {attempt})"))
            }
        }
        LinkState::Polling => ("polling", "Live via polling".to_owned()),
        LinkState::Offline => ("offline", "Offline".to_owned()),
        LinkState::Disconnected => ("disconnected", "Disconnected".to_owned()),
    }
}

/// Whether a state carries messages (either transport).
pub fn is_up(state: &LinkState) -> bool {
    matches!(state, LinkState::Connected { .. } | LinkState::Polling)
}

/// The toast for a change of state, if it is one worth telling.
pub fn toast_for(was_up: bool, ever_up: bool, now: &LinkState) -> Option<&'static str> {
    match (was_up, is_up(now)) {
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
    let ctx = SocketContext::expect();
    let clock = Clock::expect();
    let described = Memo::new(move |_| {
        let state = ctx.status.get();
        // The countdown follows the clock.
        if matches!(state, LinkState::Reconnecting { .. }) {
            clock.0.track();
        }
        describe(&state, now_ms())
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
        (is_up(&state), ever_up || is_up(&state))
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
    let ctx = SocketContext::expect();
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
    fn each_state_has_words() {
        assert_eq!(
            describe(&LinkState::Connected { since_ms: 0.0, latency_ms: None }, 0.0),
            ("connected", "Connected".into())
        );
        assert_eq!(
            describe(&LinkState::Connected { since_ms: 0.0, latency_ms: Some(12.4) }, 0.0).1,
            "Connected · 12 ms"
        );
        let (state, text) = describe(&LinkState::Reconnecting { attempt: 2, retry_at_ms: 2500.0 }, 1000.0);
        assert_eq!((state, text.as_str()), ("disconnected", "Reconnecting in 2 s (attempt 2)"));
        assert_eq!(
            describe(&LinkState::Reconnecting { attempt: 3, retry_at_ms: 0.0 }, 1000.0).1,
            "Reconnecting… (attempt 3)"
        );
        assert_eq!(describe(&LinkState::Polling, 0.0), ("polling", "Live via polling".into()));
        assert_eq!(describe(&LinkState::Offline, 0.0), ("offline", "Offline".into()));
        assert_eq!(describe(&LinkState::Connecting, 0.0), ("connecting", "Connecting…".into()));
        assert_eq!(describe(&LinkState::Disconnected, 0.0), ("disconnected", "Disconnected".into()));
    }

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
