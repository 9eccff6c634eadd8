//! Several parsed files as one document, without figment, when that is what figment's
//! merge would give: see [`simple`].

use std::collections::{HashMap, HashSet};

use toml_edit::{Item, Table};

use super::load::Doc;
use crate::diagnostic::Sources;

/// Whether the files can be read as one document merged here (by [`tables`]) with the same
/// result as figment's `admerge`: no key figment treats specially, and every top-level key
/// written in several files is `routes` (arrays of one kind, concatenated in file order)
/// or a table whose keys differ from file to file (named sections, `defaults`), so nothing
/// is overwritten or merged deeper. Anything else (a name defined twice, already an error)
/// goes through figment.
pub(super) fn simple(docs: &[Doc], sources: &Sources) -> bool {
    // Keys figment's values rebuild tagged values from (see `convert::FIGMENT_MAGIC`).
    if docs
        .iter()
        .any(|d| sources.get(d.id).text.contains("___figment_value"))
    {
        return false;
    }
    if docs.len() < 2 {
        return true;
    }
    let mut by_key: HashMap<&str, Vec<&Item>> = HashMap::new();
    for d in docs {
        for (k, item) in d.table.iter() {
            by_key.entry(k).or_default().push(item);
        }
    }
    by_key.iter().all(|(k, items)| match items.as_slice() {
        [_] => true,
        _ if *k == "routes" => {
            items.iter().all(|i| i.is_array_of_tables())
                || items
                    .iter()
                    .all(|i| matches!(i, Item::Value(v) if v.is_array()))
        }
        _ => {
            let mut names = HashSet::new();
            items.iter().all(|i| match i {
                Item::Table(t) => t.iter().all(|(name, _)| names.insert(name)),
                _ => false,
            })
        }
    })
}

/// The files' root tables merged in order, as figment's `admerge` would where [`simple`]
/// holds: tables by key, arrays concatenated.
pub(super) fn tables(docs: impl IntoIterator<Item = Table>) -> Table {
    let mut docs = docs.into_iter();
    let mut root = docs.next().unwrap_or_default();
    for t in docs {
        for (k, item) in t {
            match (root.get_mut(&k), item) {
                (Some(Item::Table(dst)), Item::Table(src)) => {
                    for (name, v) in src {
                        dst.insert(&name, v);
                    }
                }
                (Some(Item::ArrayOfTables(dst)), Item::ArrayOfTables(src)) => {
                    for t in src {
                        dst.push(t);
                    }
                }
                (Some(Item::Value(toml_edit::Value::Array(dst))), Item::Value(src)) => {
                    if let toml_edit::Value::Array(src) = src {
                        for v in src {
                            dst.push_formatted(v);
                        }
                    }
                }
                (_, item) => {
                    root.insert(&k, item);
                }
            }
        }
    }
    root
}
