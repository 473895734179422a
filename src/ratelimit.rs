//! Client-side token bucket toward DTS (`--dts-qps`, `--dts-burst`), shared by all reconciles so
//! the operator as a whole stays under the account's flow-control limits.
//!
//! Uses `tokio::time`, so tests drive it with paused time.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// A token bucket: `burst` tokens at most, refilled at `qps` per second.
#[derive(Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket. `qps <= 0` means unlimited.
    pub fn new(qps: f64, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            qps,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Waits for one token. Fair enough: waiters queue on the mutex in order.
    pub async fn acquire(&self) {
        if self.qps <= 0.0 || !self.qps.is_finite() {
            return;
        }
        let mut state = self.state.lock().await;
        loop {
            let now = Instant::now();
            let (tokens, last) = *state;
            let refilled =
                (tokens + now.duration_since(last).as_secs_f64() * self.qps).min(self.burst);
            if refilled >= 1.0 {
                *state = (refilled - 1.0, now);
                return;
            }
            *state = (refilled, now);
            let wait = Duration::from_secs_f64((1.0 - refilled) / self.qps);
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_rate() {
        let b = TokenBucket::new(2.0, 3);
        let start = Instant::now();
        let mut at = Vec::new();
        for _ in 0..6 {
            b.acquire().await;
            at.push(Instant::now() - start);
        }
        // Three at once (burst), then one every 500 ms.
        assert_eq!(at[..3], [Duration::ZERO; 3]);
        assert_eq!(at[3], Duration::from_millis(500));
        assert_eq!(at[4], Duration::from_millis(1000));
        assert_eq!(at[5], Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_when_qps_is_zero() {
        let b = TokenBucket::new(0.0, 1);
        let start = Instant::now();
        for _ in 0..100 {
            b.acquire().await;
        }
        assert_eq!(Instant::now(), start);
    }
}
