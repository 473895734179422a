//! One integration-test binary (one link on small CI machines), one module per area:
//! signing vectors, the DTS client and `reset` against the simulator, the control plane itself,
//! the operator end to end (and sharded by label), what ships (deploy/, crds/, hack/demo.sh) and what watches it
//! (alerts and dashboard), the fault tools (network, clocks, throttling) the scenarios use, and
//! the operator as a Pod on a real node (`node`, run by hack/test.sh on a control plane with a
//! node).

mod adaptive_rate;
mod client;
mod controlplane;
mod deploy;
mod faults;
mod fencing;
mod monitoring;
mod node;
mod operator;
mod partitions;
mod reset_cli;
mod sharding;
mod signer_vectors;
mod support;
mod verification;
