//! A few fields of an index record (python/dicomvault/index/records.py: a version byte, then a
//! msgpack map of the record's fields, one of them `attrs`, a map of keyword -> text), read
//! without decoding the rest.
//!
//! Why: an IMAGE-level C-FIND of a 2,000-image study decoded 2,000 whole instance records in
//! Python (~6 µs each, half of the query) to return five short texts from each. Here a record
//! is walked once, its other values skipped by length.
//!
//! Anything this reader does not turn into a [`Value`] it reports as `None` (not a version-1
//! record, malformed msgpack, a non-text map key, bytes after the map, text that is not UTF-8):
//! the caller then decodes that record in Python, which raises the error or returns exactly
//! what it always did. So this reader never has to agree with msgpack on a corner case, only
//! to hand such a record back.

/// The version byte of the records this reader knows (records.py `RECORD_VERSION`).
pub const RECORD_VERSION: u8 = 1;

/// One stored value as the query path sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// The key is not in the map.
    Absent,
    /// msgpack nil (Python None).
    Nil,
    Str(&'a str),
    Int(i64),
    /// msgpack bin (Python bytes), its payload: a record's blob hash.
    Bin(&'a [u8]),
    /// A map, as its encoded bytes (marker included): [`counted_keys`] reads one.
    Map(&'a [u8]),
    /// Anything else (bool, float, array, ext, an integer beyond i64).
    Other,
}

/// What was read of one record: `fields[i]` is the top-level field `names[i]`, `attrs[j]` the
/// `attrs` entry `keywords[j]`. `attrs_map` is false if the record has no `attrs` or a nil one;
/// `attrs_nil` says it is a nil one (a record the Python views cannot take as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picked<'a> {
    pub fields: Vec<Value<'a>>,
    pub attrs: Vec<Value<'a>>,
    pub attrs_map: bool,
    pub attrs_nil: bool,
}

/// Reads the top-level fields `names` and the `attrs` entries `keywords` of one record; None if
/// the record is not one this reader can read (see the module docs). A key present twice keeps
/// its last value, as a Python dict built from the map does.
pub fn pick<'a>(raw: &'a [u8], names: &[&str], keywords: &[&str]) -> Option<Picked<'a>> {
    let (&version, body) = raw.split_first()?;
    if version != RECORD_VERSION {
        return None;
    }
    let mut r = Reader { buf: body, pos: 0 };
    let mut out = Picked {
        fields: vec![Value::Absent; names.len()],
        attrs: vec![Value::Absent; keywords.len()],
        attrs_map: false,
        attrs_nil: false,
    };
    let n = r.map_len()?;
    for _ in 0..n {
        let key = r.key()?;
        if key == "attrs" {
            // a later "attrs" replaces an earlier one
            out.attrs.iter_mut().for_each(|v| *v = Value::Absent);
            match r.peek()? {
                0xc0 => {
                    r.pos += 1;
                    out.attrs_map = false;
                    out.attrs_nil = true;
                }
                m if is_map(m) => {
                    out.attrs_map = true;
                    out.attrs_nil = false;
                    let m = r.map_len()?;
                    for _ in 0..m {
                        let kw = r.key()?;
                        match keywords.iter().position(|k| *k == kw) {
                            Some(j) => out.attrs[j] = r.value()?,
                            None => r.skip()?,
                        }
                    }
                }
                _ => return None, // Python would fail on it: let it say so
            }
        } else {
            match names.iter().position(|k| *k == key) {
                Some(i) => out.fields[i] = r.value()?,
                None => r.skip()?,
            }
        }
    }
    (r.pos == body.len()).then_some(out)
}

/// The keys of a map of text -> integer whose value is above zero, sorted (by code point, as
/// Python sorts str): what StudyRecord.modalities_in_study makes of `modalities`, and the query
/// view of `sop_classes`. None if a key is not text or a value not an integer (Python then
/// decides). A key present twice counts with its last value, as in a Python dict.
pub fn counted_keys(map: &[u8]) -> Option<Vec<&str>> {
    let mut r = Reader { buf: map, pos: 0 };
    let n = r.map_len()?;
    let mut counts: Vec<(&str, i64)> = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let key = r.key()?;
        let Value::Int(count) = r.value()? else { return None };
        match counts.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = count,
            None => counts.push((key, count)),
        }
    }
    if r.pos != map.len() {
        return None;
    }
    let mut keys: Vec<&str> = counts.into_iter().filter(|&(_, c)| c > 0).map(|(k, _)| k).collect();
    keys.sort_unstable();
    Some(keys)
}

