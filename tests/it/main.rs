mod signer_vectors;
mod support;
