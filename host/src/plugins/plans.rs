//! The plans of a masking plugin instance that said they depend on the columns alone
//! (`masking-reuse`: `same-columns`), remembered by the columns they were made for. The key is
//! SHA-256 of an exact encoding of every field of every column, so a remembered plan is only
//! ever applied to the very columns it was made for, and a wide result (a `*` over a union
//! lists every table column in each column's `derived-from`) costs 32 bytes to remember, not
//! its size. Bounded: forgotten all at once when full.

use std::collections::HashMap;

use super::bindings::v0_1::sluice::plugin::types as wit;

/// Masks remembered per instance at most, all plans together.
const CAPACITY: usize = 4096;

#[derive(Default)]
pub struct Plans {
    by_columns: HashMap<[u8; 32], Vec<wit::Mask>>,
    masks: usize,
}

/// What identifies a set of columns.
pub struct Key([u8; 32]);

impl Plans {
    pub fn key(columns: &[wit::Column]) -> Key {
        let mut encoded = Vec::with_capacity(64 * columns.len());
        let text = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        };
        let source = |out: &mut Vec<u8>, s: &wit::ColumnSource| {
            text(out, &s.schema);
            text(out, &s.table);
            text(out, &s.column);
        };
        for column in columns {
            text(&mut encoded, &column.name);
            match &column.source {
                Some(s) => {
                    encoded.push(1);
                    source(&mut encoded, s);
                }
                None => encoded.push(0),
            }
            encoded.extend_from_slice(&(column.derived_from.len() as u64).to_le_bytes());
            for s in &column.derived_from {
                source(&mut encoded, s);
            }
            encoded.extend_from_slice(&column.type_oid.to_le_bytes());
            encoded.push(match column.format {
                wit::ValueFormat::Text => 0,
                wit::ValueFormat::Binary => 1,
            });
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, &encoded);
        let mut key = [0; 32];
        key.copy_from_slice(digest.as_ref());
        Key(key)
    }

    pub fn get(&self, key: &Key) -> Option<&Vec<wit::Mask>> {
        self.by_columns.get(&key.0)
    }

    pub fn remember(&mut self, key: Key, masks: &[wit::Mask]) {
        if masks.len() > CAPACITY {
            return;
        }
        if self.masks + masks.len() > CAPACITY {
            self.by_columns.clear();
            self.masks = 0;
        }
        self.masks += masks.len();
        self.by_columns.insert(key.0, masks.to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, table: &str, derived: &[&str]) -> wit::Column {
        let source = |table: &str, column: &str| wit::ColumnSource {
            schema: "public".into(),
            table: table.into(),
            column: column.into(),
        };
        wit::Column {
            name: name.into(),
            source: Some(source(table, name)),
            derived_from: derived.iter().map(|c| source(table, c)).collect(),
            type_oid: 25,
            format: wit::ValueFormat::Text,
        }
    }

    #[test]
    fn a_plan_is_found_only_for_exactly_the_columns_it_was_made_for() {
        let mut plans = Plans::default();
        let email = vec![column("email", "people", &[])];
        plans.remember(Plans::key(&email), &[wit::Mask::Hash]);
        assert!(matches!(
            plans.get(&Plans::key(&email)).map(Vec::as_slice),
            Some([wit::Mask::Hash])
        ));
        // Another table, another derivation, another split of the same bytes, another format.
        let others = [
            vec![column("email", "staff", &[])],
            vec![column("email", "people", &["card"])],
            vec![column("emai", "people", &[]), column("l", "people", &[])],
            vec![wit::Column {
                format: wit::ValueFormat::Binary,
                ..column("email", "people", &[])
            }],
            vec![wit::Column {
                source: None,
                ..column("email", "people", &[])
            }],
        ];
        for other in &others {
            assert!(plans.get(&Plans::key(other)).is_none(), "{other:?}");
        }
    }

    #[test]
    fn remembered_masks_are_bounded() {
        let mut plans = Plans::default();
        let wide: Vec<wit::Column> = (0..CAPACITY + 1)
            .map(|i| column(&format!("c{i}"), "t", &[]))
            .collect();
        plans.remember(Plans::key(&wide), &vec![wit::Mask::Keep; wide.len()]);
        assert!(plans.get(&Plans::key(&wide)).is_none(), "too wide to keep");
        for i in 0..=CAPACITY / 2 {
            let columns = vec![column(&format!("a{i}"), "t", &[]), column("b", "t", &[])];
            plans.remember(Plans::key(&columns), &[wit::Mask::Keep, wit::Mask::Keep]);
        }
        assert!(plans.masks <= CAPACITY);
    }
}
