//! Test support: the real control plane (`cluster`), the operator process harness
//! (`operator`) and the local node for Pods (`node`).
pub mod cluster;
pub mod node;
pub mod operator;
