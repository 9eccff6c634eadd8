//! The two shapes a policy is read from: a parsed toml_edit document (when no environment
//! override applies, the usual case) and figment's merged values (when one does).
//!
//! [`Node`] is a borrowed view of a toml_edit value that deserializes exactly as figment's
//! `&Value` deserializer does for the same value converted by [`super::convert`]: keys in
//! sorted order (figment's `Dict` is a `BTreeMap`), integers as `i64`, floats as `f64`, a
//! datetime as the one-entry table toml's deserializer presents it as, enums from a string
//! or a one-key table (figment also takes a `u32`, never an `i64`, all TOML has). Reading
//! from it skips building figment's copy of the whole document (and freeing it). It is only
//! the fast path: an entry it cannot deserialize is converted to figment values and
//! deserialized again there, so every diagnostic is made by figment, word for word as
//! before.

use figment::value::Value;
use serde::de::value::{MapAccessDeserializer, MapDeserializer};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use toml_edit::{Item, Table};

use super::convert::{self, DATETIME_FIELD};
use super::load::Loaded;
use super::spans::KeyPath;

/// A value of the merged policy, whichever shape it is read from.
pub(super) trait Tree<'a>: Copy {
    /// A table's entries in key order, or `None` if this is not a table.
    fn entries(self) -> Option<Vec<(&'a str, Self)>>;
    /// An array's elements, or `None` if this is not an array.
    fn elements(self) -> Option<Vec<Self>>;
    /// What this is, in a policy author's words ("a string", "a table", …).
    fn kind(self) -> &'static str;
    /// Deserializes this value at `path`, every error reported into `l`.
    fn decode<T: DeserializeOwned>(self, l: &mut Loaded, path: &KeyPath) -> Option<T>;
}

impl<'a> Tree<'a> for &'a Value {
    fn entries(self) -> Option<Vec<(&'a str, Self)>> {
        Some(
            self.as_dict()?
                .iter()
                .map(|(k, v)| (k.as_str(), v))
                .collect(),
        )
    }
    fn elements(self) -> Option<Vec<Self>> {
        Some(self.as_array()?.iter().collect())
    }
    fn kind(self) -> &'static str {
        match self {
            Value::String(..) => "a string",
            Value::Char(..) => "a character",
            Value::Bool(..) => "a boolean",
            Value::Num(..) => "a number",
            Value::Empty(..) => "an empty value",
            Value::Dict(..) => "a table",
            Value::Array(..) => "an array",
        }
    }
    fn decode<T: DeserializeOwned>(self, l: &mut Loaded, path: &KeyPath) -> Option<T> {
        l.extract(self, path)
    }
}

/// A borrowed toml_edit value: a table (`[t]` or the root), an inline value, or an array of
/// tables.
#[derive(Clone, Copy)]
pub(super) enum Node<'a> {
    Table(&'a Table),
    Value(&'a toml_edit::Value),
    Tables(&'a toml_edit::ArrayOfTables),
}

impl<'a> Node<'a> {
    /// The node of an item; `None` for `Item::None` (which no table iteration yields).
    fn of(item: &'a Item) -> Option<Self> {
        Some(match item {
            Item::None => return None,
            Item::Value(v) => Node::Value(v),
            Item::Table(t) => Node::Table(t),
            Item::ArrayOfTables(a) => Node::Tables(a),
        })
    }

    /// The figment value this node converts to (what figment's path would read).
    fn to_value(self) -> Option<Value> {
        match self {
            Node::Table(t) => convert::to_dict(t).map(Value::from),
            Node::Value(v) => convert::value(v),
            Node::Tables(a) => a
                .iter()
                .map(|t| convert::to_dict(t).map(Value::from))
                .collect::<Option<Vec<Value>>>()
                .map(Value::from),
        }
    }
}

fn sorted<'a>(mut entries: Vec<(&'a str, Node<'a>)>) -> Vec<(&'a str, Node<'a>)> {
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    entries
}

impl<'a> Tree<'a> for Node<'a> {
    fn entries(self) -> Option<Vec<(&'a str, Self)>> {
        Some(sorted(match self {
            Node::Table(t) => t
                .iter()
                .filter_map(|(k, i)| Some((k, Node::of(i)?)))
                .collect(),
            Node::Value(toml_edit::Value::InlineTable(t)) => {
                t.iter().map(|(k, v)| (k, Node::Value(v))).collect()
            }
            _ => return None,
        }))
    }
    fn elements(self) -> Option<Vec<Self>> {
        match self {
            Node::Tables(a) => Some(a.iter().map(Node::Table).collect()),
            Node::Value(toml_edit::Value::Array(a)) => Some(a.iter().map(Node::Value).collect()),
            _ => None,
        }
    }
    fn kind(self) -> &'static str {
        use toml_edit::Value as V;
        match self {
            Node::Value(V::String(_)) => "a string",
            Node::Value(V::Integer(_) | V::Float(_)) => "a number",
            Node::Value(V::Boolean(_)) => "a boolean",
            Node::Value(V::Array(_)) | Node::Tables(_) => "an array",
            // figment holds a datetime as a one-entry table.
            Node::Value(V::Datetime(_) | V::InlineTable(_)) | Node::Table(_) => "a table",
        }
    }
    fn decode<T: DeserializeOwned>(self, l: &mut Loaded, path: &KeyPath) -> Option<T> {
        match T::deserialize(self) {
            Ok(t) => Some(t),
            // Invalid: figment reads it again and reports every problem as it always did.
            Err(_) => l.extract(&self.to_value()?, path),
        }
    }
}

