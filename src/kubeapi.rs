//! Bounds on every Kubernetes API call the controller makes.
//!
//! kube-client's defaults suit a watch, not a claim: no read timeout, and a retry layer that
//! repeats 429/503/504 for minutes. A claim, a record or a lease write that hangs or is retried
//! behind our back breaks the timing the fencing relies on, so requests go through a client with
//! timeouts and no automatic retries ([`request_config`]), and each call is bounded as a whole
//! ([`bounded`]). Our own code retries where that is safe. Watches use their own client.

use std::future::Future;
use std::time::Duration;

/// The longest any single request/response call to the API server may take.
pub const API_TIMEOUT: Duration = Duration::from_secs(5);

/// The configuration of the client for requests (not watches): connect, write and read bounded
/// by [`API_TIMEOUT`], no automatic retries.
pub fn request_config(mut config: kube::Config) -> kube::Config {
    config.connect_timeout = Some(API_TIMEOUT);
    config.write_timeout = Some(API_TIMEOUT);
    config.read_timeout = Some(API_TIMEOUT);
    // The timeout counts from the request, not from when a pooled connection went idle.
    config.reset_reader_on_write = true;
    config.default_retry = false;
    config
}

/// The configuration of the client for watches: kube-runtime's watcher has its own idle timeout
/// and backoff; it must not be cut by a read timeout.
pub fn watch_config(mut config: kube::Config) -> kube::Config {
    config.default_retry = false;
    config
}

/// Runs one API call with a bound on its whole duration.
pub async fn bounded<T>(
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(kube::Error::Service(
            format!("no answer from the Kubernetes API within {API_TIMEOUT:?}").into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_answers_ends() {
        let never = std::future::pending::<Result<(), kube::Error>>();
        let err = bounded(never).await.unwrap_err();
        assert!(err.to_string().contains("no answer"), "{err}");
    }

    #[test]
    fn requests_are_bounded_and_never_retried_behind_our_back() {
        let base = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        let c = request_config(base.clone());
        assert_eq!(c.read_timeout, Some(API_TIMEOUT));
        assert!(!c.default_retry);
        let w = watch_config(base);
        assert_eq!(w.read_timeout, None);
        assert!(!w.default_retry);
    }
}
