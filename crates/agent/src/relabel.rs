//! Relabeling with Prometheus semantics.
//!
//! Owns [`RelabelConfig`] (parsed and validated as Prometheus validates
//! it, so a bad rule fails at load time with its line) and [`process`],
//! which applies a list of rules to a label set: source label values joined
//! by the separator, fully anchored regexes (default `(.*)`), `$1`/`${1}`/
//! named-group replacement expansion, and every action (replace, keep,
//! drop, keepequal, dropequal, hashmod, labelmap, labeldrop, labelkeep,
//! lowercase, uppercase).

use std::fmt;

use md5::{Digest, Md5};
use regex::Regex;
use serde::{Deserialize, Deserializer};
use stratus_model::{Labels, LabelsBuilder};

use crate::config::{LabelName, is_valid_label_name};

/// A relabel action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    /// Set `target_label` to the expanded replacement when the regex matches.
    #[default]
    Replace,
    /// Drop the set unless the regex matches.
    Keep,
    /// Drop the set when the regex matches.
    Drop,
    /// Drop the set unless the joined sources equal `target_label`'s value.
    KeepEqual,
    /// Drop the set when the joined sources equal `target_label`'s value.
    DropEqual,
    /// Set `target_label` to md5(sources) mod `modulus`.
    HashMod,
    /// Copy labels whose names match to the expanded replacement name.
    LabelMap,
    /// Remove labels whose names match.
    LabelDrop,
    /// Remove labels whose names do not match.
    LabelKeep,
    /// Set `target_label` to the lowercased joined sources.
    Lowercase,
    /// Set `target_label` to the uppercased joined sources.
    Uppercase,
}

impl Action {
    fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "replace" => Self::Replace,
            "keep" => Self::Keep,
            "drop" => Self::Drop,
            "keepequal" => Self::KeepEqual,
            "dropequal" => Self::DropEqual,
            "hashmod" => Self::HashMod,
            "labelmap" => Self::LabelMap,
            "labeldrop" => Self::LabelDrop,
            "labelkeep" => Self::LabelKeep,
            "lowercase" => Self::Lowercase,
            "uppercase" => Self::Uppercase,
            _ => return None,
        })
    }

    /// The name as written in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Keep => "keep",
            Self::Drop => "drop",
            Self::KeepEqual => "keepequal",
            Self::DropEqual => "dropequal",
            Self::HashMod => "hashmod",
            Self::LabelMap => "labelmap",
            Self::LabelDrop => "labeldrop",
            Self::LabelKeep => "labelkeep",
            Self::Lowercase => "lowercase",
            Self::Uppercase => "uppercase",
        }
    }
}

/// A fully anchored regular expression, as Prometheus compiles relabel
/// regexes (`^(?:RE)$`).
#[derive(Clone)]
pub struct AnchoredRegex {
    source: String,
    re: Regex,
}

impl AnchoredRegex {
    /// Compiles `source` anchored at both ends.
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        let re = Regex::new(&format!("^(?:{source})$"))?;
        Ok(Self {
            source: source.to_string(),
            re,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }

    /// The compiled regex.
    pub fn regex(&self) -> &Regex {
        &self.re
    }
}

impl Default for AnchoredRegex {
    fn default() -> Self {
        Self::new(DEFAULT_REGEX).unwrap_or_else(|_| unreachable!("default regex compiles"))
    }
}

impl PartialEq for AnchoredRegex {
    fn eq(&self, o: &Self) -> bool {
        self.source == o.source
    }
}

impl fmt::Debug for AnchoredRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl<'de> Deserialize<'de> for AnchoredRegex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::config::parse_str(d, "a regular expression", |s| {
            Self::new(s).map_err(|e| format!("invalid regex {s:?}: {e}"))
        })
    }
}

const DEFAULT_REGEX: &str = "(.*)";
const DEFAULT_SEPARATOR: &str = ";";
const DEFAULT_REPLACEMENT: &str = "$1";

