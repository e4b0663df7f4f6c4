//! Kubernetes structural schemas from Rust types: the JSON schema `schemars` derives from the
//! model (OpenAPI 3 flavour, every subschema inlined) rewritten to what a
//! CustomResourceDefinition accepts: every node typed, no `$ref`/`anyOf` unions except enums,
//! `additionalProperties` only for maps, and the few free-form values marked
//! `x-kubernetes-preserve-unknown-fields`. Unknown fields are then pruned by the API server,
//! or rejected under strict field validation (`kubectl apply`'s default).

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// The structural schema of `T`, ready for `openAPIV3Schema.properties.spec`.
pub fn structural_for<T: schemars::JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let schema = generator.into_root_schema_for::<T>();
    structural(schema.to_value())
}

/// Formats the API server knows; others (`uint32`, ...) are dropped.
const FORMATS: [&str; 4] = ["int32", "int64", "float", "double"];

/// Rewrites one JSON schema node (and its children) into a structural schema node.
pub fn structural(schema: Value) -> Value {
    let mut node = match schema {
        // `true` (anything, e.g. a `serde_json::Value` field) becomes free-form.
        Value::Bool(_) => return json!({"x-kubernetes-preserve-unknown-fields": true}),
        Value::Object(map) => map,
        other => return other,
    };
    // Unions: only enums of strings survive; anything else is free-form.
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(members)) = node.remove(key) {
            let members: Vec<Value> = members.into_iter().filter(|m| !is_null(m)).collect();
            if let Some(values) = enum_values(&members) {
                node.insert("type".into(), "string".into());
                node.insert("enum".into(), Value::Array(values));
            } else if let [only] = members.as_slice() {
                let description = node.remove("description");
                let mut merged = structural(only.clone());
                if let (Some(d), Some(m)) = (description, merged.as_object_mut()) {
                    m.insert("description".into(), d);
                }
                return merged;
            } else {
                let mut out = Map::new();
                if let Some(d) = node.remove("description") {
                    out.insert("description".into(), d);
                }
                out.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
                return Value::Object(out);
            }
        }
    }
    if let Some(c) = node.remove("const") {
        node.insert("enum".into(), Value::Array(vec![c]));
    }
    for drop in [
        "$schema",
        "title",
        "default",
        "nullable",
        "propertyNames",
        "patternProperties",
        "uniqueItems",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "definitions",
        "$defs",
    ] {
        node.remove(drop);
    }
    if let Some(Value::String(f)) = node.get("format")
        && !FORMATS.contains(&f.as_str())
    {
        node.remove("format");
    }
    // Bounds are doubles in the API's types (`0` reads back as `0.0`).
    for bound in ["minimum", "maximum"] {
        if let Some(n) = node.get(bound).and_then(Value::as_f64) {
            node.insert(bound.into(), json!(n));
        }
    }
    if let Some(Value::Array(types)) = node.get("type") {
        let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        match kept.as_slice() {
            [one] => {
                node.insert("type".into(), one.clone());
            }
            _ => {
                node.remove("type");
                node.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
            }
        }
    }
    if let Some(Value::Object(properties)) = node.remove("properties") {
        let properties: Map<String, Value> = properties
            .into_iter()
            .map(|(k, v)| (k, structural(v)))
            .collect();
        node.insert("properties".into(), Value::Object(properties));
        node.insert("type".into(), "object".into());
    }
    match node.remove("additionalProperties") {
        Some(Value::Bool(false)) | None => {}
        Some(Value::Bool(true)) => {
            if !node.contains_key("properties") {
                node.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
            }
        }
        Some(schema) => {
            node.insert("additionalProperties".into(), structural(schema));
        }
    }
    if let Some(items) = node.remove("items") {
        node.insert("items".into(), structural(items));
    }
    if let Some(Value::Array(required)) = node.get("required")
        && required.is_empty()
    {
        node.remove("required");
    }
    // An object with neither properties nor a map schema is free-form.
    if node.get("type") == Some(&Value::from("object"))
        && !node.contains_key("properties")
        && !node.contains_key("additionalProperties")
    {
        node.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
    }
    if !node.contains_key("type") && !node.contains_key("x-kubernetes-preserve-unknown-fields") {
        node.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
    }
    Value::Object(node)
}

fn is_null(schema: &Value) -> bool {
    schema.get("type") == Some(&Value::from("null"))
        || schema.get("enum") == Some(&json!([null]))
        || schema.get("const") == Some(&Value::Null)
}

/// The string values of a union whose members are all string constants or enums.
fn enum_values(members: &[Value]) -> Option<Vec<Value>> {
    let mut values = Vec::new();
    for m in members {
        if let Some(c) = m.get("const") {
            values.push(c.clone());
        } else if let Some(Value::Array(e)) = m.get("enum") {
            values.extend(e.iter().cloned());
        } else {
            return None;
        }
    }
    (!values.is_empty() && values.iter().all(Value::is_string)).then_some(values)
}

/// Checks the rules of a structural schema that `structural` must establish, returning the
/// paths that break them (empty when the schema is structural).
pub fn violations(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(schema, "", &mut out);
    out
}

fn walk(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Some(node) = schema.as_object() else {
        out.push(format!("{path}: not an object"));
        return;
    };
    let free = node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !node.contains_key("type") && !free {
        out.push(format!("{path}: no type"));
    }
    for forbidden in [
        "$ref", "anyOf", "oneOf", "allOf", "not", "const", "nullable",
    ] {
        if node.contains_key(forbidden) {
            out.push(format!("{path}: has {forbidden}"));
        }
    }
    if node.contains_key("properties") && node.contains_key("additionalProperties") {
        out.push(format!("{path}: both properties and additionalProperties"));
    }
    if let Some(Value::Object(props)) = node.get("properties") {
        for (k, v) in props {
            walk(v, &format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = node.get("items") {
        walk(items, &format!("{path}[]"), out);
    }
    if let Some(ap) = node.get("additionalProperties") {
        if ap.is_boolean() {
            out.push(format!("{path}: boolean additionalProperties"));
        } else {
            walk(ap, &format!("{path}{{}}"), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unions_enums_and_nulls() {
        let s = structural(json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "mode": {"anyOf": [{"const": "A"}, {"enum": ["B"]}, {"type": "null"}]},
                "n": {"type": ["integer", "null"], "format": "uint32", "minimum": 0},
                "any": true,
                "either": {"anyOf": [{"type": "number"}, {"type": "object", "properties": {}}]},
                "map": {"type": "object", "additionalProperties": {"type": "string"},
                        "propertyNames": {"format": "uint32"}},
                "list": {"type": "array", "items": {"type": "string"}, "default": []}
            }
        }));
        assert_eq!(
            s,
            json!({
                "type": "object",
                "properties": {
                    "mode": {"type": "string", "enum": ["A", "B"]},
                    "n": {"type": "integer", "minimum": 0.0},
                    "any": {"x-kubernetes-preserve-unknown-fields": true},
                    "either": {"x-kubernetes-preserve-unknown-fields": true},
                    "map": {"type": "object", "additionalProperties": {"type": "string"}},
                    "list": {"type": "array", "items": {"type": "string"}}
                }
            })
        );
        assert!(violations(&s).is_empty(), "{:?}", violations(&s));
    }
}
