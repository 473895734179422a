//! Server-side flow control: a token bucket per (AccessKeyId, action), like the gateway's per-user
//! API quota. A call above it is answered HTTP 400 `Throttling.User` (the shape of
//! [`crate::Answer::throttling`], without a retry hint) and is not executed.
//!
//! Owns: [`RateLimit`] (the setting) and [`Buckets`] (the state). Pure: the clock is passed in.

use std::collections::HashMap;
use std::time::Instant;

/// A server-side limit: `rate` calls per second per (AccessKeyId, action), bursts of `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Calls per second allowed, refilled continuously. Must be more than 0.
    pub rate: f64,
    /// Calls allowed at once after a quiet period (at least 1).
    pub burst: u32,
}

impl RateLimit {
    /// `rate` per second with a burst of one second's worth (at least 1).
    pub fn per_second(rate: f64) -> RateLimit {
        RateLimit {
            rate,
            burst: rate.ceil().max(1.0) as u32,
        }
    }

    /// Parses `RATE` or `RATE:BURST` (`10`, `10:20`, `0.5:1`).
    pub fn parse(s: &str) -> Result<RateLimit, String> {
        let (rate, burst) = match s.split_once(':') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        let rate: f64 = rate
            .trim()
            .parse()
            .map_err(|_| format!("invalid rate {rate:?} (examples: 10, 10:20, 0.5:1)"))?;
        if !rate.is_finite() || rate <= 0.0 {
            return Err(format!("the rate must be more than 0, got {rate}"));
        }
        let mut limit = RateLimit::per_second(rate);
        if let Some(b) = burst {
            limit.burst = b
                .trim()
                .parse()
                .ok()
                .filter(|b| *b >= 1)
                .ok_or_else(|| format!("invalid burst {b:?}: a whole number of at least 1"))?;
        }
        Ok(limit)
    }
}

/// The buckets of every (AccessKeyId, action) seen under one limit.
#[derive(Debug)]
pub(crate) struct Buckets {
    limit: RateLimit,
    /// Tokens left and when they were counted.
    state: HashMap<(String, String), (f64, Instant)>,
}

impl Buckets {
    pub(crate) fn new(limit: RateLimit) -> Buckets {
        Buckets {
            limit,
            state: HashMap::new(),
        }
    }

    /// Takes a token for a call by `key` to `action` at `now`; `false`: throttled (nothing is
    /// taken, so refused calls do not push later ones further out).
    pub(crate) fn admit(&mut self, key: &str, action: &str, now: Instant) -> bool {
        let burst = f64::from(self.limit.burst.max(1));
        let rate = self.limit.rate;
        let (tokens, last) = self
            .state
            .entry((key.to_owned(), action.to_owned()))
            .or_insert((burst, now));
        let elapsed = now.saturating_duration_since(*last);
        *tokens = (*tokens + elapsed.as_secs_f64() * rate).min(burst);
        *last = now;
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
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_rate_per_key_and_action() {
        let mut b = Buckets::new(RateLimit {
            rate: 10.0,
            burst: 3,
        });
        let t0 = Instant::now();
        let admitted: Vec<bool> = (0..5).map(|_| b.admit("k1", "ResetDtsJob", t0)).collect();
        assert_eq!(admitted, [true, true, true, false, false]);
        // Another key and another action have buckets of their own.
        assert!(b.admit("k2", "ResetDtsJob", t0));
        assert!(b.admit("k1", "DescribeDtsJobDetail", t0));
        // One token per 100 ms; a refused call took nothing.
        assert!(!b.admit("k1", "ResetDtsJob", t0 + Duration::from_millis(99)));
        assert!(b.admit("k1", "ResetDtsJob", t0 + Duration::from_millis(100)));
        assert!(!b.admit("k1", "ResetDtsJob", t0 + Duration::from_millis(150)));
    }

    #[test]
    fn over_a_long_run_admits_the_rate_plus_the_burst() {
        let limit = RateLimit {
            rate: 10.0,
            burst: 5,
        };
        let mut b = Buckets::new(limit);
        let t0 = Instant::now();
        // 50 calls per second for 10 s.
        let admitted = (0..500)
            .filter(|i| b.admit("k", "ResetDtsJob", t0 + Duration::from_millis(20 * i)))
            .count();
        assert_eq!(admitted, 5 + 100 - 1);
    }

    #[test]
    fn parse_rate_and_burst() {
        assert_eq!(
            RateLimit::parse("10"),
            Ok(RateLimit {
                rate: 10.0,
                burst: 10
            })
        );
        assert_eq!(
            RateLimit::parse("0.5"),
            Ok(RateLimit {
                rate: 0.5,
                burst: 1
            })
        );
        assert_eq!(
            RateLimit::parse("10:20"),
            Ok(RateLimit {
                rate: 10.0,
                burst: 20
            })
        );
        for bad in ["0", "-1", "x", "10:0", "10:x", "inf"] {
            assert!(RateLimit::parse(bad).is_err(), "{bad}");
        }
    }
}
