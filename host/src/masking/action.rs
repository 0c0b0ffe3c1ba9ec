//! What happens to one result column's values, as the plans of all masking plugins combine.

use std::sync::Arc;

/// What happens to one column's values; ordered from least to most restrictive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Keep,
    /// The plugins (by index in the plugin set's `maskers`) transform values, in this order.
    Custom(Vec<usize>),
    Partial {
        first: u32,
        last: u32,
    },
    Hash,
    Redact(Arc<str>),
    Null,
}

impl Action {
    fn rank(&self) -> u8 {
        match self {
            Action::Keep => 0,
            Action::Custom(_) => 1,
            Action::Partial { .. } => 2,
            Action::Hash => 3,
            Action::Redact(_) => 4,
            Action::Null => 5,
        }
    }

    /// The stricter of two plans for one column (the earlier plugin's, when equally strict:
    /// its redaction text; partial masks keep the fewer characters; custom masks chain).
    pub fn stricter(self, other: Action) -> Action {
        match (self, other) {
            (Action::Partial { first: a, last: b }, Action::Partial { first: c, last: d }) => {
                Action::Partial {
                    first: a.min(c),
                    last: b.min(d),
                }
            }
            (Action::Custom(mut a), Action::Custom(b)) => {
                a.extend(b);
                Action::Custom(a)
            }
            (a, b) if b.rank() > a.rank() => b,
            (a, _) => a,
        }
    }

    /// The contract's name for the mask, for the audit log.
    pub fn label(&self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::Custom(_) => "custom",
            Action::Partial { .. } => "partial",
            Action::Hash => "hash",
            Action::Redact(_) => "redact",
            Action::Null => "null",
        }
    }

    /// Whether values change type to text (everything that rewrites a value).
    pub fn retypes(&self) -> bool {
        !matches!(self, Action::Keep | Action::Null)
    }

    pub(crate) fn from_wit(mask: &crate::plugins::wit::Mask, plugin: usize) -> Action {
        use crate::plugins::wit::Mask;
        match mask {
            Mask::Keep => Action::Keep,
            Mask::Null => Action::Null,
            Mask::Redact(text) => Action::Redact(Arc::from(text.as_str())),
            Mask::Hash => Action::Hash,
            Mask::Partial(p) => Action::Partial {
                first: p.keep_first,
                last: p.keep_last,
            },
            Mask::Custom => Action::Custom(vec![plugin]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stricter_mask_wins_and_partials_keep_the_fewer_characters() {
        assert_eq!(Action::Keep.stricter(Action::Hash), Action::Hash);
        assert_eq!(Action::Null.stricter(Action::Hash), Action::Null);
        assert_eq!(
            Action::Redact("x".into()).stricter(Action::Partial { first: 1, last: 1 }),
            Action::Redact("x".into())
        );
        assert_eq!(
            Action::Partial { first: 2, last: 4 }.stricter(Action::Partial { first: 0, last: 6 }),
            Action::Partial { first: 0, last: 4 }
        );
        assert_eq!(
            Action::Custom(vec![0]).stricter(Action::Custom(vec![2])),
            Action::Custom(vec![0, 2])
        );
        assert_eq!(
            Action::Custom(vec![0]).stricter(Action::Partial { first: 0, last: 4 }),
            Action::Partial { first: 0, last: 4 }
        );
    }
}
