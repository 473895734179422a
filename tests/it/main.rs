mod controlplane;
mod support;
