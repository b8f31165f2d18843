//! Parsing the model's JSON arguments.
//!
//! Small models make small type mistakes ("offset": "10", "replace_all":
//! "true"); the lenient deserializers here accept those rather than spend a
//! turn on an error, while anything really wrong still becomes a
//! [`ToolError::InvalidArguments`] with serde's message.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::ToolError;

/// Deserialize `arguments` into the tool's argument struct.
pub(crate) fn parse<T: DeserializeOwned>(
    tool: &'static str,
    arguments: Value,
) -> Result<T, ToolError> {
    // A call without arguments sometimes arrives as `null`.
    let arguments = if arguments.is_null() {
        Value::Object(serde_json::Map::new())
    } else {
        arguments
    };
    serde_json::from_value(arguments).map_err(|error| ToolError::InvalidArguments {
        tool,
        message: error.to_string(),
    })
}

/// The string field `field` of the arguments, for [`crate::Tool::subject`].
pub(crate) fn string_field(arguments: &Value, field: &str) -> Option<String> {
    arguments.get(field)?.as_str().map(str::to_owned)
}

/// An optional non-negative integer, also accepted as a numeric string.
pub(crate) fn lenient_u64<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    let number = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(number)) => number.as_u64().or_else(|| {
            number
                .as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                .map(|f| f as u64)
        }),
        Some(Value::String(text)) => text.trim().parse().ok(),
        Some(_) => None,
    };
    number
        .map(Some)
        .ok_or_else(|| D::Error::custom("expected a non-negative integer"))
}

/// A boolean, also accepted as "true" or "false"; absent means false.
pub(crate) fn lenient_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(flag)) => Ok(flag),
        Some(Value::String(text)) if text.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(text)) if text.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(D::Error::custom("expected true or false")),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Args {
        path: String,
        #[serde(default, deserialize_with = "lenient_u64")]
        offset: Option<u64>,
        #[serde(default, deserialize_with = "lenient_bool")]
        all: bool,
    }

    #[test]
    fn accepts_quoted_numbers_and_booleans() {
        let args: Args = parse("t", json!({"path": "a", "offset": "10", "all": "true"})).unwrap();
        assert_eq!((args.path.as_str(), args.offset), ("a", Some(10)));
        assert!(args.all);
        let args: Args = parse("t", json!({"path": "a", "offset": 3.0})).unwrap();
        assert_eq!(args.offset, Some(3));
        assert!(!args.all);
    }

    #[test]
    fn reports_serde_errors() {
        let error = parse::<Args>("t", json!({})).unwrap_err();
        assert!(
            error.to_string().contains("missing field `path`"),
            "{error}"
        );
        let error = parse::<Args>("t", json!({"path": "a", "offset": -1})).unwrap_err();
        assert!(matches!(
            error,
            ToolError::InvalidArguments { tool: "t", .. }
        ));
    }
}
