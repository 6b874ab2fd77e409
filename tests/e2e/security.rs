//! Sessions under attack, in the browser: a crafted `?server=` link gets no token, signing out
//! in one tab signs out the others and the server refuses the old token at once, "sign out
//! everywhere" ends another device's session over its open socket, and the app runs under
//! the server's Content-Security-Policy without a single violation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::json;

use crate::ensure;
use crate::harness::*;

const LIMIT: Duration = Duration::from_secs(20);
const PASSWORD: &str = "carol's long password";

/// Records every `securitypolicyviolation` in the page (installed before any of the app's
/// code runs, in every document the window loads).
const CSP_RECORDER: &str = r#"
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', e => {
        window.__cspViolations.push(e.violatedDirective + ' ' + (e.blockedURI || '') + ' ' + (e.sourceFile || '') + ':' + (e.lineNumber || 0));
    });
"#;

async fn run_js(client: &Client, script: &str) -> TestResult<serde_json::Value> {
    client.execute(script, vec![]).await.map_err(|e| format!("script failed: {e}"))
}

/// Whether the element is present; a WebDriver error is an error, not "absent".
async fn present(client: &Client, css: &str) -> TestResult<bool> {
    Ok(!client.find_all(Locator::Css(css)).await.map_err(|e| format!("looking for {css}: {e}"))?.is_empty())
}

async fn violations(client: &Client) -> TestResult<Vec<String>> {
    let v = run_js(client, "return window.__cspViolations === undefined ? null : window.__cspViolations;").await?;
    let list = v.as_array().ok_or("the CSP recorder is missing from the page")?;
    Ok(list.iter().map(|x| x.as_str().unwrap_or("").to_owned()).collect())
}

async fn fill_and_submit(client: &Client, mode: &str, user: &str, password: &str) -> TestResult {
    client
        .wait()
        .at_most(LIMIT)
        .for_element(Locator::Id("username"))
        .await
        .map_err(|e| format!("no sign-in form: {e}"))?;
    client
        .find(Locator::Id(mode))
        .await
        .map_err(|e| format!("no {mode} tab: {e}"))?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    let name = client.find(Locator::Id("username")).await.map_err(|e| e.to_string())?;
    name.clear().await.map_err(|e| e.to_string())?;
    name.send_keys(user).await.map_err(|e| e.to_string())?;
    let pass = client.find(Locator::Id("password")).await.map_err(|e| e.to_string())?;
    pass.clear().await.map_err(|e| e.to_string())?;
    pass.send_keys(password).await.map_err(|e| e.to_string())?;
    client.find(Locator::Id("submit")).await.map_err(|e| e.to_string())?.click().await.map_err(|e| e.to_string())
}

async fn wait_connected_in_lobby(client: &Client, who: &str) -> TestResult {
    eventually(LIMIT, &format!("{who} to be connected in the Lobby"), || async {
        let connected = link_state(client).await.as_deref() == Some("connected");
        let lobby = text_of(client, ".chat-header h1").await.as_deref() == Some("Lobby");
        (connected && lobby).then_some(())
    })
    .await
}

async fn wait_signed_out(client: &Client, who: &str, why: &str) -> TestResult {
    eventually(LIMIT, &format!("{who} to be back on the sign-in page saying \"{why}\""), || async {
        let path = run_js(client, "return location.pathname;").await.ok()?;
        let info = text_of(client, ".login-card .info").await.unwrap_or_default();
        (path == "/login" && info.contains(why)).then_some(())
    })
    .await
}

/// The session this tab keeps for `base` (localStorage), as the app stored it.
async fn stored_token(client: &Client, base: &str) -> TestResult<Option<String>> {
    let v = run_js(client, &format!("return localStorage.getItem('persona-chat.session@{base}');")).await?;
    Ok(match v.as_str() {
        Some(text) => Some(
            serde_json::from_str::<serde_json::Value>(text).map_err(|e| e.to_string())?["token"]
                .as_str()
                .ok_or("no token in the stored session")?
                .to_owned(),
        ),
        None => None,
    })
}

/// A listener standing in for another host: records every connection it gets.
struct Decoy {
    base: String,
    hits: Arc<Mutex<Vec<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Decoy {
    async fn start() -> TestResult<Decoy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let base = format!("http://127.0.0.1:{}", listener.local_addr().map_err(|e| e.to_string())?.port());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let seen = hits.clone();
        let task = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(0);
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("(nothing)").to_owned());
            }
        });
        Ok(Decoy { base, hits, _task: task })
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

