//! The plans of a masking plugin instance that said they depend on the columns alone
//! (`masking-reuse`: `same-columns`), remembered by the columns they were made for. The key is
//! SHA-256 over an exact, length-prefixed encoding of every field of every column (hashed as it
//! is encoded, never built), so a remembered plan is only
//! ever applied to the very columns it was made for, and a wide result (a `*` over a union
//! lists every table column in each column's `derived-from`) costs 32 bytes to remember, not
//! its size. Bounded: forgotten all at once when full.

use std::collections::HashMap;
use std::sync::Arc;

use super::bindings::v0_1::sluice::plugin::types as wit;

/// Masks remembered per instance at most, all plans together.
const CAPACITY: usize = 4096;

#[derive(Default)]
pub struct Plans {
    by_columns: HashMap<[u8; 32], Arc<[wit::Mask]>>,
    masks: usize,
}

/// What identifies a set of columns.
pub struct Key([u8; 32]);

impl Plans {
    pub fn key(columns: &[wit::Column]) -> Key {
        fn length(digest: &mut ring::digest::Context, n: usize) {
            digest.update(&(n as u64).to_le_bytes());
        }
        fn text(digest: &mut ring::digest::Context, s: &str) {
            length(digest, s.len());
            digest.update(s.as_bytes());
        }
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        for column in columns {
            text(&mut digest, &column.name);
            let sources = column.source.iter().chain(&column.derived_from);
            // The source's presence, then how many derived-from follow: no two splits alike.
            digest.update(&[column.source.is_some() as u8]);
            length(&mut digest, column.derived_from.len());
            for s in sources {
                text(&mut digest, &s.schema);
                text(&mut digest, &s.table);
                text(&mut digest, &s.column);
            }
            digest.update(&column.type_oid.to_le_bytes());
            digest.update(&[matches!(column.format, wit::ValueFormat::Binary) as u8]);
        }
        let mut key = [0; 32];
        key.copy_from_slice(digest.finish().as_ref());
        Key(key)
    }

    pub fn get(&self, key: &Key) -> Option<Arc<[wit::Mask]>> {
        self.by_columns.get(&key.0).cloned()
    }

    pub fn remember(&mut self, key: Key, masks: Arc<[wit::Mask]>) {
        if masks.len() > CAPACITY {
            return;
        }
        if self.masks + masks.len() > CAPACITY {
            self.by_columns.clear();
            self.masks = 0;
        }
        self.masks += masks.len();
        self.by_columns.insert(key.0, masks);
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
        plans.remember(Plans::key(&email), [wit::Mask::Hash].into());
        assert!(matches!(
            plans.get(&Plans::key(&email)).as_deref(),
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
        plans.remember(Plans::key(&wide), vec![wit::Mask::Keep; wide.len()].into());
        assert!(plans.get(&Plans::key(&wide)).is_none(), "too wide to keep");
        for i in 0..=CAPACITY / 2 {
            let columns = vec![column(&format!("a{i}"), "t", &[]), column("b", "t", &[])];
            plans.remember(
                Plans::key(&columns),
                [wit::Mask::Keep, wit::Mask::Keep].into(),
            );
        }
        assert!(plans.masks <= CAPACITY);
    }
}
