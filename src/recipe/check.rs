//! A small JSON Schema checker, used to check one pass parameter against the pass's own schema
//! while the recipe is read, so a wrong value is reported at its line and column.
//!
//! It knows the keywords that `schemars` writes for plain config types: `type`, `enum`,
//! `const`, `anyOf`/`oneOf`/`allOf`, local `$ref`s, numeric bounds and integer formats, list and
//! object structure. Keywords it does not know are ignored: the planner builds every concrete
//! configuration with the pass's own constructor, which is the final word on what is valid.

use serde_json::Value;

/// Checks `value` against `schema`; `root` is the document that `$ref`s point into.
/// The error says what was expected and what was found.
pub(crate) fn check(value: &Value, schema: &Value, root: &Value) -> Result<(), String> {
    let Some(schema) = schema.as_object() else {
        // `true` accepts everything; `false` nothing.
        return match schema {
            Value::Bool(false) => Err("no value is allowed here".into()),
            _ => Ok(()),
        };
    };

    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = resolve(reference, root)
            .ok_or_else(|| format!("internal error: schema reference `{reference}` not found"))?;
        check(value, target, root)?;
    }

    if let Some(types) = schema.get("type") {
        check_type(value, types)?;
    }

    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(value) {
            let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
            let guess = value.as_str().and_then(|word| super::node::closest(word, &names));
            let hint = guess.map(|g| format!(" (did you mean `{g}`?)")).unwrap_or_default();
            return Err(format!(
                "expected one of {}, found {}{hint}",
                list(allowed),
                describe(value)
            ));
        }
    }

    if let Some(expected) = schema.get("const") {
        if expected != value {
            return Err(format!("expected {}, found {}", show(expected), describe(value)));
        }
    }

    if let Some(Value::Array(options)) = schema.get("anyOf").or_else(|| schema.get("oneOf")) {
        check_any_of(value, options, root)?;
    }

    if let Some(Value::Array(parts)) = schema.get("allOf") {
        for part in parts {
            check(value, part, root)?;
        }
    }

    check_bounds(value, schema)?;
    check_list(value, schema, root)?;
    check_object(value, schema, root)
}

fn resolve<'r>(reference: &str, root: &'r Value) -> Option<&'r Value> {
    let pointer = reference.strip_prefix('#')?;
    root.pointer(pointer)
}

fn check_type(value: &Value, types: &Value) -> Result<(), String> {
    let names: Vec<&str> = match types {
        Value::String(name) => vec![name.as_str()],
        Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()),
    };
    if names.iter().any(|name| has_type(value, name)) {
        return Ok(());
    }
    let expected: Vec<String> = names.iter().map(|name| type_phrase(name)).collect();
    Err(format!("expected {}, found {}", expected.join(" or "), describe(value)))
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

fn type_phrase(name: &str) -> String {
    match name {
        "null" => "null".into(),
        "boolean" => "a boolean (`true` or `false`)".into(),
        "integer" => "an integer".into(),
        "number" => "a number".into(),
        "string" => "a string".into(),
        "array" => "a list".into(),
        "object" => "a mapping".into(),
        other => format!("a value of type `{other}`"),
    }
}

fn check_any_of(value: &Value, options: &[Value], root: &Value) -> Result<(), String> {
    let mut reasons = Vec::new();
    for option in options {
        match check(value, option, root) {
            Ok(()) => return Ok(()),
            Err(reason) => reasons.push(reason),
        }
    }

    // Alternatives that are each one constant (an enum with documented variants) read as
    // one list of allowed values.
    let constants: Option<Vec<Value>> = options
        .iter()
        .map(|option| {
            let option = option.as_object()?;
            match (option.get("const"), option.get("enum")) {
                (Some(constant), _) => Some(vec![constant.clone()]),
                (None, Some(Value::Array(values))) => Some(values.clone()),
                _ => None,
            }
        })
        .collect::<Option<Vec<_>>>()
        .map(|lists| lists.concat());
    if let Some(allowed) = constants {
        return check(value, &serde_json::json!({ "enum": allowed }), root);
    }

    reasons.dedup();
    Err(reasons.join("; or "))
}

