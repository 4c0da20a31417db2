//! Label selectors: validation of label syntax, a canonical form, matching,
//! and the string syntax of `kubectl get -l`.
//!
//! A [`LabelSelector`] is a conjunction of [`Requirement`]s. `matchLabels`
//! entries become `In` requirements with one value, exactly as
//! `metav1.LabelSelectorAsSelector` does, so that two selectors that mean the
//! same thing compare equal. The compiler can then share one ipset between
//! every peer with an equal selector, and an index can key on requirements.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use crate::error::{Error, Field, ObjectRef};

/// Labels of a pod or namespace. A `BTreeMap` so that iteration, `Debug`
/// output and anything derived from it are deterministic.
pub type Labels = BTreeMap<String, String>;

/// Longest label name or value (`validation.LabelValueMaxLength`).
const NAME_MAX: usize = 63;
/// Longest DNS subdomain: the optional prefix of a label key, a pod's or a
/// NetworkPolicy's name (`validation.DNS1123SubdomainMaxLength`).
const DNS_SUBDOMAIN_MAX: usize = 253;
/// Longest DNS label: a namespace's name (`validation.DNS1123LabelMaxLength`).
const DNS_LABEL_MAX: usize = 63;

/// What a requirement asks of one label key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// The key is present and its value is one of these (never empty).
    In(BTreeSet<String>),
    /// The key is absent, or its value is none of these (never empty).
    NotIn(BTreeSet<String>),
    /// The key is present, whatever its value.
    Exists,
    /// The key is absent.
    DoesNotExist,
}

impl Operator {
    /// The operator's name as spelled in `matchExpressions`.
    pub fn name(&self) -> &'static str {
        match self {
            Operator::In(_) => "In",
            Operator::NotIn(_) => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
        }
    }
}

/// One condition on one label key. Always valid: the constructors check key
/// and value syntax and that `In`/`NotIn` carry values.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    key: String,
    operator: Operator,
}

impl Requirement {
    /// A requirement on `key`. Fails on an invalid key or value, or on an
    /// `In`/`NotIn` with no values.
    pub fn new(key: impl Into<String>, operator: Operator) -> Result<Self, Error> {
        let key = key.into();
        let bad = |reason: String| Error::Selector {
            input: key.clone(),
            reason,
        };
        check_key(&key).map_err(bad)?;
        if let Operator::In(values) | Operator::NotIn(values) = &operator {
            if values.is_empty() {
                return Err(bad(format!(
                    "operator {} requires at least one value",
                    operator.name()
                )));
            }
            for v in values {
                check_value(v).map_err(|r| bad(format!("value {v:?}: {r}")))?;
            }
        }
        Ok(Requirement { key, operator })
    }

