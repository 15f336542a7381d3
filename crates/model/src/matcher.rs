//! Label matchers (`=`, `!=`, `=~`, `!~`) with Prometheus semantics.
//!
//! Regular expressions are fully anchored and `.` matches any character
//! including a newline, as in Prometheus 3.x. Compiling a matcher analyses
//! the pattern once and picks a fast path where one exists:
//!
//! - a plain literal (`foo`) is compared as a string;
//! - an alternation of literals (`a|b|c`) becomes a sorted set that the
//!   index can look up directly instead of scanning every value;
//! - a literal prefix followed by `.*` or `.+` (`foo.*`) becomes a prefix
//!   test the index can answer with a range scan over sorted values;
//! - `.*` matches everything, `.+` every non-empty value;
//! - everything else runs the `regex` crate, after a cheap check of the
//!   pattern's literal prefix.

use std::fmt;
use std::sync::Arc;

use regex::Regex;
use regex_syntax::hir::{Class, Hir, HirKind, Literal};
use snafu::IntoError;

use crate::error::{InvalidRegexSnafu, Result};

/// The four matcher operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchType {
    Equal,
    NotEqual,
    RegexMatch,
    RegexNoMatch,
}

impl MatchType {
    /// The PromQL operator string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equal => "=",
            Self::NotEqual => "!=",
            Self::RegexMatch => "=~",
            Self::RegexNoMatch => "!~",
        }
    }
}

/// A compiled label matcher.
#[derive(Clone)]
pub struct Matcher {
    pub name: Arc<str>,
    pub kind: MatchType,
    pub value: Arc<str>,
    re: Option<Arc<FastRegex>>,
}

/// What a regex pattern was reduced to.
#[derive(Debug)]
enum FastRegex {
    /// `.*`
    Any,
    /// `.+`
    NonEmpty,
    /// A finite sorted set of literals (a literal is a set of one).
    Set(Vec<String>),
    /// `prefix.*` (`non_empty_rest = false`) or `prefix.+` (`true`).
    Prefix {
        prefix: String,
        non_empty_rest: bool,
    },
    /// Anything else: a literal prefix every match starts with, then the
    /// anchored regex.
    General { prefix: String, re: Regex },
}

impl FastRegex {
    fn compile(name: &str, pattern: &str) -> Result<Self> {
        let anchored = format!("^(?s:{pattern})$");
        let re = Regex::new(&anchored)
            .map_err(|e| InvalidRegexSnafu { name, pattern }.into_error(Box::new(e)))?;
        let hir = regex_syntax::ParserBuilder::new()
            .dot_matches_new_line(true)
            .build()
            .parse(pattern)
            .ok();
        let Some(hir) = hir else {
            return Ok(Self::General {
                prefix: String::new(),
                re,
            });
        };
        if let Some(set) = literal_set(&hir) {
            let mut set = set;
            set.sort_unstable();
            set.dedup();
            return Ok(Self::Set(set));
        }
        if let Some(rep) = any_repetition(&hir) {
            return Ok(if rep { Self::NonEmpty } else { Self::Any });
        }
        if let HirKind::Concat(parts) = hir.kind() {
            if parts.len() == 2 {
                if let (Some(prefix), Some(rep)) =
                    (literal_str(&parts[0]), any_repetition(&parts[1]))
                {
                    return Ok(Self::Prefix {
                        prefix,
                        non_empty_rest: rep,
                    });
                }
            }
            let prefix = literal_str(&parts[0]).unwrap_or_default();
            return Ok(Self::General { prefix, re });
        }
        Ok(Self::General {
            prefix: String::new(),
            re,
        })
    }

    fn is_match(&self, s: &str) -> bool {
        match self {
            Self::Any => true,
            Self::NonEmpty => !s.is_empty(),
            Self::Set(set) => {
                if set.len() <= 8 {
                    set.iter().any(|x| x == s)
                } else {
                    set.binary_search_by(|x| x.as_str().cmp(s)).is_ok()
                }
            }
            Self::Prefix {
                prefix,
                non_empty_rest,
            } => s.starts_with(prefix.as_str()) && (!non_empty_rest || s.len() > prefix.len()),
            Self::General { prefix, re } => s.starts_with(prefix.as_str()) && re.is_match(s),
        }
    }
}

