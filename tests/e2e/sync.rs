//! One truth in every window (issue 11), in Chromium with the real server: a room one is
//! added to appears without a reload, and goes when one leaves it or is removed (with a
//! notice); a window cut off while messages arrive in a room it has not opened shows the
//! right preview and unread count once back; a window opened while a persona's reply streams
//! shows the words so far, then the rest, each word once.

use std::time::Duration;

use fantoccini::wd::WindowHandle;
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

use super::faults::Cable;
use super::harness::*;
use super::{sign_in, LIMIT};
use crate::ensure;

/// Signs in over HTTP: (token, user id).
async fn token_of(base: &str, user: &str, password: &str) -> TestResult<(String, String)> {
    ensure_account(base, user, password).await?;
    let body = json!({ "username": user, "password": password }).to_string();
    let (status, answer) = http_request("POST", &format!("{base}/api/session"), None, Some(&body)).await?;
    ensure!(status == 200, "sign-in of {user}: {status} {answer}");
    let v: Value = serde_json::from_str(&answer).map_err(|e| e.to_string())?;
    Ok((v["token"].as_str().unwrap_or_default().to_owned(), v["user"]["id"].as_str().unwrap_or_default().to_owned()))
}

async fn call(method: &str, url: &str, token: &str, body: Option<Value>) -> TestResult<Value> {
    let body = body.map(|b| b.to_string());
    let (status, answer) = http_request(method, url, Some(token), body.as_deref()).await?;
    ensure!((200..300).contains(&status), "{method} {url}: {status} {answer}");
    Ok(serde_json::from_str(&answer).unwrap_or(Value::Null))
}

async fn create_room(base: &str, token: &str, title: &str, members: &[&str]) -> TestResult<String> {
    let room = call(
        "POST",
        &format!("{base}/api/conversations"),
        token,
        Some(json!({ "title": title, "member_ids": members })),
    )
    .await?;
    Ok(room["id"].as_str().unwrap_or_default().to_owned())
}

async fn post(base: &str, token: &str, conversation: &str, text: &str) -> TestResult {
    let client_id = format!("e2e-{}-{}", text.len(), std::process::id()) + &text.replace(' ', "-");
    call(
        "POST",
        &format!("{base}/api/conversations/{conversation}/messages"),
        token,
        Some(json!({ "content": text, "client_id": client_id })),
    )
    .await?;
    Ok(())
}

/// The window's conversation list, from the app's state hook: (id, title, unread, last).
async fn listed(client: &Client) -> TestResult<Vec<(String, String, i64, Option<String>)>> {
    let state = app_state(client).await?;
    let list = state["list"].as_array().cloned().ok_or("the hook has no list")?;
    Ok(list
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or_default().to_owned(),
                c["title"].as_str().unwrap_or_default().to_owned(),
                c["unread"].as_i64().unwrap_or(-1),
                c["last"].as_str().map(str::to_owned),
            )
        })
        .collect())
}

