//! Client-side token bucket toward DTS (`--dts-qps`, `--dts-burst`), shared by all reconciles so
//! the operator as a whole stays under the account's flow-control limits — and, when adaptive
//! (`--dts-adaptive-rate`), finds the rate the service actually allows (AIMD):
//!
//! - a `Throttling*` answer cuts the permitted rate to [`DECREASE`] × the rate, never below the
//!   floor ([`TokenBucket::floor`]: [`FLOOR_FRACTION`] of `--dts-qps`, at least [`MIN_FLOOR`]);
//! - each success raises it by [`INCREASE`] / rate (so by about [`INCREASE`] calls/s for every
//!   second of successes; below 1/s by [`INCREASE`] per success), never above `--dts-qps`;
//! - one cut per round: only answers to calls granted *after* the last cut count (both ways), so
//!   the throttled answers of calls that were in flight together cut once, not once each;
//! - the burst shrinks with the rate (`--dts-burst` × rate / `--dts-qps`, at least 1), so the
//!   tokens saved up at the old rate cannot outrun the reduced one.
//!
//! `--dts-qps 0` is unlimited and stays so: there is no rate to cut, feedback is ignored and the
//! gauge reads 0 ("no limit", the flag's own convention).
//!
//! Uses `tokio::time`, so tests drive it with paused time.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A `Throttling*` answer multiplies the permitted rate by this.
pub const DECREASE: f64 = 0.7;
/// Calls/s the permitted rate gains per second of successes.
pub const INCREASE: f64 = 0.5;
/// The floor of the permitted rate, as a fraction of `--dts-qps`.
pub const FLOOR_FRACTION: f64 = 0.05;
/// The floor never goes below this many calls/s (unless `--dts-qps` itself is lower).
pub const MIN_FLOOR: f64 = 0.1;

/// The gauge type of `dts_operator_dts_rate_limit`.
pub type RateGauge = Gauge<f64, AtomicU64>;

/// A token bucket: `burst` tokens at most, refilled at the permitted rate (`qps`, or less while
/// adapting).
#[derive(Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    adaptive: bool,
    /// The permitted rate and when it was last cut. Short critical sections, never across an
    /// `.await`, so feedback never waits for a caller sleeping in [`TokenBucket::acquire`].
    rate: std::sync::Mutex<Rate>,
    /// Tokens and when they were counted; held by the caller waiting for the next token, so
    /// waiters queue in order.
    tokens: Mutex<(f64, Instant)>,
    gauge: Option<RateGauge>,
}

#[derive(Debug, Clone, Copy)]
struct Rate {
    now: f64,
    last_cut: Option<Instant>,
}

/// A token given out by [`TokenBucket::acquire`]; hand it back with the call's answer.
#[derive(Debug, Clone, Copy)]
pub struct Grant {
    at: Instant,
}

impl TokenBucket {
    /// A full bucket with a fixed rate. `qps <= 0` means unlimited.
    pub fn new(qps: f64, burst: u32) -> TokenBucket {
        let qps = if qps.is_finite() && qps > 0.0 {
            qps
        } else {
            0.0
        };
        let burst = f64::from(burst.max(1));
        TokenBucket {
            qps,
            burst,
            adaptive: false,
            rate: std::sync::Mutex::new(Rate {
                now: qps,
                last_cut: None,
            }),
            tokens: Mutex::new((burst, Instant::now())),
            gauge: None,
        }
    }

    /// A full bucket whose rate adapts to throttling answers, between the floor and `qps`.
    pub fn adaptive(qps: f64, burst: u32) -> TokenBucket {
        TokenBucket {
            adaptive: true,
            ..TokenBucket::new(qps, burst)
        }
    }

    /// Publishes the permitted rate in `gauge` (now and at every change).
    pub fn with_gauge(mut self, gauge: RateGauge) -> TokenBucket {
        gauge.set(self.rate());
        self.gauge = Some(gauge);
        self
    }

    /// The permitted rate, calls/s; 0 when unlimited.
    pub fn rate(&self) -> f64 {
        self.lock_rate().now
    }

    /// The lowest rate a cut reaches: [`FLOOR_FRACTION`] of `qps`, at least [`MIN_FLOOR`], at
    /// most `qps`.
    pub fn floor(&self) -> f64 {
        (self.qps * FLOOR_FRACTION).max(MIN_FLOOR).min(self.qps)
    }

    fn lock_rate(&self) -> std::sync::MutexGuard<'_, Rate> {
        // Every critical section is a few assignments: the data is consistent after a panic.
        self.rate.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unlimited(&self) -> bool {
        self.qps <= 0.0
    }

    /// Waits for one token. Fair enough: waiters queue on the mutex in order.
    pub async fn acquire(&self) -> Grant {
        if self.unlimited() {
            return Grant { at: Instant::now() };
        }
        let mut state = self.tokens.lock().await;
        loop {
            let now = Instant::now();
            let rate = self.rate();
            // The burst shrinks with the rate: saved-up tokens never outrun a cut for long.
            let burst = (self.burst * rate / self.qps).max(1.0);
            let (tokens, last) = *state;
            let refilled = (tokens + now.duration_since(last).as_secs_f64() * rate).min(burst);
            if refilled >= 1.0 {
                *state = (refilled - 1.0, now);
                return Grant { at: now };
            }
            *state = (refilled, now);
            // A cut while sleeping is taken into account at the next turn of the loop.
            let wait = Duration::from_secs_f64((1.0 - refilled) / rate);
            tokio::time::sleep(wait).await;
        }
    }

