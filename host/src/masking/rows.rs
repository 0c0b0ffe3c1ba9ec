//! RowDescription and DataRow on the wire, and the built-in masks applied to them.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use siphasher::sip128::{Hasher128, SipHasher13};

use super::action::Action;

/// OID of `text`, the type masked columns are described as.
const TEXT_OID: u32 = 25;

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The table the column comes from, 0 for a computed one.
    pub table_oid: u32,
    pub attnum: i16,
    pub type_oid: u32,
    pub type_len: i16,
    pub type_modifier: i32,
    /// 0 text, 1 binary.
    pub format: i16,
}

impl Field {
    /// Whether a binary value of this column is its text (text, varchar, bpchar, name).
    fn binary_is_text(&self) -> bool {
        matches!(self.type_oid, 25 | 1043 | 1042 | 19)
    }
}

/// The fields of a RowDescription body, or `None` if it is malformed.
pub fn parse_row_description(body: &[u8]) -> Option<Vec<Field>> {
    let mut rest = body;
    let count = take_i16(&mut rest)?;
    let mut fields = Vec::with_capacity(count.max(0) as usize);
    for _ in 0..count.max(0) {
        let end = rest.iter().position(|&b| b == 0)?;
        let name = String::from_utf8_lossy(&rest[..end]).into_owned();
        rest = &rest[end + 1..];
        let table_oid = take_u32(&mut rest)?;
        let attnum = take_i16(&mut rest)?;
        let type_oid = take_u32(&mut rest)?;
        let type_len = take_i16(&mut rest)?;
        let type_modifier = take_u32(&mut rest)? as i32;
        let format = take_i16(&mut rest)?;
        fields.push(Field {
            name,
            table_oid,
            attnum,
            type_oid,
            type_len,
            type_modifier,
            format,
        });
    }
    Some(fields)
}

fn take_i16(rest: &mut &[u8]) -> Option<i16> {
    let (head, tail) = rest.split_first_chunk::<2>()?;
    *rest = tail;
    Some(i16::from_be_bytes(*head))
}

fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    let (head, tail) = rest.split_first_chunk::<4>()?;
    *rest = tail;
    Some(u32::from_be_bytes(*head))
}

/// The gateway's key for `hash` masks: 128 bits, stable across restarts (derived from the
/// signing key by the caller), never sent anywhere.
#[derive(Clone)]
pub struct HashKey([u8; 16]);

impl HashKey {
    pub fn new(key: [u8; 16]) -> HashKey {
        HashKey(key)
    }

    /// `h:` and 32 hex digits of the keyed SipHash-1-3-128 of `value`, as a length-prefixed
    /// field: the variant Rust's own HashMap keys with, no known attack on it as a keyed
    /// function, and one compression round per block where 2-4 has two (hashing is most of
    /// masking's per-row cost).
    fn hash_field(&self, value: &[u8], out: &mut BytesMut) {
        let mut hasher = SipHasher13::new_with_key(&self.0);
        std::hash::Hasher::write(&mut hasher, value);
        let digest = hasher.finish128().as_u128().to_be_bytes();
        let mut field = [0u8; 4 + HASH_LEN];
        field[..6].copy_from_slice(&[0, 0, 0, HASH_LEN as u8, b'h', b':']);
        for (pair, byte) in field[6..].chunks_exact_mut(2).zip(digest) {
            pair.copy_from_slice(&HEX_PAIRS[usize::from(byte)]);
        }
        out.put_slice(&field);
    }
}

/// Length of a hash mask's text.
const HASH_LEN: usize = 34;

/// The two lowercase hex digits of every byte.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [HEX[byte >> 4], HEX[byte & 0xf]];
        byte += 1;
    }
    pairs
};

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(..)")
    }
}

/// How one result set is masked.
#[derive(Debug, Clone)]
pub struct Plan {
    pub fields: Vec<Field>,
    pub actions: Vec<Action>,
    /// Whether the client saw each column described as text (masked when described).
    pub described_as_text: Vec<bool>,
    /// What the row path does to each column's values.
    ops: Vec<Op>,
    masks_anything: bool,
    custom: bool,
}

/// A column's action as the row path applies it: a mask that cannot apply to the column's
/// values (a binary value of a non-text type) is already `Null`.
#[derive(Debug, Clone)]
enum Op {
    Keep,
    Null,
    Redact(Arc<str>),
    Hash,
    Partial { first: usize, last: usize },
    Custom,
}

