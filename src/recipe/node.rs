//! A YAML document as a tree of located nodes, and a serde deserializer over that tree whose
//! errors carry the line, column and field path of the node that caused them.
//!
//! Loading a recipe reads the text once with `serde-saphyr` into [`Node`]s (syntax errors come
//! from there), then deserializes the typed recipe from the tree. Because the tree keeps every
//! node's position, an error raised anywhere during deserialization, by serde's derived code or
//! by our own visitors, is pinned to the innermost node being read when it happened.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A position in the recipe file, 1-based.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

/// Separates a message from its hint in errors that travel through serde's `custom`.
pub(crate) const HINT: &str = "\nhint: ";

/// One YAML node with its position.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

/// What a node holds. Mapping keys are nodes too, so that an error about a key points at it.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// One step of a field path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// Writes a field path the way a user reads it: `passes[0].quantize_dynamic.per_channel`.
pub(crate) fn render_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) if out.is_empty() => out.push_str(key),
            Segment::Key(key) => {
                out.push('.');
                out.push_str(key);
            }
            Segment::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// Reads YAML text into a located tree. Booleans are YAML 1.2's `true` and `false` only, so
/// that `labels: y` names an array `y` rather than meaning `true`.
pub(crate) fn parse(text: &str) -> Result<Node, serde_saphyr::Error> {
    let options = serde_saphyr::options! { strict_booleans: true };
    let root: Spanned<RawKind> = serde_saphyr::from_str_with_options(text, options)?;
    Ok(Node::from_spanned(root))
}

impl Node {
    fn from_spanned(spanned: Spanned<RawKind>) -> Node {
        let pos = Pos { line: spanned.referenced.line(), column: spanned.referenced.column() };
        let kind = match spanned.value {
            RawKind::Null => Kind::Null,
            RawKind::Bool(v) => Kind::Bool(v),
            RawKind::Int(v) => Kind::Int(v),
            RawKind::UInt(v) => Kind::UInt(v),
            RawKind::Float(v) => Kind::Float(v),
            RawKind::Str(v) => Kind::Str(v),
            RawKind::Seq(items) => Kind::Seq(items.into_iter().map(Node::from_spanned).collect()),
            RawKind::Map(entries) => Kind::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (Node::from_spanned(k), Node::from_spanned(v)))
                    .collect(),
            ),
        };
        Node { pos, kind }
    }

    /// The node at `path` below this one, or the deepest ancestor of it that exists, so that a
    /// message about a missing field still points somewhere useful.
    pub(crate) fn find(&self, path: &[Segment]) -> &Node {
        let mut node = self;
        for segment in path {
            let next = match (segment, &node.kind) {
                (Segment::Key(key), Kind::Map(entries)) => {
                    { entries.iter().find(|(k, _)| k.key_text().as_deref() == Some(key.as_str())) }
                        .map(|(_, v)| v)
                }
                (Segment::Index(index), Kind::Seq(items)) => items.get(*index),
                _ => None,
            };
            match next {
                Some(next) => node = next,
                None => break,
            }
        }
        node
    }

    /// The node at `path` below this one, if every step of it exists.
    pub(crate) fn get(&self, path: &[Segment]) -> Option<&Node> {
        let mut node = self;
        for segment in path {
            node = match (segment, &node.kind) {
                (Segment::Key(key), Kind::Map(entries)) => entries
                    .iter()
                    .find(|(k, _)| k.key_text().as_deref() == Some(key.as_str()))
                    .map(|(_, v)| v)?,
                (Segment::Index(index), Kind::Seq(items)) => items.get(*index)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The node of the key `key` in this mapping, if any.
    pub(crate) fn key_node(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => {
                entries.iter().find(|(k, _)| k.key_text().as_deref() == Some(key)).map(|(k, _)| k)
            }
            _ => None,
        }
    }

    /// A scalar key as text; `None` for a list or mapping used as a key.
    pub(crate) fn key_text(&self) -> Option<String> {
        match &self.kind {
            Kind::Null => Some("null".into()),
            Kind::Bool(v) => Some(v.to_string()),
            Kind::Int(v) => Some(v.to_string()),
            Kind::UInt(v) => Some(v.to_string()),
            Kind::Float(v) => Some(v.to_string()),
            Kind::Str(v) => Some(v.clone()),
            Kind::Seq(_) | Kind::Map(_) => None,
        }
    }

    /// How the node reads in an error message: "integer `3`", "a list".
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "null".into(),
            Kind::Bool(v) => format!("boolean `{v}`"),
            Kind::Int(v) => format!("integer `{v}`"),
            Kind::UInt(v) => format!("integer `{v}`"),
            Kind::Float(v) => format!("number `{v}`"),
            Kind::Str(v) => format!("string `{v}`"),
            Kind::Seq(_) => "a list".into(),
            Kind::Map(_) => "a mapping".into(),
        }
    }
}

