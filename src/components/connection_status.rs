//! Always-visible connection indicator: an icon and the state in words.

use leptos::prelude::*;

use crate::socket::{now_ms, LinkState};
use crate::state::SocketContext;

/// The words and the machine-readable state name for a state, at time `now_ms`.
pub fn describe(state: &LinkState, now_ms: f64) -> (&'static str, String) {
    match state {
        LinkState::Connected { latency_ms: Some(ms), .. } => ("connected", format!("Connected · {} ms", ms.round() as i64)),
        LinkState::Connected { .. } => ("connected", "Connected".to_owned()),
        LinkState::Connecting => ("connecting", "Connecting…".to_owned()),
        LinkState::Reconnecting { attempt, retry_at_ms } => {
            let secs = ((retry_at_ms - now_ms) / 1000.0).ceil().max(0.0) as i64;
            ("disconnected", format!("Disconnected · retrying in {secs} s (attempt {attempt})"))
        }
        LinkState::Polling => ("polling", "Live via polling".to_owned()),
        LinkState::Offline => ("offline", "Offline".to_owned()),
        LinkState::Disconnected => ("disconnected", "Disconnected".to_owned()),
    }
}

#[component]
pub fn ConnectionStatus() -> impl IntoView {
    let ctx = SocketContext::expect();
    let described = Memo::new(move |_| describe(&ctx.status.get(), now_ms()));
    view! {
        <div class="connection" data-state=move || described.get().0 role="status" aria-live="polite">
            <svg class="connection-icon" viewBox="0 0 16 16" width="14" height="14" aria-hidden="true">
                <circle cx="8" cy="8" r="6" />
            </svg>
            <span class="connection-text">{move || described.get().1}</span>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_has_words() {
        assert_eq!(describe(&LinkState::Connected { since_ms: 0.0, latency_ms: None }, 0.0), ("connected", "Connected".into()));
        assert_eq!(describe(&LinkState::Connected { since_ms: 0.0, latency_ms: Some(12.4) }, 0.0).1, "Connected · 12 ms");
        let (state, text) = describe(&LinkState::Reconnecting { attempt: 2, retry_at_ms: 2500.0 }, 1000.0);
        assert_eq!(state, "disconnected");
        assert!(text.starts_with("Disconnected") && text.contains("2 s") && text.contains("attempt 2"));
        assert_eq!(describe(&LinkState::Polling, 0.0), ("polling", "Live via polling".into()));
        assert_eq!(describe(&LinkState::Offline, 0.0), ("offline", "Offline".into()));
    }
}