impl Plan {
    /// A plan of `actions` for `fields`, as described now: masked columns of other than text
    /// types become text.
    pub fn new(fields: Vec<Field>, actions: Vec<Action>) -> Plan {
        let described_as_text = fields
            .iter()
            .zip(&actions)
            .map(|(field, action)| action.retypes() && !field.binary_is_text())
            .collect();
        Plan::with_description(fields, actions, described_as_text)
    }

    /// A plan for columns the client already saw described (or never saw, and knows the types
    /// of by itself): a masked column of a non-text type that was not described as text can
    /// only be nulled, as a text value would not decode.
    pub fn with_description(
        fields: Vec<Field>,
        mut actions: Vec<Action>,
        described_as_text: Vec<bool>,
    ) -> Plan {
        for ((action, as_text), field) in actions.iter_mut().zip(&described_as_text).zip(&fields) {
            if action.retypes() && !as_text && !field.binary_is_text() {
                *action = Action::Null;
            }
        }
        let masks_anything = actions.iter().any(|a| *a != Action::Keep);
        let custom = actions.iter().any(|a| matches!(a, Action::Custom(_)));
        let ops = actions
            .iter()
            .zip(&fields)
            .map(|(action, field)| {
                let textual = field.format == 0 || field.binary_is_text();
                match action {
                    Action::Keep => Op::Keep,
                    Action::Null => Op::Null,
                    Action::Redact(text) => Op::Redact(text.clone()),
                    _ if !textual => Op::Null,
                    Action::Hash => Op::Hash,
                    Action::Partial { first, last } => Op::Partial {
                        first: *first as usize,
                        last: *last as usize,
                    },
                    Action::Custom(_) => Op::Custom,
                }
            })
            .collect();
        Plan {
            fields,
            actions,
            described_as_text,
            ops,
            masks_anything,
            custom,
        }
    }

    /// Every column withheld (a plan that could not be made).
    pub fn withhold_all(fields: Vec<Field>) -> Plan {
        let actions = vec![Action::Null; fields.len()];
        Plan::new(fields, actions)
    }

    pub fn masks_anything(&self) -> bool {
        self.masks_anything
    }

    pub fn has_custom(&self) -> bool {
        self.custom
    }

    /// The RowDescription the client sees: masked columns described as `text`.
    pub fn row_description(&self, original: &Bytes) -> Bytes {
        if !self.described_as_text.iter().any(|&t| t) {
            return original.clone();
        }
        let mut out = BytesMut::with_capacity(original.len());
        out.put_u8(b'T');
        out.put_u32(0);
        out.put_i16(self.fields.len() as i16);
        for (field, as_text) in self.fields.iter().zip(&self.described_as_text) {
            out.put_slice(field.name.as_bytes());
            out.put_u8(0);
            out.put_u32(field.table_oid);
            out.put_i16(field.attnum);
            if *as_text {
                out.put_u32(TEXT_OID);
                out.put_i16(-1);
                out.put_i32(-1);
            } else {
                out.put_u32(field.type_oid);
                out.put_i16(field.type_len);
                out.put_i32(field.type_modifier);
            }
            out.put_i16(field.format);
        }
        let len = (out.len() - 1) as u32;
        out[1..5].copy_from_slice(&len.to_be_bytes());
        out.freeze()
    }

    /// Whether column `index`'s value can be masked as text (not a binary non-text value).
    pub fn textual(&self, index: usize) -> bool {
        self.fields
            .get(index)
            .is_some_and(|f| f.format == 0 || f.binary_is_text())
    }

    /// The DataRow the client sees, with every built-in mask applied; `custom` columns are
    /// taken from `custom` (their transformed values, by column), when given.
    pub fn apply(
        &self,
        row: &Bytes,
        key: &HashKey,
        custom: Option<&dyn Fn(usize) -> Option<Option<String>>>,
    ) -> Bytes {
        if !self.masks_anything {
            return row.clone();
        }
        let mut out = BytesMut::with_capacity(row.len() + 16 * self.actions.len());
        self.apply_into(row, key, custom, &mut out);
        out.freeze()
    }

