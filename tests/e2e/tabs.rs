//! Tabs of one user share one connection (issue 10): tabs of one WebDriver session share
//! storage, Web Locks and BroadcastChannels, as tabs of one browser profile do.

use std::time::{Duration, Instant};

use fantoccini::wd::WindowHandle;
use fantoccini::{Client, Locator};

use super::harness::*;
use super::{message_texts, send, sign_in, LIMIT};
use crate::ensure;

const PASSWORD: &str = "a long password";

/// The server's open-socket gauge.
async fn sockets_open(base: &str) -> Option<u64> {
    let (status, text) = http_request("GET", &format!("{base}/metrics"), None, None).await.ok()?;
    if status != 200 {
        return None;
    }
    text.lines().find_map(|l| l.strip_prefix("persona_chat_sockets_open ")).and_then(|v| v.trim().parse().ok())
}

async fn switch(client: &Client, tab: &WindowHandle) -> TestResult {
    client.switch_to_window(tab.clone()).await.map_err(|e| e.to_string())
}

/// Opens a new tab in the same profile on `url` and waits until it is connected in the Lobby.
async fn open_tab(client: &Client, url: &str) -> TestResult<WindowHandle> {
    let tab = client.new_window(true).await.map_err(|e| e.to_string())?.handle;
    switch(client, &tab).await?;
    client.goto(url).await.map_err(|e| e.to_string())?;
    eventually(LIMIT, "the new tab to be connected in the Lobby", || async {
        let connected = link_state(client).await.as_deref() == Some("connected");
        let lobby = text_of(client, ".chat-header h1").await.as_deref() == Some("Lobby");
        (connected && lobby).then_some(())
    })
    .await?;
    Ok(tab)
}

/// Each tab's role in sharing the connection ("leader", "follower", "solo").
async fn roles(client: &Client, tabs: &[WindowHandle]) -> TestResult<Vec<String>> {
    let mut out = Vec::new();
    for tab in tabs {
        switch(client, tab).await?;
        let state = app_state(client).await?;
        out.push(state["tab"]["role"].as_str().unwrap_or("").to_owned());
    }
    Ok(out)
}

/// Waits until every tab shows exactly `expected` (in order).
async fn every_tab_shows(client: &Client, tabs: &[WindowHandle], expected: &[&str], what: &str) -> TestResult {
    let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    for (n, tab) in tabs.iter().enumerate() {
        switch(client, tab).await?;
        eventually(LIMIT, &format!("tab {n} to show {what}"), || async {
            (message_texts(client).await == expected).then_some(())
        })
        .await?;
    }
    Ok(())
}

