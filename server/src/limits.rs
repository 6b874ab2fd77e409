//! Per-user rate limit on sending messages: a token bucket (defaults 10 per second, bursts of
//! 20). A refused send stores nothing and answers rate_limited.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_sec: f64, burst: f64) -> Self {
        RateLimiter { per_sec: per_sec.max(0.0), burst: burst.max(1.0), buckets: Mutex::default() }
    }

    /// Takes a token for `user_id` at `now`; false if none is left.
    pub fn allow(&self, user_id: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        // Forget idle full buckets now and then so the map does not grow without bound.
        if buckets.len() > 10_000 {
            let (per_sec, burst) = (self.per_sec, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * per_sec < burst);
        }
        let (tokens, at) = buckets.entry(user_id.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_sec).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(10.0, 20.0);
        let t0 = Instant::now();
        assert!((0..20).all(|_| limiter.allow("u", t0)));
        assert!(!limiter.allow("u", t0), "burst used up");
        assert!(limiter.allow("other", t0), "buckets are per user");
        assert!(!limiter.allow("u", t0 + Duration::from_millis(50)));
        assert!(limiter.allow("u", t0 + Duration::from_millis(100)), "one token per 100 ms");
        assert!(!limiter.allow("u", t0 + Duration::from_millis(150)));
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..25).filter(|_| limiter.allow("u", later)).count(), 20, "never more than the burst");
    }
}
