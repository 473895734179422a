//! Endpoints: parsing with the loopback rule, the official SDK's region map, and host allowlists.
//!
//! Pure: nothing here touches the network. The loopback rule (plain `http://` only for
//! `localhost`, 127.0.0.0/8 and `::1`) is decided here, before any I/O, so a misconfiguration can
//! never send a signed request in clear text to a remote host.

use std::fmt;
use std::net::IpAddr;

/// Errors in an endpoint given by a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Not parseable as a URL or a host.
    #[error("invalid endpoint {input:?}: {reason}")]
    Invalid {
        /// What the user gave.
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// `http://` to something other than loopback.
    #[error(
        "refusing plain http to {host:?}: http:// is only allowed for localhost, 127.0.0.0/8 and ::1; use https://"
    )]
    InsecureRemote {
        /// The host that was refused.
        host: String,
    },
    /// Host not matched by the allowlist.
    #[error("endpoint host {host:?} is not allowed by the endpoint allowlist ({allowlist})")]
    NotAllowed {
        /// The host that was refused.
        host: String,
        /// The allowlist, comma separated.
        allowlist: String,
    },
}

/// URL scheme of an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// TLS (the default for a bare host).
    Https,
    /// Clear text; only ever for loopback hosts.
    Http,
}

/// A parsed, validated endpoint: scheme, host, optional non-default port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    scheme: Scheme,
    /// Host as it appears in a URL (IPv6 in brackets).
    host: String,
    /// Only a non-default port is kept.
    port: Option<u16>,
}

impl Endpoint {
    /// Parses `https://host[:port]`, `http://loopback[:port]` or a bare `host[:port]` (https).
    pub fn parse(input: &str) -> Result<Endpoint, EndpointError> {
        let trimmed = input.trim();
        let invalid = |reason: &str| EndpointError::Invalid {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        if trimmed.is_empty() {
            return Err(invalid("empty"));
        }
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_string()
        } else {
            format!("https://{trimmed}")
        };
        let url = url::Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
        let scheme = match url.scheme() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            other => return Err(invalid(&format!("unsupported scheme {other:?}"))),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("credentials in the URL are not allowed"));
        }
        if url.path() != "/" && !url.path().is_empty() {
            return Err(invalid(
                "a path is not allowed; give scheme, host and port only",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a query or fragment is not allowed"));
        }
        let host = url
            .host_str()
            .ok_or_else(|| invalid("no host"))?
            .to_ascii_lowercase();
        if scheme == Scheme::Http && !is_loopback_host(&host) {
            return Err(EndpointError::InsecureRemote { host });
        }
        // `url` already drops a port equal to the scheme's default.
        Ok(Endpoint {
            scheme,
            host,
            port: url.port(),
        })
    }

    /// `https://<host>` for a host name we computed ourselves (region map).
    pub fn https(host: &str) -> Endpoint {
        Endpoint {
            scheme: Scheme::Https,
            host: host.to_ascii_lowercase(),
            port: None,
        }
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host without port (IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host name for allowlist matching and logs: IPv6 without brackets.
    pub fn host_name(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The `host` header as sent: the host plus a non-default port.
    pub fn host_header(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }

    /// `scheme://host[:port]` without a trailing slash.
    pub fn base_url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Https => "https",
            Scheme::Http => "http",
        };
        format!("{scheme}://{}", self.host_header())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base_url())
    }
}

/// `localhost`, an address in 127.0.0.0/8, or `::1` (brackets allowed).
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.octets()[0] == 127,
        Ok(IpAddr::V6(v6)) => v6.is_loopback(),
        Err(_) => false,
    }
}

