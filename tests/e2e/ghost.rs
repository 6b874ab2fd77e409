//! The server is SIGKILLed while a persona streams a reply, and comes back: after the
//! reconnect no line stays streaming and no badge stays "Responding" (issue 17, recovery path
//! 1). The policy itself is tested natively (src/state/reducer.rs); this is what the browser
//! shows.

use std::time::Duration;

use fantoccini::{Client, Locator};

use crate::harness::*;
use crate::{ensure, sign_in};

const LIMIT: Duration = Duration::from_secs(20);
/// Slow deltas: the reply is still streaming when the server dies.
const ARGS: &[&str] = &["--persona-pace-ms", "500", "--persona-think-ms", "0"];

async fn js(client: &Client, script: &str) -> TestResult<serde_json::Value> {
    client.execute(script, vec![]).await.map_err(|e| format!("{script}: {e}"))
}

async fn count(client: &Client, css: &str) -> TestResult<usize> {
    client.find_all(Locator::Css(css)).await.map(|v| v.len()).map_err(|e| format!("looking for {css}: {e}"))
}

fn field(body: &str, pointer: &str) -> TestResult<String> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
    v.pointer(pointer).and_then(|x| x.as_str()).map(str::to_owned).ok_or_else(|| format!("no {pointer} in {body}"))
}

async fn ghost_body(server: &mut TestServer, a: &Client) -> TestResult {
    let base = server.base.clone();
    sign_in(a, &base, "alice", "alice-password").await?;
    let (_, session) = http_request(
        "POST",
        &format!("{base}/api/session"),
        None,
        Some(r#"{"username":"alice","password":"alice-password"}"#),
    )
    .await?;
    let token = field(&session, "/token")?;
    let (_, personas) = http_request("GET", &format!("{base}/api/personas"), Some(&token), None).await?;
    let ada = field(&personas, "/0/id")?;
    let (status, direct) = http_request(
        "POST",
        &format!("{base}/api/conversations"),
        Some(&token),
        Some(&format!(r#"{{"persona_id":"{ada}"}}"#)),
    )
    .await?;
    ensure!(status == 200, "POST /api/conversations: {status} {direct}");
    let direct = field(&direct, "/id")?;
    a.goto(&format!("{base}/c/{direct}")).await.map_err(|e| e.to_string())?;
    let input = a
        .wait()
        .at_most(LIMIT)
        .for_element(Locator::Id("composer-input"))
        .await
        .map_err(|e| format!("no composer: {e}"))?;
    input.send_keys("Tell me a long story about the sea\u{E007}").await.map_err(|e| e.to_string())?;
    eventually(LIMIT, "the reply to stream with the badge on responding", || async {
        let streaming = count(a, ".message.streaming .caret").await.ok()? == 1;
        let badge = attr_of(a, ".chat-header .badge", "data-status").await;
        (streaming && badge.as_deref() == Some("responding")).then_some(())
    })
    .await?;
    screenshot(a, "ghost-streaming").await?;

    // SIGKILL mid-reply, back a moment later on the same port and data.
    server.restart_with_args(ARGS)?;
    eventually(Duration::from_secs(40), "the window to reconnect", || async {
        (attr_of(a, ".connection", "data-state").await.as_deref() == Some("connected")).then_some(())
    })
    .await?;
    let settled = eventually(
        Duration::from_secs(10),
        "no streaming line and no Responding badge after the reconnect",
        || async {
            let streaming = count(a, ".message.streaming").await.ok()?;
            let badge = attr_of(a, ".chat-header .badge", "data-status").await?;
            let state: serde_json::Value =
                serde_json::from_str(js(a, "return personaChatState()").await.ok()?.as_str()?).ok()?;
            let streams = state.get("streams")?.as_array()?.len();
            (streaming == 0 && streams == 0 && badge != "responding").then_some(badge)
        },
    )
    .await;
    screenshot(a, "ghost-after-reconnect").await?;
    let badge = settled?;
    eprintln!("[ghost] after the reconnect: no stream left, badge {badge}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_cut_by_a_server_kill_does_not_stay_streaming_after_the_reconnect() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start_with_args(data.path(), free_port(), ARGS).expect("server starts");
    let driver = Driver::start().expect("chromedriver starts");
    let a = driver.window().await.expect("window");
    let outcome = tokio::time::timeout(Duration::from_secs(150), ghost_body(&mut server, &a)).await;
    conclude(outcome, vec![(a, "ghost-alice")]).await;
}