    /// [`Plan::apply`] written at the end of `out` (the per-row path: no allocation of its own;
    /// runs of kept values are copied as one piece).
    pub fn apply_into(
        &self,
        row: &[u8],
        key: &HashKey,
        custom: Option<&dyn Fn(usize) -> Option<Option<String>>>,
        out: &mut BytesMut,
    ) {
        let start = out.len();
        // Masks change a value's length by at most a hash's length.
        out.reserve(row.len() + HASH_LEN * self.ops.len());
        out.put_slice(&[b'D', 0, 0, 0, 0]);
        if self.rewrite_values(row, key, custom, out).is_none() {
            // Not a DataRow of this result: nothing of it may pass.
            out.truncate(start);
            out.put_slice(&encode_data_row(self.ops.iter().map(|_| None)));
            return;
        }
        let len = (out.len() - start - 1) as u32;
        out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
    }

    /// The column count and values of `row` rewritten at the end of `out`; `None` if the row is
    /// malformed or has another number of columns than the plan.
    fn rewrite_values(
        &self,
        row: &[u8],
        key: &HashKey,
        custom: Option<&dyn Fn(usize) -> Option<Option<String>>>,
        out: &mut BytesMut,
    ) -> Option<()> {
        let (count, mut rest) = row.get(5..)?.split_first_chunk::<2>()?;
        if usize::try_from(i16::from_be_bytes(*count)).ok() != Some(self.ops.len()) {
            return None;
        }
        out.put_slice(count);
        // Kept values not yet copied: `kept` bytes from `run`.
        let (mut run, mut kept) = (rest, 0);
        for (index, op) in self.ops.iter().enumerate() {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = i32::from_be_bytes(*len);
            let (value, tail) = tail.split_at_checked(len.max(0) as usize)?;
            rest = tail;
            if let Op::Keep = op {
                kept += 4 + value.len();
                continue;
            }
            out.put_slice(&run[..kept]);
            (run, kept) = (rest, 0);
            if len < 0 {
                out.put_i32(-1);
                continue;
            }
            match op {
                Op::Keep | Op::Null => out.put_i32(-1),
                Op::Redact(text) => put_value(out, text.as_bytes()),
                Op::Hash => key.hash_field(value, out),
                Op::Partial { first, last } => partial_into(value, *first, *last, out),
                Op::Custom => match custom.and_then(|c| c(index)) {
                    Some(Some(text)) => put_value(out, text.as_bytes()),
                    _ => out.put_i32(-1),
                },
            }
        }
        out.put_slice(&run[..kept]);
        Some(())
    }
}

/// The values of a DataRow body, one at a time: `Ok(None)` for NULL, `Err` once malformed.
struct Values<'a> {
    rest: &'a [u8],
    left: i16,
}

impl<'a> Values<'a> {
    fn new(body: &'a [u8]) -> Values<'a> {
        let mut rest = body;
        let left = take_i16(&mut rest).unwrap_or(-1);
        Values { rest, left }
    }
}

impl<'a> Iterator for Values<'a> {
    type Item = Result<Option<&'a [u8]>, ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left < 0 {
            return Some(Err(()));
        }
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let Some(len) = take_u32(&mut self.rest).map(|l| l as i32) else {
            self.left = -1;
            return Some(Err(()));
        };
        if len < 0 {
            return Some(Ok(None));
        }
        let len = len as usize;
        if self.rest.len() < len {
            self.left = -1;
            return Some(Err(()));
        }
        let (value, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(Ok(Some(value)))
    }
}

fn put_value(out: &mut BytesMut, value: &[u8]) {
    out.put_i32(value.len() as i32);
    out.put_slice(value);
}

/// The values of a DataRow body (`None` for NULL), or `None` if it is malformed.
pub fn data_row_values(body: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    Values::new(body).collect::<Result<_, ()>>().ok()
}

/// A DataRow message of `values`.
pub fn encode_data_row<'a>(values: impl ExactSizeIterator<Item = Option<&'a [u8]>>) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(b'D');
    out.put_u32(0);
    out.put_i16(values.len() as i16);
    for value in values {
        match value {
            Some(v) => put_value(&mut out, v),
            None => out.put_i32(-1),
        }
    }
    let len = (out.len() - 1) as u32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    out.freeze()
}