/// Regions the official DTS SDK (`alibabacloud-dts20200101`, `_endpoint_map`) sends to the
/// central `dts.aliyuncs.com`. Every other region goes to `dts.<region>.aliyuncs.com`.
const CENTRAL_REGIONS: &[&str] = &[
    "cn-qingdao",
    "cn-beijing",
    "cn-zhangjiakou",
    "cn-huhehaote",
    "cn-hangzhou",
    "cn-shanghai",
    "cn-shenzhen",
    "cn-hongkong",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-5",
    "ap-south-1",
    "eu-west-1",
    "eu-central-1",
    "us-west-1",
    "us-east-1",
    "me-east-1",
    "cn-chengdu",
    "cn-wulanchabu",
    // Finance and government regions of the SDK's map.
    "cn-hangzhou-finance",
    "ap-northeast-2-pop",
    "cn-huhehaote-nebula-1",
    "cn-shanghai-finance-1",
    "cn-shenzhen-finance-1",
    "cn-north-2-gov-1",
    "cn-beijing-finance-1",
    "cn-beijing-finance-pop",
    "cn-beijing-gov-1",
    "cn-beijing-nu16-b01",
    "cn-edge-1",
    "cn-fujian",
    "cn-haidian-cm12-c01",
    "cn-hangzhou-bj-b01",
    "cn-hangzhou-internal-prod-1",
    "cn-hangzhou-internal-test-1",
    "cn-hangzhou-internal-test-2",
    "cn-hangzhou-internal-test-3",
    "cn-hangzhou-test-306",
    "cn-hongkong-finance-pop",
    "cn-qingdao-nebula",
    "cn-shanghai-et15-b01",
    "cn-shanghai-et2-b01",
    "cn-shanghai-inner",
    "cn-shanghai-internal-test-1",
    "cn-shenzhen-inner",
    "cn-shenzhen-st4-d01",
    "cn-shenzhen-su18-b01",
    "cn-wuhan",
    "cn-yushanfang",
    "cn-zhangbei-na61-b01",
    "cn-zhangjiakou-na62-a01",
    "cn-zhengzhou-nebula-1",
    "eu-west-1-oxs",
    "rus-west-1-pop",
];

/// The DTS endpoint the official SDK uses for `region`.
pub fn dts_endpoint_for_region(region: &str) -> Endpoint {
    let region = region.trim().to_ascii_lowercase();
    if CENTRAL_REGIONS.contains(&region.as_str()) {
        Endpoint::https("dts.aliyuncs.com")
    } else {
        Endpoint::https(&format!("dts.{region}.aliyuncs.com"))
    }
}

/// The default `--endpoint-allowlist`.
pub const DEFAULT_ENDPOINT_ALLOWLIST: &str =
    "dts.aliyuncs.com,dts.*.aliyuncs.com,dts-vpc.*.aliyuncs.com";

/// Host patterns a resource's `spec.endpoint` may use. `*` matches one DNS label (no dots).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointAllowlist {
    patterns: Vec<String>,
}

