//! One integration-test binary (one link on small CI machines), one module per area:
//! signing vectors, the DTS client and `reset` against the simulator, the control plane itself,
//! and the operator end to end.

mod client;
mod controlplane;
mod operator;
mod reset_cli;
mod signer_vectors;
mod support;