fn check_bounds(value: &Value, schema: &serde_json::Map<String, Value>) -> Result<(), String> {
    let Some(number) = value.as_f64() else {
        return check_length(value, schema);
    };
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);

    if let Some(min) = bound("minimum").filter(|min| number < *min) {
        return Err(format!("expected a value >= {min}, found {}", show(value)));
    }
    if let Some(max) = bound("maximum").filter(|max| number > *max) {
        return Err(format!("expected a value <= {max}, found {}", show(value)));
    }
    if let Some(min) = bound("exclusiveMinimum").filter(|min| number <= *min) {
        return Err(format!("expected a value > {min}, found {}", show(value)));
    }
    if let Some(max) = bound("exclusiveMaximum").filter(|max| number >= *max) {
        return Err(format!("expected a value < {max}, found {}", show(value)));
    }

    let format = schema.get("format").and_then(Value::as_str).unwrap_or_default();
    match integer_range(format) {
        Some((min, max)) if value.is_i64() || value.is_u64() => {
            let fits = match (value.as_i64(), value.as_u64()) {
                (Some(v), _) => i128::from(v) >= min && i128::from(v) <= max,
                (None, Some(v)) => i128::from(v) >= min && i128::from(v) <= max,
                _ => true,
            };
            if fits {
                Ok(())
            } else {
                Err(format!("expected an integer from {min} to {max}, found {}", show(value)))
            }
        }
        _ => Ok(()),
    }
}

fn integer_range(format: &str) -> Option<(i128, i128)> {
    Some(match format {
        "int8" => (i8::MIN.into(), i8::MAX.into()),
        "uint8" => (0, u8::MAX.into()),
        "int16" => (i16::MIN.into(), i16::MAX.into()),
        "uint16" => (0, u16::MAX.into()),
        "int32" => (i32::MIN.into(), i32::MAX.into()),
        "uint32" => (0, u32::MAX.into()),
        "int64" | "int" => (i64::MIN.into(), i64::MAX.into()),
        "uint64" | "uint" => (0, u64::MAX.into()),
        _ => return None,
    })
}

fn check_length(value: &Value, schema: &serde_json::Map<String, Value>) -> Result<(), String> {
    let (length, what) = match value {
        Value::String(s) => (s.chars().count(), "characters"),
        Value::Array(items) => (items.len(), "items"),
        _ => return Ok(()),
    };
    let (min_key, max_key) =
        if value.is_string() { ("minLength", "maxLength") } else { ("minItems", "maxItems") };
    let limit = |key: &str| schema.get(key).and_then(Value::as_u64);

    if let Some(min) = limit(min_key).filter(|min| (length as u64) < *min) {
        return Err(format!("expected at least {min} {what}, found {length}"));
    }
    if let Some(max) = limit(max_key).filter(|max| (length as u64) > *max) {
        return Err(format!("expected at most {max} {what}, found {length}"));
    }
    Ok(())
}

fn check_list(
    value: &Value,
    schema: &serde_json::Map<String, Value>,
    root: &Value,
) -> Result<(), String> {
    let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) else {
        return Ok(());
    };
    for (index, item) in items.iter().enumerate() {
        check(item, item_schema, root).map_err(|reason| format!("item {index}: {reason}"))?;
    }
    Ok(())
}

fn check_object(
    value: &Value,
    schema: &serde_json::Map<String, Value>,
    root: &Value,
) -> Result<(), String> {
    let Value::Object(fields) = value else {
        return Ok(());
    };
    let empty = serde_json::Map::new();
    let properties = schema.get("properties").and_then(Value::as_object).unwrap_or(&empty);

    if let Some(Value::Array(required)) = schema.get("required") {
        for name in required.iter().filter_map(Value::as_str) {
            if !fields.contains_key(name) {
                return Err(format!("missing field `{name}`"));
            }
        }
    }

    for (name, field) in fields {
        match (properties.get(name), schema.get("additionalProperties")) {
            (Some(field_schema), _) => {
                check(field, field_schema, root).map_err(|reason| format!("`{name}`: {reason}"))?
            }
            (None, Some(Value::Bool(false))) => {
                let known: Vec<&String> = properties.keys().collect();
                return Err(format!(
                    "unknown field `{name}` ({})",
                    super::node::closest_hint(name, &known)
                ));
            }
            (None, Some(extra)) => {
                check(field, extra, root).map_err(|reason| format!("`{name}`: {reason}"))?
            }
            (None, None) => {}
        }
    }
    Ok(())
}