/// One relabeling rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RelabelConfig {
    /// Labels whose values are joined to form the input.
    pub source_labels: Vec<String>,
    /// Join separator (`;`).
    pub separator: String,
    /// Anchored regex (`(.*)`).
    pub regex: AnchoredRegex,
    /// Modulus for hashmod.
    pub modulus: u64,
    /// Label to write.
    pub target_label: String,
    /// Replacement template (`$1`).
    pub replacement: String,
    /// The action.
    pub action: Action,
}

impl Default for RelabelConfig {
    fn default() -> Self {
        Self {
            source_labels: Vec::new(),
            separator: DEFAULT_SEPARATOR.into(),
            regex: AnchoredRegex::default(),
            modulus: 0,
            target_label: String::new(),
            replacement: DEFAULT_REPLACEMENT.into(),
            action: Action::Replace,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelabel {
    #[serde(default)]
    source_labels: Vec<LabelName>,
    #[serde(default)]
    separator: Option<String>,
    #[serde(default)]
    regex: Option<AnchoredRegex>,
    #[serde(default)]
    modulus: Option<u64>,
    #[serde(default)]
    target_label: Option<String>,
    #[serde(default)]
    replacement: Option<String>,
    #[serde(default)]
    action: Option<String>,
}

/// `^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$`: a label name that may
/// contain `$1`/`${name}` references.
fn is_valid_target_template(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    let mut first = true;
    while i < b.len() {
        let c = b[i];
        if c == b'$' {
            i += 1;
            if i < b.len() && b[i] == b'{' {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && word(b[j]) {
                    j += 1;
                }
                if j == start || j >= b.len() || b[j] != b'}' {
                    return false;
                }
                i = j + 1;
            } else {
                let start = i;
                while i < b.len() && word(b[i]) {
                    i += 1;
                }
                if i == start {
                    return false;
                }
            }
        } else if (first && !(c.is_ascii_alphabetic() || c == b'_')) || !word(c) {
            return false;
        } else {
            i += 1;
        }
        first = false;
    }
    true
}

impl TryFrom<RawRelabel> for RelabelConfig {
    type Error = String;

    fn try_from(r: RawRelabel) -> Result<Self, String> {
        let action_name = r.action.clone().unwrap_or_else(|| "replace".into());
        let action = Action::parse(&action_name)
            .ok_or_else(|| format!("unknown relabel action {action_name:?}"))?;
        let name = action.name();
        let c = RelabelConfig {
            source_labels: r.source_labels.iter().map(|l| l.0.clone()).collect(),
            separator: r
                .separator
                .clone()
                .unwrap_or_else(|| DEFAULT_SEPARATOR.into()),
            regex: r.regex.clone().unwrap_or_default(),
            modulus: r.modulus.unwrap_or(0),
            target_label: r.target_label.clone().unwrap_or_default(),
            replacement: r
                .replacement
                .clone()
                .unwrap_or_else(|| DEFAULT_REPLACEMENT.into()),
            action,
        };
        use Action::*;
        if action == HashMod && c.modulus == 0 {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        if matches!(
            action,
            Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual
        ) && c.target_label.is_empty()
        {
            return Err(format!(
                "relabel configuration for {name} action requires 'target_label' value"
            ));
        }
        if matches!(action, Replace | Lowercase | Uppercase)
            && !is_valid_target_template(&c.target_label)
        {
            return Err(format!(
                "{:?} is invalid 'target_label' for {name} action",
                c.target_label
            ));
        }
        if matches!(
            action,
            Lowercase | Uppercase | KeepEqual | DropEqual | HashMod
        ) && !is_valid_label_name(&c.target_label)
        {
            return Err(format!(
                "{:?} is invalid 'target_label' for {name} action",
                c.target_label
            ));
        }
        if matches!(action, Lowercase | Uppercase) && r.replacement.is_some() {
            return Err(format!("'replacement' can not be set for {name} action"));
        }
        if action == LabelMap && !is_valid_target_template(&c.replacement) {
            return Err(format!(
                "{:?} is invalid 'replacement' for {name} action",
                c.replacement
            ));
        }
        if matches!(action, KeepEqual | DropEqual)
            && (r.regex.is_some()
                || r.modulus.is_some()
                || r.separator.is_some()
                || r.replacement.is_some())
        {
            return Err(format!(
                "{name} action requires only 'source_labels' and `target_label`, and no other fields"
            ));
        }
        if matches!(action, LabelDrop | LabelKeep)
            && (!r.source_labels.is_empty()
                || r.target_label.is_some()
                || r.modulus.is_some()
                || r.separator.is_some()
                || r.replacement.is_some())
        {
            return Err(format!(
                "{name} action requires only 'regex', and no other fields"
            ));
        }
        Ok(c)
    }
}

impl<'de> Deserialize<'de> for RelabelConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawRelabel::deserialize(d)?;
        RelabelConfig::try_from(raw).map_err(serde::de::Error::custom)
    }
}

/// Applies `rules` in order. Returns `None` when a rule drops the set.
/// An empty result (every label removed) is returned as `Some(empty)`;
/// callers treat it as dropped where Prometheus does.
pub fn process(labels: &Labels, rules: &[RelabelConfig]) -> Option<Labels> {
    if rules.is_empty() {
        return Some(labels.clone());
    }
    let mut b = labels.builder();
    for r in rules {
        if !apply(&mut b, r) {
            return None;
        }
    }
    Some(b.build())
}

fn apply(b: &mut LabelsBuilder, r: &RelabelConfig) -> bool {
    let mut val = String::new();
    for (i, s) in r.source_labels.iter().enumerate() {
        if i > 0 {
            val.push_str(&r.separator);
        }
        val.push_str(b.get(s).unwrap_or(""));
    }
    match r.action {
        Action::Drop => {
            if r.regex.is_match(&val) {
                return false;
            }
        }
        Action::Keep => {
            if !r.regex.is_match(&val) {
                return false;
            }
        }
        Action::DropEqual => {
            if b.get(&r.target_label).unwrap_or("") == val {
                return false;
            }
        }
        Action::KeepEqual => {
            if b.get(&r.target_label).unwrap_or("") != val {
                return false;
            }
        }
        Action::Replace => {
            let Some(caps) = r.regex.regex().captures(&val) else {
                return true;
            };
            let mut target = String::new();
            caps.expand(&r.target_label, &mut target);
            if !is_valid_label_name(&target) {
                return true;
            }
            let mut res = String::new();
            caps.expand(&r.replacement, &mut res);
            if res.is_empty() {
                b.del(&target);
            } else {
                b.set(target, res);
            }
        }
        Action::Lowercase => {
            b.set(r.target_label.as_str(), val.to_lowercase());
        }
        Action::Uppercase => {
            b.set(r.target_label.as_str(), val.to_uppercase());
        }
        Action::HashMod => {
            let sum = Md5::digest(val.as_bytes());
            let mut tail = [0u8; 8];
            tail.copy_from_slice(&sum[8..16]);
            let m = u64::from_be_bytes(tail) % r.modulus.max(1);
            b.set(r.target_label.as_str(), m.to_string());
        }
        Action::LabelMap => {
            let snapshot: Vec<(String, String)> = builder_pairs(b);
            for (name, value) in snapshot {
                if let Some(caps) = r.regex.regex().captures(&name) {
                    let mut res = String::new();
                    caps.expand(&r.replacement, &mut res);
                    b.set(res, value);
                }
            }
        }
        Action::LabelDrop => {
            for (name, _) in builder_pairs(b) {
                if r.regex.is_match(&name) {
                    b.del(&name);
                }
            }
        }
        Action::LabelKeep => {
            for (name, _) in builder_pairs(b) {
                if !r.regex.is_match(&name) {
                    b.del(&name);
                }
            }
        }
    }
    true
}

fn builder_pairs(b: &LabelsBuilder) -> Vec<(String, String)> {
    // LabelsBuilder has no iterator; rebuild a snapshot through a clone.
    b.clone()
        .build()
        .iter()
        .map(|l| (l.name.to_string(), l.value.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> RelabelConfig {
        serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
    }

    fn ls(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    /// (rules YAML list, input, expected output or None for dropped).
    #[allow(clippy::type_complexity)]
    fn table() -> Vec<(
        &'static str,
        Vec<(&'static str, &'static str)>,
        Option<Vec<(&'static str, &'static str)>>,
    )> {
        vec![
            // replace: default regex/replacement copies the joined value.
            (
                "- source_labels: [a]\n  target_label: b",
                vec![("a", "foo")],
                Some(vec![("a", "foo"), ("b", "foo")]),
            ),
            // replace with capture groups and separator.
            (
                "- source_labels: [a, b]\n  separator: '-'\n  regex: 'f(.*)-(.*)'\n  target_label: c\n  replacement: '${1}x$2'",
                vec![("a", "foo"), ("b", "bar")],
                Some(vec![("a", "foo"), ("b", "bar"), ("c", "ooxbar")]),
            ),
            // regex is anchored: a partial match does not replace.
            (
                "- source_labels: [a]\n  regex: 'oo'\n  target_label: b\n  replacement: x",
                vec![("a", "foo")],
                Some(vec![("a", "foo")]),
            ),
            // missing source label joins as empty string.
            (
                "- source_labels: [a, missing]\n  target_label: b",
                vec![("a", "foo")],
                Some(vec![("a", "foo"), ("b", "foo;")]),
            ),
            // empty replacement result deletes the target.
            (
                "- source_labels: [a]\n  regex: '(x*)foo'\n  target_label: a",
                vec![("a", "foo")],
                Some(vec![]),
            ),
            // named groups and a templated target label.
            (
                "- source_labels: [a]\n  regex: '(?P<name>\\w+)=(?P<val>\\w+)'\n  target_label: 'l_${name}'\n  replacement: '$val'",
                vec![("a", "k=v")],
                Some(vec![("a", "k=v"), ("l_k", "v")]),
            ),
            // templated target that expands to an invalid name: no change.
            (
                "- source_labels: [a]\n  regex: '(.*)'\n  target_label: '$1'",
                vec![("a", "0bad")],
                Some(vec![("a", "0bad")]),
            ),
            // `$$` is a literal dollar.
            (
                "- source_labels: [a]\n  target_label: b\n  replacement: 'x$$1'",
                vec![("a", "foo")],
                Some(vec![("a", "foo"), ("b", "x$1")]),
            ),
            // keep / drop.
            (
                "- source_labels: [a]\n  regex: 'f.*'\n  action: keep",
                vec![("a", "foo")],
                Some(vec![("a", "foo")]),
            ),
            (
                "- source_labels: [a]\n  regex: 'b.*'\n  action: keep",
                vec![("a", "foo")],
                None,
            ),
            (
                "- source_labels: [a]\n  regex: 'f.*'\n  action: drop",
                vec![("a", "foo")],
                None,
            ),
            (
                "- source_labels: [a]\n  regex: 'fo'\n  action: drop",
                vec![("a", "foo")],
                Some(vec![("a", "foo")]),
            ),
            // keep on a missing label with the default regex keeps (matches "").
            (
                "- source_labels: [missing]\n  action: keep",
                vec![("a", "foo")],
                Some(vec![("a", "foo")]),
            ),
            // Action names are case-insensitive.
            (
                "- source_labels: [a]\n  regex: 'foo'\n  action: Drop",
                vec![("a", "foo")],
                None,
            ),
            // keepequal / dropequal.
            (
                "- source_labels: [a]\n  target_label: b\n  action: keepequal",
                vec![("a", "x"), ("b", "x")],
                Some(vec![("a", "x"), ("b", "x")]),
            ),
            (
                "- source_labels: [a]\n  target_label: b\n  action: keepequal",
                vec![("a", "x"), ("b", "y")],
                None,
            ),
            (
                "- source_labels: [a]\n  target_label: b\n  action: dropequal",
                vec![("a", "x"), ("b", "x")],
                None,
            ),
            (
                "- source_labels: [a]\n  target_label: b\n  action: dropequal",
                vec![("a", "x"), ("b", "y")],
                Some(vec![("a", "x"), ("b", "y")]),
            ),
            // hashmod: md5, last 8 bytes big endian, mod. md5("foo") =
            // acbd18db4cc2f85cedef654fccc4a4d8; 0xedef654fccc4a4d8 % 1000 = 696.
            (
                "- source_labels: [a]\n  modulus: 1000\n  target_label: h\n  action: hashmod",
                vec![("a", "foo")],
                Some(vec![("a", "foo"), ("h", "696")]),
            ),
            // labelmap copies matching labels under the replacement name.
            (
                "- regex: '__meta_(.+)'\n  action: labelmap",
                vec![("__meta_x", "1"), ("__meta_y", "2"), ("z", "3")],
                Some(vec![
                    ("__meta_x", "1"),
                    ("__meta_y", "2"),
                    ("x", "1"),
                    ("y", "2"),
                    ("z", "3"),
                ]),
            ),
            (
                "- regex: 'a(.*)'\n  replacement: 'b${1}'\n  action: labelmap",
                vec![("a1", "v")],
                Some(vec![("a1", "v"), ("b1", "v")]),
            ),
            // labeldrop / labelkeep act on names.
            (
                "- regex: 'tmp_.*'\n  action: labeldrop",
                vec![("tmp_a", "1"), ("b", "2")],
                Some(vec![("b", "2")]),
            ),
            (
                "- regex: '__name__|job'\n  action: labelkeep",
                vec![("__name__", "up"), ("job", "j"), ("x", "1")],
                Some(vec![("__name__", "up"), ("job", "j")]),
            ),
            // lowercase / uppercase.
            (
                "- source_labels: [a]\n  target_label: b\n  action: lowercase",
                vec![("a", "FoO")],
                Some(vec![("a", "FoO"), ("b", "foo")]),
            ),
            (
                "- source_labels: [a, c]\n  target_label: b\n  action: uppercase",
                vec![("a", "FoO"), ("c", "x")],
                Some(vec![("a", "FoO"), ("b", "FOO;X"), ("c", "x")]),
            ),
            // Rules run in order; later rules see earlier results.
            (
                "- source_labels: [a]\n  target_label: b\n- source_labels: [b]\n  regex: foo\n  action: drop",
                vec![("a", "foo")],
                None,
            ),
        ]
    }

    #[test]
    fn every_action() {
        for (yaml, input, want) in table() {
            let rules: Vec<RelabelConfig> =
                serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
            let got = process(&ls(&input), &rules);
            let want = want.map(|w| ls(&w));
            assert_eq!(got, want, "rules:\n{yaml}\ninput {input:?}");
        }
    }

    #[test]
    fn defaults() {
        let r = rule("target_label: x");
        assert_eq!(r.action, Action::Replace);
        assert_eq!(r.separator, ";");
        assert_eq!(r.regex.as_str(), "(.*)");
        assert_eq!(r.replacement, "$1");
    }

    #[test]
    fn target_templates() {
        for ok in ["a", "_a", "a1", "$1", "${1}", "a_$1", "${name}_x", "a$b"] {
            assert!(is_valid_target_template(ok), "{ok}");
        }
        for bad in ["", "1a", "a-b", "$", "${", "${}", "a.b", "${1"] {
            assert!(!is_valid_target_template(bad), "{bad}");
        }
    }

    #[test]
    fn invalid_rules() {
        for (yaml, msg) in [
            ("action: nope", "unknown relabel action"),
            ("action: hashmod\ntarget_label: a", "non-zero modulus"),
            ("action: replace", "requires 'target_label'"),
            ("action: lowercase", "requires 'target_label'"),
            ("target_label: 'a-b'", "invalid 'target_label'"),
            (
                "action: uppercase\ntarget_label: '$1'",
                "invalid 'target_label'",
            ),
            (
                "action: labelmap\nreplacement: 'a-b'",
                "invalid 'replacement'",
            ),
            (
                "action: labeldrop\nsource_labels: [a]",
                "requires only 'regex'",
            ),
            ("action: labelkeep\nreplacement: x", "requires only 'regex'"),
            (
                "action: dropequal\ntarget_label: a\nregex: x",
                "requires only 'source_labels'",
            ),
            ("regex: '(('", "invalid regex"),
            ("bogus: 1", "unknown field"),
        ] {
            let e = serde_yaml_ng::from_str::<RelabelConfig>(yaml)
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(e.contains(msg), "{yaml}: {e}");
        }
    }
}