    /// The label key this requirement is about.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What the requirement asks of the key.
    pub fn operator(&self) -> &Operator {
        &self.operator
    }

    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match &self.operator {
            Operator::In(values) => value.is_some_and(|v| values.contains(v)),
            Operator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |values: &BTreeSet<String>| {
            values
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(",")
        };
        match &self.operator {
            Operator::In(v) if v.len() == 1 => write!(f, "{}={}", self.key, list(v)),
            Operator::In(v) => write!(f, "{} in ({})", self.key, list(v)),
            Operator::NotIn(v) if v.len() == 1 => write!(f, "{}!={}", self.key, list(v)),
            Operator::NotIn(v) => write!(f, "{} notin ({})", self.key, list(v)),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

/// A Kubernetes label selector in canonical form: requirements sorted and
/// without duplicates. The empty selector matches everything.
///
/// `Display` and `FromStr` use the `kubectl -l` syntax (`app=web,tier in
/// (a,b),!canary`); the empty selector is the empty string.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelSelector {
    /// Shared, not owned: the compiler keys its groups and sets by selector, and
    /// a policy delta clones each of its selectors several times over (into
    /// groups, set keys, uses). Deep copies of the keys and values were the
    /// largest share of a policy delta's allocations.
    requirements: Arc<[Requirement]>,
}

impl LabelSelector {
    /// The selector that matches everything (`{}`).
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    /// A selector from requirements, put into canonical order.
    pub fn new(requirements: impl IntoIterator<Item = Requirement>) -> Self {
        let mut requirements: Vec<_> = requirements.into_iter().collect();
        requirements.sort();
        requirements.dedup();
        LabelSelector {
            requirements: requirements.into(),
        }
    }

    /// A selector from `matchLabels`-style pairs. Fails on invalid syntax.
    pub fn from_labels<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self, Error>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let reqs = pairs
            .into_iter()
            .map(|(k, v)| Requirement::new(k, Operator::In(BTreeSet::from([v.into()]))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LabelSelector::new(reqs))
    }

    /// The requirements, sorted.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether this is the empty selector, which matches every label set.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Converts a `metav1.LabelSelector`, validating it. `object` and `path`
    /// (e.g. `spec.ingress[0].from[1].podSelector`) name it in errors; the path is
    /// only formatted for an error.
    pub fn from_k8s(
        sel: &meta::LabelSelector,
        object: &ObjectRef,
        path: impl fmt::Display,
    ) -> Result<Self, Error> {
        let path: &dyn fmt::Display = &path;
        let mut reqs = Vec::new();
        if let Some(labels) = &sel.match_labels {
            let field = Field::name(path, "matchLabels");
            for (k, v) in labels {
                validate_label(object, &field, k, v)?;
                reqs.push(Requirement {
                    key: k.clone(),
                    operator: Operator::In(BTreeSet::from([v.clone()])),
                });
            }
        }
        let exprs = Field::name(path, "matchExpressions");
        for (i, expr) in sel.match_expressions.iter().flatten().enumerate() {
            let field = Field::index(&exprs, i);
            check_key(&expr.key).map_err(|reason| Error::LabelKey {
                object: object.boxed(),
                field: Field::name(&field, "key").to_string(),
                key: expr.key.clone(),
                reason,
            })?;
            let values = expr.values.as_deref().unwrap_or_default();
            let values_field = Field::name(&field, "values");
            let set = |op: &'static str| -> Result<BTreeSet<String>, Error> {
                if values.is_empty() {
                    return Err(Error::ValuesRequired {
                        object: object.boxed(),
                        field: values_field.to_string(),
                        operator: op,
                    });
                }
                for (j, v) in values.iter().enumerate() {
                    check_value(v).map_err(|reason| Error::LabelValue {
                        object: object.boxed(),
                        field: Field::index(&values_field, j).to_string(),
                        value: v.clone(),
                        reason,
                    })?;
                }
                Ok(values.iter().cloned().collect())
            };
            let none = |op: &'static str, operator: Operator| -> Result<Operator, Error> {
                if values.is_empty() {
                    Ok(operator)
                } else {
                    Err(Error::ValuesForbidden {
                        object: object.boxed(),
                        field: values_field.to_string(),
                        operator: op,
                        count: values.len(),
                    })
                }
            };
            // Operator names are case-sensitive in the API, so "in" is rejected too.
            let operator = match expr.operator.as_str() {
                "In" => Operator::In(set("In")?),
                "NotIn" => Operator::NotIn(set("NotIn")?),
                "Exists" => none("Exists", Operator::Exists)?,
                "DoesNotExist" => none("DoesNotExist", Operator::DoesNotExist)?,
                other => {
                    return Err(Error::Operator {
                        object: object.boxed(),
                        field: Field::name(&field, "operator").to_string(),
                        operator: other.to_owned(),
                    })
                }
            };
            reqs.push(Requirement {
                key: expr.key.clone(),
                operator,
            });
        }
        Ok(LabelSelector::new(reqs))
    }

