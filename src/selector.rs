//! The `--selector` label selector of `dts-operator run` (sharding a fleet by label): parsed and
//! validated here exactly as kube-apiserver parses `labelSelector` (the grammar of `kubectl -l`),
//! so a typo is a configuration error at start-up rather than a watch that fails forever; then
//! rendered canonically for the watch and matched against a fresh copy of a resource.
//!
//! Grammar (comma-separated requirements, all of which must hold; blanks around tokens are
//! ignored): `key=value`, `key==value`, `key!=value`, `key in (v1,v2)`, `key notin (v1,v2)`,
//! `key` (exists), `!key` (does not exist), `key>N`, `key<N` (integers). Keys are qualified
//! names (`[prefix/]name`, name ≤ 63 characters, prefix a DNS subdomain), values label values
//! (≤ 63 characters, may be empty).
//!
//! Pure; no I/O.

use std::collections::BTreeMap;
use std::fmt;

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equal(String, String),
    NotEqual(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

/// A parsed, valid label selector. It selects everything when it has no requirement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// Why a selector is not valid: names the position and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {input:?}: {reason}")]
pub struct SelectorError {
    input: String,
    reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    Greater,
    Less,
    Comma,
    Open,
    Close,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Ident(s) => write!(f, "{s:?}"),
            Token::Not => f.write_str("'!'"),
            Token::Equals => f.write_str("'='"),
            Token::DoubleEquals => f.write_str("'=='"),
            Token::NotEquals => f.write_str("'!='"),
            Token::Greater => f.write_str("'>'"),
            Token::Less => f.write_str("'<'"),
            Token::Comma => f.write_str("','"),
            Token::Open => f.write_str("'('"),
            Token::Close => f.write_str("')'"),
        }
    }
}

fn is_special(c: char) -> bool {
    c.is_whitespace() || "!=,()<>".contains(c)
}

fn tokenize(s: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if !is_special(c) {
            let mut ident = String::new();
            while let Some(&c) = chars.peek().filter(|c| !is_special(**c)) {
                ident.push(c);
                chars.next();
            }
            out.push(Token::Ident(ident));
            continue;
        }
        chars.next();
        let then_equals = matches!(c, '!' | '=') && chars.next_if_eq(&'=').is_some();
        out.push(match (c, then_equals) {
            ('!', true) => Token::NotEquals,
            ('!', false) => Token::Not,
            ('=', true) => Token::DoubleEquals,
            ('=', false) => Token::Equals,
            // `>=` and `<=` are no operators: the `=` is then refused where a number belongs.
            ('>', _) => Token::Greater,
            ('<', _) => Token::Less,
            (',', _) => Token::Comma,
            ('(', _) => Token::Open,
            (')', _) => Token::Close,
            _ => unreachable!("every special character is handled"),
        });
    }
    out
}

/// A label name or the name part of a key: `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
fn is_label_name(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars()
            .all(|c| alnum(c) || c == '-' || c == '_' || c == '.')
}

/// A DNS-1123 subdomain: lower-case labels of `[a-z0-9]([-a-z0-9]*[a-z0-9])?` joined by dots.
fn is_dns_subdomain(s: &str) -> bool {
    let label = |l: &str| {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        l.starts_with(alnum) && l.ends_with(alnum) && l.chars().all(|c| alnum(c) || c == '-')
    };
    !s.is_empty() && s.len() <= 253 && s.split('.').all(label)
}

fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Err(format!(
            "key {key:?}: the prefix must be a DNS subdomain (lower case, at most 253 characters)"
        ));
    }
    if name.is_empty() || name.len() > 63 || !is_label_name(name) {
        return Err(format!(
            "key {key:?}: the name must be 1 to 63 characters, alphanumeric at both ends, with '-', '_' or '.' between"
        ));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), String> {
    if value.len() > 63 || !(value.is_empty() || is_label_name(value)) {
        return Err(format!(
            "value {value:?}: at most 63 characters, empty or alphanumeric at both ends with '-', '_' or '.' between"
        ));
    }
    Ok(())
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn found(t: Option<&Token>) -> String {
        t.map_or_else(|| "the end".to_string(), Token::to_string)
    }

    fn key(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Ident(k)) => {
                check_key(&k)?;
                Ok(k)
            }
            t => Err(format!("expected a key, found {}", Self::found(t.as_ref()))),
        }
    }

    /// The value after `=`, `==` or `!=`: may be empty (`key=`).
    fn exact_value(&mut self) -> Result<String, String> {
        match self.peek() {
            None | Some(Token::Comma) => Ok(String::new()),
            Some(Token::Ident(_)) => {
                let Some(Token::Ident(v)) = self.next() else {
                    unreachable!("peeked an identifier")
                };
                check_value(&v)?;
                Ok(v)
            }
            t => Err(format!("expected a value, found {}", Self::found(t))),
        }
    }

    fn integer(&mut self, key: &str) -> Result<i64, String> {
        match self.next() {
            Some(Token::Ident(v)) => v
                .parse()
                .map_err(|_| format!("key {key:?}: '>' and '<' need an integer, found {v:?}")),
            t => Err(format!(
                "expected an integer, found {}",
                Self::found(t.as_ref())
            )),
        }
    }

    /// `(v1, v2, …)` after `in` / `notin`. A value may be empty: `(a,)` is {"", a} and `()` is
    /// {""}, as kube-apiserver reads them.
    fn values(&mut self, op: &str) -> Result<Vec<String>, String> {
        if self.next() != Some(Token::Open) {
            return Err(format!("'{op}' must be followed by '(values)'"));
        }
        let mut values = Vec::new();
        loop {
            let value = match self.peek() {
                Some(Token::Ident(v)) => {
                    let v = v.clone();
                    self.at += 1;
                    v
                }
                Some(Token::Comma | Token::Close) => String::new(),
                t => return Err(format!("expected a value, found {}", Self::found(t))),
            };
            check_value(&value)?;
            values.push(value);
            match self.next() {
                Some(Token::Comma) => {}
                Some(Token::Close) => break,
                t => {
                    return Err(format!(
                        "expected ',' or ')', found {}",
                        Self::found(t.as_ref())
                    ));
                }
            }
        }
        values.sort();
        values.dedup();
        Ok(values)
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        if self.peek() == Some(&Token::Not) {
            self.at += 1;
            let key = self.key()?;
            return match self.peek() {
                None | Some(Token::Comma) => Ok(Requirement::DoesNotExist(key)),
                t => Err(format!(
                    "'!{key}' takes no operator, found {}",
                    Self::found(t)
                )),
            };
        }
        let key = self.key()?;
        match self.next() {
            None => Ok(Requirement::Exists(key)),
            Some(Token::Comma) => {
                self.at -= 1;
                Ok(Requirement::Exists(key))
            }
            Some(Token::Equals | Token::DoubleEquals) => {
                Ok(Requirement::Equal(key, self.exact_value()?))
            }
            Some(Token::NotEquals) => Ok(Requirement::NotEqual(key, self.exact_value()?)),
            Some(Token::Greater) => Ok(Requirement::GreaterThan(key.clone(), self.integer(&key)?)),
            Some(Token::Less) => Ok(Requirement::LessThan(key.clone(), self.integer(&key)?)),
            Some(Token::Ident(op)) if op == "in" => Ok(Requirement::In(key, self.values("in")?)),
            Some(Token::Ident(op)) if op == "notin" => {
                Ok(Requirement::NotIn(key, self.values("notin")?))
            }
            Some(t) => Err(format!(
                "after key {key:?} expected an operator ('=', '==', '!=', 'in', 'notin', '>', '<') or ',', found {t}"
            )),
        }
    }
}