/// The shape `serde-saphyr` fills in; converted to [`Node`] right after parsing.
enum RawKind {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<RawKind>>),
    Map(Vec<(Spanned<RawKind>, Spanned<RawKind>)>),
}

impl<'de> Deserialize<'de> for RawKind {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawKind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<RawKind, E> {
        Ok(RawKind::Null)
    }

    fn visit_none<E>(self) -> Result<RawKind, E> {
        Ok(RawKind::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<RawKind, D::Error> {
        d.deserialize_any(RawVisitor)
    }

    fn visit_bool<E>(self, v: bool) -> Result<RawKind, E> {
        Ok(RawKind::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<RawKind, E> {
        Ok(RawKind::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<RawKind, E> {
        Ok(RawKind::UInt(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<RawKind, E> {
        Ok(RawKind::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<RawKind, E> {
        Ok(RawKind::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<RawKind, E> {
        Ok(RawKind::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawKind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(RawKind::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawKind, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(RawKind::Map(entries))
    }
}

/// An error raised while deserializing from the tree. `at` is filled by the innermost node
/// that sees the error go by, so it names the node that caused it.
#[derive(Debug)]
pub(crate) struct DeError {
    pub message: String,
    pub hint: Option<String>,
    pub at: Option<(Pos, Vec<Segment>)>,
}

impl DeError {
    pub(crate) fn new(message: impl Into<String>, hint: Option<String>) -> DeError {
        DeError { message: message.into(), hint, at: None }
    }

    fn locate(mut self, node: &Node, path: &[Segment]) -> DeError {
        if self.at.is_none() {
            self.at = Some((node.pos, path.to_vec()));
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        let text = msg.to_string();
        match text.split_once(HINT) {
            Some((message, hint)) => DeError::new(message, Some(hint.to_owned())),
            None => DeError::new(text, None),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        let hint = match field {
            "model" => {
                Some("name the ONNX file to optimize, relative to the recipe: `model: m.onnx`")
            }
            "objective" => Some(
                "rank candidates by measured metrics, first one first: `objective: [latency]` \
                 or `objective: [accuracy, latency]`",
            ),
            "passes" => Some("list the passes to try: `passes: [quantize_dynamic: {}]`"),
            _ => None,
        };
        DeError::new(format!("missing field `{field}`"), hint.map(str::to_owned))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(format!("unknown field `{field}`"), Some(closest_hint(field, expected)))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(format!("unknown value `{variant}`"), Some(closest_hint(variant, expected)))
    }

    /// Says Rust's unsigned integer types in words: `expected usize` becomes a whole number
    /// (the field's own check says its lower bound, which may be 1).
    fn invalid_value(unexpected: de::Unexpected, expected: &dyn de::Expected) -> Self {
        let expected = expected.to_string();
        match expected.as_str() {
            "usize" | "u64" | "u32" | "u16" | "u8" => {
                DeError::new(format!("expected a whole number, found {unexpected}"), None)
            }
            _ => DeError::new(format!("invalid value: {unexpected}, expected {expected}"), None),
        }
    }
}

/// "did you mean `x`? allowed: `a`, `b`" or just the allowed list when nothing is close.
pub(crate) fn closest_hint<S: AsRef<str>>(word: &str, known: &[S]) -> String {
    let allowed = if known.is_empty() {
        "none".to_owned()
    } else {
        known.iter().map(|k| format!("`{}`", k.as_ref())).collect::<Vec<_>>().join(", ")
    };
    match closest(word, known) {
        Some(best) => format!("did you mean `{best}`? allowed: {allowed}"),
        None => format!("allowed: {allowed}"),
    }
}

/// The known word most similar to `word`, if any is similar enough to be a likely typo.
pub(crate) fn closest<'k, S: AsRef<str>>(word: &str, known: &'k [S]) -> Option<&'k str> {
    let lower = word.to_lowercase();

    // A known word that differs only in case, or that has the word as one of its parts
    // (`cuda` in `gpu-cuda`), is what was meant when it is the only such word.
    let whole: Vec<&'k str> = known
        .iter()
        .map(|k| k.as_ref())
        .filter(|k| k.to_lowercase() == lower || k.split(['-', '_']).any(|part| part == lower))
        .collect();
    if let [only] = whole[..] {
        return Some(only);
    }

    known
        .iter()
        .map(|k| (strsim::jaro_winkler(&lower, &k.as_ref().to_lowercase()), k.as_ref()))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// A serde deserializer over one node, knowing the field path that leads to it.
pub(crate) struct NodeDeserializer<'a> {
    node: &'a Node,
    path: Vec<Segment>,
}

impl<'a> NodeDeserializer<'a> {
    pub(crate) fn new(node: &'a Node, path: Vec<Segment>) -> Self {
        NodeDeserializer { node, path }
    }

    fn wrong_kind(&self, expected: &str) -> DeError {
        let hint = match self.node.kind {
            Kind::Bool(_) | Kind::Int(_) | Kind::UInt(_) | Kind::Float(_)
                if expected == "a string" =>
            {
                Some("put the value in quotes to make it a string".to_owned())
            }
            _ => None,
        };
        DeError::new(format!("expected {expected}, found {}", self.node.describe()), hint)
    }

    fn locate<T>(&self, result: Result<T, DeError>) -> Result<T, DeError> {
        result.map_err(|e| e.locate(self.node, &self.path))
    }

    fn visit_integer<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match self.node.kind {
            Kind::Int(v) => visitor.visit_i64(v),
            Kind::UInt(v) => visitor.visit_u64(v),
            _ => Err(self.wrong_kind("an integer")),
        };
        self.locate(result)
    }

    fn visit_float<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match self.node.kind {
            Kind::Int(v) => visitor.visit_i64(v),
            Kind::UInt(v) => visitor.visit_u64(v),
            Kind::Float(v) => visitor.visit_f64(v),
            _ => Err(self.wrong_kind("a number")),
        };
        self.locate(result)
    }

    fn visit_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.kind {
            Kind::Str(v) => visitor.visit_str(v),
            _ => Err(self.wrong_kind("a string")),
        };
        self.locate(result)
    }

    /// A mapping, where a YAML null (`size:` with nothing after it) reads as an empty one.
    fn visit_mapping<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        static EMPTY: Vec<(Node, Node)> = Vec::new();
        let entries = match &self.node.kind {
            Kind::Map(entries) => entries,
            Kind::Null => &EMPTY,
            _ => return Err(self.wrong_kind("a mapping").locate(self.node, &self.path)),
        };
        let access = NodeMapAccess { entries: entries.iter(), value: None, path: &self.path };
        let result = visitor.visit_map(access);
        self.locate(result)
    }
}

macro_rules! integers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.visit_integer(visitor)
        }
    )*};
}

impl<'a> de::Deserializer<'a> for NodeDeserializer<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.kind {
            Kind::Null => visitor.visit_unit(),
            Kind::Bool(v) => visitor.visit_bool(*v),
            Kind::Int(v) => visitor.visit_i64(*v),
            Kind::UInt(v) => visitor.visit_u64(*v),
            Kind::Float(v) => visitor.visit_f64(*v),
            Kind::Str(v) => visitor.visit_str(v),
            Kind::Seq(items) => {
                visitor.visit_seq(NodeSeqAccess { items: items.iter(), index: 0, path: &self.path })
            }
            Kind::Map(_) => return self.visit_mapping(visitor),
        };
        self.locate(result)
    }

    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match self.node.kind {
            Kind::Bool(v) => visitor.visit_bool(v),
            _ => Err(self.wrong_kind("a boolean (`true` or `false`)")),
        };
        self.locate(result)
    }

    integers! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
    }

    fn deserialize_f32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.visit_float(visitor)
    }

    fn deserialize_f64<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.visit_float(visitor)
    }

    fn deserialize_char<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.visit_string(visitor)
    }

    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.visit_string(visitor)
    }

    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.visit_string(visitor)
    }

    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.visit_string(visitor)
    }

    fn deserialize_bytes<V: Visitor<'a>>(self, _visitor: V) -> Result<V::Value, DeError> {
        Err(DeError::new("binary values are not supported in a recipe", None)
            .locate(self.node, &self.path))
    }

    fn deserialize_byte_buf<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.kind {
            Kind::Null => {
                let result = visitor.visit_none();
                self.locate(result)
            }
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match self.node.kind {
            Kind::Null => visitor.visit_unit(),
            _ => Err(self.wrong_kind("null")),
        };
        self.locate(result)
    }

    fn deserialize_unit_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.kind {
            Kind::Seq(items) => {
                visitor.visit_seq(NodeSeqAccess { items: items.iter(), index: 0, path: &self.path })
            }
            _ => Err(self.wrong_kind("a list")),
        };
        self.locate(result)
    }

    fn deserialize_tuple<V: Visitor<'a>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.visit_mapping(visitor)
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.visit_mapping(visitor)
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // Recipes only use enums of plain words (`stat: p50`), never enums that carry data.
        let result = match &self.node.kind {
            Kind::Str(v) => visitor.visit_enum(v.as_str().into_deserializer()),
            _ => Err(self.wrong_kind("a string")),
        };
        self.locate(result)
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct NodeSeqAccess<'a, 'p> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
    path: &'p [Segment],
}

