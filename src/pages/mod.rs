pub mod chat;
pub mod diagnostics;
pub mod login;
