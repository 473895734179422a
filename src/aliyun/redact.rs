//! What secrets are replaced with wherever a request is shown, and the replacement itself.
//! A leaf below the signer and the credentials: both use it, neither is imported by it.

/// What secrets are replaced with wherever a request is shown.
pub const REDACTED: &str = "[redacted]";

/// Replaces the value of any `SecurityToken` query parameter in `url` with `[redacted]`.
pub fn redact_url(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("SecurityToken") => format!("{k}={REDACTED}"),
            _ => kv.to_string(),
        })
        .collect();
    format!("{base}?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_only_the_token() {
        let url = "https://h/?AccessKeyId=id&SecurityToken=abc%2Bdef&Signature=x";
        assert_eq!(
            redact_url(url),
            "https://h/?AccessKeyId=id&SecurityToken=[redacted]&Signature=x"
        );
    }
}
