//! The app's one backoff: every wait before trying something again is computed here.
//!
//! - Reconnecting (a socket, a failed poll): *decorrelated jitter*. The first retry after a
//!   lost connection comes within [`FIRST_MS`] (uniform in `[0, FIRST_MS)`); each later wait is
//!   uniform in `[BASE_MS, min(CAP_MS, g * max(previous, BASE_MS)))`, with `g` =
//!   [`EARLY_GROWTH`] for the first [`EARLY_RETRIES`] retries and [`GROWTH`] after. A server restart
//!   is therefore cheap for a client (a retry lands within a fraction of a second of the
//!   server's return while the outage is short), and a herd of clients stays spread because
//!   every client's waits are random and depend on its own previous wait, not on a shared
//!   schedule (see the herd test below).
//! - A server that announces its restart (close code 1012): come back after a short random
//!   wait, uniform in `[RESTART_MIN_MS, RESTART_MAX_MS)`; if it is not back yet, the waits
//!   grow from there as above.
//! - Resending one message (rate-limited, a failed HTTP send): doubling from a base, capped,
//!   without jitter ([`doubling_ms`]): the order of the queue matters more than spread there.

/// The first retry after a lost connection comes within this.
pub const FIRST_MS: u64 = 250;
/// The smallest wait after the first retry.
pub const BASE_MS: u64 = 500;
/// The largest wait.
pub const CAP_MS: u64 = 30_000;
/// Each wait is at most this many times the previous one: the classic formula's 3...
pub const GROWTH: f64 = 3.0;
/// ...except for the first retries, which grow by at most 2: the wait in force when a short
/// outage (a restart) ends stays small, and so does the recovery. At most
/// `failures_before_polling` (5) failed attempts happen before the machine polls instead,
/// so this is the whole WebSocket phase of an outage; the failed polls go on growing by 3.
pub const EARLY_GROWTH: f64 = 2.0;
pub const EARLY_RETRIES: u32 = 4;
/// After a close with 1012 ("service restart"): the spread of the first retry.
pub const RESTART_MIN_MS: u64 = 250;
pub const RESTART_MAX_MS: u64 = 1_750;

/// The close code a server shutting down cleanly sends: it is restarting (RFC 6455 registry).
pub const SERVICE_RESTART: u16 = 1012;

/// The wait before retry number `retry` (1 for the first), given the previous wait (None for
/// the first retry after a lost connection) and a uniform random number in [0, 1).
pub fn next_delay_ms(previous_ms: Option<u64>, retry: u32, unit_random: f64) -> u64 {
    let r = unit_random.clamp(0.0, 0.999_999_999);
    match previous_ms {
        None => (FIRST_MS as f64 * r) as u64,
        Some(previous) => {
            let high = ((previous.max(BASE_MS) as f64 * growth(retry)) as u64).min(CAP_MS);
            BASE_MS + ((high - BASE_MS) as f64 * r) as u64
        }
    }
}

/// How much retry number `retry` may grow over the previous wait.
pub fn growth(retry: u32) -> f64 {
    if retry <= EARLY_RETRIES {
        EARLY_GROWTH
    } else {
        GROWTH
    }
}

/// The wait before the first retry after the server said it is restarting (close 1012).
pub fn restart_delay_ms(unit_random: f64) -> u64 {
    let r = unit_random.clamp(0.0, 0.999_999_999);
    RESTART_MIN_MS + ((RESTART_MAX_MS - RESTART_MIN_MS) as f64 * r) as u64
}

/// `base * 2^(n-1)` capped at `cap`, for the `n`-th try in a row (1 for the first).
pub fn doubling_ms(base_ms: u64, cap_ms: u64, n: u32) -> u64 {
    let exp = n.saturating_sub(1).min(16);
    base_ms.saturating_mul(1 << exp).min(cap_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64, as the machine uses: deterministic randomness for the simulations.
    fn units(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn the_first_retry_comes_within_a_quarter_second() {
        assert_eq!(next_delay_ms(None, 1, 0.0), 0);
        assert_eq!(next_delay_ms(None, 1, 0.5), 125);
        assert!(next_delay_ms(None, 1, 1.0) < FIRST_MS);
    }

    #[test]
    fn later_waits_are_decorrelated_within_their_bounds_and_capped() {
        assert_eq!(next_delay_ms(Some(100), 2, 0.0), BASE_MS);
        assert_eq!(next_delay_ms(Some(100), 2, 0.5), 750, "from the base: [500, 1000)");
        assert_eq!(next_delay_ms(Some(4_000), 4, 0.5), 4_250, "early: [500, 8000)");
        assert_eq!(next_delay_ms(Some(4_000), 5, 0.5), 6_250, "later: [500, 12000)");
        assert!(next_delay_ms(Some(20_000), 9, 1.0) < CAP_MS);
        assert!(next_delay_ms(Some(u64::MAX / 4), 9, 0.7) < CAP_MS);
        // A long outage reaches the cap's neighbourhood: the server is not hammered.
        let mut next = units(7);
        let mut d = None;
        let mut waits = Vec::new();
        for n in 1..=40 {
            let w = next_delay_ms(d, n, next());
            waits.push(w);
            d = Some(w);
        }
        assert!(waits.iter().all(|&w| w < CAP_MS));
        let late: u64 = waits[20..].iter().sum::<u64>() / 20;
        assert!(late > 5_000, "late waits average {late} ms");
    }

    #[test]
    fn a_restart_spreads_the_first_retry_over_one_and_a_half_seconds() {
        assert_eq!(restart_delay_ms(0.0), RESTART_MIN_MS);
        assert_eq!(restart_delay_ms(0.5), 1_000);
        assert!(restart_delay_ms(1.0) < RESTART_MAX_MS);
    }

    #[test]
    fn doubling_from_a_base_up_to_a_cap() {
        let waits: Vec<u64> = (1..=7).map(|n| doubling_ms(1_000, 30_000, n)).collect();
        assert_eq!(waits, vec![1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
        assert_eq!(doubling_ms(2_000, 30_000, u32::MAX), 30_000);
    }
}
