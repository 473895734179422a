//! What secrets are replaced with wherever a request or an answer is shown, and the replacement
//! itself: a [`Redactor`] knows the secrets of one attempt and every form they take on the wire
//! — raw, percent-encoded once (a V3 header, a URL) and twice (a V1 string to sign, which a
//! `SignatureDoesNotMatch` answer may echo back) — and removes them all from any text.
//!
//! A leaf below the signer and the credentials: both use it, neither is imported by it.

use super::encoding::pct;

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

/// Percent-encoding with lower-case hex digits: some peers echo that spelling.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut hex_left = 0;
    for c in encoded.chars() {
        if c == '%' {
            hex_left = 2;
            out.push(c);
        } else if hex_left > 0 {
            hex_left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The secrets of one attempt in every form they can take, removable from any text.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a form containing another is replaced whole.
    forms: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} forms)", self.forms.len())
    }
}

impl Redactor {
    /// A redactor of `secrets` (empty ones are ignored).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Redactor {
        let mut forms = Vec::new();
        for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
            let once = pct(secret);
            let twice = pct(&once);
            forms.extend([
                secret.to_string(),
                lower_hex(&once),
                lower_hex(&twice),
                once,
                twice,
            ]);
        }
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        forms.dedup();
        Redactor { forms }
    }

    /// `text` with every form of every secret replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        self.redact_in_place(&mut out);
        out
    }

    /// Replaces every form of every secret in `text`.
    pub fn redact_in_place(&self, text: &mut String) {
        for form in &self.forms {
            if text.contains(form.as_str()) {
                *text = text.replace(form.as_str(), REDACTED);
            }
        }
    }

    /// [`redact_in_place`](Self::redact_in_place) on an optional text.
    pub fn redact_option(&self, text: &mut Option<String>) {
        if let Some(t) = text {
            self.redact_in_place(t);
        }
    }
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

    #[test]
    fn every_form_of_every_secret_goes() {
        let token = "CAIS+sts/token=with~odd*chars";
        let r = Redactor::new([token, "s3cr3t", ""]);
        let text = format!(
            "raw {token} once {} twice {} lower {} lower twice {} secret s3cr3t end",
            pct(token),
            pct(&pct(token)),
            lower_hex(&pct(token)),
            lower_hex(&pct(&pct(token))),
        );
        let out = r.redact(&text);
        assert_eq!(
            out,
            "raw [redacted] once [redacted] twice [redacted] lower [redacted] lower twice [redacted] secret [redacted] end"
        );
        assert_eq!(Redactor::default().redact("as is"), "as is");
        assert!(!format!("{r:?}").contains("s3cr3t"));
    }
}