async fn open_in_list(client: &Client, id: &str) -> TestResult {
    client
        .find(Locator::Css(&format!(".conversation-list a[href='/c/{id}']")))
        .await
        .map_err(|e| format!("no row for {id}: {e}"))?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

async fn switch(client: &Client, tab: &WindowHandle) -> TestResult {
    client.switch_to_window(tab.clone()).await.map_err(|e| e.to_string())
}

/// Signs in on the app served by `app` to the chat server at `chat` and waits for the Lobby.
async fn sign_in_via(client: &Client, app: &str, chat: &str, user: &str, password: &str) -> TestResult {
    ensure_account(chat, user, password).await?;
    client.goto(&format!("{app}/login?server={chat}")).await.map_err(|e| e.to_string())?;
    let field = client.wait().at_most(LIMIT).for_element(Locator::Id("username")).await.map_err(|e| e.to_string())?;
    field.send_keys(user).await.map_err(|e| e.to_string())?;
    let pass = client.find(Locator::Id("password")).await.map_err(|e| e.to_string())?;
    pass.send_keys(password).await.map_err(|e| e.to_string())?;
    let submit = client.find(Locator::Css(".login-card button[type=submit]")).await.map_err(|e| e.to_string())?;
    submit.click().await.map_err(|e| e.to_string())?;
    eventually(LIMIT, &format!("{user} to be connected in the Lobby"), || async {
        (link_state(client).await.as_deref() == Some("connected")
            && text_of(client, ".chat-header h1").await.as_deref() == Some("Lobby"))
        .then_some(())
    })
    .await
}

async fn rooms_body(
    driver: &Driver,
    app: &TestServer,
    server: &TestServer,
    cable: &Cable,
    a: &Client,
    b: &Client,
) -> TestResult {
    let base = &server.base;
    sign_in_via(a, &app.base, base, "alice", "alice-password").await?;
    // Bob's window reaches the server through a cable that can be cut.
    sign_in_via(b, &app.base, &cable.base, "bob", "bob-password").await?;
    let (alice, _) = token_of(base, "alice", "alice-password").await?;
    let (_, bob_id) = token_of(base, "bob", "bob-password").await?;

    // (a) Alice creates a room with Bob: Bob's open window lists it without a reload.
    let room = create_room(base, &alice, "Plans for Friday", &[&bob_id]).await?;
    eventually(LIMIT, "Bob's window to list the new room", || async {
        listed(b).await.ok()?.iter().any(|c| c.0 == room && c.1 == "Plans for Friday").then_some(())
    })
    .await?;
    eventually(LIMIT, "the room's row to show in Bob's list", || async {
        b.find(Locator::Css(&format!(".conversation-list a[href='/c/{room}']"))).await.ok().map(|_| ())
    })
    .await?;
    eventually(LIMIT, "Alice's window to list it too", || async {
        listed(a).await.ok()?.iter().any(|c| c.0 == room).then_some(())
    })
    .await?;

    // Bob opens it: the header has Leave (the Lobby's has not).
    ensure!(
        b.find_all(Locator::Css("[data-action=leave]")).await.map_err(|e| e.to_string())?.is_empty(),
        "the Lobby offers Leave"
    );
    open_in_list(b, &room).await?;
    eventually(LIMIT, "the room to open with Leave in its header", || async {
        let title = text_of(b, ".chat-header h1").await;
        let leave = b.find(Locator::Css(".chat-header [data-action=leave]")).await.ok();
        (title.as_deref() == Some("Plans for Friday") && leave.is_some()).then_some(())
    })
    .await?;
    screenshot(b, "sync-room-header-with-leave").await?;

    // Alice removes Bob: the room goes from his window, which says so and goes back.
    call("DELETE", &format!("{base}/api/conversations/{room}/members/{bob_id}"), &alice, None).await?;
    eventually(LIMIT, "Bob's window to drop the room and say he was removed", || async {
        let gone = !listed(b).await.ok()?.iter().any(|c| c.0 == room);
        let notice = text_of(b, ".notice").await.unwrap_or_default();
        (gone && notice.contains("You were removed from Plans for Friday")).then_some(notice)
    })
    .await?;
    eventually(LIMIT, "Bob's window to go back to the list", || async {
        let url = b.current_url().await.ok()?;
        (!url.path().starts_with("/c/")).then_some(())
    })
    .await?;
    screenshot(b, "sync-removed-notice").await?;

    // (b) Bob's window is cut off; messages arrive in a room he has not opened.
    let third = create_room(base, &alice, "Quiet room", &[&bob_id]).await?;
    eventually(LIMIT, "Bob's window to list the quiet room", || async {
        listed(b).await.ok()?.iter().any(|c| c.0 == third).then_some(())
    })
    .await?;
    driver.set_offline(b, true).await?;
    cable.set(false);
    eventually(LIMIT, "Bob's window to notice it is cut off", || async {
        (link_state(b).await.as_deref() != Some("connected")).then_some(())
    })
    .await?;
    let texts = ["one while away", "two while away", "three while away"];
    for text in texts {
        post(base, &alice, &third, text).await?;
    }
    cable.set(true);
    driver.set_offline(b, false).await?;
    eventually(Duration::from_secs(40), "Bob's list to show the preview and 3 unread after the reconnect", || async {
        let list = listed(b).await.ok()?;
        let row = list.iter().find(|c| c.0 == third)?;
        (row.2 == 3 && row.3.as_deref() == Some("three while away")).then_some(())
    })
    .await?;
    eventually(LIMIT, "the row's preview in the page", || async {
        let row = text_of(b, &format!(".conversation-list a[href='/c/{third}']")).await?;
        row.contains("three while away").then_some(())
    })
    .await?;
    screenshot(b, "sync-list-after-reconnect").await?;

    // A second room; Bob has it in two tabs; he leaves it from one: gone from both.
    let second = create_room(base, &alice, "Book club", &[&bob_id]).await?;
    let first_tab = b.window().await.map_err(|e| e.to_string())?;
    let other_tab = b.new_window(true).await.map_err(|e| e.to_string())?.handle;
    switch(b, &other_tab).await?;
    b.goto(&format!("{}/?server={}", app.base, cable.base)).await.map_err(|e| e.to_string())?;
    for (tab, who) in [(&other_tab, "bob's second tab"), (&first_tab, "bob's first tab")] {
        switch(b, tab).await?;
        eventually(LIMIT, &format!("{who} to list the second room"), || async {
            listed(b).await.ok()?.iter().any(|c| c.0 == second).then_some(())
        })
        .await?;
    }
    open_in_list(b, &second).await?;
    eventually(LIMIT, "Leave in the second room's header", || async {
        b.find(Locator::Css(".chat-header [data-action=leave]")).await.ok()
    })
    .await?
    .click()
    .await
    .map_err(|e| e.to_string())?;
    eventually(LIMIT, "the confirmation", || async {
        b.find(Locator::Css(".chat-header [data-action=leave-confirm]")).await.ok()
    })
    .await?
    .click()
    .await
    .map_err(|e| e.to_string())?;
    for (tab, who) in [(&first_tab, "the tab that left"), (&other_tab, "bob's other tab")] {
        switch(b, tab).await?;
        eventually(LIMIT, &format!("{who} to drop the room"), || async {
            let list = listed(b).await.ok()?;
            (!list.is_empty() && !list.iter().any(|c| c.0 == second)).then_some(())
        })
        .await?;
    }
    ensure!(listed(a).await?.iter().any(|c| c.0 == second), "alice lost the room Bob left");

    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_rooms_appear_and_go_in_every_window_and_the_list_is_right_after_a_cut() {
    let app_data = tempfile::tempdir().expect("temp dir");
    let chat_data = tempfile::tempdir().expect("temp dir");
    let chat_port = free_port();
    let cable = Cable::lay(chat_port).await.expect("the cable is laid");
    let chat_base = format!("http://127.0.0.1:{chat_port}");
    let app =
        TestServer::start_app_for_all(app_data.path(), &[&chat_base, &cable.base]).expect("the app's server starts");
    let server = TestServer::start_with_args(chat_data.path(), chat_port, &["--allowed-origin", &app.base])
        .expect("chat server starts");
    let driver = Driver::start().expect("chromedriver starts");
    let a = driver.window().await.expect("window A");
    let b = driver.window().await.expect("window B");
    let outcome =
        tokio::time::timeout(Duration::from_secs(150), rooms_body(&driver, &app, &server, &cable, &a, &b)).await;
    conclude(outcome, vec![(a, "sync-alice"), (b, "sync-bob")]).await;
}

async fn mid_reply_body(server: &TestServer, a: &Client, late: &Client) -> TestResult {
    let base = &server.base;
    sign_in(a, base, "carol", "carol-password").await?;
    let (carol, _) = token_of(base, "carol", "carol-password").await?;
    let personas = call("GET", &format!("{base}/api/personas"), &carol, None).await?;
    let ada = personas
        .as_array()
        .and_then(|l| l.iter().find(|p| p["name"] == "Ada"))
        .and_then(|p| p["id"].as_str())
        .ok_or("no persona Ada")?
        .to_owned();
    let direct = call("POST", &format!("{base}/api/conversations"), &carol, Some(json!({ "persona_id": ada }))).await?
        ["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The second window signs in and waits in the Lobby.
    sign_in(late, base, "carol", "carol-password").await?;
    a.goto(&format!("{base}/c/{direct}")).await.map_err(|e| e.to_string())?;
    eventually(LIMIT, "the first window in the conversation with Ada", || async {
        (text_of(a, ".chat-header h1").await.as_deref() == Some("Ada")).then_some(())
    })
    .await?;
    post(base, &carol, &direct, "Tell me a long story about the sea, please").await?;
    // Some words have streamed in the first window: the second one opens the conversation now.
    eventually(Duration::from_secs(30), "Ada's reply to start streaming", || async {
        let text = text_of(a, ".messages .message.streaming .content").await?;
        (text.split_whitespace().count() >= 3).then_some(())
    })
    .await?;
    open_in_list(late, &direct).await?;
    // The words so far at once, then the rest; every sample a prefix of the final text.
    let samples = std::cell::RefCell::new(Vec::<String>::new());
    let final_text = eventually(Duration::from_secs(60), "the reply to end in the late window", || async {
        if let Some(text) = text_of(late, ".messages .message.streaming .content").await {
            samples.borrow_mut().push(text);
        }
        let state = app_state(late).await.ok()?;
        let streams = state["streams"].as_array()?.len();
        let rows = rendered_rows(late).await.ok()?;
        let last = rows.last()?;
        (streams == 0 && last.0.is_some() && !samples.borrow().is_empty()).then(|| last.2.clone())
    })
    .await?;
    let samples = samples.into_inner();
    screenshot(late, "sync-mid-reply-late-window").await?;
    let first = samples.first().cloned().unwrap_or_default();
    eprintln!(
        "[sync] the late window saw {} samples; the first {} of {} chars",
        samples.len(),
        first.chars().count(),
        final_text.chars().count()
    );
    ensure!(!first.trim().is_empty(), "the late window showed nothing of the reply at first");
    for sample in &samples {
        let sample = sample.trim_end_matches('▍').trim_end();
        ensure!(final_text.starts_with(sample), "a sample {sample:?} is not a prefix of the reply {final_text:?}");
    }
    let stored = rendered_rows(a).await?.last().map(|r| r.2.clone()).unwrap_or_default();
    ensure!(stored == final_text, "the windows disagree: {stored:?} vs {final_text:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_a_window_opened_mid_reply_shows_the_words_so_far_then_the_rest() {
    let data = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_with_args(
        data.path(),
        free_port(),
        &["--persona-think-ms", "0", "--persona-pace-ms", "400", "--persona-seed", "7"],
    )
    .expect("server starts");
    let driver = Driver::start().expect("chromedriver starts");
    let a = driver.window().await.expect("window A");
    let late = driver.window().await.expect("the late window");
    let outcome = tokio::time::timeout(Duration::from_secs(150), mid_reply_body(&server, &a, &late)).await;
    conclude(outcome, vec![(a, "sync-carol"), (late, "sync-carol-late")]).await;
}
