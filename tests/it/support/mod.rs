//! Test support: the real control plane (`cluster`) and the operator process harness
//! (`operator`).
pub mod cluster;
pub mod operator;
