//! Masks personal data by content, in every text column of every result (computed ones too):
//! email addresses, payment card numbers (13–19 digits passing the Luhn check), US social
//! security numbers, phone numbers and IBANs (passing the mod-97 check) are replaced in place
//! by `[email]`, `[card]`, `[ssn]`, `[phone]`, `[iban]`; the rest of the text stays.
//!
//! ```toml
//! [config]
//! exempt_groups = "pii-readers"
//! ```

use std::sync::LazyLock;

use regex::Regex;
use sluice_sdk::{Column, Mask, Masker, PluginError, Session, Statement};

/// text, varchar, bpchar, name, json, jsonb, xml: types whose text form can hold free text.
const TEXT_TYPES: &[u32] = &[25, 1043, 1042, 19, 114, 3802, 142];

struct Detector {
    pattern: Regex,
    marker: &'static str,
    valid: fn(&str) -> bool,
}

static DETECTORS: LazyLock<Vec<Detector>> = LazyLock::new(|| {
    let detector = |pattern: &str, marker, valid| Detector {
        pattern: Regex::new(pattern).expect("detector patterns are valid"),
        marker,
        valid,
    };
    vec![
        detector(
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
            "[email]",
            |_| true,
        ),
        detector(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b", "[iban]", iban_valid),
        detector(r"\b\d(?:[ -]?\d){12,18}\b", "[card]", luhn_valid),
        detector(r"\b\d{3}-\d{2}-\d{4}\b", "[ssn]", ssn_valid),
        detector(
            r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\) ?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b",
            "[phone]",
            |_| true,
        ),
    ]
});

fn luhn_valid(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d })
        .sum();
    sum % 10 == 0
}

fn ssn_valid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let [area, group, serial] = parts.as_slice() else {
        return false;
    };
    *area != "000" && *area != "666" && !area.starts_with('9') && *group != "00" && *serial != "0000"
}

fn iban_valid(text: &str) -> bool {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder = 0u32;
    for c in tail.chars().chain(head.chars()) {
        let value = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        for digit in value.to_string().chars() {
            remainder = (remainder * 10 + digit.to_digit(10).unwrap_or(0)) % 97;
        }
    }
    remainder == 1
}

/// `text` with every detected item replaced by its marker.
fn scan(text: &str) -> String {
    let mut out = text.to_owned();
    for detector in DETECTORS.iter() {
        if !detector.pattern.is_match(&out) {
            continue;
        }
        out = detector
            .pattern
            .replace_all(&out, |caps: &regex::Captures| {
                let found = &caps[0];
                if (detector.valid)(found) {
                    detector.marker.to_owned()
                } else {
                    found.to_owned()
                }
            })
            .into_owned();
    }
    out
}

struct PiiScan;

impl Masker for PiiScan {
    fn open(session: &Session) -> Result<bool, PluginError> {
        // Compiled here, in open's larger time budget, not in the first transform.
        LazyLock::force(&DETECTORS);
        Ok(!sluice_sdk::in_any_group(
            session,
            &sluice_sdk::config_list("exempt_groups"),
        ))
    }

    fn plan(_: &Session, _: Statement, columns: Vec<Column>) -> Result<Vec<Mask>, PluginError> {
        Ok(columns
            .iter()
            .map(|c| {
                if TEXT_TYPES.contains(&c.type_oid) {
                    Mask::Custom
                } else {
                    Mask::Keep
                }
            })
            .collect())
    }

    fn transform(
        _: &Session,
        _: Column,
        values: Vec<Option<String>>,
    ) -> Result<Vec<Option<String>>, PluginError> {
        Ok(values.into_iter().map(|v| v.map(|t| scan(&t))).collect())
    }
}

sluice_sdk::export_masker!(PiiScan);
