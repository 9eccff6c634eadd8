//! The name lists: each section's names, in order (what an unknown reference is offered),
//! and the index of the first entry of each name, so resolving a reference costs one
//! lookup (a scan of the names made a policy of N callers, each with its own budget,
//! compile in O(N²)).

use std::collections::HashMap;

use super::*;
use crate::diagnostic::{did_you_mean, one_of};

/// A section a reference can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    Upstreams,
    Models,
    Routes,
    Retry,
    Breakers,
    Budgets,
    Callers,
}

impl Section {
    /// The section's key in a policy.
    fn key(self) -> &'static str {
        match self {
            Section::Upstreams => "upstreams",
            Section::Models => "models",
            Section::Routes => "routes",
            Section::Retry => "retry",
            Section::Breakers => "breakers",
            Section::Budgets => "budgets",
            Section::Callers => "callers",
        }
    }
}

/// One section's names.
#[derive(Debug, Default)]
struct NameList {
    /// In order of definition.
    names: Vec<String>,
    /// Name → index of its first entry.
    index: HashMap<String, u32>,
}

impl NameList {
    fn new(names: Vec<String>) -> Self {
        let mut index = HashMap::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            index.entry(n.clone()).or_insert(i as u32);
        }
        NameList { names, index }
    }
}

/// Every section's names, held by the compiler.
#[derive(Debug, Default)]
pub(super) struct Sections([NameList; 7]);

impl Sections {
    fn get(&self, s: Section) -> &NameList {
        &self.0[s as usize]
    }

    /// The name → index maps the plan keeps (lookups by name at run time), taken once
    /// every reference is resolved.
    pub(super) fn take_plan_names(&mut self, caller_hashes: HashMap<[u8; 32], u32>) -> Names {
        let mut take = |s: Section| std::mem::take(&mut self.0[s as usize].index);
        Names {
            upstreams: take(Section::Upstreams),
            models: take(Section::Models),
            routes: take(Section::Routes),
            budgets: take(Section::Budgets),
            caller_hashes,
        }
    }
}

impl Compiler<'_> {
    /// Collects every section's names (reporting empty and duplicate route names).
    pub(super) fn sections(&mut self) -> Sections {
        let p = self.p();
        let lists = [
            p.upstreams.keys().cloned().collect(),
            p.models.keys().cloned().collect(),
            self.route_names(),
            p.retry.keys().cloned().collect(),
            p.breakers.keys().cloned().collect(),
            p.budgets.keys().cloned().collect(),
            p.callers.keys().cloned().collect(),
        ];
        Sections(lists.map(NameList::new))
    }

    fn route_names(&mut self) -> Vec<String> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut names = Vec::new();
        for (i, r) in self.p().routes.iter().enumerate() {
            let path = self.l.route_path(i).key("name");
            if r.name.trim().is_empty() {
                self.push(self.error(Code::InvalidValue, "a route name must not be empty", &path));
            }
            if let Some(first) = seen.get(&r.name) {
                let first_origin = self.l.locate(&self.l.route_path(*first).key("name"));
                let message = format!("route `{}` is defined twice", r.name);
                let d = self.error(Code::DuplicateName, message, &path);
                self.push(
                    d.with_label("defined again here")
                        .with_related(first_origin, "first defined here"),
                );
            } else {
                seen.insert(r.name.clone(), i);
            }
            names.push(r.name.clone());
        }
        names
    }

    /// Resolves a reference to a named entry in a section, reporting an unknown name with
    /// the names that exist and the nearest one.
    pub(super) fn resolve(&mut self, section: Section, name: &str, at: &KeyPath) -> Option<u32> {
        let list = self.sections.get(section);
        if let Some(&i) = list.index.get(name) {
            return Some(i);
        }
        if self.l.is_partial() {
            // A file that failed to parse may define it.
            return None;
        }
        if section == Section::Routes {
            // Routes that failed to parse are not in the list: do not also call them unknown.
            if (0..self.p().routes.len() + 64)
                .any(|i| self.l.is_broken(&KeyPath::from(["routes"]).index(i)))
            {
                return None;
            }
        } else if self.l.is_broken(&KeyPath::from([section.key(), name])) {
            return None;
        }
        let what = section.key().trim_end_matches('s');
        let candidates = || list.names.iter().map(String::as_str);
        let d = self
            .error(
                Code::UnknownReference,
                format!("unknown {what} `{name}`"),
                at,
            )
            .with_label(format!("expected one of {}", one_of(candidates())))
            .with_help_opt(did_you_mean(name, candidates()));
        self.push(d);
        None
    }
}
