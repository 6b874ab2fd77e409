//! persona-chat, the browser app: a Leptos client-side-rendered single-page app.

pub mod api;
pub mod app;
pub mod clock;
pub mod components;
pub mod config;
pub mod ids;
pub mod notify;
pub mod pages;
pub mod session;
pub mod socket;
pub mod state;
pub mod storage;
