//! The test kit's own checks: each service starts, answers, and is gone after drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use persona_chat_testkit::ports::accepts;
use persona_chat_testkit::{Postgres, Redis, RoundRobin};

#[test]
fn postgres_starts_answers_sql_and_stops() {
    let pg = Postgres::start().expect("postgres starts");
    let url = pg.create_database("kit_check").expect("create database");
    assert_eq!(url, format!("postgres://postgres@127.0.0.1:{}/kit_check", pg.port()));
    assert_eq!(
        pg.sql_in("kit_check", "CREATE TABLE t (x int); INSERT INTO t VALUES (41), (1); SELECT sum(x) FROM t").unwrap(),
        "42"
    );
    let addr = ([127, 0, 0, 1], pg.port()).into();
    assert!(accepts(addr));
    drop(pg);
    assert!(!accepts(addr), "postgres still listens after drop");
}

#[test]
fn redis_starts_answers_ping_and_dies_when_killed() {
    let mut redis = Redis::start().expect("redis starts");
    assert!(persona_chat_testkit::redis::ping(redis.addr()));
    assert!(redis.url().starts_with("redis://127.0.0.1:"));
    redis.kill();
    assert!(!persona_chat_testkit::redis::ping(redis.addr()), "redis answers after kill");
}

/// Two echo backends that prefix what they send back with their name.
fn echo_backend(name: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf) {
                    // One write, so the client's one read sees the whole answer.
                    let answer = format!("{name}:{}", String::from_utf8_lossy(&buf[..n]));
                    if n == 0 || stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn round_trip(proxy: &RoundRobin, text: &str) -> String {
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(text.as_bytes()).unwrap();
    // Read until the echo is whole (TCP may split it).
    let mut answer = String::new();
    let mut buf = [0u8; 64];
    while !answer.ends_with(&format!(":{text}")) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the proxy closed before answering {text:?} (got {answer:?})");
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    answer
}

#[test]
fn proxy_takes_turns_and_skips_a_dead_backend() {
    let a = echo_backend("a");
    let b = echo_backend("b");
    // A port where nothing listens: a killed instance.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let proxy = RoundRobin::start(vec![a, dead, b]).unwrap();
    let answers: Vec<String> = (0..6).map(|i| round_trip(&proxy, &format!("{i}"))).collect();
    // Turns go a, dead→b, b, a, dead→b, b.
    assert_eq!(answers, ["a:0", "b:1", "b:2", "a:3", "b:4", "b:5"]);
    assert_eq!(proxy.routed(), vec![2, 0, 4]);
    assert_eq!(proxy.refused(), 0);
}