fn is_map(marker: u8) -> bool {
    matches!(marker, 0x80..=0x8f | 0xde | 0xdf)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// A big-endian unsigned integer of `n` bytes.
    fn be(&mut self, n: usize) -> Option<u64> {
        Some(self.take(n)?.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn map_len(&mut self) -> Option<usize> {
        let len = match self.byte()? {
            m @ 0x80..=0x8f => u64::from(m & 0x0f),
            0xde => self.be(2)?,
            0xdf => self.be(4)?,
            _ => return None,
        };
        usize::try_from(len).ok()
    }

    /// A map key: text only (records.py writes no other).
    fn key(&mut self) -> Option<&'a str> {
        match self.value()? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    fn text(&mut self, len: u64) -> Option<Value<'a>> {
        let raw = self.take(usize::try_from(len).ok()?)?;
        std::str::from_utf8(raw).ok().map(Value::Str)
    }

    /// One value: scalars read, containers and other kinds skipped (Other).
    fn value(&mut self) -> Option<Value<'a>> {
        let m = self.peek()?;
        let v = match m {
            0x00..=0x7f => Value::Int(i64::from(m)),
            0xe0..=0xff => Value::Int(i64::from(m as i8)),
            0xc0 => Value::Nil,
            0xa0..=0xbf => {
                self.pos += 1;
                return self.text(u64::from(m & 0x1f));
            }
            0xd9..=0xdb => {
                self.pos += 1;
                let len = self.be(1 << (m - 0xd9))?;
                return self.text(len);
            }
            0xc4..=0xc6 => {
                self.pos += 1;
                let len = self.be(1 << (m - 0xc4))?;
                return self.take(usize::try_from(len).ok()?).map(Value::Bin);
            }
            0xcc..=0xcf => {
                self.pos += 1;
                let v = self.be(1 << (m - 0xcc))?;
                return Some(i64::try_from(v).map_or(Value::Other, Value::Int));
            }
            0xd0..=0xd3 => {
                self.pos += 1;
                let n = 1usize << (m - 0xd0);
                let v = self.be(n)?;
                // sign-extend the n-byte two's complement value
                let shift = 64 - 8 * n as u32;
                return Some(Value::Int(((v << shift) as i64) >> shift));
            }
            m if is_map(m) => {
                let start = self.pos;
                self.skip()?;
                return Some(Value::Map(&self.buf[start..self.pos]));
            }
            _ => {
                self.skip()?;
                return Some(Value::Other);
            }
        };
        self.pos += 1;
        Some(v)
    }

    /// Skips one value, containers included (iteratively: nesting costs no stack).
    fn skip(&mut self) -> Option<()> {
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let m = self.byte()?;
            let (skip, items): (u64, u64) = match m {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
                0x80..=0x8f => (0, 2 * u64::from(m & 0x0f)),
                0x90..=0x9f => (0, u64::from(m & 0x0f)),
                0xa0..=0xbf => (u64::from(m & 0x1f), 0),
                0xc4..=0xc6 => (self.be(1 << (m - 0xc4))?, 0),
                0xc7..=0xc9 => (self.be(1 << (m - 0xc7))? + 1, 0),
                0xca => (4, 0),
                0xcb => (8, 0),
                0xcc..=0xcf => (1 << (m - 0xcc), 0),
                0xd0..=0xd3 => (1 << (m - 0xd0), 0),
                0xd4..=0xd8 => (1 + (1 << (m - 0xd4)), 0),
                0xd9..=0xdb => (self.be(1 << (m - 0xd9))?, 0),
                0xdc => (0, self.be(2)?),
                0xdd => (0, self.be(4)?),
                0xde => (0, 2 * self.be(2)?),
                0xdf => (0, 2 * self.be(4)?),
                _ => return None, // 0xc1: never used
            };
            self.take(usize::try_from(skip).ok()?)?;
            pending = pending.checked_add(items)?;
            // every pending item takes at least one byte: a count beyond the input is malformed
            if pending > (self.buf.len() - self.pos) as u64 {
                return None;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Vec<u8> {
        assert!(v.len() < 32);
        let mut o = vec![0xa0 | v.len() as u8];
        o.extend_from_slice(v.as_bytes());
        o
    }

    /// version byte + fixmap of the given (key, encoded value) pairs
    fn record(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut o = vec![RECORD_VERSION, 0x80 | entries.len() as u8];
        for (k, v) in entries {
            o.extend(s(k));
            o.extend_from_slice(v);
        }
        o
    }

    #[test]
    fn reads_fields_and_attrs_and_skips_the_rest() {
        let mut attrs = vec![0x82];
        attrs.extend(s("Modality"));
        attrs.extend(s("CT"));
        attrs.extend(s("InstanceNumber"));
        attrs.extend(s("7"));
        let raw = record(&[
            ("sop_uid", s("1.2.3")),
            ("hash", vec![0xc4, 3, 1, 2, 3]),
            ("received_at", vec![0xcb, 0, 0, 0, 0, 0, 0, 0, 1]),
            ("instance_number", vec![0xcd, 0x01, 0x00]),
            ("nested", vec![0x92, 0x81, 0xa1, b'a', 0x90, 0xc3]),
            ("attrs", attrs),
            ("neg", vec![0xd1, 0xff, 0x85]),
        ]);
        let p =
            pick(&raw, &["sop_uid", "instance_number", "missing", "neg", "hash"], &["InstanceNumber", "X"])
                .expect("readable");
        assert_eq!(
            p.fields,
            vec![
                Value::Str("1.2.3"),
                Value::Int(256),
                Value::Absent,
                Value::Int(-123),
                Value::Bin(&[1, 2, 3])
            ]
        );
        assert_eq!(p.attrs, vec![Value::Str("7"), Value::Absent]);
        assert!(p.attrs_map);
    }

    #[test]
    fn nil_attrs_and_duplicate_keys() {
        let raw = record(&[("a", s("x")), ("attrs", vec![0xc0]), ("a", vec![0xc0]), ("b", vec![0xff])]);
        let p = pick(&raw, &["a", "b"], &["K"]).expect("readable");
        assert_eq!(p.fields, vec![Value::Nil, Value::Int(-1)]);
        assert_eq!(p.attrs, vec![Value::Absent]);
        assert!(!p.attrs_map);
    }

    #[test]
    fn hands_back_what_it_cannot_read() {
        let good = record(&[("a", s("x"))]);
        assert!(pick(&good, &["a"], &[]).is_some());
        let mut wrong_version = good.clone();
        wrong_version[0] = 2;
        assert_eq!(pick(&wrong_version, &["a"], &[]), None);
        let mut trailing = good.clone();
        trailing.push(0xc0);
        assert_eq!(pick(&trailing, &["a"], &[]), None);
        assert_eq!(pick(&good[..good.len() - 1], &["a"], &[]), None); // truncated
        assert_eq!(pick(&[RECORD_VERSION, 0x91, 0xc0], &["a"], &[]), None); // not a map
        assert_eq!(pick(&record(&[("a", vec![0xa1, 0xff])]), &["a"], &[]), None); // not UTF-8
        assert_eq!(pick(&record(&[("attrs", vec![0x90])]), &[], &["K"]), None); // attrs not a map
        assert_eq!(pick(&record(&[("a", vec![0xdd, 0xff, 0xff, 0xff, 0xff])]), &[], &[]), None);
        assert_eq!(pick(&[], &[], &[]), None);
        let mut int_key = vec![RECORD_VERSION, 0x81, 0x01];
        int_key.extend(s("x"));
        assert_eq!(pick(&int_key, &["a"], &[]), None);
    }

    /// fixmap of (key, encoded value) pairs
    fn map(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut o = vec![0x80 | entries.len() as u8];
        for (k, v) in entries {
            o.extend(s(k));
            o.extend_from_slice(v);
        }
        o
    }

    #[test]
    fn maps_are_handed_over_and_counted() {
        let modalities =
            map(&[("MR", vec![2]), ("CT", vec![1]), ("PR", vec![0]), ("SR", vec![0xff]), ("É", vec![1])]);
        let raw = record(&[("modalities", modalities.clone()), ("attrs", vec![0xc0]), ("n", vec![3])]);
        let p = pick(&raw, &["modalities", "n"], &[]).expect("readable");
        assert_eq!(p.fields, vec![Value::Map(&modalities), Value::Int(3)]);
        assert!(!p.attrs_map && p.attrs_nil);
        // zero and negative counts left out, sorted by code point
        assert_eq!(counted_keys(&modalities), Some(vec!["CT", "MR", "É"]));
        // the last of two equal keys counts
        assert_eq!(counted_keys(&map(&[("CT", vec![1]), ("CT", vec![0])])), Some(vec![]));
        assert_eq!(counted_keys(&map(&[("CT", vec![0]), ("CT", vec![5])])), Some(vec!["CT"]));
        assert_eq!(counted_keys(&[0x80]), Some(vec![]));
        // what Python decides: a float or a nil count, a non-text key, trailing bytes, not a map
        assert_eq!(counted_keys(&map(&[("CT", vec![0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0])])), None);
        assert_eq!(counted_keys(&map(&[("CT", vec![0xc0])])), None);
        assert_eq!(counted_keys(&[0x81, 0x01, 0x01]), None);
        assert_eq!(counted_keys(&[0x80, 0xc0]), None);
        assert_eq!(counted_keys(&[0x90]), None);
        assert_eq!(counted_keys(&[0x81, 0xa1]), None); // truncated
        let empty_attrs = record(&[("attrs", map(&[]))]);
        let p = pick(&empty_attrs, &[], &[]).expect("readable");
        assert!(p.attrs_map && !p.attrs_nil);
    }

    #[test]
    fn big_unsigned_is_other_and_long_strings_read() {
        let mut v = vec![0xcf];
        v.extend_from_slice(&u64::MAX.to_be_bytes());
        let long = "x".repeat(300);
        let mut lv = vec![0xda, 0x01, 0x2c];
        lv.extend_from_slice(long.as_bytes());
        let raw = record(&[("big", v), ("long", lv)]);
        let p = pick(&raw, &["big", "long"], &[]).expect("readable");
        assert_eq!(p.fields, vec![Value::Other, Value::Str(&long)]);
    }
}
