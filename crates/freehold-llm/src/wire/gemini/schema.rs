//! Gemini's schema dialect: the OpenAPI 3.0 subset that `parameters` and
//! `responseSchema` accept, and the rewriting of JSON Schema into it.

use serde_json::{Map, Value, json};

/// The JSON Schema keys Gemini's schema dialect accepts; the others are
/// removed (older versions reject `additionalProperties`, `$schema`, `$ref`,
/// `default`, `const`, `oneOf`, `allOf`… with a 400).
const SCHEMA_KEYS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "items",
    "minimum",
    "maximum",
];

/// The `format`s Gemini accepts (`uri`, `email`… are rejected).
const SCHEMA_FORMATS: &[&str] = &["enum", "date-time", "float", "double", "int32", "int64"];

/// How many `$ref`s deep a recursive schema is expanded.
const MAX_REF_DEPTH: usize = 3;

/// Whether a sanitized schema is one Gemini's dialect takes: no array
/// without `items` (a bare `"type": "array"`, a tuple's `prefixItems`, the
/// array member of `"type": ["string", "array"]`) and, below the top, no
/// object without `properties` (a dictionary's `additionalProperties`, a
/// recursion cut short). Gemini refuses the whole request for either
/// ("items: missing field", "properties: should be non-empty for OBJECT
/// type"); such a schema is sent in JSON Schema form instead.
pub fn fits_the_dialect(sanitized: &Value) -> bool {
    fits(sanitized, true)
}

fn fits(node: &Value, top: bool) -> bool {
    let Value::Object(node) = node else {
        return true;
    };
    let kind = node.get("type").and_then(Value::as_str);
    let properties = node.get("properties").and_then(Value::as_object);
    match kind {
        Some(kind) if kind.eq_ignore_ascii_case("array") && node.get("items").is_none() => {
            return false;
        }
        Some(kind)
            if kind.eq_ignore_ascii_case("object")
                && !top
                && properties.is_none_or(Map::is_empty)
                && node.get("anyOf").is_none() =>
        {
            return false;
        }
        _ => {}
    }
    let children_fit =
        properties.is_none_or(|properties| properties.values().all(|schema| fits(schema, false)));
    let items_fit = node.get("items").is_none_or(|items| fits(items, false));
    let members_fit = node
        .get("anyOf")
        .and_then(Value::as_array)
        .is_none_or(|members| members.iter().all(|member| fits(member, top)));
    children_fit && items_fit && members_fit
}

/// A client's JSON Schema as Gemini's `parametersJsonSchema` and
/// `responseJsonSchema` take it: as it is, without the `$schema` key.
pub(crate) fn json_schema_form(schema: &Value) -> Value {
    let mut schema = schema.clone();
    if let Value::Object(object) = &mut schema {
        object.remove("$schema");
    }
    schema
}

/// Rewrites a JSON Schema into the subset Gemini accepts:
/// - local `$ref`s (`#/$defs/…`, `#/definitions/…`) are inlined, recursive
///   ones three levels deep (then an untyped object);
/// - `allOf` members are merged into their schema, `oneOf` becomes `anyOf`,
///   `const` becomes a one-value `enum`;
/// - `"type": ["string", "null"]` and `anyOf` with a `null` member become
///   `nullable: true`;
/// - keys outside Gemini's dialect (`additionalProperties`, `$schema`,
///   `default`, `examples`, `exclusiveMinimum`…), unsupported `format`s,
///   non-string `enum`s and `required` names without a property are dropped.
pub fn sanitize_schema(schema: &Value) -> Value {
    sanitize_node(schema, schema, 0)
}

