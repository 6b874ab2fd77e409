//! Avatars with a status badge, and the words for statuses and times.

use leptos::prelude::*;
use persona_chat_protocol::PersonaState;

/// A status in words (for the badge's hidden label and the header).
pub fn status_words(status: PersonaState) -> &'static str {
    match status {
        PersonaState::Online => "Online",
        PersonaState::Busy => "Busy",
        PersonaState::Responding => "Responding",
        PersonaState::Offline => "Offline",
    }
}

/// "last seen just now", "last seen 5 min ago", "last seen 3 h ago", "last seen 2 days ago".
pub fn last_seen_text(last_seen_ms: i64, now_ms: i64) -> String {
    let minutes = (now_ms - last_seen_ms).max(0) / 60_000;
    match minutes {
        0 => "last seen just now".to_owned(),
        1..=59 => format!("last seen {minutes} min ago"),
        60..=1439 => format!("last seen {} h ago", minutes / 60),
        1440..=2879 => "last seen yesterday".to_owned(),
        _ => format!("last seen {} days ago", minutes / 1440),
    }
}

/// A persona's status line: the status in words, or when it was last seen if offline.
pub fn status_line(status: PersonaState, last_seen: Option<&str>, now_ms: i64) -> String {
    match (status, last_seen.and_then(crate::clock::timestamp_ms)) {
        (PersonaState::Offline, Some(at)) => format!("Offline · {}", last_seen_text(at, now_ms)),
        (PersonaState::Responding, _) => "Responding…".to_owned(),
        (s, _) => status_words(s).to_owned(),
    }
}

/// Up to two initials of a name: "Ada Lovelace" -> "AL", "bob" -> "B".
pub fn initials(name: &str) -> String {
    let mut words = name.split(|c: char| c.is_whitespace() || c == '-' || c == '_').filter(|w| !w.is_empty());
    let first = words.next().and_then(|w| w.chars().next());
    let second = words.next().and_then(|w| w.chars().next());
    first.into_iter().chain(second).flat_map(char::to_uppercase).collect()
}

/// A stable hue for a name, so each person keeps their color.
pub fn hue(name: &str) -> u32 {
    name.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32)) % 360
}

/// A round avatar with initials; with a status, a badge (color and hidden words).
#[component]
pub fn Avatar(
    name: String,
    #[prop(optional, into)] status: Option<Signal<Option<PersonaState>>>,
    #[prop(optional)] room: bool,
    #[prop(optional)] large: bool,
) -> impl IntoView {
    let label = if room { "#".to_owned() } else { initials(&name) };
    // Set through the CSSOM (not a style attribute), which the CSP allows.
    let style = ("--hue", hue(&name).to_string());
    view! {
        <span class="avatar" class:room=room class:large=large style=style aria-hidden=status.is_none().then_some("true")>
            <span class="initials" aria-hidden="true">{label}</span>
            {status.map(|status| view! { <StatusBadge status=status /> })}
        </span>
    }
}

#[component]
pub fn StatusBadge(#[prop(into)] status: Signal<Option<PersonaState>>) -> impl IntoView {
    move || {
        status.get().map(|s| {
            view! {
                <span class="badge" data-status=s.as_str() title=status_words(s)>
                    <span class="visually-hidden">{status_words(s)}</span>
                </span>
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_seen_in_words() {
        let min = 60_000;
        assert_eq!(last_seen_text(0, 30_000), "last seen just now");
        assert_eq!(last_seen_text(0, 5 * min), "last seen 5 min ago");
        assert_eq!(last_seen_text(0, 125 * min), "last seen 2 h ago");
        assert_eq!(last_seen_text(0, 30 * 60 * min), "last seen yesterday");
        assert_eq!(last_seen_text(0, 5 * 1440 * min), "last seen 5 days ago");
        assert_eq!(last_seen_text(10, 0), "last seen just now", "a clock behind is not negative");
    }

    #[test]
    fn status_lines_and_initials() {
        let at = "2026-11-21T10:00:00.000Z";
        let now = crate::clock::timestamp_ms(at).unwrap() + 5 * 60_000;
        assert_eq!(status_line(PersonaState::Offline, Some(at), now), "Offline · last seen 5 min ago");
        assert_eq!(status_line(PersonaState::Offline, None, now), "Offline");
        assert_eq!(status_line(PersonaState::Responding, None, now), "Responding…");
        assert_eq!(status_line(PersonaState::Busy, None, now), "Busy");
        assert_eq!(initials("Ada Lovelace"), "AL");
        assert_eq!(initials("bob"), "B");
        assert_eq!(initials("émile-zola"), "ÉZ");
        assert_eq!(hue("ada"), hue("ada"));
    }
}
