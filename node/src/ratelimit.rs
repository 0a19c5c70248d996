//! A token bucket for upload and download byte rates.
//!
//! Callers take bytes *before* sending (or after receiving) a batch; when the bucket is short
//! they sleep for exactly the deficit. The bucket holds at most one second of tokens so that an
//! idle period does not turn into a burst far above the configured rate. Debt is allowed: a
//! request larger than the bucket is never refused, it just waits its share.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A shared byte-rate limiter; `None` rate means unlimited.
#[derive(Debug)]
pub struct RateLimiter {
    rate: Option<u64>,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Available bytes; negative is debt that later callers wait out.
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A limiter for `rate` bytes per second (unlimited if `None`).
    pub fn new(rate: Option<u64>) -> Self {
        Self {
            rate,
            state: Mutex::new(Bucket {
                tokens: rate.unwrap_or(0) as f64,
                last: Instant::now(),
            }),
        }
    }

    /// How long to wait before `bytes` may move; reserves them.
    fn reserve(&self, bytes: u64) -> Duration {
        let Some(rate) = self.rate.filter(|&r| r > 0) else {
            return Duration::ZERO;
        };
        let rate = rate as f64;
        let mut b = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let refill = now.duration_since(b.last).as_secs_f64() * rate;
        b.tokens = (b.tokens + refill).min(rate);
        b.last = now;
        b.tokens -= bytes as f64;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / rate)
        }
    }

    /// Waits until `bytes` may move at the configured rate.
    pub async fn acquire(&self, bytes: u64) {
        let wait = self.reserve(bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces_to_the_rate() {
        let limiter = RateLimiter::new(Some(1000));
        let start = Instant::now();
        // The first second's worth is in the bucket; the next 2000 bytes take two seconds.
        limiter.acquire(1000).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.acquire(1000).await;
        limiter.acquire(1000).await;
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_millis(2100),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let limiter = RateLimiter::new(None);
        let start = Instant::now();
        limiter.acquire(u64::MAX).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
