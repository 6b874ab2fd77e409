pub mod composer;
pub mod connection_status;
pub mod message_list;
pub mod typing_indicator;
