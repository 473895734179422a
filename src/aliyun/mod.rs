//! Alibaba Cloud: the wire encodings, signing, credentials, endpoints, the DTS call and the
//! classification of its answers.
//!
//! Layered without cycles, leaves first: [`encoding`], [`redact`] and [`endpoint`] (pure,
//! depend on nothing here) → [`credentials`] (the values and their errors) → [`rrsa`] (the STS
//! exchange) and [`signer`] (pure V1/V3) → [`provider`] (the default chain) and [`dts`] (the
//! action's parameters and answer) → [`error`] (classification) → [`client`] (HTTP). Only
//! `client` and `rrsa` touch the network.

pub mod client;
pub mod credentials;
pub mod dts;
pub mod encoding;
pub mod endpoint;
pub mod error;
pub mod provider;
pub mod redact;
pub mod rrsa;
pub mod signer;
