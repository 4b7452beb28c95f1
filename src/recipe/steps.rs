//! The recipe's `passes` list: its types, how it is read against the pass registry, and its
//! JSON Schema, which is built from the registry too.
//!
//! An item is either `{<pass name>: {param: value-or-list}}` or `{one_of: [branch, ...]}`,
//! where a branch is one item or a list of items run in order (a chain). A list given as a
//! parameter value is a search dimension. Every parameter value is checked against the pass's
//! config schema while it is read, so a wrong value is reported at its own line and column.

use std::borrow::Cow;
use std::fmt;

use pipeline_passes::pass::{registry, PassInfo};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::check::check;
use super::node::{closest_hint, HINT};

/// The key that makes an item a set of branches.
pub const ONE_OF: &str = "one_of";

/// One entry of the recipe's `passes` list.
#[derive(Debug, Clone, PartialEq)]
pub enum PassItem {
    /// One pass, with the values to try for each parameter.
    Pass(PassSpec),
    /// Alternatives: each branch is a chain of items, and each makes its own paths in the plan.
    OneOf(Vec<Vec<PassItem>>),
}

/// A pass as the recipe names it, with its search space.
#[derive(Debug, Clone, PartialEq)]
pub struct PassSpec {
    /// The registry name of the pass.
    pub name: String,
    /// Each parameter the recipe sets, in the order it was written.
    pub params: Vec<(String, ParamSpace)>,
    /// Where the recipe names this pass, for messages about it.
    pub origin: Origin,
}

/// The values a recipe gives one parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamSpace {
    /// A single value, used by every candidate.
    Fixed(Value),
    /// A search dimension: each value is tried.
    Choices(Vec<Value>),
}

impl ParamSpace {
    /// Every value to try, in recipe order.
    pub fn values(&self) -> &[Value] {
        match self {
            ParamSpace::Fixed(value) => std::slice::from_ref(value),
            ParamSpace::Choices(values) => values,
        }
    }
}

/// The place in the recipe where something was written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The field path, like `passes[1].one_of[0].quantize_dynamic`.
    pub field: String,
    /// 1-based line; 0 when the item was not read from a file.
    pub line: u64,
    /// 1-based column; 0 when the item was not read from a file.
    pub column: u64,
}

/// The JSON Schema of a pass's configuration, as one JSON value with its own `$defs`.
fn config_schema(info: &PassInfo) -> Value {
    let mut generator = SchemaGenerator::default();
    (info.config_schema)(&mut generator).to_value()
}

impl<'de> Deserialize<'de> for PassItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // `any`, so that a bare pass name (`- fuse`) reaches the visitor and gets a hint.
        deserializer.deserialize_any(ItemVisitor)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = PassItem;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a pass step: `<pass name>: {...}` or `one_of: [...]`")
    }

    fn visit_unit<E: de::Error>(self) -> Result<PassItem, E> {
        Err(E::custom(format!(
            "empty pass step{HINT}write `<pass name>: {{...}}` or `one_of: [...]`"
        )))
    }

    /// A pass named without its parameters: refused, saying how to write it.
    fn visit_str<E: de::Error>(self, name: &str) -> Result<PassItem, E> {
        if let StepKey::OneOf = StepKeySeed.visit_str::<E>(name)? {
            return Err(E::custom(format!(
                "`{ONE_OF}` without its branches{HINT}write `- {ONE_OF}: [...]`, one pass \
                 step or list of steps per branch"
            )));
        }
        Err(E::custom(format!(
            "`{name}` is a pass step without its parameters{HINT}write `- {name}: {{}}` for its \
             defaults, or `- {name}: {{parameter: value}}`"
        )))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PassItem, A::Error> {
        let Some(key) = map.next_key_seed(StepKeySeed)? else {
            return Err(de::Error::custom(format!(
                "empty pass step{HINT}write `<pass name>: {{...}}` or `one_of: [...]`"
            )));
        };

        let item = match key {
            StepKey::OneOf => PassItem::OneOf(map.next_value_seed(BranchesSeed)?),
            StepKey::Pass(info) => PassItem::Pass(PassSpec {
                name: info.name.to_owned(),
                params: map.next_value_seed(ParamsSeed { info })?,
                origin: Origin::default(),
            }),
        };

        map.next_key_seed(SecondKeySeed)?;
        Ok(item)
    }
}

