mod signer_vectors;
mod support;
mod client;
mod reset_cli;