/// Why the direct path gave up on an entry: never shown (figment reads the entry again and
/// says why), so it carries nothing.
#[derive(Debug)]
pub(super) struct Rejected;

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not deserializable as is")
    }
}

impl std::error::Error for Rejected {}

impl de::Error for Rejected {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Rejected
    }
}

/// Entries of a table, handed out in key order.
struct MapDe<'a> {
    iter: std::vec::IntoIter<(&'a str, Node<'a>)>,
    value: Option<Node<'a>>,
}

impl<'a> MapDe<'a> {
    fn new(entries: Vec<(&'a str, Node<'a>)>) -> Self {
        MapDe {
            iter: entries.into_iter(),
            value: None,
        }
    }
}

impl<'de> de::MapAccess<'de> for MapDe<'_> {
    type Error = Rejected;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((k, v)) = self.iter.next() else {
            return Ok(None);
        };
        self.value = Some(v);
        seed.deserialize(k.into_deserializer()).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        match self.value.take() {
            Some(v) => seed.deserialize(v),
            None => Err(Rejected),
        }
    }
}

/// Elements of an array.
struct SeqDe<'a> {
    iter: std::vec::IntoIter<Node<'a>>,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'_> {
    type Error = Rejected;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.iter.next().map(|n| seed.deserialize(n)).transpose()
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

impl<'de> de::Deserializer<'de> for Node<'_> {
    type Error = Rejected;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        use toml_edit::Value as T;
        match self {
            Node::Value(T::String(s)) => v.visit_str(s.value()),
            Node::Value(T::Integer(i)) => v.visit_i64(*i.value()),
            Node::Value(T::Float(f)) => v.visit_f64(*f.value()),
            Node::Value(T::Boolean(b)) => v.visit_bool(*b.value()),
            Node::Value(T::Datetime(d)) => v.visit_map(MapDeserializer::new(std::iter::once((
                DATETIME_FIELD,
                d.value().to_string(),
            )))),
            Node::Value(T::Array(_)) | Node::Tables(_) => v.visit_seq(SeqDe {
                iter: self.elements().unwrap_or_default().into_iter(),
            }),
            Node::Value(T::InlineTable(_)) | Node::Table(_) => {
                v.visit_map(MapDe::new(self.entries().unwrap_or_default()))
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        v.visit_some(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Self::Error> {
        use toml_edit::Value as T;
        match self {
            Node::Value(T::String(s)) => v.visit_enum(s.value().as_str().into_deserializer()),
            Node::Value(T::InlineTable(_)) | Node::Table(_) => v.visit_enum(
                MapAccessDeserializer::new(MapDe::new(self.entries().unwrap_or_default())),
            ),
            _ => self.deserialize_any(v),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, Self::Error> {
        v.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool u8 u16 u32 u64 i8 i16 i32 i64 f32 f64 char str
        string seq bytes byte_buf map unit struct
        ignored_any unit_struct tuple_struct tuple identifier
    }
}
