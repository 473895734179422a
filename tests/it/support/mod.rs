//! Test support: the real control plane (`cluster`), the operator process harness
//! (`operator`), real faults — network, clocks, throttling — (`faults`), the local node for
//! Pods (`node`), the forms a secret can take on the wire, and reading rendered manifests.
pub mod cluster;
pub mod faults;
pub mod node;
pub mod operator;

use dts_operator::aliyun::encoding::pct;
use serde_json::Value;

/// Every form a secret can take in what is printed or stored: raw, percent-encoded once and
/// twice, with upper- and lower-case hex. A test proves none of them appears.
pub fn every_form(secret: &str) -> Vec<String> {
    let once = pct(secret);
    let twice = pct(&once);
    let lower = |s: &str| {
        let mut out = String::new();
        let mut hex = 0;
        for c in s.chars() {
            if c == '%' {
                hex = 2;
                out.push(c);
            } else if hex > 0 {
                hex -= 1;
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    };
    let mut forms = vec![secret.to_string(), lower(&once), lower(&twice), once, twice];
    forms.dedup();
    forms
}

/// The documents of a YAML stream (rendered manifests), as JSON values; empty ones dropped.
pub fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .expect("valid YAML")
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// A manifest's `kind` (empty when it has none).
pub fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}