    /// The call `grant` let through was throttled: cut the rate, once per round.
    pub fn throttled(&self, grant: Grant) {
        self.feedback(grant, |rate, floor, _| (rate * DECREASE).max(floor), true);
    }

    /// The call `grant` let through succeeded: raise the rate a little.
    pub fn succeeded(&self, grant: Grant) {
        self.feedback(
            grant,
            |rate, _, qps| (rate + INCREASE / rate.max(1.0)).min(qps),
            false,
        );
    }

    fn feedback(&self, grant: Grant, adapt: impl FnOnce(f64, f64, f64) -> f64, cut: bool) {
        if !self.adaptive || self.unlimited() {
            return;
        }
        let floor = self.floor();
        let now = {
            let mut r = self.lock_rate();
            // Answers to calls granted before the last cut describe the old rate.
            if r.last_cut.is_some_and(|at| grant.at < at) {
                return;
            }
            let before = r.now;
            r.now = adapt(r.now, floor, self.qps);
            if cut {
                r.last_cut = Some(Instant::now());
                tracing::info!(
                    from = before,
                    to = r.now,
                    "DTS throttled: rate toward DTS cut"
                );
            }
            r.now
        };
        if let Some(g) = &self.gauge {
            g.set(now);
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

    /// How long `n` tokens take from now.
    async fn time_for(b: &TokenBucket, n: usize) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            b.acquire().await;
        }
        Instant::now() - start
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_cuts_the_rate_and_the_burst() {
        let gauge = RateGauge::default();
        let b = TokenBucket::adaptive(50.0, 10).with_gauge(gauge.clone());
        assert_eq!(gauge.get(), 50.0);
        let g = b.acquire().await;
        b.throttled(g);
        assert_eq!(b.rate(), 35.0);
        assert_eq!(gauge.get(), 35.0);
        // Nine tokens were saved up at 50/s; the burst is now 10 × 35/50 = 7: seven at once,
        // then one every 1/35 s.
        assert_eq!(time_for(&b, 7).await, Duration::ZERO);
        let one_second = time_for(&b, 35).await.as_secs_f64();
        assert!((one_second - 1.0).abs() < 0.01, "{one_second}");
    }

    #[tokio::test(start_paused = true)]
    async fn throttles_of_one_round_cut_once() {
        let b = TokenBucket::adaptive(50.0, 10);
        // Eight calls in flight together, all throttled: one cut.
        let mut grants = Vec::new();
        for _ in 0..8 {
            grants.push(b.acquire().await);
        }
        tokio::time::advance(Duration::from_millis(20)).await;
        for g in &grants {
            b.throttled(*g);
        }
        assert_eq!(b.rate(), 35.0);
        // Successes from before the cut do not count either.
        b.succeeded(grants[0]);
        assert_eq!(b.rate(), 35.0);
        // A call granted after the cut and throttled is a new round.
        let later = b.acquire().await;
        b.throttled(later);
        assert!((b.rate() - 24.5).abs() < 1e-9, "{}", b.rate());
    }

    #[tokio::test(start_paused = true)]
    async fn never_below_the_floor() {
        let b = TokenBucket::adaptive(50.0, 10);
        assert_eq!(b.floor(), 2.5);
        for _ in 0..40 {
            let g = b.acquire().await;
            b.throttled(g);
        }
        assert_eq!(b.rate(), 2.5);
        // At the floor the bucket still hands out tokens, at the floor's pace.
        b.acquire().await;
        let t = time_for(&b, 5).await.as_secs_f64();
        assert!((t - 2.0).abs() < 0.01, "{t}");
        // Small --dts-qps: the absolute floor, never above --dts-qps.
        assert_eq!(TokenBucket::adaptive(1.0, 1).floor(), 0.1);
        assert_eq!(TokenBucket::adaptive(0.05, 1).floor(), 0.05);
    }

    #[tokio::test(start_paused = true)]
    async fn successes_raise_the_rate_additively_up_to_qps() {
        let b = TokenBucket::adaptive(50.0, 10);
        let g = b.acquire().await;
        b.throttled(g);
        assert_eq!(b.rate(), 35.0);
        let g = b.acquire().await;
        b.succeeded(g);
        assert!((b.rate() - (35.0 + INCREASE / 35.0)).abs() < 1e-9);
        // A second of successes at about the rate raises it by about INCREASE.
        for _ in 0..35 {
            let g = b.acquire().await;
            b.succeeded(g);
        }
        let gained = b.rate() - 35.0;
        assert!((gained - INCREASE).abs() < 0.02, "{gained}");
        for _ in 0..20_000 {
            let g = b.acquire().await;
            b.succeeded(g);
        }
        assert_eq!(b.rate(), 50.0);
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_stays_unlimited() {
        let gauge = RateGauge::default();
        let b = TokenBucket::adaptive(0.0, 10).with_gauge(gauge.clone());
        for _ in 0..10 {
            let g = b.acquire().await;
            b.throttled(g);
        }
        assert_eq!(b.rate(), 0.0);
        assert_eq!(gauge.get(), 0.0);
        assert_eq!(time_for(&b, 1000).await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn not_adaptive_keeps_its_rate() {
        let b = TokenBucket::new(2.0, 3);
        for _ in 0..3 {
            let g = b.acquire().await;
            b.throttled(g);
        }
        assert_eq!(b.rate(), 2.0);
        let t = time_for(&b, 4).await;
        assert_eq!(t, Duration::from_secs(2));
    }
}
