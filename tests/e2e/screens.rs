//! The screens in two real windows: "N new messages" when scrolled up, a persona's reply
//! streaming with its badge going responding then online, the unread count of another
//! conversation rising (and the title), a draft surviving a reload on the same route, and
//! screenshots of the main screens at 1280x800 and 390x844 under target/e2e/.

use std::time::Duration;

use fantoccini::{Client, Locator};

use crate::ensure;
use crate::harness::*;
use crate::sign_in;

const LIMIT: Duration = Duration::from_secs(15);

async fn click(client: &Client, css: &str) -> TestResult {
    client
        .find(Locator::Css(css))
        .await
        .map_err(|e| format!("{css}: {e}"))?
        .click()
        .await
        .map_err(|e| format!("click {css}: {e}"))
}

async fn type_in(client: &Client, css: &str, text: &str) -> TestResult {
    client
        .find(Locator::Css(css))
        .await
        .map_err(|e| format!("{css}: {e}"))?
        .send_keys(text)
        .await
        .map_err(|e| e.to_string())
}

async fn js(client: &Client, script: &str) -> TestResult<serde_json::Value> {
    client.execute(script, vec![]).await.map_err(|e| format!("{script}: {e}"))
}

/// Whether an element matches; a WebDriver error is an error, never "not there".
async fn exists(client: &Client, css: &str) -> TestResult<bool> {
    client.find_all(Locator::Css(css)).await.map(|v| !v.is_empty()).map_err(|e| format!("looking for {css}: {e}"))
}

/// A number the page answers; anything else is an error (no fallback value).
async fn number(client: &Client, script: &str) -> TestResult<f64> {
    let v = js(client, script).await?;
    v.as_f64().ok_or_else(|| format!("{script}: not a number: {v}"))
}

fn json_field(body: &str, pointer: &str) -> TestResult<String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
    v.pointer(pointer).and_then(|x| x.as_str()).map(str::to_owned).ok_or_else(|| format!("no {pointer} in {body}"))
}

