//! Reconnection delays: exponential from 1 s, capped at 30 s, with full jitter (uniform in
//! [0, bound)) so that a server restart does not bring every client back at the same instant.

pub const BASE_MS: u64 = 1_000;
pub const CAP_MS: u64 = 30_000;

/// The upper bound of the delay before attempt number `attempt` (1 for the first retry).
pub fn bound_ms(attempt: u32) -> u64 {
    let exp = attempt.saturating_sub(1).min(16);
    (BASE_MS << exp).min(CAP_MS)
}

/// The delay before attempt `attempt`, given a uniform random number in [0, 1).
pub fn delay_ms(attempt: u32, unit_random: f64) -> u64 {
    let r = unit_random.clamp(0.0, 0.999_999_999);
    (bound_ms(attempt) as f64 * r) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_double_from_one_second_and_cap_at_thirty() {
        let bounds: Vec<u64> = (1..=8).map(bound_ms).collect();
        assert_eq!(bounds, vec![1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]);
        assert_eq!(bound_ms(u32::MAX), CAP_MS);
    }

    #[test]
    fn delays_spread_over_the_whole_range() {
        assert_eq!(delay_ms(3, 0.0), 0);
        assert_eq!(delay_ms(3, 0.5), 2_000);
        assert!(delay_ms(3, 1.0) < 4_000);
        assert!(delay_ms(10, 0.99) < CAP_MS);
    }
}
