//! The reference pages state behaviour; these checks keep them true: every configuration key
//! `docs/configuration.md` shows (set or commented out) exists, the starter config `sluice init`
//! writes loads, and every SQLSTATE of `docs/refusals.md` is asserted by some test.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned()
}

/// The fenced blocks of `lang` in a Markdown file.
fn blocks(markdown: &str, lang: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l == format!("```{lang}") => current = Some(String::new()),
            (Some(block), "```") => {
                found.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    found
}

#[test]
fn every_configuration_key_the_reference_shows_exists() {
    let page = std::fs::read_to_string(repo().join("docs/configuration.md")).unwrap();
    let reference = blocks(&page, "toml")
        .into_iter()
        .next()
        .expect("a TOML block");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plugins.d")).unwrap();
    let file = dir.path().join("sluice.toml");
    let load = |text: &str| sluice::config::Config::from_toml(text, &file);
    // As shown.
    if let Err(e) = load(&reference) {
        panic!("the reference configuration does not load: {e}");
    }
    // Each commented-out key, uncommented on its own: an unknown key is the only failure that
    // counts (others, like a file that does not exist here, are about values).
    let lines: Vec<&str> = reference.lines().collect();
    let mut checked = 0;
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("# ") else {
            continue;
        };
        let Some((key, _)) = rest.split_once(" = ") else {
            continue;
        };
        if !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let mut variant: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        variant[i] = rest.to_owned();
        if let Err(e) = load(&variant.join("\n")) {
            let message = e.to_string();
            assert!(
                !message.contains("unknown field"),
                "docs/configuration.md shows `{key}`, which the configuration does not have: {message}"
            );
        }
        checked += 1;
    }
    assert!(checked > 5, "commented keys checked: {checked}");
}

#[test]
fn every_sqlstate_the_refusal_table_names_is_asserted_by_a_test() {
    let page = std::fs::read_to_string(repo().join("docs/refusals.md")).unwrap();
    let codes: Vec<String> = page
        .lines()
        .filter(|l| l.starts_with('|'))
        .filter_map(|row| row.split('|').nth(3))
        .map(str::trim)
        .filter(|code| code.len() == 5 && code.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(str::to_owned)
        .collect();
    assert!(codes.len() > 15, "{codes:?}");
    let mut tests = String::new();
    for dir in ["integration-tests/tests", "host/tests"] {
        collect(&repo().join(dir), &mut tests);
    }
    let missing: Vec<String> = codes
        .into_iter()
        .filter(|code| !tests.contains(&format!("\"{code}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/refusals.md names SQLSTATEs no test asserts: {missing:?}"
    );
}

fn collect(dir: &Path, into: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}