    /// Back to a `metav1.LabelSelector`. One-value `In` requirements become
    /// `matchLabels` entries (unless two share a key, which a map can't hold),
    /// everything else `matchExpressions`; `from_k8s` of the result equals `self`.
    pub fn to_k8s(&self) -> meta::LabelSelector {
        let mut labels = BTreeMap::new();
        let mut exprs = Vec::new();
        for r in self.requirements.iter() {
            let (operator, values) = match &r.operator {
                Operator::In(v) => {
                    let single_in_for_key = self
                        .requirements
                        .iter()
                        .filter(|o| {
                            o.key == r.key && matches!(&o.operator, Operator::In(w) if w.len() == 1)
                        })
                        .count()
                        == 1;
                    if v.len() == 1 && single_in_for_key {
                        let value = v.iter().next().cloned().unwrap_or_default();
                        labels.insert(r.key.clone(), value);
                        continue;
                    }
                    ("In", Some(v.iter().cloned().collect()))
                }
                Operator::NotIn(v) => ("NotIn", Some(v.iter().cloned().collect())),
                Operator::Exists => ("Exists", None),
                Operator::DoesNotExist => ("DoesNotExist", None),
            };
            exprs.push(meta::LabelSelectorRequirement {
                key: r.key.clone(),
                operator: operator.to_owned(),
                values,
            });
        }
        meta::LabelSelector {
            match_labels: (!labels.is_empty()).then_some(labels),
            match_expressions: (!exprs.is_empty()).then_some(exprs),
        }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl FromStr for LabelSelector {
    type Err = Error;

    /// Parses the `kubectl -l` syntax: comma-separated terms `k=v`, `k==v`,
    /// `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
    fn from_str(input: &str) -> Result<Self, Error> {
        let bad = |reason: String| Error::Selector {
            input: input.to_owned(),
            reason,
        };
        let mut reqs = Vec::new();
        for term in split_terms(input).map_err(bad)? {
            reqs.push(parse_term(term).map_err(bad)?);
        }
        Ok(LabelSelector::new(reqs))
    }
}

/// Splits on commas outside parentheses; `""` gives no terms.
fn split_terms(input: &str) -> Result<Vec<&str>, String> {
    if input.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            '(' => return Err("nested parenthesis".into()),
            ')' if depth == 1 => depth = 0,
            ')' => return Err("unbalanced ')'".into()),
            ',' if depth == 0 => {
                terms.push(input[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unclosed '('".into());
    }
    terms.push(input[start..].trim());
    if terms.iter().any(|t| t.is_empty()) {
        return Err("empty term".into());
    }
    Ok(terms)
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    let req = |key: &str, operator| {
        Requirement::new(key.trim(), operator).map_err(|e| match e {
            Error::Selector { reason, .. } => format!("{term:?}: {reason}"),
            other => other.to_string(),
        })
    };
    let one = |v: &str| BTreeSet::from([v.trim().to_owned()]);
    if let Some(open) = term.find('(') {
        let inner = term[open + 1..]
            .strip_suffix(')')
            .ok_or_else(|| format!("{term:?}: text after ')'"))?;
        let head: Vec<&str> = term[..open].split_whitespace().collect();
        let values: BTreeSet<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
        return match head.as_slice() {
            [key, "in"] => req(key, Operator::In(values)),
            [key, "notin"] => req(key, Operator::NotIn(values)),
            _ => Err(format!(
                "{term:?}: expected `key in (...)` or `key notin (...)`"
            )),
        };
    }
    if let Some(key) = term.strip_prefix('!') {
        return req(key, Operator::DoesNotExist);
    }
    if let Some((key, value)) = term.split_once("!=") {
        return req(key, Operator::NotIn(one(value)));
    }
    if let Some((key, value)) = term.split_once("==") {
        return req(key, Operator::In(one(value)));
    }
    if let Some((key, value)) = term.split_once('=') {
        return req(key, Operator::In(one(value)));
    }
    req(term, Operator::Exists)
}

/// Validates one `key: value` label pair, naming `field` in the error.
pub(crate) fn validate_label(
    object: &ObjectRef,
    field: &dyn fmt::Display,
    key: &str,
    value: &str,
) -> Result<(), Error> {
    check_key(key).map_err(|reason| Error::LabelKey {
        object: object.boxed(),
        field: field.to_string(),
        key: key.to_owned(),
        reason,
    })?;
    check_value(value).map_err(|reason| Error::LabelValue {
        object: object.boxed(),
        field: Field::key(field, key).to_string(),
        value: value.to_owned(),
        reason,
    })
}

/// Validates a set of labels as found in `metadata.labels`.
pub(crate) fn validate_labels(
    object: &ObjectRef,
    field: &dyn fmt::Display,
    labels: &Labels,
) -> Result<(), Error> {
    labels
        .iter()
        .try_for_each(|(k, v)| validate_label(object, field, k, v))
}

/// A label key is a qualified name: `[prefix/]name`, with `prefix` a DNS-1123
/// subdomain (`validation.IsQualifiedName`).
pub(crate) fn check_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        None => key,
        Some((prefix, name)) => {
            if name.contains('/') {
                return Err("a qualified name has at most one '/'".into());
            }
            if prefix.is_empty() {
                return Err("prefix part must be non-empty".into());
            }
            check_dns_subdomain(prefix).map_err(|r| format!("prefix part {r}"))?;
            name
        }
    };
    if name.is_empty() {
        return Err("name part must be non-empty".into());
    }
    check_name(name).map_err(|r| format!("name part {r}"))
}

/// A label value is empty, or a name (`validation.IsValidLabelValue`).
pub(crate) fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_name(value)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn check_name(s: &str) -> Result<(), String> {
    if s.len() > NAME_MAX {
        return Err(format!("must be no more than {NAME_MAX} characters"));
    }
    let ok_inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let first = s.chars().next();
    let last = s.chars().last();
    if !s.chars().all(ok_inner)
        || !first.is_some_and(|c| c.is_ascii_alphanumeric())
        || !last.is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return Err("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into());
    }
    Ok(())
}

/// One part of a lowercase RFC 1123 name: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, any length.
fn is_dns_label_text(l: &str) -> bool {
    !l.is_empty()
        && l.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// Lowercase RFC 1123 label, at most 63 characters (`validation.IsDNS1123Label`): the
/// form of a namespace name.
pub(crate) fn check_dns_label(s: &str) -> Result<(), String> {
    if s.len() > DNS_LABEL_MAX {
        return Err(format!("must be no more than {DNS_LABEL_MAX} characters"));
    }
    if !is_dns_label_text(s) {
        return Err("must be a lowercase RFC 1123 label: lowercase alphanumeric characters or '-', starting and ending with an alphanumeric character".into());
    }
    Ok(())
}

/// Lowercase RFC 1123 subdomain, at most 253 characters (`validation.IsDNS1123Subdomain`):
/// dot-separated parts, each of the form of a label (of any length).
pub(crate) fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.len() > DNS_SUBDOMAIN_MAX {
        return Err(format!(
            "must be no more than {DNS_SUBDOMAIN_MAX} characters"
        ));
    }
    if !s.split('.').all(is_dns_label_text) {
        return Err("must be a lowercase RFC 1123 subdomain: lowercase alphanumeric characters, '-' or '.', starting and ending with an alphanumeric character".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys() {
        for ok in [
            "app",
            "a",
            "app.kubernetes.io/name",
            "networking/allow-db-access",
            "A_b.c-d",
            &"x".repeat(63),
        ] {
            assert_eq!(check_key(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/app",
            "app/",
            "a/b/c",
            "-app",
            "app-",
            "Example.com/app",
            "ex_ample.com/app",
            "app name",
            &"x".repeat(64),
            &format!("{}/a", "a".repeat(254)),
        ] {
            assert!(check_key(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn values() {
        for ok in ["", "v", "v1.2_3-x", &"x".repeat(63)] {
            assert_eq!(check_value(ok), Ok(()), "{ok}");
        }
        for bad in ["-v", "v-", "a/b", "a b", "ü", &"x".repeat(64)] {
            assert!(check_value(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "0", "shop", "kube-system", "1-a", &"x".repeat(63)] {
            assert_eq!(check_dns_label(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Shop",
            "a b",
            "-a",
            "a-",
            "a.b",
            "a_b",
            "ü",
            &"x".repeat(64),
        ] {
            assert!(check_dns_label(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(check_dns_label(&"x".repeat(64)).unwrap_err().contains("63"));
    }

    #[test]
    fn dns_subdomains() {
        let longest = format!("{}.{}", "a".repeat(126), "b".repeat(126));
        for ok in ["a", "web-0", "a.b", "a-1.b-2.c", &"x".repeat(100), &longest] {
            assert_eq!(check_dns_subdomain(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Web",
            "a b",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "a-.b",
            "a.-b",
            "a_b",
            &format!("{longest}c"),
        ] {
            assert!(
                check_dns_subdomain(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        assert!(check_dns_subdomain(&"x".repeat(254))
            .unwrap_err()
            .contains("253"));
    }

    #[test]
    fn operators_match_like_kubernetes() {
        let sel: LabelSelector = "app in (a,b),tier notin (db),env,!canary".parse().unwrap();
        assert!(sel.matches(&labels(&[("app", "a"), ("env", "x")])));
        assert!(sel.matches(&labels(&[("app", "b"), ("env", ""), ("tier", "web")])));
        // NotIn is satisfied by an absent key, In is not.
        assert!(!sel.matches(&labels(&[("env", "x")])));
        assert!(!sel.matches(&labels(&[("app", "a"), ("env", "x"), ("tier", "db")])));
        assert!(!sel.matches(&labels(&[("app", "a")])));
        assert!(!sel.matches(&labels(&[("app", "a"), ("env", "x"), ("canary", "")])));
    }

    #[test]
    fn empty_selector_matches_everything() {
        let sel: LabelSelector = "".parse().unwrap();
        assert!(sel.is_everything());
        assert!(sel.matches(&Labels::new()));
        assert!(sel.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_and_in_are_one_form() {
        let a = LabelSelector::from_labels([("app", "web")]).unwrap();
        let b: LabelSelector = "app in (web)".parse().unwrap();
        let c: LabelSelector = "app==web".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.to_string(), "app=web");
    }

    #[test]
    fn string_syntax_errors() {
        for bad in [
            "app in (a",
            "app in a)",
            "app,,b",
            "app in (a) x",
            "app=b=c",
            "a b=c",
            "app in ((a))",
            "-x",
        ] {
            let err = bad.parse::<LabelSelector>().unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn empty_parentheses_hold_the_empty_value() {
        // As in apimachinery's parser: `()` is the set {""}, and "" is a valid label value.
        let sel: LabelSelector = "app in ()".parse().unwrap();
        assert_eq!(sel, "app=".parse().unwrap());
        assert!(sel.matches(&labels(&[("app", "")])));
        assert!(!sel.matches(&labels(&[("app", "x")])));
        assert!(!sel.matches(&Labels::new()));
    }

    #[test]
    fn to_k8s_keeps_two_values_for_one_key() {
        // matchLabels app=a AND matchExpressions app In (b): a map can't hold both.
        let sel = LabelSelector::new([
            Requirement::new("app", Operator::In(BTreeSet::from(["a".to_string()]))).unwrap(),
            Requirement::new("app", Operator::In(BTreeSet::from(["b".to_string()]))).unwrap(),
        ]);
        let obj = ObjectRef {
            kind: crate::Kind::NetworkPolicy,
            namespace: Some("x".into()),
            name: "p".into(),
        };
        let back = LabelSelector::from_k8s(&sel.to_k8s(), &obj, "spec.podSelector").unwrap();
        assert_eq!(back, sel);
        assert!(!sel.matches(&labels(&[("app", "a")])));
    }
}