/// How a JSON value reads in a message: "integer `3`", "a list".
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(v) => format!("boolean `{v}`"),
        Value::Number(n) if n.is_f64() => format!("number `{n}`"),
        Value::Number(n) => format!("integer `{n}`"),
        Value::String(s) => format!("string `{s}`"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("`{s}`"),
        other => format!("`{other}`"),
    }
}

fn list(values: &[Value]) -> String {
    values.iter().map(show).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(value: Value, schema: Value) -> Result<(), String> {
        check(&value, &schema, &schema)
    }

    #[test]
    fn types_and_formats() {
        let schema = json!({"type": "integer", "format": "uint8", "minimum": 0});
        assert_eq!(run(json!(3), schema.clone()), Ok(()));
        assert_eq!(
            run(json!(3.5), schema.clone()).unwrap_err(),
            "expected an integer, found number `3.5`"
        );
        assert_eq!(
            run(json!(300), schema.clone()).unwrap_err(),
            "expected an integer from 0 to 255, found `300`"
        );
        assert_eq!(run(json!(-1), schema).unwrap_err(), "expected a value >= 0, found `-1`");
        assert_eq!(
            run(json!("x"), json!({"type": "boolean"})).unwrap_err(),
            "expected a boolean (`true` or `false`), found string `x`"
        );
        assert_eq!(run(json!(null), json!({"type": ["string", "null"]})), Ok(()));
    }

    #[test]
    fn enums_refs_and_alternatives() {
        let schema = json!({
            "$defs": {"Method": {"type": "string", "enum": ["minmax", "entropy"]}},
            "properties": {"method": {"$ref": "#/$defs/Method"}},
            "additionalProperties": false,
        });
        assert_eq!(run(json!({"method": "minmax"}), schema.clone()), Ok(()));
        let error = run(json!({"method": "minmx"}), schema.clone()).unwrap_err();
        assert_eq!(
            error,
            "`method`: expected one of `minmax`, `entropy`, found string `minmx` \
             (did you mean `minmax`?)"
        );
        let error = run(json!({"methd": "minmax"}), schema).unwrap_err();
        assert!(error.contains("did you mean `method`?"), "{error}");

        let either = json!({"anyOf": [{"type": "boolean"}, {"const": "auto"}]});
        assert_eq!(run(json!("auto"), either.clone()), Ok(()));
        assert!(run(json!("on"), either).is_err());

        // Documented variants (one constant each) read as one enum.
        let variants =
            json!({"oneOf": [{"const": "qdq", "description": "pairs"}, {"const": "qoperator"}]});
        assert_eq!(
            run(json!("qop"), variants).unwrap_err(),
            "expected one of `qdq`, `qoperator`, found string `qop` (did you mean `qoperator`?)"
        );
    }

    #[test]
    fn lists_and_required_fields() {
        let schema = json!({"type": "array", "items": {"type": "number"}, "minItems": 1});
        assert_eq!(run(json!([1, 2.5]), schema.clone()), Ok(()));
        assert_eq!(
            run(json!([]), schema.clone()).unwrap_err(),
            "expected at least 1 items, found 0"
        );
        assert_eq!(
            run(json!([1, "a"]), schema).unwrap_err(),
            "item 1: expected a number, found string `a`"
        );
        let object = json!({"type": "object", "required": ["bits"]});
        assert_eq!(run(json!({}), object).unwrap_err(), "missing field `bits`");
    }
}
