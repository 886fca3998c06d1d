//! Node label requirements as the operator's flags give them (`key=value` or `key`): a leaf
//! that configuration and placement both use.

use std::collections::BTreeMap;

/// A node label requirement: `key=value`, or `key` alone (the label exists with any value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelRequirement {
    /// Label key.
    pub key: String,
    /// Required value; `None` accepts any value.
    pub value: Option<String>,
}

impl LabelRequirement {
    /// Parses `key=value` or `key`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (key, value) = match text.split_once('=') {
            Some((key, value)) => (key.trim(), Some(value.trim().to_owned())),
            None => (text, None),
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!(
                "{text:?} is not a node label selector (use key=value or key)"
            ));
        }
        Ok(LabelRequirement {
            key: key.to_owned(),
            value,
        })
    }

    /// Whether `labels` satisfy the requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match (labels.get(&self.key), &self.value) {
            (Some(_), None) => true,
            (Some(actual), Some(wanted)) => actual == wanted,
            (None, _) => false,
        }
    }
}

impl std::fmt::Display for LabelRequirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}={value}", self.key),
            None => f.write_str(&self.key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_requirements_parse_and_print() {
        let r = LabelRequirement::parse(" a/b=c ").expect("valid");
        assert_eq!((r.key.as_str(), r.value.as_deref()), ("a/b", Some("c")));
        assert_eq!(r.to_string(), "a/b=c");
        let r = LabelRequirement::parse("exists").expect("valid");
        assert_eq!(r.value, None);
        assert_eq!(r.to_string(), "exists");
        assert!(LabelRequirement::parse("=x").is_err());
        assert!(LabelRequirement::parse("a b=c").is_err());
    }

    #[test]
    fn a_requirement_with_a_value_matches_only_that_value_and_one_without_any_value() {
        let labels = BTreeMap::from([("a".to_owned(), "1".to_owned())]);
        let parse = |text| LabelRequirement::parse(text).expect("valid");
        assert!(parse("a=1").matches(&labels));
        assert!(!parse("a=2").matches(&labels));
        assert!(parse("a").matches(&labels));
        assert!(!parse("b").matches(&labels));
    }
}