async fn screens_body(server: &TestServer, driver: &Driver, a: &Client, b: &Client) -> TestResult {
    let base = &server.base;
    sign_in(a, base, "alice", "alice-password").await?;
    sign_in(b, base, "bob", "bob-password").await?;
    let (_, session) = http_request(
        "POST",
        &format!("{base}/api/session"),
        None,
        Some(r#"{"username":"bob","password":"bob-password"}"#),
    )
    .await?;
    let bob_token = json_field(&session, "/token")?;
    let lobby = js(a, "return JSON.parse(personaChatState()).active")
        .await?
        .as_str()
        .map(str::to_owned)
        .ok_or("no active conversation")?;

    // 1. Scrolled up, new messages wait on a button instead of pulling the reader down.
    for i in 1..=80 {
        let body = serde_json::json!({ "content": format!("history line {i:02}"), "client_id": format!("seed-{i:02}-0000-0000-000000000000") }).to_string();
        let (status, answer) =
            http_request("POST", &format!("{base}/api/conversations/{lobby}/messages"), Some(&bob_token), Some(&body))
                .await?;
        ensure!(status == 200, "seeding answered {status}: {answer}");
    }
    eventually(LIMIT, "Alice's window to show the 80th line at the bottom", || async {
        let last = text_of(a, ".messages .message:last-child .content").await;
        let at_bottom = js(
            a,
            "const s = document.querySelector('.scroller'); return s.scrollHeight - s.scrollTop - s.clientHeight < 60",
        )
        .await
        .ok()?
        .as_bool()?;
        (last.as_deref() == Some("history line 80") && at_bottom).then_some(())
    })
    .await?;
    // A reload opens the newest page only (50): scrolling up brings the older ones in, and
    // the line the reader was looking at stays where it was.
    a.refresh().await.map_err(|e| e.to_string())?;
    eventually(LIMIT, "the newest page after a reload", || async {
        (text_of(a, ".messages .message:last-child .content").await.as_deref() == Some("history line 80")).then_some(())
    })
    .await?;
    let first_held = js(
        a,
        "return JSON.parse(personaChatState()).conversations[arguments[0]]?.[0]?.content ?? null"
            .replace("arguments[0]", &format!("'{lobby}'"))
            .as_str(),
    )
    .await?;
    let first_held =
        first_held.as_str().ok_or_else(|| format!("the hook holds nothing of the Lobby ({first_held})"))?;
    ensure!(
        first_held.starts_with("history line ") && first_held != "history line 01",
        "the whole history was loaded at once (first held: {first_held})"
    );
    let place = r#"const s = document.querySelector('.scroller');
        const row = [...document.querySelectorAll('.messages .message')].find(r => r.textContent.includes('history line 31'));
        return row ? row.getBoundingClientRect().top - s.getBoundingClientRect().top : null;"#;
    let older = "return [...document.querySelectorAll('.messages .message .content')].some(c => c.textContent === 'history line 01')";
    ensure!(js(a, older).await?.as_bool() == Some(false), "the older page was there before the scroll");
    // Scrolled to the top and measured in one go (one script, one task): the older page, fetched
    // on the scroll, cannot have arrived yet.
    let before = number(a, &format!("document.querySelector('.scroller').scrollTop = 0; {place}"))
        .await
        .map_err(|e| format!("line 31 before older history loaded: {e}"))?;
    eventually(LIMIT, "older history to load above", || async { js(a, older).await.ok()?.as_bool()?.then_some(()) })
        .await?;
    // The place is kept once the older lines are laid out (waiting for that, not a fixed time).
    let kept = eventually(Duration::from_secs(3), "the reader's place to stay put", || async {
        let after = number(a, place).await.ok()?;
        ((before - after).abs() < 40.0).then_some(after)
    })
    .await;
    if kept.is_err() {
        let after = number(a, place).await?;
        return Err(format!("the reader's place moved from {before} px to {after} px when older lines came in"));
    }
    screenshot(a, "screens-older-history-1280").await?;
    let reading_at = number(a, "return document.querySelector('.scroller').scrollTop").await?;
    let body = r#"{"content":"a new one while you read","client_id":"seed-new-0000-0000-000000000000"}"#;
    http_request("POST", &format!("{base}/api/conversations/{lobby}/messages"), Some(&bob_token), Some(body)).await?;
    let button = eventually(LIMIT, "a '1 new message' button in Alice's window", || async {
        text_of(a, ".new-messages").await.filter(|t| t.contains("1 new message"))
    })
    .await?;
    let top = number(a, "return document.querySelector('.scroller').scrollTop").await?;
    ensure!((top - reading_at).abs() < 40.0, "the reader was moved from {reading_at} px to {top} px ({button})");
    screenshot(a, "screens-new-messages-1280").await?;
    click(a, ".new-messages").await?;
    eventually(LIMIT, "the button to take Alice to the newest message", || async {
        let gone = !exists(a, ".new-messages").await.ok()?;
        let at_bottom = js(
            a,
            "const s = document.querySelector('.scroller'); return s.scrollHeight - s.scrollTop - s.clientHeight < 60",
        )
        .await
        .ok()?
        .as_bool()?;
        (gone && at_bottom).then_some(())
    })
    .await?;
    screenshot(a, "screens-lobby-1280").await?;

    // 2. A persona from the picker: its reply streams, its badge goes responding, then online.
    click(a, ".sidebar-header .icon-button").await?;
    a.wait()
        .at_most(LIMIT)
        .for_element(Locator::Css(".persona-choice[data-persona]"))
        .await
        .map_err(|e| format!("no persona picker: {e}"))?;
    screenshot(a, "screens-new-conversation-1280").await?;
    // The dialog takes the focus and keeps it: Shift+Tab from its first control wraps to its last.
    let inside = "return !!document.activeElement && !!document.activeElement.closest('.dialog')";
    eventually(LIMIT, "the focus to move into the dialog", || async {
        (js(a, inside).await.ok()?.as_bool() == Some(true)).then_some(())
    })
    .await?;
    let focused = a.active_element().await.map_err(|e| e.to_string())?;
    focused.send_keys("\u{E008}\u{E004}\u{E000}").await.map_err(|e| e.to_string())?;
    let wrapped = js(a, "const d = document.querySelector('.dialog'); const all = d.querySelectorAll('button:not([disabled]), input:not([disabled])'); return document.activeElement === all[all.length - 1]").await?;
    ensure!(wrapped.as_bool() == Some(true), "Shift+Tab from the dialog's first control should wrap to its last");
    let persona = text_of(a, ".persona-choice strong").await.ok_or("no persona listed")?;
    click(a, ".persona-choice").await?;
    eventually(LIMIT, "the persona's conversation to open", || async {
        let title = text_of(a, ".chat-header h1").await;
        let url = a.current_url().await.ok()?;
        (title.as_deref() == Some(persona.as_str()) && url.path().starts_with("/c/")).then_some(())
    })
    .await?;
    let persona_url = a.current_url().await.map_err(|e| e.to_string())?;
    type_in(a, "#composer-input", "Tell me about the stars, please\u{E007}").await?;
    eventually(Duration::from_secs(20), "the reply to stream with the badge on responding", || async {
        let streaming = exists(a, ".message.streaming .caret").await.ok()?;
        let badge = attr_of(a, ".chat-header .badge", "data-status").await;
        (streaming && badge.as_deref() == Some("responding")).then_some(())
    })
    .await?;
    screenshot(a, "screens-persona-streaming-1280").await?;
    eventually(Duration::from_secs(40), "the reply to end with the badge back online", || async {
        let done = !exists(a, ".message.streaming").await.ok()? && exists(a, ".message.ai[data-seq]").await.ok()?;
        let badge = attr_of(a, ".chat-header .badge", "data-status").await;
        let row = attr_of(a, ".conversation-row.selected .badge", "data-status").await;
        (done && badge.as_deref() == Some("online") && row.as_deref() == Some("online")).then_some(())
    })
    .await?;

    // 3. Bob writes in the Lobby: Alice's Lobby row counts it, and so does her title.
    type_in(b, "#composer-input", "Alice, are you there?\u{E007}").await?;
    eventually(LIMIT, "the Lobby's unread count to rise in Alice's list", || async {
        let unread = attr_of(a, &format!(".conversation-row[data-id='{lobby}']"), "data-unread").await?;
        let badge = text_of(a, &format!(".conversation-row[data-id='{lobby}'] .unread")).await?;
        let title = a.title().await.ok()?;
        (unread == "1" && badge == "1" && title.starts_with("(1)")).then_some(())
    })
    .await?;
    screenshot(a, "screens-unread-1280").await?;

    // 4. A draft survives a reload, and the reload stays in the same conversation.
    type_in(a, "#composer-input", "a thought half written").await?;
    // Wait until the draft is saved (not a fixed time).
    let saved = "for (const s of [localStorage, sessionStorage]) for (let i = 0; i < s.length; i++) { const k = s.key(i); if (k.startsWith('persona-chat.draft.') && s.getItem(k).includes('a thought half written')) return true; } return false";
    eventually(LIMIT, "the draft to be saved", || async {
        (js(a, saved).await.ok()?.as_bool() == Some(true)).then_some(())
    })
    .await?;
    a.goto(persona_url.as_str()).await.map_err(|e| e.to_string())?;
    eventually(LIMIT, "the draft and the conversation to be back after the reload", || async {
        let draft = js(a, "return document.querySelector('#composer-input')?.value ?? null").await.ok()?;
        let title = text_of(a, ".chat-header h1").await;
        (draft.as_str() == Some("a thought half written") && title.as_deref() == Some(persona.as_str())).then_some(())
    })
    .await?;

    // 5. Notifications: Bob allows them; while his tab is hidden, Alice's message raises one
    // and his title counts it; when he looks again, it is read. (Headless Chromium shows no
    // notifications, so the page's Notification is a recorder, installed before the app loads.)
    let recorder = r#"
        window.__notes = [];
        window.__permission = 'default';
        window.Notification = class {
            constructor(title, options) { window.__notes.push([title, options && options.body]); }
            static get permission() { return window.__permission; }
            static requestPermission() { window.__permission = 'granted'; return Promise.resolve('granted'); }
        };
        window.__setHidden = (hidden) => {
            Object.defineProperty(document, 'hidden', { configurable: true, get: () => hidden });
            Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => hidden ? 'hidden' : 'visible' });
            document.dispatchEvent(new Event('visibilitychange'));
        };"#;
    driver.cdp(b, "Page.addScriptToEvaluateOnNewDocument", serde_json::json!({ "source": recorder })).await?;
    b.goto(&format!("{base}/c/{lobby}")).await.map_err(|e| e.to_string())?;
    let enable = b
        .wait()
        .at_most(LIMIT)
        .for_element(Locator::Css(".enable-notifications"))
        .await
        .map_err(|e| format!("no Enable notifications button: {e}"))?;
    enable.click().await.map_err(|e| e.to_string())?;
    eventually(LIMIT, "the button to go once notifications are allowed", || async {
        (!exists(b, ".enable-notifications").await.ok()?).then_some(())
    })
    .await?;
    eventually(LIMIT, "Bob to be connected again", || async {
        (attr_of(b, ".connection", "data-state").await.as_deref() == Some("connected")).then_some(())
    })
    .await?;
    js(b, "window.__setHidden(true); return true").await?;
    a.goto(&format!("{base}/c/{lobby}")).await.map_err(|e| e.to_string())?;
    eventually(LIMIT, "Alice back in the Lobby", || async {
        (text_of(a, ".chat-header h1").await.as_deref() == Some("Lobby")).then_some(())
    })
    .await?;
    type_in(a, "#composer-input", "Bob, a word while you are away\u{E007}").await?;
    eventually(LIMIT, "a notification and an unread title in Bob's hidden tab", || async {
        let notes = js(b, "return window.__notes").await.ok()?;
        let title = b.title().await.ok()?;
        let noted = notes.as_array()?.iter().any(|n| {
            n[0].as_str() == Some("alice in Lobby") && n[1].as_str() == Some("Bob, a word while you are away")
        });
        (noted && title.starts_with("(1)")).then_some(())
    })
    .await?;
    js(b, "window.__setHidden(false); return true").await?;
    eventually(LIMIT, "the title to clear when Bob looks again", || async {
        (b.title().await.ok()?.as_str() == "persona-chat").then_some(())
    })
    .await?;

    // 5. Every main screen at 1280x800 and at 390x844.
    a.goto(&format!("{base}/diagnostics")).await.map_err(|e| e.to_string())?;
    a.wait().at_most(LIMIT).for_element(Locator::Css("[data-diag=transport]")).await.map_err(|e| e.to_string())?;
    eventually(LIMIT, "the diagnostics page to show the socket", || async {
        (text_of(a, "[data-diag=transport]").await.as_deref() == Some("WebSocket")).then_some(())
    })
    .await?;
    screenshot(a, "screens-diagnostics-1280").await?;
    set_viewport(b, 390, 844).await?;
    eventually(LIMIT, "the narrow layout", || async {
        (js(b, "return window.innerWidth").await.ok()?.as_f64()? <= 390.0).then_some(())
    })
    .await?;
    screenshot(b, "screens-chat-390").await?;
    b.goto(&format!("{base}/")).await.map_err(|e| e.to_string())?;
    eventually(LIMIT, "the list alone on a narrow screen", || async {
        let list = exists(b, ".conversation-row").await.ok()?;
        let chat_hidden = js(b, "const c = document.querySelector('.chat-pane'); return !c || c.offsetParent === null")
            .await
            .ok()?
            .as_bool()?;
        (list && chat_hidden).then_some(())
    })
    .await?;
    screenshot(b, "screens-list-390").await?;
    click(b, &format!(".conversation-row[data-id='{lobby}']")).await?;
    eventually(LIMIT, "the chat alone, with a back button, on a narrow screen", || async {
        let back =
            js(b, "const e = document.querySelector('.chat-header .back'); return !!e && e.offsetParent !== null")
                .await
                .ok()?
                .as_bool()?;
        let list_hidden =
            js(b, "return document.querySelector('.sidebar').offsetParent === null").await.ok()?.as_bool()?;
        (back && list_hidden).then_some(())
    })
    .await?;
    screenshot(b, "screens-chat-lobby-390").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_screens_in_two_windows() {
    let data = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start_with_args(
        data.path(),
        free_port(),
        &["--rate-limit-per-sec", "200", "--rate-limit-burst", "200", "--persona-pace-ms", "90"],
    )
    .expect("server starts");
    let driver = Driver::start().expect("chromedriver starts");
    let a = driver.window().await.expect("window A");
    let b = driver.window().await.expect("window B");
    let outcome = tokio::time::timeout(Duration::from_secs(180), screens_body(&server, &driver, &a, &b)).await;
    conclude(outcome, vec![(a, "screens-alice"), (b, "screens-bob")]).await;
}
