//! What the tests of persona-chat start for themselves, on 127.0.0.1 and random ports, and stop
//! when dropped: a private PostgreSQL ([`Postgres`]), a private Redis ([`Redis`]) and a
//! round-robin TCP proxy ([`RoundRobin`]) that stands in for a load balancer in front of
//! several server instances. Nothing here depends on a system service being up.

pub mod ports;
pub mod postgres;
pub mod proxy;
pub mod redis;

pub use postgres::Postgres;
pub use proxy::RoundRobin;
pub use redis::Redis;
