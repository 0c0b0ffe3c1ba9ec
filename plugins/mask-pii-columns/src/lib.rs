//! Masks named columns, configured in the manifest:
//!
//! ```toml
//! [config]
//! rules = "customers.email=hash, customers.card=partial(0,4), customers.phone=redact"
//! exempt_groups = "pii-readers"
//! ```
//!
//! A rule is `table.column=mask` (`schema.table.column`, `*` for any table or column, so
//! `*.email` is every table's email column); masks are `keep`, `null`, `redact`,
//! `redact(text)`, `hash` and `partial(first,last)`. A result column that is a rule's column
//! gets that rule's mask; one computed from it (an expression, aggregate or whole row) gets
//! the mask too, except that `partial` becomes `redact` there: which characters of
//! `substring(card, 1, 6)` are the card's is anyone's guess. Several matching rules: the
//! strictest wins. Sessions whose token carries an exempt group see everything.

use sluice_sdk::{
    Column, Mask, Masker, PartialMask, PluginError, ReuseScope, Session, Statement, TablePattern,
};

struct Rule {
    table: TablePattern,
    column: String,
    mask: Mask,
}

fn rank(mask: &Mask) -> u8 {
    match mask {
        Mask::Keep => 0,
        Mask::Custom => 1,
        Mask::Partial(_) => 2,
        Mask::Hash => 3,
        Mask::Redact(_) => 4,
        Mask::Null => 5,
    }
}

fn redact_text() -> String {
    sluice_sdk::config("redact_text").unwrap_or_else(|| "[redacted]".into())
}

fn parse_mask(text: &str) -> Result<Mask, String> {
    let text = text.trim();
    let args = |name: &str| {
        text.strip_prefix(name)
            .and_then(|r| r.trim().strip_prefix('('))
            .and_then(|r| r.strip_suffix(')'))
    };
    Ok(match text {
        "keep" => Mask::Keep,
        "null" => Mask::Null,
        "hash" => Mask::Hash,
        "redact" => Mask::Redact(redact_text()),
        _ if args("redact").is_some() => Mask::Redact(args("redact").unwrap_or_default().into()),
        _ if args("partial").is_some() => {
            let inner = args("partial").unwrap_or_default();
            let (first, last) = inner
                .split_once(';')
                .or_else(|| inner.split_once(' '))
                .ok_or(format!("partial({inner}) needs two numbers"))?;
            let number = |n: &str| {
                n.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("partial({inner}): \"{n}\" is not a number"))
            };
            Mask::Partial(PartialMask {
                keep_first: number(first)?,
                keep_last: number(last)?,
            })
        }
        other => return Err(format!("unknown mask \"{other}\"")),
    })
}

/// Splits the rule list at commas that are not inside parentheses (`partial(0,4)`).
fn split_rules(text: &str) -> Vec<String> {
    let (mut rules, mut current, mut depth) = (Vec::new(), String::new(), 0);
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                rules.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(if c == ',' { ';' } else { c });
    }
    rules.push(current);
    rules.into_iter().filter(|r| !r.trim().is_empty()).collect()
}

fn rules() -> Result<Vec<Rule>, PluginError> {
    let text = sluice_sdk::config("rules").unwrap_or_default();
    let invalid = |m: String| PluginError::InvalidConfig(format!("rules: {m}"));
    split_rules(&text)
        .iter()
        .map(|rule| {
            let (target, mask) = rule
                .split_once('=')
                .ok_or_else(|| invalid(format!("\"{rule}\" is not table.column=mask")))?;
            let (table, column) = target
                .trim()
                .rsplit_once('.')
                .ok_or_else(|| invalid(format!("\"{target}\" names no table")))?;
            Ok(Rule {
                table: TablePattern::parse(table).map_err(invalid)?,
                column: column.trim().to_ascii_lowercase(),
                mask: parse_mask(mask).map_err(invalid)?,
            })
        })
        .collect()
}

thread_local! {
    static RULES: std::cell::RefCell<Vec<Rule>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct MaskPiiColumns;

impl Masker for MaskPiiColumns {
    fn open(session: &Session) -> Result<bool, PluginError> {
        let rules = rules()?;
        if rules.is_empty() {
            return Err(PluginError::InvalidConfig("rules: no rule configured".into()));
        }
        if sluice_sdk::in_any_group(session, &sluice_sdk::config_list("exempt_groups")) {
            return Ok(false);
        }
        RULES.with(|r| *r.borrow_mut() = rules);
        Ok(true)
    }

    /// A plan follows from the rules and the columns alone.
    fn plan_reuse() -> ReuseScope {
        ReuseScope::SameColumns
    }

    fn plan(_: &Session, _: Statement, columns: Vec<Column>) -> Result<Vec<Mask>, PluginError> {
        RULES.with(|rules| {
            let rules = rules.borrow();
            Ok(columns.iter().map(|column| plan_column(&rules, column)).collect())
        })
    }
}

fn plan_column(rules: &[Rule], column: &Column) -> Mask {
    let mut mask = Mask::Keep;
    let mut stricter = |candidate: Mask| {
        if rank(&candidate) > rank(&mask) {
            mask = candidate;
        }
    };
    for rule in rules {
        if column.source.iter().any(|s| s.is(&rule.table, &rule.column)) {
            stricter(rule.mask.clone());
        }
        if column.derived_from.iter().any(|s| s.is(&rule.table, &rule.column)) {
            stricter(match &rule.mask {
                Mask::Partial(_) | Mask::Custom => Mask::Redact(redact_text()),
                other => other.clone(),
            });
        }
    }
    mask
}

sluice_sdk::export_masker!(MaskPiiColumns);
