//! Test support
pub mod cluster;
