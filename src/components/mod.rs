pub mod composer;
pub mod connection_status;
pub mod message_list;
