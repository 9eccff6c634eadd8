//! A parsed toml_edit document as figment values, so each file is parsed once.
//!
//! The result is what `figment::providers::Toml::string(text).data()` gives for the same
//! text (the tests below check each TOML type against it): integers are `i64`, floats
//! `f64` (`inf` and `nan` included), a datetime is the table toml's deserializer presents
//! it as (`{ "$__toml_private_datetime" = "<datetime as written>" }`).

use figment::value::{Dict, Value};
use toml_edit::{Item, Table};

/// Keys with which figment's own `Value` deserializer rebuilds a tagged value rather than
/// a table. A document using one is left to figment's parser ([`to_dict`] gives `None`), so
/// that whatever figment makes of it stays exactly so.
const FIGMENT_MAGIC: [&str; 2] = ["___figment_value_id", "___figment_value_value"];

/// The document's root table as a figment dictionary; `None` if a key would mean something
/// special to figment (see [`FIGMENT_MAGIC`]).
pub(crate) fn to_dict(root: &Table) -> Option<Dict> {
    table(root.iter())
}

fn table<'a>(entries: impl Iterator<Item = (&'a str, &'a Item)>) -> Option<Dict> {
    let mut dict = Dict::new();
    for (k, item) in entries {
        if FIGMENT_MAGIC.contains(&k) {
            return None;
        }
        let v = match item {
            Item::None => continue,
            Item::Value(v) => value(v)?,
            Item::Table(t) => Value::from(table(t.iter())?),
            Item::ArrayOfTables(a) => Value::from(
                a.iter()
                    .map(|t| table(t.iter()).map(Value::from))
                    .collect::<Option<Vec<Value>>>()?,
            ),
        };
        dict.insert(k.to_string(), v);
    }
    Some(dict)
}

pub(crate) fn value(v: &toml_edit::Value) -> Option<Value> {
    use toml_edit::Value as V;
    Some(match v {
        V::String(s) => Value::from(s.value().as_str()),
        V::Integer(i) => Value::from(*i.value()),
        V::Float(f) => Value::from(*f.value()),
        V::Boolean(b) => Value::from(*b.value()),
        V::Datetime(d) => {
            let mut dict = Dict::new();
            dict.insert(
                DATETIME_FIELD.to_string(),
                Value::from(d.value().to_string()),
            );
            Value::from(dict)
        }
        V::Array(a) => Value::from(a.iter().map(value).collect::<Option<Vec<Value>>>()?),
        V::InlineTable(t) => {
            let mut dict = Dict::new();
            for (k, v) in t.iter() {
                if FIGMENT_MAGIC.contains(&k) {
                    return None;
                }
                dict.insert(k.to_string(), value(v)?);
            }
            Value::from(dict)
        }
    })
}

/// The key under which toml's deserializer presents a datetime (as a one-entry table).
pub(crate) const DATETIME_FIELD: &str = "$__toml_private_datetime";

#[cfg(test)]
mod tests {
    use figment::providers::{Format, Toml};
    use figment::value::{Num, Value};
    use figment::{Profile, Provider};

    use super::*;

    /// What figment's own TOML provider makes of `src`.
    fn figment(src: &str) -> Dict {
        let mut map = Toml::string(src).data().expect("figment parses it");
        map.remove(&Profile::Default).expect("the default profile")
    }

    fn ours(src: &str) -> Option<Dict> {
        let doc = toml_edit::ImDocument::parse(src).expect("toml_edit parses it");
        to_dict(doc.as_table())
    }

