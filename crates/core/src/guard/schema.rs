//! Output constraints: the response must be JSON matching the schema the request
//! asked for (`response_format: {type: "json_schema"}`).

use jsonschema::{PatternOptions, Validator};

use crate::error::{Error, Result};

/// Errors reported per output at most; the first few say enough to retry or escalate.
const MAX_ERRORS: usize = 10;

pub struct OutputSchema {
    validator: Validator,
}

impl OutputSchema {
    /// Compiles a JSON schema. Schema `pattern`s run on the linear-time `regex` engine.
    pub fn new(schema: &str) -> Result<OutputSchema> {
        let schema: serde_json::Value = serde_json::from_str(schema)
            .map_err(|e| Error::InvalidInput(format!("schema is not valid JSON: {e}")))?;
        let validator = jsonschema::options()
            .with_pattern_options(PatternOptions::regex())
            .build(&schema)
            .map_err(|e| Error::InvalidInput(format!("schema is not a valid JSON schema: {e}")))?;
        Ok(OutputSchema { validator })
    }

    /// Why `output` does not satisfy the schema; empty when it does. Messages name the
    /// location and the broken constraint but never quote the output's values.
    pub fn check(&self, output: &str) -> Vec<String> {
        let instance: serde_json::Value = match serde_json::from_str(output) {
            Ok(v) => v,
            Err(e) => return vec![format!("output is not valid JSON: {e}")],
        };
        self.validator
            .iter_errors(&instance)
            .take(MAX_ERRORS)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() { "/".to_owned() } else { at };
                format!("at {at}: {}", e.masked())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{"type": "object", "required": ["name"],
        "properties": {"name": {"type": "string", "pattern": "^[a-z]+$"}}}"#;

    #[test]
    fn valid_output_has_no_errors() {
        assert!(OutputSchema::new(SCHEMA)
            .unwrap()
            .check(r#"{"name": "ada"}"#)
            .is_empty());
    }

    #[test]
    fn errors_name_the_location_without_the_value() {
        let errors = OutputSchema::new(SCHEMA)
            .unwrap()
            .check(r#"{"name": "SECRET-42"}"#);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("/name"), "{errors:?}");
        assert!(!errors[0].contains("SECRET-42"), "{errors:?}");
    }

    #[test]
    fn not_json_and_deep_nesting_are_errors_not_panics() {
        let schema = OutputSchema::new(SCHEMA).unwrap();
        assert!(schema.check("{not json")[0].contains("not valid JSON"));
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(schema.check(&deep)[0].contains("not valid JSON"));
    }
}
