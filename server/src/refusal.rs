//! Why a request is refused, with the protocol's code: one type for the WebSocket's `error`
//! frames and the HTTP error bodies of what users do in conversations.

use persona_chat_protocol::ErrorCode;

use crate::store::StoreError;

/// A refusal with the protocol's code, for an `error` frame or an HTTP error body.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal { code, message: message.into() }
    }

    pub fn not_member() -> Self {
        Self::new(ErrorCode::NotMember, "you are not a member of this conversation")
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::new(ErrorCode::NotFound, "not found"),
            StoreError::Sqlite(e) => {
                tracing::error!("database error: {e}");
                Self::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}