impl LabelSelector {
    /// Parses `s` as kube-apiserver does; an empty (or blank) string selects everything.
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let fail = |reason: String| SelectorError {
            input: s.to_string(),
            reason,
        };
        let mut p = Parser {
            tokens: tokenize(s),
            at: 0,
        };
        let mut requirements = Vec::new();
        while p.peek().is_some() {
            requirements.push(p.requirement().map_err(fail)?);
            match p.next() {
                None => break,
                Some(Token::Comma) if p.peek().is_some() => {}
                Some(Token::Comma) => {
                    return Err(fail("a ',' must be followed by a requirement".into()));
                }
                Some(t) => return Err(fail(format!("expected ',' or the end, found {t}"))),
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether it selects every resource (no requirement).
    pub fn selects_all(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether a resource with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let int = |k: &str| labels.get(k).and_then(|v| v.parse::<i64>().ok());
        self.requirements.iter().all(|r| match r {
            Requirement::Equal(k, v) => labels.get(k) == Some(v),
            Requirement::NotEqual(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => !labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
            Requirement::GreaterThan(k, n) => int(k).is_some_and(|v| v > *n),
            Requirement::LessThan(k, n) => int(k).is_some_and(|v| v < *n),
        })
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical form, as sent to kube-apiserver (`labelSelector`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::Equal(k, v) => write!(f, "{k}={v}")?,
                Requirement::NotEqual(k, v) => write!(f, "{k}!={v}")?,
                Requirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(","))?,
                Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(","))?,
                Requirement::Exists(k) => write!(f, "{k}")?,
                Requirement::DoesNotExist(k) => write!(f, "!{k}")?,
                Requirement::GreaterThan(k, n) => write!(f, "{k}>{n}")?,
                Requirement::LessThan(k, n) => write!(f, "{k}<{n}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn canonical(s: &str) -> String {
        LabelSelector::parse(s)
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
            .to_string()
    }

    #[test]
    fn every_operator_the_apiserver_accepts_parses_to_its_canonical_form() {
        for (input, want) in [
            ("shard=a", "shard=a"),
            ("shard==a", "shard=a"),
            (" shard = a ", "shard=a"),
            ("shard!=a", "shard!=a"),
            ("shard=", "shard="),
            ("shard in (b, a, a)", "shard in (a,b)"),
            ("shard notin (a)", "shard notin (a)"),
            ("shard in (a,)", "shard in (,a)"),
            ("shard in ()", "shard in ()"),
            ("shard", "shard"),
            ("!shard", "!shard"),
            ("tier>2,tier<10", "tier>2,tier<10"),
            (
                "dtsops.io/shard=a,team,!legacy",
                "dtsops.io/shard=a,team,!legacy",
            ),
            ("a.b_c-d=E.f_G-9", "a.b_c-d=E.f_G-9"),
        ] {
            assert_eq!(canonical(input), want, "{input:?}");
            // The canonical form parses to the same selector.
            assert_eq!(canonical(want), want, "{want:?}");
        }
        assert!(LabelSelector::parse("").unwrap().selects_all());
        assert!(LabelSelector::parse("  ").unwrap().selects_all());
        assert!(!LabelSelector::parse("a").unwrap().selects_all());
    }

    #[test]
    fn malformed_selectors_are_refused_with_the_reason() {
        for (input, needle) in [
            ("shard=a=b", "expected ',' or the end"),
            ("shard=a,", "followed by a requirement"),
            (",shard=a", "expected a key"),
            ("shard in a", "'in' must be followed by '(values)'"),
            ("shard in (a", "expected ',' or ')'"),
            ("shard notin (a b)", "expected ',' or ')'"),
            ("shard=a b", "expected ',' or the end"),
            ("shard is a", "expected an operator"),
            ("!shard=a", "takes no operator"),
            ("shard>=1", "expected an integer"),
            ("tier>two", "need an integer"),
            ("-shard=a", "the name must be"),
            ("Shard.Example/x=a", "the prefix must be a DNS subdomain"),
            ("a/b/c=d", "the name must be"),
            ("shard=-a", "value \"-a\""),
            (&format!("shard={}", "v".repeat(64)), "at most 63"),
            (&format!("{}=a", "k".repeat(64)), "1 to 63"),
            ("shard=(a)", "expected a value"),
        ] {
            let e = LabelSelector::parse(input).expect_err(input).to_string();
            assert!(e.contains(needle), "{input:?}: {e}");
            assert!(e.contains("invalid label selector"), "{e}");
        }
    }

    #[test]
    fn matching_follows_the_apiserver() {
        let a = labels(&[("shard", "a"), ("tier", "3")]);
        let none = labels(&[]);
        let m = |s: &str, l: &BTreeMap<String, String>| LabelSelector::parse(s).unwrap().matches(l);
        assert!(m("shard=a", &a) && !m("shard=a", &none) && !m("shard=b", &a));
        assert!(m("shard!=b", &a) && m("shard!=b", &none) && !m("shard!=a", &a));
        assert!(m("shard in (a,b)", &a) && !m("shard in (a,b)", &none));
        assert!(!m("shard notin (a)", &a) && m("shard notin (a)", &none));
        assert!(m("shard", &a) && !m("shard", &none));
        assert!(!m("!shard", &a) && m("!shard", &none));
        assert!(m("tier>2", &a) && !m("tier>3", &a) && m("tier<4", &a) && !m("tier<1", &none));
        assert!(m("shard=a,tier", &a) && !m("shard=a,!tier", &a));
        assert!(m("", &none));
    }
}