impl EndpointAllowlist {
    /// Parses a comma list; blanks are ignored, spaces trimmed, case folded.
    pub fn parse(list: &str) -> EndpointAllowlist {
        EndpointAllowlist {
            patterns: list
                .split(',')
                .map(|p| p.trim().to_ascii_lowercase())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    /// Whether `host` matches a pattern.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.patterns.iter().any(|p| glob_host(p, &host))
    }

    /// Checks an endpoint against the list.
    pub fn check(&self, endpoint: &Endpoint) -> Result<(), EndpointError> {
        if self.allows(endpoint.host_name()) {
            Ok(())
        } else {
            Err(EndpointError::NotAllowed {
                host: endpoint.host_name().to_string(),
                allowlist: self.patterns.join(","),
            })
        }
    }
}

impl Default for EndpointAllowlist {
    fn default() -> Self {
        EndpointAllowlist::parse(DEFAULT_ENDPOINT_ALLOWLIST)
    }
}

/// Label-wise match: the pattern and host must have the same number of labels; a `*` label
/// matches any one non-empty label, and a label containing `*` matches as a simple glob.
fn glob_host(pattern: &str, host: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    p.len() == h.len() && p.iter().zip(&h).all(|(p, h)| glob_label(p, h))
}

/// One label against one pattern label: a lone `*` is any non-empty label; otherwise each `*`
/// matches any run of characters (possibly none) within the label.
fn glob_label(pattern: &str, label: &str) -> bool {
    if pattern == "*" {
        return !label.is_empty();
    }
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = label.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        // No `*`: the whole label must be the pattern.
        return rest.is_empty();
    };
    // Leftmost match of each middle piece leaves the most room for the rest.
    for piece in middle {
        match rest.find(piece) {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_host_means_https() {
        let e = Endpoint::parse("dts.aliyuncs.com").unwrap();
        assert_eq!(e.base_url(), "https://dts.aliyuncs.com");
        assert_eq!(e.host_header(), "dts.aliyuncs.com");
    }

    #[test]
    fn non_default_port_is_in_host_header() {
        let e = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(e.host_header(), "127.0.0.1:8080");
        let e = Endpoint::parse("https://gw.example.com:443/").unwrap();
        assert_eq!(e.host_header(), "gw.example.com");
        let e = Endpoint::parse("https://gw.example.com:8443").unwrap();
        assert_eq!(e.host_header(), "gw.example.com:8443");
    }

    #[test]
    fn loopback_rule() {
        for ok in [
            "http://localhost:1",
            "http://127.0.0.1:2",
            "http://127.1.2.3",
            "http://[::1]:3",
            "http://LOCALHOST",
        ] {
            Endpoint::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "http://10.0.0.1",
            "http://dts.aliyuncs.com",
            "http://128.0.0.1",
            "http://localhost.example.com",
            "http://[::2]",
        ] {
            assert!(
                matches!(
                    Endpoint::parse(bad),
                    Err(EndpointError::InsecureRemote { .. })
                ),
                "{bad} must be refused"
            );
        }
        assert_eq!(
            Endpoint::parse("http://[::1]:9").unwrap().host_header(),
            "[::1]:9"
        );
    }

    #[test]
    fn refuses_paths_schemes_userinfo() {
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("https://x/path").is_err());
        assert!(Endpoint::parse("https://u:p@x").is_err());
        assert!(Endpoint::parse("https://x/?a=b").is_err());
        assert!(Endpoint::parse("").is_err());
    }

    #[test]
    fn region_map_follows_the_sdk() {
        assert_eq!(
            dts_endpoint_for_region("cn-hangzhou").host(),
            "dts.aliyuncs.com"
        );
        assert_eq!(
            dts_endpoint_for_region("ap-southeast-1").host(),
            "dts.aliyuncs.com"
        );
        assert_eq!(
            dts_endpoint_for_region("ap-northeast-1").host(),
            "dts.ap-northeast-1.aliyuncs.com"
        );
        assert_eq!(
            dts_endpoint_for_region("cn-heyuan").host(),
            "dts.cn-heyuan.aliyuncs.com"
        );
    }

    #[test]
    fn allowlist_globs_one_label() {
        let a = EndpointAllowlist::default();
        assert!(a.allows("dts.aliyuncs.com"));
        assert!(a.allows("dts.cn-beijing.aliyuncs.com"));
        assert!(a.allows("dts-vpc.cn-beijing.aliyuncs.com"));
        assert!(!a.allows("dts.evil.com"));
        assert!(!a.allows("dts.a.b.aliyuncs.com"));
        assert!(!a.allows("evil.aliyuncs.com"));
        assert!(!a.allows("dts.aliyuncs.com.evil.com"));
        let b = EndpointAllowlist::parse(" 127.0.0.1 , gw-*.corp.example ");
        assert!(b.allows("127.0.0.1"));
        assert!(b.allows("gw-1.corp.example"));
        assert!(!b.allows("gw.corp.example"));
    }

    #[test]
    fn a_label_may_hold_several_stars() {
        let a = EndpointAllowlist::parse("gw-*-*.corp.example,*a*b*.x");
        assert!(a.allows("gw-eu-1.corp.example"));
        assert!(a.allows("gw-a-b-c.corp.example"));
        assert!(a.allows("gw--.corp.example"), "a star may match nothing");
        assert!(!a.allows("gw-eu.corp.example"), "two dashes are needed");
        assert!(!a.allows("xgw-a-b.corp.example"));
        assert!(a.allows("ab.x"));
        assert!(a.allows("zazzbz.x"));
        assert!(!a.allows("ba.x"), "pieces match in order");
        assert!(!a.allows("a.x"));
    }
}