async fn security_body(server: &TestServer, driver: &Driver, a: &Client, b: &Client) -> TestResult {
    let base = &server.base;
    // The app is served with a CSP that allows the wasm and nothing inline.
    let headers = http_headers(&format!("{base}/")).await?;
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let csp = header("content-security-policy").ok_or("the app is served without a Content-Security-Policy")?;
    ensure!(
        csp.contains("'wasm-unsafe-eval'") && !csp.contains("'unsafe-inline'") && !csp.contains("'unsafe-eval' "),
        "unexpected CSP: {csp}"
    );
    ensure!(header("x-content-type-options").as_deref() == Some("nosniff"), "no X-Content-Type-Options: nosniff");
    for window in [a, b] {
        driver.cdp(window, "Page.addScriptToEvaluateOnNewDocument", json!({ "source": CSP_RECORDER })).await?;
    }

    // Signing in with a name that has no account is refused, and registers nothing.
    a.goto(&format!("{base}/login")).await.map_err(|e| e.to_string())?;
    fill_and_submit(a, "mode-sign-in", "carol", PASSWORD).await?;
    eventually(LIMIT, "the sign-in to be refused", || async {
        text_of(a, ".login-card .error").await.filter(|t| t.contains("wrong username or password"))
    })
    .await?;
    let (status, _) = http_request(
        "POST",
        &format!("{base}/api/session"),
        None,
        Some(&json!({"username": "carol", "password": PASSWORD}).to_string()),
    )
    .await?;
    ensure!(status == 401, "carol was registered by a sign-in attempt (sign-in answered {status})");
    // A short password is refused before it reaches the server, with the rule in words.
    fill_and_submit(a, "mode-sign-up", "carol", "short").await?;
    eventually(LIMIT, "the password rule", || async {
        text_of(a, ".login-card .error").await.filter(|t| t.contains("at least 8"))
    })
    .await?;
    // Creating the account signs in.
    fill_and_submit(a, "mode-sign-up", "carol", PASSWORD).await?;
    wait_connected_in_lobby(a, "carol (tab 1)").await?;
    let first = a.window().await.map_err(|e| e.to_string())?;

    // A second tab of the same browser starts signed in, from the shared session.
    let second = a.new_window(true).await.map_err(|e| e.to_string())?.handle;
    a.switch_to_window(second.clone()).await.map_err(|e| e.to_string())?;
    driver.cdp(a, "Page.addScriptToEvaluateOnNewDocument", json!({ "source": CSP_RECORDER })).await?;
    // A crafted link names another server: the app stays on its own and sends nothing there.
    let decoy = Decoy::start().await?;
    a.goto(&format!("{base}/?server={}", decoy.base)).await.map_err(|e| e.to_string())?;
    // Either the app settles on its own server, or it calls the decoy (and the test fails
    // saying so rather than timing out).
    eventually(LIMIT, "tab 2 to settle in the Lobby with its conversation list, or to call the decoy", || async {
        if !decoy.hits().is_empty() {
            return Some(());
        }
        let connected = link_state(a).await.as_deref() == Some("connected");
        let lobby = text_of(a, ".chat-header h1").await.as_deref() == Some("Lobby");
        let listed = present(a, ".conversation-list .conversation-row").await.ok()?;
        (connected && lobby && listed).then_some(())
    })
    .await?;
    ensure!(decoy.hits().is_empty(), "the app contacted the server named by the link: {:?}", decoy.hits());
    let token = stored_token(a, base).await?.ok_or("tab 2 holds no session for its own server")?;
    let foreign = run_js(a, &format!("return Object.keys(localStorage).filter(k => k.startsWith('persona-chat.session') && k !== 'persona-chat.session@{base}');")).await?;
    ensure!(foreign.as_array().is_some_and(Vec::is_empty), "a session is stored for another server: {foreign}");

    // Signing out in tab 1 signs out tab 2, and the server refuses the old token at once.
    a.switch_to_window(first.clone()).await.map_err(|e| e.to_string())?;
    a.find(Locator::Id("sign-out"))
        .await
        .map_err(|e| format!("no Sign out button: {e}"))?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    eventually(LIMIT, "tab 1 on the sign-in page", || async {
        (run_js(a, "return location.pathname;").await.ok()? == "/login").then_some(())
    })
    .await?;
    a.switch_to_window(second.clone()).await.map_err(|e| e.to_string())?;
    wait_signed_out(a, "carol's tab 2", "You signed out in another tab.").await?;
    eventually(LIMIT, "the old token to be refused", || async {
        let (status, _) = http_request("GET", &format!("{base}/api/conversations"), Some(&token), None).await.ok()?;
        (status == 401).then_some(())
    })
    .await?;
    let (status, _) =
        http_request("GET", &format!("{base}/api/events?after=0&timeout_ms=0"), Some(&token), None).await?;
    ensure!(status == 401, "the long poll still takes the signed-out token ({status})");
    ensure!(stored_token(a, base).await?.is_none(), "the signed-out session is still stored");

    // "Sign out everywhere" on another device ends this one's session over its open socket.
    fill_and_submit(a, "mode-sign-in", "carol", PASSWORD).await?;
    wait_connected_in_lobby(a, "carol (tab 2, signed in again)").await?;
    b.goto(&format!("{base}/login")).await.map_err(|e| e.to_string())?;
    fill_and_submit(b, "mode-sign-in", "carol", PASSWORD).await?;
    wait_connected_in_lobby(b, "carol on another device").await?;
    let again = stored_token(a, base).await?.ok_or("no session after signing in again")?;
    b.find(Locator::Id("sign-out-everywhere"))
        .await
        .map_err(|e| format!("no Sign out everywhere: {e}"))?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    wait_signed_out(a, "carol's tab 2 (signed out from another device)", "Your session has ended").await?;
    let (status, _) = http_request("GET", &format!("{base}/api/conversations"), Some(&again), None).await?;
    ensure!(status == 401, "a session ended everywhere still answers ({status})");

    // Not one CSP violation in any window or tab along the way.
    for (client, handle, name) in [(a, Some(first), "tab 1"), (a, Some(second), "tab 2"), (b, None, "the other device")]
    {
        if let Some(handle) = handle {
            client.switch_to_window(handle).await.map_err(|e| e.to_string())?;
        }
        let v = violations(client).await?;
        ensure!(v.is_empty(), "CSP violations in {name}: {v:?}");
    }
    ensure!(decoy.hits().is_empty(), "the app contacted the decoy server: {:?}", decoy.hits());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_cannot_be_taken_by_a_link_and_end_in_every_tab() {
    let data = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(data.path()).expect("server starts");
    let driver = Driver::start().expect("chromedriver starts");
    let a = driver.window().await.expect("window A");
    let b = driver.window().await.expect("window B");
    let outcome = tokio::time::timeout(Duration::from_secs(150), security_body(&server, &driver, &a, &b)).await;
    conclude(outcome, vec![(a, "security-a"), (b, "security-b")]).await;
}

async fn refresh_body(server: &TestServer, a: &Client) -> TestResult {
    let base = &server.base;
    ensure_account(base, "dave", PASSWORD).await?;
    a.goto(&format!("{base}/login")).await.map_err(|e| e.to_string())?;
    fill_and_submit(a, "mode-sign-in", "dave", PASSWORD).await?;
    wait_connected_in_lobby(a, "dave").await?;
    let first = stored_token(a, base).await?.ok_or("no stored session")?;
    // The 3-second token expires, and the app has a fresh one before it matters.
    eventually(LIMIT, "the first token to expire on the server", || async {
        let (status, _) = http_request("GET", &format!("{base}/api/conversations"), Some(&first), None).await.ok()?;
        (status == 401).then_some(())
    })
    .await?;
    let fresh = eventually(LIMIT, "the app to hold a refreshed token that works", || async {
        let token = stored_token(a, base).await.ok()??;
        let (status, _) = http_request("GET", &format!("{base}/api/conversations"), Some(&token), None).await.ok()?;
        (token != first && status == 200).then_some(token)
    })
    .await?;
    // Still signed in and working: a message goes out and is acknowledged.
    let input = a.find(Locator::Id("composer-input")).await.map_err(|e| e.to_string())?;
    input.send_keys("still here after the refresh\u{E007}").await.map_err(|e| e.to_string())?;
    eventually(LIMIT, "the message to be sent", || async {
        let rows = rendered_rows(a).await.ok()?;
        rows.iter()
            .any(|(seq, delivery, text)| seq.is_some() && delivery == "sent" && text == "still here after the refresh")
            .then_some(())
    })
    .await?;
    ensure!(run_js(a, "return location.pathname;").await? != "/login", "dave was signed out");
    ensure!(fresh != first, "the token never changed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_app_stays_signed_in_across_token_refreshes() {
    let data = tempfile::tempdir().expect("temp dir");
    let server =
        TestServer::start_with_args(data.path(), free_port(), &["--token-ttl-secs", "3"]).expect("server starts");
    let driver = Driver::start().expect("chromedriver starts");
    let a = driver.window().await.expect("window A");
    let outcome = tokio::time::timeout(Duration::from_secs(90), refresh_body(&server, &a)).await;
    conclude(outcome, vec![(a, "refresh-a")]).await;
}