/// The literal string matched by `hir`, if it is a single literal.
fn literal_str(hir: &Hir) -> Option<String> {
    match hir.kind() {
        HirKind::Literal(Literal(bytes)) => String::from_utf8(bytes.to_vec()).ok(),
        HirKind::Capture(c) => literal_str(&c.sub),
        HirKind::Empty => Some(String::new()),
        _ => None,
    }
}

/// The finite set of strings matched by `hir`, if it is a literal or an
/// alternation of literals (or a small character class).
fn literal_set(hir: &Hir) -> Option<Vec<String>> {
    match hir.kind() {
        HirKind::Alternation(alts) => {
            let mut out = Vec::with_capacity(alts.len());
            for a in alts {
                out.extend(literal_set(a)?);
            }
            Some(out)
        }
        HirKind::Capture(c) => literal_set(&c.sub),
        HirKind::Class(Class::Unicode(cls)) => {
            let mut out = Vec::new();
            for r in cls.ranges() {
                let (a, b) = (r.start() as u32, r.end() as u32);
                if b - a > 16 || out.len() > 16 {
                    return None;
                }
                for c in a..=b {
                    out.push(char::from_u32(c)?.to_string());
                }
            }
            Some(out)
        }
        _ => literal_str(hir).map(|s| vec![s]),
    }
}

/// `Some(false)` for `.*`, `Some(true)` for `.+` (any character, including
/// newline), `None` otherwise.
fn any_repetition(hir: &Hir) -> Option<bool> {
    match hir.kind() {
        HirKind::Capture(c) => any_repetition(&c.sub),
        HirKind::Repetition(rep) if rep.max.is_none() && rep.min <= 1 => {
            let all = match rep.sub.kind() {
                HirKind::Class(Class::Unicode(cls)) => {
                    cls.ranges().len() == 1
                        && cls.ranges()[0].start() == '\0'
                        && cls.ranges()[0].end() == char::MAX
                }
                _ => false,
            };
            all.then_some(rep.min == 1)
        }
        _ => None,
    }
}

impl Matcher {
    /// Compiles a matcher. Fails only on an invalid regular expression.
    pub fn new(
        kind: MatchType,
        name: impl Into<Arc<str>>,
        value: impl Into<Arc<str>>,
    ) -> Result<Self> {
        let name = name.into();
        let value = value.into();
        let re = match kind {
            MatchType::RegexMatch | MatchType::RegexNoMatch => {
                Some(Arc::new(FastRegex::compile(&name, &value)?))
            }
            _ => None,
        };
        Ok(Self {
            name,
            kind,
            value,
            re,
        })
    }

