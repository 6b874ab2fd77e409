//! The personas seeded at first start. Their replies come with the personas issue.

/// (name, tagline) of each persona created at first start.
pub const SEED: &[(&str, &str)] = &[
    ("Ada", "Precise, patient mathematician who loves a good proof"),
    ("Captain Reyes", "Retired starship pilot with a story for everything"),
    ("Mira", "Gentle poet who notices small things"),
    ("Professor Bramble", "Excitable botanist, endlessly curious"),
    ("Juno", "Quick-witted comedian who cannot resist a pun"),
];

/// Called after a user's message is stored: decides whether a persona replies. The replies
/// come with the personas work; for now no persona answers.
pub fn on_user_message(
    _app: &crate::AppState,
    _conversation_id: &str,
    _message: &persona_chat_protocol::Message,
    _persona_id: Option<String>,
) {
}

/// `stop_response`: interrupts a persona's streaming reply. Not streaming yet: not_found.
pub fn stop_response(
    _app: &crate::AppState,
    _user: &persona_chat_protocol::User,
    _conversation_id: &str,
    _message_id: &str,
) -> Result<(), crate::chat::Refusal> {
    Err(crate::chat::Refusal::new(persona_chat_protocol::ErrorCode::NotFound, "no response is streaming with this id"))
}