enum StepKey {
    OneOf,
    Pass(&'static PassInfo),
}

struct StepKeySeed;

impl<'de> DeserializeSeed<'de> for StepKeySeed {
    type Value = StepKey;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<StepKey, D::Error> {
        // Checked inside the visitor, so that an error points at the key itself.
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for StepKeySeed {
    type Value = StepKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a pass name or `one_of`")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<StepKey, E> {
        if name == ONE_OF {
            return Ok(StepKey::OneOf);
        }
        if let Some(info) = registry().iter().find(|info| info.name == name) {
            return Ok(StepKey::Pass(info));
        }
        let mut known: Vec<&str> = registry().iter().map(|info| info.name).collect();
        known.push(ONE_OF);
        Err(E::custom(format!(
            "unknown pass `{name}`{HINT}{}; `pipeline passes` describes each pass",
            closest_hint(name, &known)
        )))
    }
}

/// Rejects a second key in a pass step, at that key.
struct SecondKeySeed;

impl<'de> DeserializeSeed<'de> for SecondKeySeed {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for SecondKeySeed {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("no second key")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<(), E> {
        Err(E::custom(format!(
            "a pass step has exactly one key, and `{name}` is a second one{HINT}\
             give each pass its own list item (`- {name}: ...`); \
             check the indentation of its parameters"
        )))
    }
}

struct BranchesSeed;

impl<'de> DeserializeSeed<'de> for BranchesSeed {
    type Value = Vec<Vec<PassItem>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BranchesSeed {
    type Value = Vec<Vec<PassItem>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of branches")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut branches = Vec::new();
        while let Some(branch) = seq.next_element_seed(BranchSeed)? {
            branches.push(branch);
        }
        if branches.is_empty() {
            return Err(de::Error::custom(format!(
                "`one_of` has no branches{HINT}list at least one pass step under it"
            )));
        }
        Ok(branches)
    }
}

/// One branch of a `one_of`: a single step, or a list of steps that run in order.
struct BranchSeed;

impl<'de> DeserializeSeed<'de> for BranchSeed {
    type Value = Vec<PassItem>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BranchSeed {
    type Value = Vec<PassItem>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a pass step or a list of pass steps")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(vec![ItemVisitor.visit_map(map)?])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut chain = Vec::new();
        while let Some(item) = seq.next_element::<PassItem>()? {
            chain.push(item);
        }
        if chain.is_empty() {
            return Err(de::Error::custom(format!(
                "empty chain in `one_of`{HINT}a branch needs at least one pass step"
            )));
        }
        Ok(chain)
    }
}

/// The parameters of one pass, checked against its config schema.
struct ParamsSeed {
    info: &'static PassInfo,
}

impl<'de> DeserializeSeed<'de> for ParamsSeed {
    type Value = Vec<(String, ParamSpace)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ParamsSeed {
    type Value = Vec<(String, ParamSpace)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "the parameters of pass `{}` as a mapping", self.info.name)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let root = config_schema(self.info);
        let empty = Map::new();
        let properties = root.get("properties").and_then(Value::as_object).unwrap_or(&empty);
        let names: Vec<&str> = properties.keys().map(String::as_str).collect();

        let mut params = Vec::new();
        while let Some(name) =
            map.next_key_seed(ParamNameSeed { pass: self.info.name, names: &names })?
        {
            let schema = properties.get(&name).unwrap_or(&Value::Bool(true));
            let space = map.next_value_seed(ValueSeed { schema, root: &root, top: true })?;
            params.push((name, space));
        }

        let required = root.get("required").and_then(Value::as_array).cloned().unwrap_or_default();
        for name in required.iter().filter_map(Value::as_str) {
            if !params.iter().any(|(given, _)| given == name) {
                return Err(de::Error::custom(format!(
                    "missing parameter `{name}` of pass `{}`{HINT}`pipeline passes` lists its \
                     parameters",
                    self.info.name
                )));
            }
        }
        Ok(params)
    }
}

struct ParamNameSeed<'n> {
    pass: &'static str,
    names: &'n [&'n str],
}

impl<'de> DeserializeSeed<'de> for ParamNameSeed<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for ParamNameSeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a parameter of pass `{}`", self.pass)
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<String, E> {
        if self.names.contains(&name) {
            return Ok(name.to_owned());
        }
        Err(E::custom(format!(
            "unknown parameter `{name}` of pass `{}`{HINT}{}",
            self.pass,
            closest_hint(name, self.names)
        )))
    }
}