fn sanitize_node(node: &Value, root: &Value, refs: usize) -> Value {
    let Value::Object(source) = node else {
        // `true` / `{}`: anything.
        return Value::Object(Map::new());
    };
    let mut node = source.clone();

    // Inline a local reference; the referring schema's own keys win.
    if let Some(reference) = node.remove("$ref") {
        let target = reference
            .as_str()
            .and_then(|pointer| pointer.strip_prefix('#'))
            .and_then(|pointer| root.pointer(pointer));
        match target {
            Some(Value::Object(target)) if refs < MAX_REF_DEPTH => {
                let sanitized = sanitize_node(&Value::Object(target.clone()), root, refs + 1);
                if let Value::Object(sanitized) = sanitized {
                    for (key, value) in sanitized {
                        node.entry(key).or_insert(value);
                    }
                }
            }
            _ => {
                node.entry("type").or_insert_with(|| json!("object"));
            }
        }
    }

    if let Some(Value::Array(members)) = node.remove("allOf") {
        for member in members {
            if let Value::Object(member) = sanitize_node(&member, root, refs) {
                merge_schema(&mut node, member);
            }
        }
    }
    if let Some(one_of) = node.remove("oneOf") {
        node.entry("anyOf").or_insert(one_of);
    }
    if let Some(constant) = node.remove("const") {
        node.entry("enum").or_insert_with(|| json!([constant]));
    }

    // `type: [T, "null"]` → `type: T, nullable: true`.
    if let Some(Value::Array(types)) = node.get("type").cloned() {
        let mut kinds: Vec<Value> = types
            .into_iter()
            .filter(|kind| kind.as_str() != Some("null"))
            .collect();
        if node.get("type").and_then(Value::as_array).map(Vec::len) != Some(kinds.len()) {
            node.insert("nullable".into(), Value::Bool(true));
        }
        node.remove("type");
        match kinds.len() {
            0 => {}
            1 => {
                node.insert("type".into(), kinds.remove(0));
            }
            _ => {
                let any_of = kinds
                    .into_iter()
                    .map(|kind| json!({ "type": kind }))
                    .collect();
                node.entry("anyOf").or_insert(Value::Array(any_of));
            }
        }
    }

    let mut out = Map::new();
    for (key, value) in node {
        if !SCHEMA_KEYS.contains(&key.as_str()) {
            continue;
        }
        let value = match key.as_str() {
            "properties" => {
                let Value::Object(properties) = value else {
                    continue;
                };
                Value::Object(
                    properties
                        .into_iter()
                        .map(|(name, schema)| (name, sanitize_node(&schema, root, refs)))
                        .collect(),
                )
            }
            "items" => match value {
                // Tuple form: Gemini takes one item schema.
                Value::Array(items) => match items.first() {
                    Some(first) => sanitize_node(first, root, refs),
                    None => continue,
                },
                other => sanitize_node(&other, root, refs),
            },
            "anyOf" => {
                let Value::Array(members) = value else {
                    continue;
                };
                Value::Array(
                    members
                        .iter()
                        .map(|member| sanitize_node(member, root, refs))
                        .collect(),
                )
            }
            "format" if !value.as_str().is_some_and(|f| SCHEMA_FORMATS.contains(&f)) => continue,
            "enum"
                if !value
                    .as_array()
                    .is_some_and(|v| v.iter().all(Value::is_string)) =>
            {
                continue;
            }
            _ => value,
        };
        out.insert(key, value);
    }

    // `anyOf: [X, {type: null}]` → X, nullable.
    if let Some(Value::Array(members)) = out.get("anyOf").cloned() {
        let is_null = |member: &Value| member.get("type").and_then(Value::as_str) == Some("null");
        if members.iter().any(is_null) {
            let mut rest: Vec<Value> = members.into_iter().filter(|m| !is_null(m)).collect();
            out.insert("nullable".into(), Value::Bool(true));
            out.remove("anyOf");
            match rest.len() {
                0 => {}
                1 => {
                    if let Value::Object(only) = rest.remove(0) {
                        merge_schema(&mut out, only);
                    }
                }
                _ => {
                    out.insert("anyOf".into(), Value::Array(rest));
                }
            }
        }
    }

    // `required` may only name declared properties.
    if let Some(Value::Array(required)) = out.get("required").cloned() {
        let declared = out.get("properties").and_then(Value::as_object);
        let kept: Vec<Value> = required
            .into_iter()
            .filter(|name| {
                name.as_str()
                    .is_some_and(|name| declared.is_some_and(|props| props.contains_key(name)))
            })
            .collect();
        if kept.is_empty() {
            out.remove("required");
        } else {
            out.insert("required".into(), Value::Array(kept));
        }
    }
    Value::Object(out)
}

/// Merges `from` into `into`: properties are joined, `required` lists united,
/// other keys kept where `into` has none.
fn merge_schema(into: &mut Map<String, Value>, from: Map<String, Value>) {
    for (key, value) in from {
        match (key.as_str(), into.get_mut(&key), value) {
            ("properties", Some(Value::Object(existing)), Value::Object(more)) => {
                for (name, schema) in more {
                    existing.entry(name).or_insert(schema);
                }
            }
            ("required", Some(Value::Array(existing)), Value::Array(more)) => {
                for name in more {
                    if !existing.contains(&name) {
                        existing.push(name);
                    }
                }
            }
            (_, Some(_), _) => {}
            (_, None, value) => {
                into.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizer_inlines_refs_and_strips_unsupported_keys() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "path": {"type": "string", "format": "uri", "default": "."},
                "mode": {"type": ["string", "null"], "enum": ["r", "w"]},
                "when": {"type": "string", "format": "date-time"},
                "count": {"type": "integer", "exclusiveMinimum": 0, "const": 3},
                "node": {"$ref": "#/$defs/Node"},
                "maybe": {"anyOf": [{"$ref": "#/$defs/Leaf"}, {"type": "null"}]},
                "both": {"allOf": [{"$ref": "#/$defs/Leaf"}], "description": "a leaf"},
                "pick": {"oneOf": [{"type": "string"}, {"type": "integer"}]}
            },
            "required": ["path", "ghost"],
            "$defs": {
                "Leaf": {"type": "object", "properties": {"v": {"type": "number"}}, "required": ["v"]},
                "Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}
            }
        });
        let out = sanitize_schema(&schema);
        assert_eq!(out.get("$schema"), None);
        assert_eq!(out.get("additionalProperties"), None);
        assert_eq!(out.get("$defs"), None);
        assert_eq!(out["required"], json!(["path"]));
        let props = &out["properties"];
        assert_eq!(props["path"], json!({"type": "string"}));
        assert_eq!(
            props["mode"],
            json!({"type": "string", "nullable": true, "enum": ["r", "w"]})
        );
        assert_eq!(props["when"]["format"], "date-time");
        // A non-string `const` cannot become a Gemini enum.
        assert_eq!(props["count"], json!({"type": "integer"}));
        assert_eq!(
            props["maybe"],
            json!({"nullable": true, "type": "object", "properties": {"v": {"type": "number"}}, "required": ["v"]})
        );
        assert_eq!(props["both"]["description"], "a leaf");
        assert_eq!(props["both"]["properties"]["v"]["type"], "number");
        assert_eq!(
            props["pick"],
            json!({"anyOf": [{"type": "string"}, {"type": "integer"}]})
        );
        // Recursion stops after a few levels with an untyped object.
        let mut node = &props["node"];
        let mut depth = 0;
        while let Some(next) = node.pointer("/properties/next") {
            node = next;
            depth += 1;
        }
        assert_eq!(depth, MAX_REF_DEPTH);
        assert_eq!(node, &json!({"type": "object"}));
        assert!(!out.to_string().contains("$ref"));
    }
}