/// The first `first` and last `last` characters of `value` with `*` for each character between,
/// as a length-prefixed field at the end of `out`; a value no longer than what would be kept is
/// masked whole.
fn partial_into(value: &[u8], first: usize, last: usize, out: &mut BytesMut) {
    if value.is_ascii() {
        // One byte per character.
        let count = value.len();
        out.put_i32(count as i32);
        if count <= first.saturating_add(last) {
            out.put_bytes(b'*', count);
        } else {
            out.put_slice(&value[..first]);
            out.put_bytes(b'*', count - first - last);
            out.put_slice(&value[count - last..]);
        }
        return;
    }
    let text = String::from_utf8_lossy(value);
    let count = text.chars().count();
    let masked: String = if count <= first.saturating_add(last) {
        "*".repeat(count)
    } else {
        text.chars()
            .enumerate()
            .map(|(i, c)| {
                if i < first || i >= count - last {
                    c
                } else {
                    '*'
                }
            })
            .collect()
    };
    put_value(out, masked.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(value: &[u8], first: usize, last: usize) -> String {
        let mut out = BytesMut::new();
        partial_into(value, first, last, &mut out);
        String::from_utf8_lossy(&out[4..]).into_owned()
    }

    fn field(name: &str, type_oid: u32, format: i16) -> Field {
        Field {
            name: name.into(),
            table_oid: 16384,
            attnum: 1,
            type_oid,
            type_len: -1,
            type_modifier: -1,
            format,
        }
    }

    fn row(values: &[Option<&str>]) -> Bytes {
        encode_data_row(values.iter().map(|v| v.map(str::as_bytes)))
    }

    fn values(row: &Bytes) -> Vec<Option<String>> {
        data_row_values(&row[5..])
            .unwrap()
            .into_iter()
            .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    #[test]
    fn built_in_masks_rewrite_each_value_and_keep_nulls() {
        let key = HashKey::new([7; 16]);
        let plan = Plan::new(
            vec![
                field("id", 23, 0),
                field("email", 25, 0),
                field("card", 25, 0),
                field("phone", 25, 0),
                field("ssn", 25, 0),
            ],
            vec![
                Action::Keep,
                Action::Hash,
                Action::Partial { first: 0, last: 4 },
                Action::Redact("[redacted]".into()),
                Action::Null,
            ],
        );
        let out = plan.apply(
            &row(&[
                Some("1"),
                Some("a@x.io"),
                Some("4242424242424242"),
                Some("555"),
                Some("1"),
            ]),
            &key,
            None,
        );
        let got = values(&out);
        assert_eq!(got[0].as_deref(), Some("1"));
        let hashed = got[1].clone().unwrap();
        assert!(hashed.starts_with("h:") && hashed.len() == 34, "{hashed}");
        assert_eq!(got[2].as_deref(), Some("************4242"));
        assert_eq!(got[3].as_deref(), Some("[redacted]"));
        assert_eq!(got[4], None);
        // Stable: the same value hashes the same in another row; another value differently.
        let again =
            values(&plan.apply(&row(&[None, Some("a@x.io"), None, None, None]), &key, None));
        assert_eq!(again[1].as_deref(), Some(hashed.as_str()));
        assert_eq!(again[2], None, "a NULL stays NULL");
        let other =
            values(&plan.apply(&row(&[None, Some("b@x.io"), None, None, None]), &key, None));
        assert_ne!(other[1].as_deref(), Some(hashed.as_str()));
    }

    #[test]
    fn a_hash_mask_is_the_same_in_every_release() {
        // Pseudonyms stored or joined on by users must not change with an upgrade.
        let plan = Plan::new(vec![field("email", 25, 0)], vec![Action::Hash]);
        let out = plan.apply(&row(&[Some("a@x.io")]), &HashKey::new([7; 16]), None);
        assert_eq!(
            values(&out)[0].as_deref(),
            Some("h:36879f9766a261b132b77d4de0578f87")
        );
    }

    #[test]
    fn kept_values_around_masked_ones_pass_whole_and_nulls_stay_null() {
        let key = HashKey::new([1; 16]);
        let plan = Plan::new(
            (0..6).map(|i| field(&format!("c{i}"), 25, 0)).collect(),
            vec![
                Action::Keep,
                Action::Keep,
                Action::Partial { first: 1, last: 0 },
                Action::Keep,
                Action::Redact("x".into()),
                Action::Keep,
            ],
        );
        let out = plan.apply(
            &row(&[Some("a"), None, Some("secret"), Some(""), None, Some("z")]),
            &key,
            None,
        );
        assert_eq!(
            values(&out),
            vec![
                Some("a".into()),
                None,
                Some("s*****".into()),
                Some(String::new()),
                None,
                Some("z".into())
            ]
        );
    }

    #[test]
    fn a_row_that_does_not_fit_the_plan_is_withheld_whole() {
        let key = HashKey::new([1; 16]);
        let plan = Plan::new(
            vec![field("id", 25, 0), field("email", 25, 0)],
            vec![Action::Keep, Action::Hash],
        );
        let withheld = vec![None, None];
        let short = row(&[Some("1")]);
        assert_eq!(values(&plan.apply(&short, &key, None)), withheld);
        let long = row(&[Some("1"), Some("a@x.io"), Some("more")]);
        assert_eq!(values(&plan.apply(&long, &key, None)), withheld);
        // A value claiming more bytes than the row holds.
        let mut truncated = BytesMut::from(&row(&[Some("1"), Some("a@x.io")])[..]);
        truncated.truncate(truncated.len() - 2);
        assert_eq!(
            values(&plan.apply(&truncated.freeze(), &key, None)),
            withheld
        );
    }

    #[test]
    fn partial_masks_short_values_whole() {
        assert_eq!(partial(b"abcdef", 1, 2), "a***ef");
        assert_eq!(partial(b"abc", 1, 2), "***");
        assert_eq!(partial("ñandú".as_bytes(), 1, 1), "ñ***ú");
    }

    #[test]
    fn binary_values_of_non_text_types_are_nulled_and_binary_text_is_masked() {
        let key = HashKey::new([1; 16]);
        let plan = Plan::new(
            vec![field("n", 23, 1), field("t", 25, 1)],
            vec![Action::Hash, Action::Partial { first: 1, last: 0 }],
        );
        let out = values(&plan.apply(&row(&[Some("\0\0\0\x07"), Some("secret")]), &key, None));
        assert_eq!(out[0], None);
        assert_eq!(out[1].as_deref(), Some("s*****"));
    }

    #[test]
    fn masked_columns_are_described_as_text_and_late_masks_null_columns_described_before() {
        let original = {
            let mut b = BytesMut::new();
            b.put_u8(b'T');
            b.put_u32(0);
            b.put_i16(2);
            for (name, oid) in [("id", 23u32), ("email", 1043)] {
                b.put_slice(name.as_bytes());
                b.put_u8(0);
                b.put_u32(16384);
                b.put_i16(1);
                b.put_u32(oid);
                b.put_i16(4);
                b.put_i32(-1);
                b.put_i16(0);
            }
            let len = (b.len() - 1) as u32;
            b[1..5].copy_from_slice(&len.to_be_bytes());
            b.freeze()
        };
        let fields = parse_row_description(&original[5..]).unwrap();
        assert_eq!(fields[1].type_oid, 1043);
        let plan = Plan::new(fields.clone(), vec![Action::Keep, Action::Hash]);
        let described = parse_row_description(&plan.row_description(&original)[5..]).unwrap();
        assert_eq!(described[0].type_oid, 23);
        assert_eq!(described[1].type_oid, 1043, "text types keep their type");
        let plan = Plan::new(fields.clone(), vec![Action::Hash, Action::Keep]);
        let described = parse_row_description(&plan.row_description(&original)[5..]).unwrap();
        assert_eq!(
            described[0].type_oid, TEXT_OID,
            "a masked int is described as text"
        );
        let late =
            Plan::with_description(fields, vec![Action::Hash, Action::Hash], vec![false, false]);
        assert_eq!(late.actions[0], Action::Null, "an int described as int");
        assert_eq!(
            late.actions[1],
            Action::Hash,
            "a varchar holds a hash as it is"
        );
    }

    #[test]
    fn malformed_rows_pass_nothing() {
        let plan = Plan::new(vec![field("a", 25, 0)], vec![Action::Hash]);
        let bad = Bytes::from_static(b"D\0\0\0\x0a\0\x01\0\0\0\x09ab");
        assert_eq!(
            values(&plan.apply(&bad, &HashKey::new([0; 16]), None)),
            vec![None]
        );
    }
}
