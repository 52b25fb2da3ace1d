//! One AWS account's request rate: a token bucket whose rate halves at every throttling
//! reply (down to a floor) and climbs back by one request per second for every quiet
//! interval — additive increase, multiplicative decrease, as TCP and AWS's own adaptive
//! retry mode do. Shared by every component of a tenant calling that account.

use std::time::{Duration, Instant};

/// Requests per second an account starts at (CloudWatch's GetMetricData allows 50 per
/// second per account and region, ListMetrics 25: ten leaves room for other tools).
pub const DEFAULT_RATE: f64 = 10.0;
/// The slowest an account is driven to.
const MIN_RATE: f64 = 0.5;
/// Quiet time after which the rate climbs by one.
const RECOVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    /// Tokens available at `updated` (may go negative: requests queued behind the wait).
    tokens: f64,
    updated: Instant,
    last_change: Instant,
}

impl Default for Limiter {
    fn default() -> Self {
        let now = Instant::now();
        Limiter {
            rate: DEFAULT_RATE,
            tokens: DEFAULT_RATE,
            updated: now,
            last_change: now,
        }
    }
}

impl Limiter {
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Take a token; the wait before the request may be sent.
    pub fn acquire(&mut self, now: Instant) -> Duration {
        self.recover(now);
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// A throttling reply: halve the rate and drop the tokens saved up.
    pub fn throttled(&mut self, now: Instant) {
        self.refill(now);
        self.rate = (self.rate / 2.0).max(MIN_RATE);
        self.tokens = self.tokens.min(0.0);
        self.last_change = now;
    }

    /// Tokens earned since the last update, up to the burst.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        self.updated = now;
    }

    fn recover(&mut self, now: Instant) {
        while self.rate < DEFAULT_RATE && now.duration_since(self.last_change) >= RECOVERY {
            self.rate = (self.rate + 1.0).min(DEFAULT_RATE);
            self.last_change += RECOVERY;
        }
        if self.rate >= DEFAULT_RATE {
            self.last_change = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut l = Limiter::default();
        let t = Instant::now();
        for _ in 0..10 {
            assert_eq!(l.acquire(t), Duration::ZERO);
        }
        let wait = l.acquire(t);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn throttling_halves_and_quiet_recovers() {
        let mut l = Limiter::default();
        let t = Instant::now();
        l.throttled(t);
        l.throttled(t);
        assert_eq!(l.rate(), 2.5);
        // Tokens are gone: the next request waits for one at the lower rate.
        let wait = l.acquire(t);
        assert!((wait.as_secs_f64() - 0.4).abs() < 1e-6, "{wait:?}");
        l.acquire(t + RECOVERY * 3);
        assert_eq!(l.rate(), 5.5);
        for _ in 0..30 {
            l.throttled(t);
        }
        assert_eq!(l.rate(), MIN_RATE);
    }
}
