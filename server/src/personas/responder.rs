//! Where a persona's words come from.

use persona_chat_protocol::Message;
use tokio::sync::mpsc;

use super::PersonaInfo;

/// What a persona is asked to answer.
#[derive(Debug, Clone)]
pub struct ReplyRequest {
    pub persona: PersonaInfo,
    pub conversation_id: String,
    /// The conversation's latest messages up to and including `trigger`, oldest first.
    pub history: Vec<Message>,
    /// The user's message being answered.
    pub trigger: Message,
}

/// A reply as it is produced: pieces of text in order (a word or a token each). The channel
/// closing ends the reply; an `Err` ends it as failed (the message is for the log). Dropping
/// the receiver cancels the reply.
pub type Chunks = mpsc::Receiver<Result<String, String>>;

/// Produces a persona's replies.
pub trait Responder: Send + Sync + 'static {
    /// Starts a reply and returns at once; the pieces arrive on the channel.
    fn respond(&self, request: ReplyRequest) -> Chunks;

    /// For logs.
    fn name(&self) -> &'static str;
}

/// Cuts a text into words, each with the spaces before it, so the pieces concatenate back
/// to exactly the text.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for ch in text.chars() {
        if ch.is_whitespace() && !current.trim().is_empty() {
            out.push(std::mem::take(&mut current));
        }
        current.push(ch);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_concatenate_back_to_the_text() {
        for text in ["Hello there, friend.", "  leading and  double  spaces ", "é ü — ok", "one", ""] {
            let pieces = words(text);
            assert_eq!(pieces.concat(), text);
            assert!(pieces.iter().all(|p| !p.is_empty()));
        }
        assert_eq!(words("a bc d"), vec!["a", " bc", " d"]);
    }
}
