//! The gateway's source keeps one direction: no two files of `host/src` depend on each other,
//! directly or through others. A file depends on another when it names it in a path
//! (`crate::wire::frame`, `super::prepared::Judged`, `use super::{a, b}`) or, as a parent, names
//! one of its own submodules (`session::run`). A parent that only declares and re-exports its
//! children depends on nothing the children depend back on. One kind of child counts as part
//! of its parent: a file that only continues the parent's type in `impl` blocks, reading the
//! parent whole (`use super::*;`, as `proxy/gate/judge.rs` does for the gate).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn host_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .join("host/src")
}

/// Every module file under `root`, by module path, with its source before its tests.
fn modules(root: &Path) -> BTreeMap<Module, String> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().with_extension("");
            let mut module: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            let source = std::fs::read_to_string(&path).unwrap();
            let code = source
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .to_owned();
            found.insert(module, code);
        }
    }
    found
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The path segments starting at `s` (`a::b::C` → `["a", "b", "C"]`), and the text after them.
fn segments(mut s: &str) -> (Vec<String>, &str) {
    let mut parts = Vec::new();
    loop {
        let word = ident(s);
        if word.is_empty() {
            return (parts, s);
        }
        parts.push(word.to_owned());
        s = &s[word.len()..];
        match s.strip_prefix("::") {
            Some(rest) => s = rest,
            None => return (parts, s),
        }
    }
}

/// The longest prefix of `path`, read from `from`, that names a module file.
fn resolve(modules: &BTreeMap<Module, String>, from: &Module, path: &[String]) -> Option<Module> {
    let (mut base, mut rest) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (from.clone(), &path[1..]),
        Some("super") => (from.clone(), path),
        _ => return None,
    };
    while rest.first().is_some_and(|p| p == "super") {
        base.pop();
        rest = &rest[1..];
    }
    (0..=rest.len()).rev().find_map(|k| {
        let mut candidate = base.clone();
        candidate.extend(rest[..k].iter().cloned());
        modules.contains_key(&candidate).then_some(candidate)
    })
}

fn dependencies(modules: &BTreeMap<Module, String>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut edges = BTreeMap::new();
    for (module, code) in modules {
        let mut deps = BTreeSet::new();
        for (at, _) in code.match_indices("::") {
            // The start of a path: a word beginning after a non-identifier character.
            let start = code[..at]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(0, |i| i + 1);
            if start != at - ident(&code[start..at]).len() || code[..start].ends_with("::") {
                continue;
            }
            let (path, after) = segments(&code[start..]);
            let first = path.first().map(String::as_str).unwrap_or_default();
            let mut paths = Vec::new();
            // `use super::{a, b::c}`: each item is a path of its own (the prefix alone names
            // nothing).
            if let Some(group) = after.strip_prefix('{')
                && matches!(first, "crate" | "super" | "self")
            {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for item in group.split(',') {
                    let (item, _) = segments(item.trim());
                    if item.first().is_some_and(|i| i != "self") {
                        let mut full = path.clone();
                        full.extend(item);
                        paths.push(full);
                    }
                }
            } else {
                paths.push(path.clone());
            }
            for path in paths {
                // A parent naming its own submodule: `session::run`.
                let path = if matches!(first, "crate" | "super" | "self") {
                    path
                } else {
                    let mut child = module.clone();
                    child.push(first.to_owned());
                    if !modules.contains_key(&child) {
                        continue;
                    }
                    std::iter::once("self".to_owned()).chain(path).collect()
                };
                if let Some(target) = resolve(modules, module, &path)
                    && &target != module
                    && !same_file_family(modules, module, &target)
                {
                    deps.insert(target);
                }
            }
        }
        edges.insert(module.clone(), deps);
    }
    edges
}

/// Whether `a` and `b` are a parent and a child that continues it (`use super::*;`).
fn same_file_family(modules: &BTreeMap<Module, String>, a: &Module, b: &Module) -> bool {
    let continues = |child: &Module, parent: &Module| {
        child.len() == parent.len() + 1
            && child.starts_with(parent)
            && modules[child].contains("use super::*;")
    };
    continues(a, b) || continues(b, a)
}

/// A cycle through `edges`, if there is one, as the modules along it.
fn cycle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        node: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        done: &mut BTreeSet<Module>,
        path: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(at) = path.iter().position(|m| m == node) {
            let mut found = path[at..].to_vec();
            found.push(node.clone());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, done, path) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|start| visit(start, edges, &mut done, &mut Vec::new()))
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

#[test]
fn no_two_files_of_the_gateway_depend_on_each_other() {
    let modules = modules(&host_src());
    assert!(modules.len() > 50, "read the sources: {}", modules.len());
    let edges = dependencies(&modules);
    // The check itself must see dependencies where they are.
    let gate: Module = vec!["proxy".into(), "gate".into()];
    assert!(
        edges[&gate].contains(&vec!["wire".to_owned(), "frame".to_owned()]),
        "{:?}",
        edges[&gate]
    );
    if let Some(found) = cycle(&edges) {
        panic!(
            "files depending on each other: {}",
            found.iter().map(name).collect::<Vec<_>>().join(" -> ")
        );
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut modules = BTreeMap::new();
    modules.insert(
        vec!["a".to_owned()],
        "mod b;\nuse b::Thing;\npub struct Shared;".to_owned(),
    );
    modules.insert(
        vec!["a".to_owned(), "b".to_owned()],
        "use super::Shared;\npub struct Thing;".to_owned(),
    );
    modules.insert(
        vec!["c".to_owned()],
        "use crate::a::{b::Thing, Shared};".to_owned(),
    );
    let edges = dependencies(&modules);
    let found = cycle(&edges).expect("a and a::b depend on each other");
    assert!(found.contains(&vec!["a".to_owned()]), "{found:?}");
}

/// Files stay small enough to read whole: no more than 500 lines of code before a file's unit
/// tests (a file of tests only is all tests), unless its module doc says why it is longer
/// ("longer than 500 lines because ...").
#[test]
fn no_file_of_the_gateway_has_more_than_500_lines_of_code_without_a_reason() {
    let modules = modules(&host_src());
    let long: Vec<String> = modules
        .iter()
        .filter(|(module, _)| module.last().is_none_or(|last| last != "tests"))
        .filter(|(_, code)| code.lines().count() > 500)
        .filter(|(_, code)| !code.contains("longer than 500 lines because"))
        .map(|(module, code)| format!("{} ({} lines)", name(module), code.lines().count()))
        .collect();
    assert!(long.is_empty(), "files over 500 lines of code: {long:?}");
}
