//! The encodings every Alibaba Cloud RPC request shares: the signing percent-encoding, the
//! canonical query string, and the timestamp format. A leaf: it depends on nothing in this crate,
//! so the signer, the credential providers and the redactor can all use it without a cycle.

use std::collections::BTreeMap;

/// Percent-encoding of Alibaba Cloud signing: UTF-8 bytes, RFC 3986 unreserved characters
/// (`A-Z a-z 0-9 - _ . ~`) literal, every other byte `%XY` in upper-case hex.
pub fn pct(input: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(input.len() * 3);
    for &b in input.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0x0f) as usize] as char);
        }
    }
    out
}

/// `k=v&k=v` of sorted parameters, both sides [`pct`]-encoded (empty values kept as `k=`).
/// This is the V1 canonicalized query string and the V3 canonical query.
pub fn canonical_query(params: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (k, v) in params {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&pct(k));
        out.push('=');
        out.push_str(&pct(v));
    }
    out
}

/// UTC `yyyy-MM-ddTHH:mm:ssZ` (no fractional seconds), as both signature versions and STS send it.
pub fn format_timestamp(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pct_follows_rfc3986_unreserved() {
        assert_eq!(pct("a b*c~d/e+f=g&h"), "a%20b%2Ac~d%2Fe%2Bf%3Dg%26h");
        assert_eq!(pct("中"), "%E4%B8%AD");
        assert_eq!(pct("!'()"), "%21%27%28%29");
        assert_eq!(pct("AZaz09-_.~"), "AZaz09-_.~");
    }

    #[test]
    fn canonical_query_keeps_empty_values() {
        assert_eq!(canonical_query(&map(&[("b", ""), ("a", "1")])), "a=1&b=");
    }

    #[test]
    fn timestamps_have_whole_seconds() {
        let ts: jiff::Timestamp = "2026-01-02T03:04:05.678Z".parse().unwrap();
        assert_eq!(format_timestamp(ts), "2026-01-02T03:04:05Z");
    }
}
