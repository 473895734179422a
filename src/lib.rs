//! dts-operator: resets Alibaba Cloud DTS jobs from Kubernetes, at most once per request.
//!
//! Layout: [`aliyun`] (encodings, signer, credentials, endpoints, the DTS call and its
//! classification), [`retry`] (the backoff policy and the retry decision), [`crd`] (the
//! resource), [`controller`] (the reconcile state machine in `controller::decide`, the attempt
//! pipeline in `controller::attempt`, status in `controller::status`), [`operator`] (the `run`
//! process), [`kubeapi`] (bounds on API calls), [`lease`] (expiry by local observation), [`leader`], [`ratelimit`], [`metrics`], [`admin`], [`cli`], [`selector`] (`run --selector`), [`reset`] (the `reset`
//! command), [`describe`], [`oneshot`] (what both share), [`telemetry`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod aliyun;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod describe;
pub mod kubeapi;
pub mod leader;
pub mod lease;
pub mod metrics;
pub mod oneshot;
pub mod operator;
pub mod ratelimit;
pub mod reset;
pub mod retry;
pub mod selector;
pub mod telemetry;

/// Installs rustls' `ring` provider as the process default, once. kube and reqwest both use
/// rustls; with a single provider installed explicitly neither has to guess.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first: that one is used, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
