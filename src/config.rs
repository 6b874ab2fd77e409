//! Where the server is, and which servers this page may ever send a session to.
//!
//! The page's own origin is always allowed. A `<meta name="persona-chat-server" content="…">`
//! tag lists further servers (space or comma separated); the first one listed is the default.
//! Empty (the default build) means this page's origin only. A `?server=` link is followed only
//! when it names an allowed server: any other is refused, so a crafted link can never make the
//! app send a token elsewhere. Sessions are stored per server (see `storage.rs`), so switching
//! servers means signing in there.

/// The server this tab talks to, and a `?server=` that was refused (to tell the user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerChoice {
    /// The server's HTTP base URL without a trailing slash, e.g. `http://127.0.0.1:8080`.
    pub base: String,
    /// A `?server=` (or a remembered one) that is not on the allow-list.
    pub refused: Option<String>,
}

/// The server for this page. An accepted `?server=` is remembered for the tab, so it survives
/// navigation and reloads; a refused one is not.
pub fn server_choice() -> ServerChoice {
    let window = web_sys::window().expect("a browser window");
    let location = window.location();
    let from_query = location
        .search()
        .ok()
        .and_then(|s| web_sys::UrlSearchParams::new_with_str(&s).ok())
        .and_then(|p| p.get("server"));
    let from_meta = window
        .document()
        .and_then(|d| d.query_selector("meta[name='persona-chat-server']").ok().flatten())
        .and_then(|m| m.get_attribute("content"));
    let origin = location.origin().unwrap_or_default();
    let asked = from_query.clone().or_else(crate::storage::remembered_server);
    let choice = choose_server(asked.as_deref(), from_meta.as_deref(), &origin);
    if from_query.is_some() && choice.refused.is_none() {
        crate::storage::remember_server(&choice.base);
    }
    if choice.refused.is_some() {
        crate::storage::forget_server();
    }
    choice
}

/// The allow-list rule: `asked` wins only when it names the page's origin or a server of the
/// meta tag; otherwise the meta tag's first server, else the page's origin.
pub fn choose_server(asked: Option<&str>, meta: Option<&str>, origin: &str) -> ServerChoice {
    let origin = normalize_server(origin).unwrap_or_default();
    let listed: Vec<String> = meta.unwrap_or("").split([' ', ',', '\n', '\t']).filter_map(normalize_server).collect();
    let default = listed.first().cloned().unwrap_or_else(|| origin.clone());
    let Some(asked) = asked.map(str::trim).filter(|s| !s.is_empty()) else {
        return ServerChoice { base: default, refused: None };
    };
    match normalize_server(asked) {
        Some(base) if base == origin || listed.contains(&base) => ServerChoice { base, refused: None },
        _ => ServerChoice { base: default, refused: Some(asked.to_owned()) },
    }
}

/// `scheme://host[:port][/path]` in one spelling (scheme and host lower case, no trailing
/// slash, no query or fragment), or None for anything that is not a plain http(s) URL:
/// other schemes, user info (`http://good@evil`), empty hosts, spaces or backslashes.
pub fn normalize_server(s: &str) -> Option<String> {
    let s = s.trim();
    let (scheme, rest) = s.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let bad = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '@' | '\\' | '%');
    if authority.is_empty() || authority.contains(bad) || path.contains(|c: char| c.is_whitespace() || c == '\\') {
        return None;
    }
    Some(format!("{scheme}://{}{}", authority.to_ascii_lowercase(), path.trim_end_matches('/')))
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

/// Percent-encodes a query value (all but RFC 3986's unreserved characters): the app's one
/// encoder, plain Rust so it is tested natively.
pub fn encode_query_value(s: &str) -> String {
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

    const ORIGIN: &str = "http://127.0.0.1:8080";

    #[test]
    fn query_values_keep_only_unreserved_characters() {
        assert_eq!(encode_query_value("Ada-._~09"), "Ada-._~09");
        assert_eq!(encode_query_value("a b&c=d/é#"), "a%20b%26c%3Dd%2F%C3%A9%23");
        assert_eq!(encode_query_value("+%"), "%2B%25");
    }

    fn base(asked: Option<&str>, meta: Option<&str>) -> (String, bool) {
        let c = choose_server(asked, meta, ORIGIN);
        (c.base, c.refused.is_some())
    }

    #[test]
    fn by_default_only_the_pages_own_origin() {
        assert_eq!(base(None, None), (ORIGIN.to_owned(), false));
        assert_eq!(base(None, Some("")), (ORIGIN.to_owned(), false));
        // The origin itself, spelled differently, is fine.
        assert_eq!(base(Some("HTTP://127.0.0.1:8080/"), Some("")), (ORIGIN.to_owned(), false));
        // Anything else is refused, and the page's origin is used.
        for link in [
            "http://other-host",
            "http://127.0.0.1:8081",
            "https://127.0.0.1:8080",
            "http://127.0.0.1:8080@evil.example",
            "http://evil.example#@127.0.0.1:8080",
            "javascript:alert(1)",
            "//evil.example",
            "ws://127.0.0.1:8080",
        ] {
            assert_eq!(base(Some(link), None), (ORIGIN.to_owned(), true), "{link}");
        }
    }

    #[test]
    fn the_meta_tag_lists_more_servers_and_its_first_is_the_default() {
        let meta = Some("https://chat.example https://eu.chat.example/");
        assert_eq!(base(None, meta), ("https://chat.example".to_owned(), false));
        assert_eq!(base(Some("https://eu.chat.example"), meta), ("https://eu.chat.example".to_owned(), false));
        assert_eq!(base(Some(ORIGIN), meta), (ORIGIN.to_owned(), false));
        assert_eq!(base(Some("https://chat.example.evil"), meta), ("https://chat.example".to_owned(), true));
        // Garbage in the list is ignored, not trusted.
        assert_eq!(base(None, Some("javascript:x, https://ok.example")), ("https://ok.example".to_owned(), false));
    }

    #[test]
    fn normalizing_keeps_one_spelling() {
        assert_eq!(
            normalize_server("HTTPS://Chat.Example:443/app/?x=1").as_deref(),
            Some("https://chat.example:443/app")
        );
        assert_eq!(normalize_server("http://a b"), None);
        assert_eq!(normalize_server("http://a%40b"), None);
        assert_eq!(normalize_server("http://"), None);
        assert_eq!(normalize_server("http://host\\@evil"), None);
    }

    #[test]
    fn socket_url_follows_the_scheme() {
        assert_eq!(socket_url("http://h:1", "a.b"), "ws://h:1/ws?token=a.b");
        assert_eq!(socket_url("https://h", "a+b/="), "wss://h/ws?token=a%2Bb%2F%3D");
    }
}
