//! The AI personas: who they are, when they reply, and how a reply reaches everyone.
//!
//! - [`SEED`]: the personas created at first start.
//! - [`on_user_message`]: after a user's message is stored, decides which personas answer it
//!   (every message of a direct conversation; in rooms, the persona named by the send's
//!   `persona_id` or mentioned as `@Name`) and queues their replies.
//! - [`runtime::Runtime`]: per persona a queue answered one reply at a time, the live status
//!   (online, busy, responding, offline) and the streams in flight, which `stop_response`
//!   interrupts.
//! - [`responder::Responder`]: where the words come from: the built-in one
//!   ([`builtin::Builtin`], offline, the default) or any OpenAI-compatible chat-completions
//!   endpoint ([`openai::OpenAi`]).

pub mod builtin;
pub mod openai;
pub mod responder;
pub mod runtime;
mod voices;

pub use runtime::Runtime;

/// (name, tagline) of each persona created at first start.
pub const SEED: &[(&str, &str)] = &[
    ("Ada", "Precise, patient mathematician who loves a good proof"),
    ("Captain Reyes", "Retired starship pilot with a story for everything"),
    ("Mira", "Gentle poet who notices small things"),
    ("Professor Bramble", "Excitable botanist, endlessly curious"),
    ("Juno", "Quick-witted comedian who cannot resist a pun"),
];

/// Who a persona is, as a responder needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonaInfo {
    pub id: String,
    pub name: String,
    pub tagline: String,
}

/// The character of a seeded persona in a few sentences (the system prompt of the
/// OpenAI-compatible responder); personas not seeded by this version get their tagline.
pub fn personality(name: &str, tagline: &str) -> String {
    let character = match name {
        "Ada" => {
            "You are precise and patient. You love definitions, small examples, counting \
                  things and a clean proof; you gently correct sloppy reasoning and like to \
                  turn a question into a puzzle. Calm, warm, a little dry."
        }
        "Captain Reyes" => {
            "You flew starships for thirty years and retired to tell about it. \
                  Every topic reminds you of a flight, a crew mate or a close call. Gruff but \
                  kind, you call people 'kid' now and then and use pilot talk ('copy that', \
                  'steady on the stick')."
        }
        "Mira" => {
            "You are a gentle poet who notices small things: light, textures, sounds, \
                  the weather in a word. You answer softly with an image or two and ask about \
                  the small details of people's days."
        }
        "Professor Bramble" => {
            "You are an excitable botanist, endlessly curious. You burst \
                  into enthusiasm ('Oh! Splendid!'), connect everything to plants, seeds, \
                  roots and soil, and sometimes drop a Latin plant name."
        }
        "Juno" => {
            "You are a quick-witted comedian. You cannot resist a pun about whatever \
                  the topic is, you tease kindly, and you keep it light, but you still answer \
                  the question."
        }
        _ => "",
    };
    format!("{name}: {tagline}. {character}").trim().to_owned()
}

/// Called after a user's message is stored (never for a resend): decides whether personas
/// reply and queues their replies. Returns at once; the replies stream later.
pub fn on_user_message(
    app: &crate::AppState,
    conversation_id: &str,
    message: &persona_chat_protocol::Message,
    persona_id: Option<String>,
) {
    app.personas.trigger(app, conversation_id, message, persona_id);
}

/// `stop_response`: interrupts a persona's streaming reply. The reply ends with
/// `stream_end {interrupted: true}` and what was streamed so far is stored. A user who is not
/// a member gets not_member; an id that is not streaming in this conversation (never was,
/// or already ended) gets not_found.
pub fn stop_response(
    app: &crate::AppState,
    user: &persona_chat_protocol::User,
    conversation_id: &str,
    message_id: &str,
) -> Result<(), crate::refusal::Refusal> {
    if !app.hub.is_member(conversation_id, &user.id) {
        return Err(crate::refusal::Refusal::not_member());
    }
    app.personas.stop(conversation_id, message_id)
}

/// The personas a room message addresses: `persona_id` of the send (if it names a persona),
/// then every persona mentioned as `@Name` (case-insensitive; the full name, or the last word
/// of a name of several words, like `@Reyes`), each once, in order of appearance.
pub fn addressed(personas: &[PersonaInfo], persona_id: Option<&str>, content: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(id) = persona_id {
        if personas.iter().any(|p| p.id == id) {
            out.push(id.to_owned());
        }
    }
    for (at, _) in content.match_indices('@') {
        // An @ inside a word (an e-mail address) is no mention.
        if content[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric()) {
            continue;
        }
        let rest = &content[at + 1..];
        let best = personas
            .iter()
            .flat_map(|p| aliases(&p.name).into_iter().map(move |alias| (p, alias)))
            .filter(|(_, alias)| mentions(rest, alias))
            .max_by_key(|(_, alias)| alias.chars().count());
        if let Some((p, _)) = best {
            if !out.contains(&p.id) {
                out.push(p.id.clone());
            }
        }
    }
    out
}

/// The names a persona answers to after an @.
fn aliases(name: &str) -> Vec<&str> {
    let mut out = vec![name];
    if let Some(last) = name.split_whitespace().last().filter(|l| *l != name && l.chars().count() >= 3) {
        out.push(last);
    }
    out
}

/// Whether `text` starts with `name` (case-insensitive), followed by no letter or digit.
fn mentions(text: &str, name: &str) -> bool {
    let mut chars = text.chars();
    for expected in name.chars() {
        match chars.next() {
            Some(c) if c == expected || c.to_lowercase().eq(expected.to_lowercase()) => {}
            _ => return false,
        }
    }
    !chars.next().is_some_and(|c| c.is_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn personas() -> Vec<PersonaInfo> {
        SEED.iter()
            .enumerate()
            .map(|(i, (name, tagline))| PersonaInfo {
                id: format!("p{i}"),
                name: (*name).into(),
                tagline: (*tagline).into(),
            })
            .collect()
    }

    #[test]
    fn mentions_are_case_insensitive_whole_names() {
        let p = personas();
        assert_eq!(addressed(&p, None, "hey @ada what is a prime?"), vec!["p0"]);
        assert_eq!(addressed(&p, None, "@Captain Reyes, and you @JUNO!"), vec!["p1", "p4"]);
        assert_eq!(addressed(&p, None, "@reyes over here"), vec!["p1"]);
        assert_eq!(addressed(&p, None, "@professor bramble? @Bramble"), vec!["p3"]);
        assert!(addressed(&p, None, "@Adam is not Ada, mail ada@example.com").is_empty());
        assert!(addressed(&p, None, "no mention of Ada here").is_empty());
        assert_eq!(addressed(&p, Some("p2"), "@Mira hello"), vec!["p2"]);
        assert!(addressed(&p, Some("nobody"), "hello").is_empty());
    }

    #[test]
    fn every_seeded_persona_has_a_personality() {
        for (name, tagline) in SEED {
            assert!(personality(name, tagline).len() > tagline.len() + 60, "{name}");
        }
    }
}