async fn four_tabs_body(server: &TestServer, a: &Client, b: &Client) -> TestResult {
    let base = server.base.as_str();
    ensure_account(base, "alice", PASSWORD).await?;
    ensure_account(base, "bob", PASSWORD).await?;
    sign_in(a, base, "alice", PASSWORD).await?;
    let mut tabs = vec![a.window().await.map_err(|e| e.to_string())?];
    for _ in 0..3 {
        tabs.push(open_tab(a, &format!("{base}/")).await?);
    }
    eventually(LIMIT, "Alice's four tabs to hold one socket", || async {
        (sockets_open(base).await == Some(1)).then_some(())
    })
    .await?;
    let r = roles(a, &tabs).await?;
    ensure!(
        r.iter().filter(|r| *r == "leader").count() == 1 && r.iter().filter(|r| *r == "follower").count() == 3,
        "roles {r:?}"
    );
    sign_in(b, base, "bob", PASSWORD).await?;
    eventually(LIMIT, "two sockets: Alice's shared one and Bob's", || async {
        (sockets_open(base).await == Some(2)).then_some(())
    })
    .await?;

    // Presence: every tab of Alice sees Bob online.
    for (n, tab) in tabs.iter().enumerate() {
        switch(a, tab).await?;
        eventually(LIMIT, &format!("tab {n} to list Bob online"), || async {
            let state = app_state(a).await.ok()?;
            state["online"].as_array()?.iter().any(|u| u.as_str() == Some("bob")).then_some(())
        })
        .await?;
    }

    // Typing: Bob's draft shows in every tab of Alice.
    let input = b.find(Locator::Id("composer-input")).await.map_err(|e| e.to_string())?;
    input.send_keys("Hello all four").await.map_err(|e| e.to_string())?;
    for (n, tab) in tabs.iter().enumerate() {
        switch(a, tab).await?;
        eventually(LIMIT, &format!("tab {n} to show Bob typing"), || async {
            text_of(a, ".typing-text").await.filter(|t| t.contains("bob")).map(|_| ())
        })
        .await?;
    }
    input.send_keys("\u{E007}").await.map_err(|e| e.to_string())?;
    every_tab_shows(a, &tabs, &["Hello all four"], "Bob's message once").await?;

    // A follower writes and types: through the leader, to Bob, and into every tab once.
    let follower = r.iter().position(|r| r == "follower").expect("a follower");
    switch(a, &tabs[follower]).await?;
    let input = a.find(Locator::Id("composer-input")).await.map_err(|e| e.to_string())?;
    input.send_keys("from a follower").await.map_err(|e| e.to_string())?;
    eventually(LIMIT, "Bob to see Alice typing (relayed by the leader)", || async {
        text_of(b, ".typing-text").await.filter(|t| t.contains("alice")).map(|_| ())
    })
    .await?;
    input.send_keys("\u{E007}").await.map_err(|e| e.to_string())?;
    eventually(LIMIT, "Bob to receive the follower's message once", || async {
        (message_texts(b).await == ["Hello all four".to_owned(), "from a follower".to_owned()]).then_some(())
    })
    .await?;
    every_tab_shows(a, &tabs, &["Hello all four", "from a follower"], "both messages once").await?;
    switch(a, &tabs[follower]).await?;
    eventually(LIMIT, "the follower's message to be marked sent in its tab", || async {
        (attr_of(a, ".messages .message.own", "data-delivery").await.as_deref() == Some("sent")).then_some(())
    })
    .await?;
    let _ = a.goto(&format!("{base}/diagnostics")).await;
    eventually(LIMIT, "the diagnostics page to name the leading tab", || async {
        text_of(a, "[data-diag=leader]").await.filter(|t| t.len() >= 8)
    })
    .await?;
    // A tab loaded after the connection started learns from the leader who is online.
    eventually(LIMIT, "the reloaded follower to list Bob online", || async {
        app_state(a).await.ok()?["online"].as_array()?.iter().any(|u| u.as_str() == Some("bob")).then_some(())
    })
    .await?;
    screenshot(a, "tabs-diagnostics-follower").await?;
    a.goto(&format!("{base}/")).await.map_err(|e| e.to_string())?;

    // The leader tab closes: another takes over, and a message Bob sends meanwhile shows
    // exactly once in each remaining tab.
    let leader = r.iter().position(|r| r == "leader").expect("a leader");
    switch(a, &tabs[leader]).await?;
    a.close_window().await.map_err(|e| e.to_string())?;
    tabs.remove(leader);
    let closed_at = Instant::now();
    send(b, "while the leader was away").await?;
    let expected = ["Hello all four", "from a follower", "while the leader was away"];
    every_tab_shows(a, &tabs, &expected, "Bob's message sent during the hand-over, once").await?;
    eprintln!(
        "[e2e] tabs: the three remaining tabs showed Bob's message {} ms after the leader closed",
        closed_at.elapsed().as_millis()
    );
    eventually(LIMIT, "one leader among the three left", || async {
        let r = roles(a, &tabs).await.ok()?;
        (r.iter().filter(|r| *r == "leader").count() == 1).then_some(())
    })
    .await?;
    eventually(LIMIT, "still one socket for Alice", || async { (sockets_open(base).await == Some(2)).then_some(()) })
        .await?;
    // And the new leader carries Alice's sends.
    switch(a, &tabs[0]).await?;
    send(a, "after the hand-over").await?;
    eventually(LIMIT, "Bob to receive it", || async {
        message_texts(b).await.iter().any(|t| t == "after the hand-over").then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_tabs_of_one_user_share_one_socket_and_hand_over_when_the_leader_closes() {
    let data = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(data.path()).expect("server starts");
    let driver = Driver::start().expect("chromedriver starts");
    let a = driver.window().await.expect("window A");
    let b = driver.window().await.expect("window B");
    let outcome = tokio::time::timeout(Duration::from_secs(240), four_tabs_body(&server, &a, &b)).await;
    conclude(outcome, vec![(a, "tabs-alice"), (b, "tabs-bob")]).await;
}

async fn outbox_body(app: &TestServer, chat: &mut TestServer, a: &Client, b: &Client) -> TestResult {
    let url = format!("{}/?server={}", app.base, chat.base);
    ensure_account(&chat.base, "alice", PASSWORD).await?;
    ensure_account(&chat.base, "bob", PASSWORD).await?;
    for (client, user) in [(a, "alice"), (b, "bob")] {
        client.goto(&format!("{}/login?server={}", app.base, chat.base)).await.map_err(|e| e.to_string())?;
        let field =
            client.wait().at_most(LIMIT).for_element(Locator::Id("username")).await.map_err(|e| e.to_string())?;
        field.send_keys(user).await.map_err(|e| e.to_string())?;
        client
            .find(Locator::Id("password"))
            .await
            .map_err(|e| e.to_string())?
            .send_keys(PASSWORD)
            .await
            .map_err(|e| e.to_string())?;
        client
            .find(Locator::Css(".login-card button[type=submit]"))
            .await
            .map_err(|e| e.to_string())?
            .click()
            .await
            .map_err(|e| e.to_string())?;
        eventually(LIMIT, &format!("{user} to be connected"), || async {
            (link_state(client).await.as_deref() == Some("connected")
                && text_of(client, ".chat-header h1").await.as_deref() == Some("Lobby"))
            .then_some(())
        })
        .await?;
    }
    let first = a.window().await.map_err(|e| e.to_string())?;
    let second = open_tab(a, &url).await?;

    // The server goes down; two messages in each tab.
    chat.process.kill();
    for tab in [&first, &second] {
        switch(a, tab).await?;
        eventually(LIMIT, "the tab to see the connection lost", || async {
            (link_state(a).await.as_deref().is_some_and(|s| s != "connected")).then_some(())
        })
        .await?;
    }
    switch(a, &first).await?;
    send(a, "first tab one").await?;
    switch(a, &second).await?;
    send(a, "second tab one").await?;
    switch(a, &first).await?;
    send(a, "first tab two").await?;
    switch(a, &second).await?;
    send(a, "second tab two").await?;
    // The second tab trusts its pending lines and closes.
    eventually(LIMIT, "the second tab to show its two messages pending", || async {
        let pending = a.find_all(Locator::Css(".messages .message[data-delivery=pending]")).await.ok()?.len();
        (pending >= 2).then_some(())
    })
    .await?;
    a.close_window().await.map_err(|e| e.to_string())?;
    switch(a, &first).await?;
    send(a, "first tab three").await?;

    // The server is back: every message arrives once.
    *chat = TestServer::start_with_args(&chat.data_dir.clone(), chat.port, &["--allowed-origin", &app.base])?;
    let mut want = vec!["first tab one", "second tab one", "first tab two", "second tab two", "first tab three"];
    want.sort();
    eventually(Duration::from_secs(40), "Bob to receive all five, once each", || async {
        let mut got = message_texts(b).await;
        got.sort();
        (got == want).then_some(())
    })
    .await?;
    // Each tab's own order holds.
    let got = message_texts(b).await;
    let pos = |t: &str| got.iter().position(|g| g == t).unwrap_or(usize::MAX);
    ensure!(
        pos("first tab one") < pos("first tab two") && pos("first tab two") < pos("first tab three"),
        "first tab's order: {got:?}"
    );
    ensure!(pos("second tab one") < pos("second tab two"), "second tab's order: {got:?}");
    eventually(LIMIT, "the remaining tab to show all five sent, once each", || async {
        let mut texts = message_texts(a).await;
        texts.sort();
        let pending = a.find_all(Locator::Css(".messages .message[data-delivery=pending]")).await.ok()?.len();
        (texts == want && pending == 0).then_some(())
    })
    .await?;
    let left = app_state(a).await?;
    ensure!(left["pending"].as_array().is_some_and(Vec::is_empty), "the outbox still holds {:?}", left["pending"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_written_in_two_tabs_offline_arrive_once_after_the_writer_tab_closed() {
    let app_data = tempfile::tempdir().expect("temp dir");
    let chat_data = tempfile::tempdir().expect("temp dir");
    let chat_port = free_port();
    let app = TestServer::start_app_for(app_data.path(), &format!("http://127.0.0.1:{chat_port}"))
        .expect("the app's server starts");
    let mut chat = TestServer::start_with_args(chat_data.path(), chat_port, &["--allowed-origin", &app.base])
        .expect("chat server starts");
    let driver = Driver::start().expect("chromedriver starts");
    let a = driver.window().await.expect("window A");
    let b = driver.window().await.expect("window B");
    let outcome = tokio::time::timeout(Duration::from_secs(200), outbox_body(&app, &mut chat, &a, &b)).await;
    conclude(outcome, vec![(a, "tabs-outbox-alice"), (b, "tabs-outbox-bob")]).await;
}

/// In the page: writes `n` messages through the composer, one every `gap` ms, and reloads the
/// page right after message number `reload_after` went in.
const SEND_THEN_RELOAD: &str = r#"
  const [n, gap, reloadAfter, prefix] = arguments;
  const setter = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value').set;
  let i = 0;
  const one = () => {
    if (i >= n) return;
    const ta = document.querySelector('#composer-input');
    setter.call(ta, prefix + i);
    ta.dispatchEvent(new Event('input', { bubbles: true }));
    ta.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter', code: 'Enter', keyCode: 13, which: 13, bubbles: true, cancelable: true }));
    if (i === reloadAfter) { location.reload(); return; }
    i++;
    setTimeout(one, gap);
  };
  one();
  return true;"#;

async fn reload_leader_body(server: &TestServer, a: &Client, b: &Client) -> TestResult {
    let base = server.base.as_str();
    ensure_account(base, "alice", PASSWORD).await?;
    ensure_account(base, "bob", PASSWORD).await?;
    sign_in(a, base, "alice", PASSWORD).await?;
    sign_in(b, base, "bob", PASSWORD).await?;
    let first = a.window().await.map_err(|e| e.to_string())?;
    let second = open_tab(a, &format!("{base}/")).await?;
    let tabs = [first.clone(), second.clone()];
    let r = roles(a, &tabs).await?;
    let leader = r.iter().position(|r| r == "leader").ok_or(format!("no leader among {r:?}"))?;
    switch(a, &tabs[leader]).await?;
    // Eight messages, 15 ms apart; the page reloads right after the sixth is written (some
    // are then still in flight).
    a.execute(
        SEND_THEN_RELOAD,
        vec![serde_json::json!(8), serde_json::json!(15), serde_json::json!(5), serde_json::json!("reload burst ")],
    )
    .await
    .map_err(|e| e.to_string())?;
    let want: Vec<String> = (0..6).map(|i| format!("reload burst {i}")).collect();
    eventually(
        Duration::from_secs(30),
        "Bob to receive the six written before the reload, once each, in order",
        || async { (message_texts(b).await == want).then_some(()) },
    )
    .await?;
    for (n, tab) in tabs.iter().enumerate() {
        switch(a, tab).await?;
        eventually(LIMIT, &format!("tab {n} to show the six once, none pending"), || async {
            let pending = a.find_all(Locator::Css(".messages .message[data-delivery=pending]")).await.ok()?.len();
            let state = app_state(a).await.ok()?;
            (message_texts(a).await == want && pending == 0 && state["pending"].as_array()?.is_empty()).then_some(())
        })
        .await?;
    }
    eventually(LIMIT, "one socket for Alice's two tabs again", || async {
        (sockets_open(base).await == Some(2)).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_the_leader_while_it_sends_loses_and_doubles_nothing() {
    let data = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(data.path()).expect("server starts");
    let driver = Driver::start().expect("chromedriver starts");
    let a = driver.window().await.expect("window A");
    let b = driver.window().await.expect("window B");
    let outcome = tokio::time::timeout(Duration::from_secs(200), reload_leader_body(&server, &a, &b)).await;
    conclude(outcome, vec![(a, "tabs-reload-alice"), (b, "tabs-reload-bob")]).await;
}

async fn too_many_body(server: &TestServer, a: &Client, b: &Client) -> TestResult {
    let base = server.base.as_str();
    ensure_account(base, "alice", PASSWORD).await?;
    // Two browser profiles (no shared lock or channel): two sockets wanted, one allowed.
    sign_in(a, base, "alice", PASSWORD).await?;
    b.goto(&format!("{base}/login")).await.map_err(|e| e.to_string())?;
    let field = b.wait().at_most(LIMIT).for_element(Locator::Id("username")).await.map_err(|e| e.to_string())?;
    field.send_keys("alice").await.map_err(|e| e.to_string())?;
    b.find(Locator::Id("password"))
        .await
        .map_err(|e| e.to_string())?
        .send_keys(PASSWORD)
        .await
        .map_err(|e| e.to_string())?;
    b.find(Locator::Css(".login-card button[type=submit]"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    eventually(Duration::from_secs(30), "the refused profile to say why and carry on over polling", || async {
        let notice = text_of(b, ".notice").await.unwrap_or_default();
        (notice.contains("Too many open connections for this account")
            && link_state(b).await.as_deref() == Some("polling"))
        .then_some(())
    })
    .await?;
    send(b, "sent over polling").await?;
    eventually(LIMIT, "the message to reach the first profile", || async {
        message_texts(a).await.iter().any(|t| t == "sent over polling").then_some(())
    })
    .await?;
    ensure!(sockets_open(base).await == Some(1), "sockets open: {:?}", sockets_open(base).await);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_refused_for_the_per_user_limit_is_explained_and_polling_carries_on() {
    let data = tempfile::tempdir().expect("temp dir");
    let server =
        TestServer::start_with_args(data.path(), free_port(), &["--max-sockets-per-user", "1"]).expect("server starts");
    let driver = Driver::start().expect("chromedriver starts");
    let a = driver.window().await.expect("window A");
    let b = driver.window().await.expect("window B");
    let outcome = tokio::time::timeout(Duration::from_secs(120), too_many_body(&server, &a, &b)).await;
    conclude(outcome, vec![(a, "too-many-a"), (b, "too-many-b")]).await;
}

async fn lead_here_body(server: &TestServer, a: &Client) -> TestResult {
    let base = server.base.as_str();
    ensure_account(base, "alice", PASSWORD).await?;
    sign_in(a, base, "alice", PASSWORD).await?;
    let first = a.window().await.map_err(|e| e.to_string())?;
    let second = open_tab(a, &format!("{base}/")).await?;
    a.goto(&format!("{base}/diagnostics")).await.map_err(|e| e.to_string())?;
    let tabs = [first.clone(), second.clone()];
    eventually(LIMIT, "the first tab to lead and the second to follow", || async {
        (roles(a, &tabs).await.ok()? == ["leader", "follower"]).then_some(())
    })
    .await?;
    switch(a, &second).await?;
    a.find(Locator::Css("[data-diag=lead-here]"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    eventually(LIMIT, "the second tab to lead, the first to follow, on one socket", || async {
        let r = roles(a, &tabs).await.ok()?;
        (r == ["follower", "leader"] && sockets_open(base).await == Some(1)).then_some(())
    })
    .await?;
    switch(a, &second).await?;
    eventually(LIMIT, "the diagnostics page to say this tab leads", || async {
        text_of(a, "[data-diag=leader]").await.filter(|t| t.contains("this tab")).map(|_| ())
    })
    .await?;
    screenshot(a, "tabs-diagnostics-leader").await?;
    // The first tab, now following, still sends.
    switch(a, &first).await?;
    send(a, "after the lead moved").await?;
    eventually(LIMIT, "the follower's message to be sent through the new leader", || async {
        let sent = attr_of(a, ".messages .message.own", "data-delivery").await.as_deref() == Some("sent");
        (sent && message_texts(a).await == ["after the lead moved".to_owned()]).then_some(())
    })
    .await?;

    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_from_this_tab_moves_the_connection() {
    let data = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(data.path()).expect("server starts");
    let driver = Driver::start().expect("chromedriver starts");
    let a = driver.window().await.expect("window A");
    let outcome = tokio::time::timeout(Duration::from_secs(120), lead_here_body(&server, &a)).await;
    conclude(outcome, vec![(a, "tabs-lead-here")]).await;
}
