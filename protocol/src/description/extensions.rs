//! Unknown fields, kept so that the schema stays extensible the way the paper's XML schema is.
//!
//! Each unknown key's value is stored as its canonical TOML text (`toml::Value`'s inline
//! rendering with table keys sorted). Text instead of a value tree keeps the canonical binary form
//! free of recursive types, floats and `deserialize_any` (postcard supports none of them), and
//! makes the encoding deterministic. Decoding checks that every text is in canonical form, so one
//! value has exactly one encoding; the TOML parser bounds nesting depth while doing so.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The canonical TOML text of one unknown value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExtValue(String);

/// Why an extension's stored text is not a canonical TOML value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtValueError {
    /// The text does not parse as a TOML value.
    #[error("not a TOML value: {0}")]
    Parse(String),
    /// The text parses, but is not the canonical rendering of what it parses to.
    #[error("not in canonical form (expected {expected})")]
    NotCanonical {
        /// The canonical rendering.
        expected: String,
    },
}

impl ExtValue {
    /// Stores `value` as canonical text.
    pub fn new(value: toml::Value) -> Self {
        Self(sorted(value).to_string())
    }

    /// The stored text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the stored text back, checking that it is canonical.
    pub fn value(&self) -> Result<toml::Value, ExtValueError> {
        let value: toml::Value = self
            .0
            .parse()
            .map_err(|e: toml::de::Error| ExtValueError::Parse(one_line(e.message())))?;
        let value = sorted(value);
        let canonical = value.to_string();
        if canonical != self.0 {
            return Err(ExtValueError::NotCanonical {
                expected: canonical,
            });
        }
        Ok(value)
    }
}

/// Unknown fields of one section, by key.
pub type Extensions = BTreeMap<String, ExtValue>;

/// Rebuilds tables with their keys in sorted order, whichever map `toml` was built with
/// (its `preserve_order` feature keeps insertion order, which would make text depend on input).
fn sorted(value: toml::Value) -> toml::Value {
    match value {
        toml::Value::Table(table) => {
            let entries: BTreeMap<String, toml::Value> =
                table.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            toml::Value::Table(entries.into_iter().collect())
        }
        toml::Value::Array(items) => toml::Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Collapses a possibly multi-line message to one line.
pub(crate) fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_canonical_and_parses_back() {
        let v: toml::Value = "{ b = 1, a = [1, 2.5, \"x\"] }".parse().unwrap();
        let ext = ExtValue::new(v.clone());
        assert_eq!(ext.as_str(), "{ a = [1, 2.5, \"x\"], b = 1 }");
        assert_eq!(ext.value().unwrap(), v);
    }

    #[test]
    fn non_canonical_text_is_rejected() {
        assert!(matches!(
            ExtValue("0x10".into()).value(),
            Err(ExtValueError::NotCanonical { .. })
        ));
        assert!(matches!(
            ExtValue("{ b = 1, a = 2 }".into()).value(),
            Err(ExtValueError::NotCanonical { .. })
        ));
        assert!(matches!(
            ExtValue("[".into()).value(),
            Err(ExtValueError::Parse(_))
        ));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}1{}", "[".repeat(50_000), "]".repeat(50_000));
        assert!(ExtValue(deep).value().is_err());
    }
}
