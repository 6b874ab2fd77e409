//! Fan-out of a stored message to the sockets and polls that follow its conversation.

use persona_chat_protocol::{LastMessage, Message, ServerFrame};

use crate::clock::now_rfc3339;
use crate::store::StoreError;

/// Fans a stored message out: `new_message` to joined sockets, `conversation_update` (with the
/// list version the message took) to members. Called under the store's lock, right after the
/// insert.
pub fn publish_message(
    store: &crate::store::Store,
    shared: &crate::Shared,
    conversation_id: &str,
    message: &Message,
    members: &[String],
) -> Result<(), StoreError> {
    let version = store.conversation_version(conversation_id)?;
    let now = now_rfc3339();
    shared.hub.send_to_joined(
        conversation_id,
        &ServerFrame::NewMessage {
            conversation_id: conversation_id.to_owned(),
            message: message.clone(),
            timestamp: now.clone(),
        },
        None,
    );
    let _ = members; // the hub's cached set, the same people, is shared by the event log
    shared.hub.send_to_members(
        conversation_id,
        &ServerFrame::ConversationUpdate {
            conversation_id: conversation_id.to_owned(),
            last_message: LastMessage::from(message),
            version,
            timestamp: now,
        },
    );
    Ok(())
}