    /// `name = value`.
    pub fn eq(name: impl Into<Arc<str>>, value: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            kind: MatchType::Equal,
            value: value.into(),
            re: None,
        }
    }

    /// Whether `value` (the empty string for an absent label) matches.
    pub fn matches(&self, value: &str) -> bool {
        match (self.kind, &self.re) {
            (MatchType::Equal, _) => &*self.value == value,
            (MatchType::NotEqual, _) => &*self.value != value,
            (MatchType::RegexMatch, Some(re)) => re.is_match(value),
            (MatchType::RegexNoMatch, Some(re)) => !re.is_match(value),
            // Regex kinds always carry a compiled regex.
            (_, None) => false,
        }
    }

    /// Whether a series without this label (value "") matches.
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// For `=` and for `=~` over a finite set of literals: the exact values
    /// that match (sorted). Lets an index look values up directly.
    pub fn set_matches(&self) -> Option<Vec<&str>> {
        match (self.kind, self.re.as_deref()) {
            (MatchType::Equal, _) => Some(vec![&*self.value]),
            (MatchType::RegexMatch, Some(FastRegex::Set(set))) => {
                Some(set.iter().map(String::as_str).collect())
            }
            _ => None,
        }
    }

    /// A literal prefix every matching value starts with (for `=~` only).
    /// Lets an index scan just a range of sorted values.
    pub fn prefix(&self) -> Option<&str> {
        match (self.kind, self.re.as_deref()) {
            (MatchType::RegexMatch, Some(FastRegex::Prefix { prefix, .. }))
            | (MatchType::RegexMatch, Some(FastRegex::General { prefix, .. })) => {
                Some(prefix.as_str()).filter(|p| !p.is_empty())
            }
            _ => None,
        }
    }

    /// Whether this matcher accepts every value, including the empty one
    /// (`=~".*"`), so it selects nothing by itself.
    pub fn matches_everything(&self) -> bool {
        matches!(
            (self.kind, self.re.as_deref()),
            (MatchType::RegexMatch, Some(FastRegex::Any))
        )
    }

    /// The inverse matcher (`=` ↔ `!=`, `=~` ↔ `!~`).
    pub fn inverse(&self) -> Self {
        let kind = match self.kind {
            MatchType::Equal => MatchType::NotEqual,
            MatchType::NotEqual => MatchType::Equal,
            MatchType::RegexMatch => MatchType::RegexNoMatch,
            MatchType::RegexNoMatch => MatchType::RegexMatch,
        };
        Self {
            kind,
            ..self.clone()
        }
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.kind == other.kind && self.value == other.value
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.kind.as_str(), &*self.value)
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn re(p: &str) -> Matcher {
        Matcher::new(MatchType::RegexMatch, "l", p).unwrap()
    }

    #[test]
    fn fast_paths_are_chosen() {
        assert_eq!(re("a|b|c").set_matches(), Some(vec!["a", "b", "c"]));
        assert_eq!(re("foo").set_matches(), Some(vec!["foo"]));
        assert_eq!(re("foo.*").prefix(), Some("foo"));
        assert_eq!(re("foo.+").prefix(), Some("foo"));
        assert_eq!(re("foo(bar|baz)").prefix(), Some("foo"));
        assert!(re(".*").matches_everything());
        assert!(!re(".+").matches_everything());
    }

    #[test]
    fn anchored_semantics() {
        let m = re("foo");
        assert!(m.matches("foo"));
        assert!(!m.matches("foobar"));
        assert!(!m.matches("xfoo"));
        assert!(re("foo.*").matches("foo\nbar"), "dot matches newline");
        assert!(re("foo.+").matches("foox"));
        assert!(!re("foo.+").matches("foo"));
        assert!(re(".*").matches(""));
        assert!(!re(".+").matches(""));
        assert!(re("(?i)FOO").matches("foo"));
        assert!(re("a|b").matches("b"));
        assert!(!re("a|b").matches("ab"));
        assert!(re("").matches(""));
        assert!(!re("").matches("x"));
        let nre = Matcher::new(MatchType::RegexNoMatch, "l", "a.*").unwrap();
        assert!(nre.matches(""));
        assert!(!nre.matches("abc"));
    }

    #[test]
    fn invalid_regex_is_an_error() {
        let e = Matcher::new(MatchType::RegexMatch, "job", "a(b").unwrap_err();
        assert!(e.to_string().contains("job"), "{e}");
    }

    proptest! {
        #[test]
        fn fast_paths_agree_with_plain_regex(
            pat in prop_oneof![
                Just("a|b|cd".to_string()), Just("ab.*".to_string()), Just("ab.+".to_string()),
                Just(".*".to_string()), Just(".+".to_string()), Just("a(b|c)d?".to_string()),
                Just("[ab]".to_string()), Just("(a|b).*".to_string()), Just("".to_string()),
                "[abc.*+|]{0,6}".prop_filter("valid", |p| regex::Regex::new(p).is_ok()),
            ],
            s in "[abcd\n]{0,5}",
        ) {
            let plain = Regex::new(&format!("^(?s:{pat})$")).unwrap();
            prop_assert_eq!(re(&pat).matches(&s), plain.is_match(&s), "pattern {:?} on {:?}", pat, s);
        }
    }
}