    /// Equal, floats bit for bit (so `nan` equals `nan` of the same sign), tags included.
    fn same(a: &Value, b: &Value) -> bool {
        if a.tag() != b.tag() {
            return false;
        }
        match (a, b) {
            (Value::Num(_, Num::F64(x)), Value::Num(_, Num::F64(y))) => x.to_bits() == y.to_bits(),
            (Value::Num(_, x), Value::Num(_, y)) => x == y,
            (Value::String(_, x), Value::String(_, y)) => x == y,
            (Value::Bool(_, x), Value::Bool(_, y)) => x == y,
            (Value::Char(_, x), Value::Char(_, y)) => x == y,
            (Value::Empty(_, x), Value::Empty(_, y)) => x == y,
            (Value::Array(_, x), Value::Array(_, y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
            }
            (Value::Dict(_, x), Value::Dict(_, y)) => same_dict(x, y),
            _ => false,
        }
    }

    fn same_dict(x: &Dict, y: &Dict) -> bool {
        x.len() == y.len()
            && x.iter()
                .zip(y)
                .all(|((kx, vx), (ky, vy))| kx == ky && same(vx, vy))
    }

    #[track_caller]
    fn check(src: &str) {
        let expected = figment(src);
        let got = ours(src).expect("no figment magic key");
        assert!(
            same_dict(&got, &expected),
            "for {src:?}\n ours:    {got:?}\n figment: {expected:?}"
        );
    }

    #[test]
    fn integers() {
        check("a = 1\nb = -42\nc = 0x7f\nd = 0o17\ne = 0b101\nf = 1_000_000\ng = 9223372036854775807\nh = -9223372036854775808\ni = +3");
    }

    #[test]
    fn floats_with_inf_and_nan() {
        check("a = 1.5\nb = -0.0\nc = 6.02e23\nd = 1_000.5\ne = inf\nf = -inf\ng = +inf\nh = nan\ni = -nan\nj = +nan");
    }

    #[test]
    fn booleans() {
        check("a = true\nb = false");
    }

    #[test]
    fn strings() {
        check(
            "a = \"x\\ty\\u00e9\\\"\"\nb = 'C:\\path'\nc = \"\"\"\nline\\\n  joined\nnext\"\"\"\nd = '''\nraw\\n'''\ne = \"\"\n",
        );
    }

    #[test]
    fn datetimes() {
        check("a = 1979-05-27T07:32:00Z\nb = 1979-05-27T00:32:00.999999-07:00\nc = 1979-05-27 07:32:00\nd = 1979-05-27\ne = 07:32:00\nf = 00:32:00.5");
    }

    #[test]
    fn arrays() {
        check("a = []\nb = [1, 2, 3]\nc = [\"x\", 1, 2.5, true, [1, [2]], { k = 1 }]\nd = [\n  1,\n  2,\n]");
    }

    #[test]
    fn inline_tables() {
        check("a = {}\nb = { x = 1, y = { z = \"w\" }, \"q.r\" = [1] }\nc = { d.e = 1, d.f = 2 }");
    }

    #[test]
    fn tables_and_arrays_of_tables() {
        check("[t]\nx = 1\n[t.u.v]\ny = 2\n[[r]]\nn = 1\n[r.s]\nm = 1\n[[r]]\n[[r]]\nn = 3\n[[r.q]]\np = 1\n[\"a b\".'c']\nk = 1");
    }

    #[test]
    fn dotted_keys() {
        check("a.b.c = 1\na.b.d = 2\n\"x.y\".z = 3\n[s]\nt.u = 4\nt.v = { w = 5 }");
    }

    #[test]
    fn policy_shaped_document() {
        check("version = 1\n[defaults]\ntimeouts = { connect = \"3s\" }\n[models.\"gpt-4.1\"]\nupstream = \"u\"\nprice = { input_per_mtok = 2.0 }\n[[routes]]\nname = \"a\"\ntargets = [\"x\", { model = \"y\", weight = 3 }]\n[retry.r.on.429]\nbackoff = { kind = \"constant\" }\n");
    }

    #[test]
    fn a_datetime_lookalike_key_is_an_ordinary_key() {
        check("\"$__toml_private_datetime\" = \"x\"\n[t]\n\"$__toml_private_datetime\" = 1");
    }

    #[test]
    fn figment_magic_keys_are_left_to_figment() {
        assert!(ours("___figment_value_value = 1").is_none());
        assert!(ours("[t]\n___figment_value_id = 1").is_none());
        assert!(ours("t = [{ ___figment_value_value = 1 }]").is_none());
    }
}
