//! Where the server is: the page's own origin by default; a `<meta name="persona-chat-server"
//! content="https://host:port">` tag or a `?server=` parameter points the same built files at
//! another server without a rebuild.

/// The server's HTTP base URL without a trailing slash, e.g. `http://127.0.0.1:8080`.
/// A `?server=` override is remembered for the tab, so it survives navigation and reloads.
pub fn server_base() -> String {
    let window = web_sys::window().expect("a browser window");
    let location = window.location();
    let from_query = location
        .search()
        .ok()
        .and_then(|s| web_sys::UrlSearchParams::new_with_str(&s).ok())
        .and_then(|p| p.get("server"));
    if let Some(server) = &from_query {
        crate::storage::remember_server(server);
    }
    let from_query = from_query.or_else(crate::storage::remembered_server);
    let from_meta = || {
        window
            .document()?
            .query_selector("meta[name='persona-chat-server']")
            .ok()??
            .get_attribute("content")
    };
    let origin = location.origin().unwrap_or_default();
    resolve_base(from_query.as_deref(), from_meta().as_deref(), &origin)
}

/// The override that wins (query, then meta, then the page's origin), cleaned up.
pub fn resolve_base(query: Option<&str>, meta: Option<&str>, origin: &str) -> String {
    let chosen = [query, meta]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| s.starts_with("http://") || s.starts_with("https://"))
        .unwrap_or(origin);
    chosen.trim_end_matches('/').to_owned()
}

/// The WebSocket URL for a server base and token: http becomes ws, https becomes wss.
pub fn socket_url(base: &str, token: &str) -> String {
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_owned()
    };
    format!("{ws_base}/ws?token={}", encode_query_value(token))
}

fn encode_query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_beats_meta_beats_origin() {
        let origin = "http://127.0.0.1:8080";
        assert_eq!(resolve_base(None, None, origin), origin);
        assert_eq!(resolve_base(None, Some("https://chat.example/"), origin), "https://chat.example");
        assert_eq!(resolve_base(Some("http://10.0.0.2:9000"), Some("https://chat.example"), origin), "http://10.0.0.2:9000");
        // Something that is not a URL is ignored rather than breaking the app.
        assert_eq!(resolve_base(Some("javascript:alert(1)"), None, origin), origin);
    }

    #[test]
    fn socket_url_follows_the_scheme() {
        assert_eq!(socket_url("http://h:1", "a.b"), "ws://h:1/ws?token=a.b");
        assert_eq!(socket_url("https://h", "a+b/="), "wss://h/ws?token=a%2Bb%2F%3D");
    }
}
