//! Alibaba Cloud: signing, credentials, endpoints, the DTS `ResetDtsJob` call and the
//! classification of its answers. Only `client` and the RRSA part of `credentials` touch the
//! network.

pub mod client;
pub mod credentials;
pub mod dts;
pub mod endpoint;
pub mod error;
pub mod signer;
