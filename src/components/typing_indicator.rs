//! Who is typing in the open conversation, in words, announced politely to screen readers.

use leptos::prelude::*;

use crate::state::contexts::ChatCtx;

/// "Ada is typing", "Ada and Bob are typing", "Ada, Bob and 2 others are typing".
pub fn typing_text(names: &[String]) -> Option<String> {
    match names {
        [] => None,
        [one] => Some(format!("{one} is typing")),
        [a, b] => Some(format!("{a} and {b} are typing")),
        [a, b, c] => Some(format!("{a}, {b} and {c} are typing")),
        [a, b, rest @ ..] => Some(format!("{a}, {b} and {} others are typing", rest.len())),
    }
}

/// Everyone typing in a conversation: people (in the order they started), then personas
/// streaming a reply.
pub fn everyone_typing(people: &[String], personas: &[String]) -> Vec<String> {
    let mut all: Vec<String> = people.to_vec();
    for p in personas {
        if !all.contains(p) {
            all.push(p.clone());
        }
    }
    all
}

#[component]
pub fn TypingIndicator(#[prop(into)] conversation_id: Signal<Option<String>>) -> impl IntoView {
    let ctx = ChatCtx::expect();
    let text = Memo::new(move |_| {
        let id = conversation_id.get()?;
        let people = ctx.typists.with(|t| t.get(&id).cloned().unwrap_or_default());
        let personas = ctx.chat.with(|c| c.responding_in(&id));
        typing_text(&everyone_typing(&people, &personas))
    });
    view! {
        <div class="typing" aria-live="polite">
            {move || text.get().map(|t| view! {
                <span class="dots" aria-hidden="true"><span></span><span></span><span></span></span>
                <span class="typing-text">{t}</span>
            })}
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::typing_text;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn personas_responding_count_as_typing() {
        let all = super::everyone_typing(&names(&["Bob"]), &names(&["Ada", "Bob"]));
        assert_eq!(typing_text(&all).unwrap(), "Bob and Ada are typing");
    }

    #[test]
    fn one_two_three_and_five_typists() {
        assert_eq!(typing_text(&[]), None);
        assert_eq!(typing_text(&names(&["Ada"])).unwrap(), "Ada is typing");
        assert_eq!(typing_text(&names(&["Ada", "Bob"])).unwrap(), "Ada and Bob are typing");
        assert_eq!(typing_text(&names(&["Ada", "Bob", "Cy"])).unwrap(), "Ada, Bob and Cy are typing");
        assert_eq!(typing_text(&names(&["Ada", "Bob", "Cy", "Di", "Ed"])).unwrap(), "Ada, Bob and 3 others are typing");
    }
}