/// One parameter value, checked against the parameter's schema. At the top (`top`), a list is
/// a search dimension whose items are each checked, unless the parameter itself takes a list
/// and the whole list is a valid value.
#[derive(Clone, Copy)]
struct ValueSeed<'s> {
    schema: &'s Value,
    root: &'s Value,
    top: bool,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ParamSpace;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<ParamSpace, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl ValueSeed<'_> {
    fn fixed<E: de::Error>(&self, value: Value) -> Result<ParamSpace, E> {
        check(&value, self.schema, self.root).map_err(E::custom)?;
        Ok(ParamSpace::Fixed(value))
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ParamSpace;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a parameter value or a list of values to try")
    }

    fn visit_unit<E: de::Error>(self) -> Result<ParamSpace, E> {
        self.fixed(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<ParamSpace, E> {
        self.fixed(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ParamSpace, E> {
        self.fixed(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ParamSpace, E> {
        self.fixed(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ParamSpace, E> {
        self.fixed(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ParamSpace, E> {
        self.fixed(Value::from(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ParamSpace, A::Error> {
        let value = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        self.fixed(value)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ParamSpace, A::Error> {
        if !self.top || admits_list(self.schema, self.root, 0) {
            let value = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
            if !self.top || check(&value, self.schema, self.root).is_ok() {
                return self.fixed(value);
            }
            return choices(value, self.schema, self.root);
        }

        let mut values = Vec::new();
        let item = ValueSeed { schema: self.schema, root: self.root, top: false };
        while let Some(space) = seq.next_element_seed(item)? {
            values.extend(space.values().iter().cloned());
        }
        if values.is_empty() {
            return Err(de::Error::custom(format!(
                "an empty list gives this parameter no value to try{HINT}\
                 give one value, or a list of the values to try"
            )));
        }
        Ok(ParamSpace::Choices(values))
    }
}

/// A list given to a parameter that takes lists, which is not a valid value as a whole: it is
/// a search dimension if every item is a valid value.
fn choices<E: de::Error>(value: Value, schema: &Value, root: &Value) -> Result<ParamSpace, E> {
    let whole = check(&value, schema, root);
    let Value::Array(items) = value else {
        return Err(E::custom("internal error: expected a list"));
    };
    if items.is_empty() {
        return Err(E::custom(whole.err().unwrap_or_default()));
    }
    for (index, item) in items.iter().enumerate() {
        if let Err(reason) = check(item, schema, root) {
            let whole = whole.err().unwrap_or_default();
            // A list of lists is a search; a list of no lists was meant as one value.
            if !items.iter().any(Value::is_array) {
                return Err(E::custom(whole));
            }
            if items.iter().all(Value::is_array) {
                return Err(E::custom(format!("value {index} to try: {reason}")));
            }
            return Err(E::custom(format!(
                "{whole}; read as a list of values to try, item {index}: {reason}"
            )));
        }
    }
    Ok(ParamSpace::Choices(items))
}

/// Whether some list could satisfy `schema`, looking through references and alternatives.
fn admits_list(schema: &Value, root: &Value, depth: usize) -> bool {
    if depth > 16 {
        return false;
    }
    let Some(object) = schema.as_object() else {
        return schema == &Value::Bool(true);
    };
    let typed = match object.get("type") {
        Some(Value::String(name)) => name == "array",
        Some(Value::Array(names)) => names.iter().any(|name| name == "array"),
        _ => false,
    };
    let referenced = object
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|pointer| root.pointer(pointer))
        .is_some_and(|target| admits_list(target, root, depth + 1));
    let alternative = ["anyOf", "oneOf", "allOf"].iter().any(|key| {
        object
            .get(*key)
            .and_then(Value::as_array)
            .is_some_and(|options| options.iter().any(|o| admits_list(o, root, depth + 1)))
    });
    typed || referenced || alternative
}

impl JsonSchema for PassItem {
    fn schema_name() -> Cow<'static, str> {
        "PassItem".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut steps: Vec<Value> =
            registry().iter().map(|info| step_schema(info, generator)).collect();

        let item = generator.subschema_for::<PassItem>().to_value();
        let chain = json!({"type": "array", "minItems": 1, "items": item});
        steps.push(json!({
            "type": "object",
            "description": "Branches: each is one pass step or a list of steps run in order, \
                            and each makes its own candidates",
            "properties": {
                ONE_OF: {"type": "array", "minItems": 1, "items": {"anyOf": [item, chain]}}
            },
            "required": [ONE_OF],
            "additionalProperties": false,
        }));

        json_schema!({
            "description": "A pass with the values to try for each parameter (a list is a \
                            search dimension), or `one_of` branches",
            "anyOf": steps,
        })
    }
}

/// `{<pass name>: {param: value or non-empty list of values}}` for one registered pass.
fn step_schema(info: &PassInfo, generator: &mut SchemaGenerator) -> Value {
    // Built on the shared generator so that the config's definitions land in the recipe
    // schema's `$defs`, where the config's `$ref`s point.
    let mut config = (info.config_schema)(generator).to_value();
    if let Some(object) = config.as_object_mut() {
        for key in ["$schema", "$defs", "title"] {
            object.remove(key);
        }
        if let Some(Value::Object(properties)) = object.get_mut("properties") {
            for schema in properties.values_mut() {
                *schema = searchable(schema.take());
            }
        }
    }

    json!({
        "type": "object",
        "description": info.summary,
        "properties": {info.name: config},
        "required": [info.name],
        "additionalProperties": false,
    })
}

/// A parameter schema that also accepts a non-empty list of its values.
fn searchable(mut schema: Value) -> Value {
    let mut wrapper = Map::new();
    if let Some(object) = schema.as_object_mut() {
        for key in ["description", "default"] {
            if let Some(value) = object.remove(key) {
                wrapper.insert(key.to_owned(), value);
            }
        }
    }
    let list = json!({"type": "array", "minItems": 1, "items": schema.clone()});
    wrapper.insert("anyOf".to_owned(), json!([schema, list]));
    Value::Object(wrapper)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::node::{parse, render_path, NodeDeserializer};

    fn read(text: &str) -> Result<Vec<PassItem>, (String, u64, u64, String)> {
        let node = parse(text).expect("test YAML parses");
        Vec::<PassItem>::deserialize(NodeDeserializer::new(&node, Vec::new())).map_err(|e| {
            let (pos, path) = e.at.clone().unwrap_or_default();
            (e.to_string(), pos.line, pos.column, render_path(&path))
        })
    }

    fn spec(item: &PassItem) -> &PassSpec {
        match item {
            PassItem::Pass(spec) => spec,
            PassItem::OneOf(_) => panic!("expected a pass, got {item:?}"),
        }
    }

    #[test]
    fn reads_fixed_values_and_search_dimensions() {
        let items = read(
            "- quantize_dynamic: {per_channel: [false, true]}\n\
                          - quantize_dynamic: {per_channel: true}\n\
                          - quantize_dynamic:\n",
        )
        .unwrap();
        assert_eq!(
            spec(&items[0]).params,
            [("per_channel".to_owned(), ParamSpace::Choices(vec![json!(false), json!(true)]))]
        );
        assert_eq!(
            spec(&items[1]).params,
            [("per_channel".to_owned(), ParamSpace::Fixed(json!(true)))]
        );
        assert!(spec(&items[2]).params.is_empty());
    }

    #[test]
    fn reads_branches_and_chains() {
        let items = read(
            "- one_of:\n  - quantize_dynamic: {}\n  \
             - [quantize_dynamic: {}, quantize_dynamic: {}]\n",
        )
        .unwrap();
        let PassItem::OneOf(branches) = &items[0] else { panic!("expected one_of") };
        assert_eq!(branches.iter().map(Vec::len).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn wrong_item_in_a_search_list_is_located_at_the_item() {
        let error = read("- quantize_dynamic:\n    per_channel: [true, \"x\"]\n").unwrap_err();
        assert_eq!(error.3, "[0].quantize_dynamic.per_channel[1]");
        assert_eq!((error.1, error.2), (2, 25));
        assert!(error.0.contains("expected a boolean"), "{}", error.0);
    }

    #[test]
    fn second_key_in_a_step_is_rejected_at_that_key() {
        let error = read("- quantize_dynamic: {}\n  per_channel: true\n").unwrap_err();
        assert_eq!(error.3, "[0].per_channel");
        assert_eq!((error.1, error.2), (2, 3));
        assert!(error.0.contains("exactly one key"), "{}", error.0);
    }

    #[test]
    fn empty_branches_are_rejected() {
        let error = read("- one_of: []\n").unwrap_err();
        assert!(error.0.contains("no branches"), "{}", error.0);
        let error = read("- one_of: [[]]\n").unwrap_err();
        assert!(error.0.contains("empty chain"), "{}", error.0);
        assert_eq!(error.3, "[0].one_of[0]");
    }

    #[test]
    fn empty_search_list_is_rejected() {
        let error = read("- quantize_dynamic: {per_channel: []}\n").unwrap_err();
        assert!(error.0.contains("empty list"), "{}", error.0);
    }

    #[test]
    fn list_valued_parameters_take_a_whole_list_as_one_value() {
        let schema = json!({"type": "array", "items": {"type": "string"}});
        let value: Result<ParamSpace, de::value::Error> = choices(json!([1]), &schema, &schema);
        assert!(value.is_err());
        assert!(admits_list(&schema, &schema, 0));
        assert!(!admits_list(&json!({"type": "boolean"}), &schema, 0));
        let nested =
            json!({"type": "array", "items": {"type": "array", "items": {"type": "string"}}});
        let space: ParamSpace =
            choices::<de::value::Error>(json!([["a"], ["b"]]), &nested["items"], &nested).unwrap();
        assert_eq!(space.values().len(), 2);
    }

    #[test]
    fn schema_lists_every_registered_pass_and_one_of() {
        let schema = schemars::schema_for!(Vec<PassItem>).to_value();
        let text = schema.to_string();
        for info in registry() {
            assert!(text.contains(&format!("\"{}\"", info.name)), "{} missing", info.name);
        }
        assert!(text.contains("\"one_of\""));
    }
}
