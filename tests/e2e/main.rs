//! End-to-end: the real server, the built app and headless Chromium, two windows, two users.
//! Run by scripts/test.sh (`cargo test --test e2e`); needs the server binary, dist/ and
//! chromedriver (see harness.rs for the environment variables that override their paths).

mod faults;
mod ghost;
mod harness;
mod screens;
mod security;
mod sync;
mod tabs;

use std::time::Duration;

use fantoccini::{Client, Locator};
use harness::*;

const LIMIT: Duration = Duration::from_secs(15);

async fn sign_in(client: &Client, base: &str, username: &str, password: &str) -> TestResult {
    sign_in_until(client, base, username, password, "connected", LIMIT).await
}

/// Signs in and waits until the connection indicator shows `state` in the Lobby.
async fn sign_in_until(
    client: &Client,
    base: &str,
    username: &str,
    password: &str,
    state: &str,
    limit: Duration,
) -> TestResult {
    ensure_account(base, username, password).await?;
    client.goto(&format!("{base}/login")).await.map_err(|e| e.to_string())?;
    let field = client
        .wait()
        .at_most(LIMIT)
        .for_element(Locator::Id("username"))
        .await
        .map_err(|e| format!("no sign-in form: {e}"))?;
    field.send_keys(username).await.map_err(|e| e.to_string())?;
    client
        .find(Locator::Id("password"))
        .await
        .map_err(|e| e.to_string())?
        .send_keys(password)
        .await
        .map_err(|e| e.to_string())?;
    client
        .find(Locator::Css(".login-card button[type=submit]"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    eventually(limit, &format!("{username} to be {state} in the Lobby"), || async {
        let connected = attr_of(client, ".connection", "data-state").await.as_deref() == Some(state);
        let lobby = text_of(client, ".chat-header h1").await.as_deref() == Some("Lobby");
        (connected && lobby).then_some(())
    })
    .await
}

/// The texts of the messages shown in a window, in order.
async fn message_texts(client: &Client) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(items) = client.find_all(Locator::Css(".messages .message .content")).await {
        for item in items {
            out.push(item.text().await.unwrap_or_default());
        }
    }
    out
}

async fn send(client: &Client, text: &str) -> TestResult {
    let input = client.find(Locator::Id("composer-input")).await.map_err(|e| e.to_string())?;
    input.send_keys(text).await.map_err(|e| e.to_string())?;
    input.send_keys("\u{E007}").await.map_err(|e| e.to_string()) // Enter
}

async fn two_tabs_body(server: &mut TestServer, a: &Client, b: &Client) -> TestResult {
    sign_in(a, &server.base, "alice", "alice-password").await?;
    sign_in(b, &server.base, "bob", "bob-password").await?;

    let text = "Hello Bob, this is Alice <b>not bold</b>";
    send(a, text).await?;
    eventually(LIMIT, "Bob's window to show Alice's message", || async {
        message_texts(b).await.iter().any(|t| t == text).then_some(())
    })
    .await?;
    eventually(LIMIT, "Alice's own message to be marked sent", || async {
        let state = attr_of(a, ".messages .message.own", "data-delivery").await;
        (state.as_deref() == Some("sent")).then_some(())
    })
    .await?;
    // Rendered as text: the markup shows literally, no <b> element exists.
    let bold = b.find_all(Locator::Css(".messages .content b")).await.map_err(|e| e.to_string())?;
    ensure!(bold.is_empty(), "user content was rendered as HTML");

    // Bob types: Alice sees it; he sends: it goes away.
    let reply = "Hi Alice! Bob here.";
    let input = b.find(Locator::Id("composer-input")).await.map_err(|e| e.to_string())?;
    input.send_keys(reply).await.map_err(|e| e.to_string())?;
    eventually(LIMIT, "Alice to see that Bob is typing", || async {
        (text_of(a, ".typing-text").await.as_deref() == Some("bob is typing")).then_some(())
    })
    .await?;
    screenshot(a, "two-tabs-alice-sees-typing").await?;
    input.send_keys("\u{E007}").await.map_err(|e| e.to_string())?;
    eventually(LIMIT, "the typing line to go away once Bob's message is sent", || async {
        a.find_all(Locator::Css(".typing-text")).await.ok()?.is_empty().then_some(())
    })
    .await?;
    eventually(LIMIT, "Alice's window to show Bob's reply", || async {
        let texts = message_texts(a).await;
        (texts == [text.to_owned(), reply.to_owned()]).then_some(())
    })
    .await?;
    ensure!(
        message_texts(b).await == [text.to_owned(), reply.to_owned()],
        "Bob's window shows {:?}",
        message_texts(b).await
    );

    screenshot(a, "two-tabs-alice").await?;
    screenshot(b, "two-tabs-bob").await?;

    // The server goes away: both windows say so.
    server.process.kill();
    for (client, who) in [(a, "alice"), (b, "bob")] {
        eventually(LIMIT, &format!("{who}'s window to show Reconnecting"), || async {
            let state = attr_of(client, ".connection", "data-state").await;
            let words = text_of(client, ".connection-text").await.unwrap_or_default();
            (state.as_deref() == Some("disconnected") && words.starts_with("Reconnecting")).then_some(())
        })
        .await?;
    }
    screenshot(a, "two-tabs-alice-disconnected").await?;

    // Written while the server is away: shown as pending.
    let offline = "Written while the server was down";
    send(a, offline).await?;
    eventually(LIMIT, "the unsent message to show as pending", || async {
        let texts = message_texts(a).await;
        let state = attr_of(a, ".messages .message.own:last-child", "data-delivery").await;
        (texts.last().map(String::as_str) == Some(offline) && state.as_deref() == Some("pending")).then_some(())
    })
    .await?;
    screenshot(a, "two-tabs-alice-pending").await?;

    // The server comes back on the same port and data: the windows reconnect by themselves,
    // the message written offline goes out once, and the history is intact, each message once.
    *server = TestServer::start_on(&server.data_dir.clone(), server.port)?;
    for (client, who) in [(a, "alice"), (b, "bob")] {
        eventually(Duration::from_secs(40), &format!("{who}'s window to reconnect"), || async {
            (attr_of(client, ".connection", "data-state").await.as_deref() == Some("connected")).then_some(())
        })
        .await?;
    }
    eventually(LIMIT, "the message written offline to reach Bob, once", || async {
        (message_texts(b).await == [text.to_owned(), reply.to_owned(), offline.to_owned()]).then_some(())
    })
    .await?;
    eventually(LIMIT, "Alice's offline message to be marked sent", || async {
        (attr_of(a, ".messages .message.own:last-child", "data-delivery").await.as_deref() == Some("sent"))
            .then_some(())
    })
    .await?;
    let after = "Back again";
    send(b, after).await?;
    let expected = [text.to_owned(), reply.to_owned(), offline.to_owned(), after.to_owned()];
    eventually(LIMIT, "the message after the restart to reach Alice once", || async {
        (message_texts(a).await == expected).then_some(())
    })
    .await?;
    ensure!(message_texts(b).await == expected, "Bob's window shows {:?}", message_texts(b).await);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_crosses_two_real_browser_windows() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start(data.path()).expect("server starts");
    let driver = Driver::start().expect("chromedriver starts");
    let a = driver.window().await.expect("window A");
    let b = driver.window().await.expect("window B");

    let outcome = tokio::time::timeout(Duration::from_secs(150), two_tabs_body(&mut server, &a, &b)).await;
    conclude(outcome, vec![(a, "alice"), (b, "bob")]).await;
}

async fn polling_body(server: &TestServer, a: &Client, b: &Client) -> TestResult {
    // Five failed WebSocket attempts with jittered backoff (at most 1+2+4+8 s) before polling.
    sign_in_until(a, &server.base, "alice", "alice-password", "polling", Duration::from_secs(45)).await?;
    sign_in_until(b, &server.base, "bob", "bob-password", "polling", Duration::from_secs(45)).await?;
    let words = text_of(a, ".connection-text").await.unwrap_or_default();
    ensure!(words == "Live via polling", "the indicator says {words:?}");
    send(a, "sent while polling").await?;
    eventually(LIMIT, "Bob to receive over the long poll", || async {
        message_texts(b).await.iter().any(|t| t == "sent while polling").then_some(())
    })
    .await?;
    send(b, "and back").await?;
    eventually(LIMIT, "Alice to receive Bob's reply, each message once", || async {
        (message_texts(a).await == ["sent while polling".to_owned(), "and back".to_owned()]).then_some(())
    })
    .await?;
    eventually(LIMIT, "Alice's message to be marked sent", || async {
        (attr_of(a, ".messages .message.own", "data-delivery").await.as_deref() == Some("sent")).then_some(())
    })
    .await?;
    screenshot(a, "polling-alice").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_websocket_both_windows_carry_on_over_polling() {
    let data = tempfile::tempdir().expect("temp dir");
    let server =
        TestServer::start_with_args(data.path(), free_port(), &["--disable-websocket"]).expect("server starts");
    let driver = Driver::start().expect("chromedriver starts");
    let a = driver.window().await.expect("window A");
    let b = driver.window().await.expect("window B");
    let outcome = tokio::time::timeout(Duration::from_secs(150), polling_body(&server, &a, &b)).await;
    conclude(outcome, vec![(a, "polling-alice"), (b, "polling-bob")]).await;
}

async fn reload_body(app: &TestServer, chat: &mut TestServer, a: &Client, b: &Client) -> TestResult {
    // The app comes from one origin, the chat server is another (as on a static host).
    let login = |_: ()| format!("{}/login?server={}", app.base, chat.base);
    for (client, user) in [(a, "alice"), (b, "bob")] {
        ensure_account(&chat.base, user, "a password").await?;
        client.goto(&login(())).await.map_err(|e| e.to_string())?;
        let field =
            client.wait().at_most(LIMIT).for_element(Locator::Id("username")).await.map_err(|e| e.to_string())?;
        field.send_keys(user).await.map_err(|e| e.to_string())?;
        client
            .find(Locator::Id("password"))
            .await
            .map_err(|e| e.to_string())?
            .send_keys("a password")
            .await
            .map_err(|e| e.to_string())?;
        client
            .find(Locator::Css(".login-card button[type=submit]"))
            .await
            .map_err(|e| e.to_string())?
            .click()
            .await
            .map_err(|e| e.to_string())?;
        eventually(LIMIT, &format!("{user} to be connected to the other origin"), || async {
            (attr_of(client, ".connection", "data-state").await.as_deref() == Some("connected")
                && text_of(client, ".chat-header h1").await.as_deref() == Some("Lobby"))
            .then_some(())
        })
        .await?;
    }

    // The chat server goes away; Alice writes, then reloads the page (which still loads).
    chat.process.kill();
    eventually(LIMIT, "Alice to see the connection lost", || async {
        (attr_of(a, ".connection", "data-state").await.as_deref() == Some("disconnected")).then_some(())
    })
    .await?;
    let written = ["First while away", "Second while away"];
    for text in written {
        send(a, text).await?;
    }
    a.refresh().await.map_err(|e| e.to_string())?;
    eventually(LIMIT, "both unsent messages to be pending after the reload, in order", || async {
        let texts = message_texts(a).await;
        let pending = a.find_all(Locator::Css(".messages .message[data-delivery=pending]")).await.ok()?.len();
        (texts == written.map(str::to_owned) && pending == 2).then_some(())
    })
    .await?;
    screenshot(a, "reload-alice-pending").await?;

    // The chat server is back: they are sent once each, in order, and Bob gets them.
    *chat = TestServer::start_with_args(&chat.data_dir.clone(), chat.port, &["--allowed-origin", &app.base])?;
    eventually(Duration::from_secs(40), "Bob to receive both, once, in order", || async {
        (message_texts(b).await == written.map(str::to_owned)).then_some(())
    })
    .await?;
    eventually(LIMIT, "Alice's messages to be marked sent", || async {
        let sent = a.find_all(Locator::Css(".messages .message[data-delivery=sent]")).await.ok()?.len();
        (sent == 2 && message_texts(a).await == written.map(str::to_owned)).then_some(())
    })
    .await?;
    // Once more after a reload: still exactly once.
    a.refresh().await.map_err(|e| e.to_string())?;
    eventually(LIMIT, "the history after another reload to hold each once", || async {
        (attr_of(a, ".connection", "data-state").await.as_deref() == Some("connected")
            && message_texts(a).await == written.map(str::to_owned))
        .then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_written_while_away_survive_a_reload_and_arrive_once() {
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
    let outcome = tokio::time::timeout(Duration::from_secs(150), reload_body(&app, &mut chat, &a, &b)).await;
    conclude(outcome, vec![(a, "reload-alice"), (b, "reload-bob")]).await;
}