impl<'a> SeqAccess<'a> for NodeSeqAccess<'a, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let mut path = self.path.to_vec();
        path.push(Segment::Index(self.index));
        self.index += 1;
        seed.deserialize(NodeDeserializer::new(item, path)).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct NodeMapAccess<'a, 'p> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<(&'a Node, Vec<Segment>)>,
    path: &'p [Segment],
}

impl<'a> MapAccess<'a> for NodeMapAccess<'a, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let mut path = self.path.to_vec();
        let Some(text) = key.key_text() else {
            let error =
                DeError::new(format!("expected a word as key, found {}", key.describe()), None);
            return Err(error.locate(key, &path));
        };
        path.push(Segment::Key(text));
        self.value = Some((value, path.clone()));
        seed.deserialize(NodeDeserializer::new(key, path)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some((value, path)) => seed.deserialize(NodeDeserializer::new(value, path)),
            None => Err(DeError::new("internal error: a value was read before its key", None)),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        runs: u32,
        #[serde(default)]
        warmup: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        inner: Inner,
        #[serde(default)]
        list: Vec<u32>,
    }

    fn read(text: &str) -> Result<Outer, DeError> {
        let node = parse(text).map_err(|e| DeError::new(e.to_string(), None))?;
        Outer::deserialize(NodeDeserializer::new(&node, Vec::new()))
    }

    fn located(text: &str) -> (String, u64, u64, String) {
        let error = read(text).unwrap_err();
        let (pos, path) = error.at.clone().unwrap();
        (error.to_string(), pos.line, pos.column, render_path(&path))
    }

    #[test]
    fn reads_nested_values() {
        let outer = read("name: a\ninner: {runs: 3}\nlist: [1, 2]\n").unwrap();
        assert_eq!(outer.name, "a");
        assert_eq!(outer.inner.runs, 3);
        assert_eq!(outer.inner.warmup, 0);
        assert_eq!(outer.list, [1, 2]);
    }

    #[test]
    fn unknown_key_points_at_the_key_and_suggests() {
        let (message, line, column, path) = located("name: a\ninner:\n  runs: 3\n  wamup: 1\n");
        assert_eq!((line, column), (4, 3));
        assert_eq!(path, "inner.wamup");
        assert!(message.contains("unknown field `wamup`"), "{message}");
        assert!(message.contains("did you mean `warmup`?"), "{message}");
    }

    #[test]
    fn wrong_type_points_at_the_value() {
        let (message, line, column, path) = located("name: a\ninner: {runs: 3}\nlist: [1, x]\n");
        assert_eq!((line, column), (3, 11));
        assert_eq!(path, "list[1]");
        assert_eq!(message, "expected an integer, found string `x`");
    }

    #[test]
    fn missing_field_points_at_the_mapping() {
        let (message, line, _, path) = located("name: a\ninner:\n  warmup: 3\n");
        assert_eq!(line, 3);
        assert_eq!(path, "inner");
        assert_eq!(message, "missing field `runs`");
    }

    #[test]
    fn number_for_a_string_hints_at_quotes() {
        let (message, ..) = located("name: 12\ninner: {runs: 3}\n");
        assert!(message.contains("expected a string, found integer `12`"), "{message}");
        assert!(message.contains("quotes"), "{message}");
    }

    #[test]
    fn null_reads_as_an_empty_mapping() {
        let (message, _, _, path) = located("name: a\ninner:\n");
        assert_eq!((message.as_str(), path.as_str()), ("missing field `runs`", "inner"));
    }

    #[test]
    fn only_yaml_1_2_words_are_booleans() {
        let node = parse("[y, yes, on, true, False]").unwrap();
        let Kind::Seq(items) = node.kind else { panic!("a list") };
        let kinds: Vec<String> = items.iter().map(Node::describe).collect();
        assert_eq!(
            kinds,
            ["string `y`", "string `yes`", "string `on`", "boolean `true`", "boolean `false`"]
        );
    }

    #[test]
    fn closest_ignores_unrelated_words() {
        assert_eq!(closest("wamup", &["warmup", "runs"]), Some("warmup"));
        assert_eq!(closest("zzz", &["warmup", "runs"]), None);
    }

    #[test]
    fn closest_ignores_case_and_finds_a_word_by_one_of_its_parts() {
        let targets = ["cpu", "gpu-cuda", "gpu-directml", "npu-qnn", "npu-openvino"];
        assert_eq!(closest("GPU-CUDA", &targets), Some("gpu-cuda"));
        assert_eq!(closest("cuda", &targets), Some("gpu-cuda"));
        assert_eq!(closest("qnn", &targets), Some("npu-qnn"));
    }
}
