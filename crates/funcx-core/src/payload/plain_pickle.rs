//! Decoding pickles of plain values in one pass, each `bytes` object copied once.
//!
//! `serde-pickle` reads a `bytes` object by growing an empty `Vec` to fit it, doubling as
//! it goes: a 16 MiB result is copied about twice and lands in a 32 MiB allocation, which is
//! above what the allocator keeps for reuse, so each one is a fresh mapping whose 4,096 pages
//! fault in one by one. That was most of the time a caller spent decoding large results.
//! And every decode, however small, sets up an 8 KiB read buffer, a 128-slot stack and a
//! memo map: 550 ns for a lone integer, where this takes about 110.
//!
//! Here a pickle made only of plain values (`None`, booleans, small integers, floats,
//! `bytes`, `str`, tuples and lists: what Python writes for them with any protocol up to 5)
//! is parsed in one pass into values that borrow the payload's bytes, and a `bytes` object
//! reaches the visitor as a slice, copied at most once into an allocation of its exact size
//! (`serde_bytes::ByteBuf`). Anything else (dicts, large integers, class instances, memo
//! references, malformed input) is left to `serde-pickle`, as is every value the target
//! type does not accept, so that errors stay `serde-pickle`'s, and so is a pickle nested
//! deeper than [`MAX_NESTING`], where the caller's nesting check reports it: the tree built
//! here, visited and dropped recursively, is never deep enough to overflow a stack.

use super::nesting::{array, take, MAX_NESTING};
use serde::de::value::{Error, SeqDeserializer};
use serde::de::{DeserializeOwned, Deserializer, Error as _, IntoDeserializer, Visitor};
use smallvec::SmallVec;

/// `pickled` decoded into `T` if it holds only plain values and `T` accepts them; `None`
/// leaves the decision (and any error) to `serde-pickle`.
pub(crate) fn decode<T: DeserializeOwned>(pickled: &[u8]) -> Option<T> {
    let value = parse(pickled)?;
    T::deserialize(value).ok()
}

/// One plain Python value, borrowing the pickle's bytes.
#[derive(Debug, PartialEq)]
enum Plain<'a> {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Bytes(&'a [u8]),
    Str(&'a str),
    /// A tuple and how deeply it nests: built whole, never appended to.
    Tuple(Vec<Plain<'a>>, u32),
    /// A list and how deeply it nests, which `APPEND` and `APPENDS` extend. `serde-pickle`
    /// gives tuples and lists alike to a visitor as a sequence.
    List(Vec<Plain<'a>>, u32),
}

impl<'a> Plain<'a> {
    /// How many containers deep the value nests (0 for a scalar).
    fn depth(&self) -> u32 {
        match self {
            Plain::Tuple(_, depth) | Plain::List(_, depth) => *depth,
            _ => 0,
        }
    }

    /// A tuple (or, with `list`, a list) of `items`; `None` past [`MAX_NESTING`], where
    /// the tree would be deep enough to overflow a stack when visited or dropped (the caller
    /// then runs the check that reports it).
    fn container(items: Vec<Plain<'a>>, list: bool) -> Option<Plain<'a>> {
        let depth = nested_in(items.iter().map(Plain::depth).max().unwrap_or(0))?;
        Some(match list {
            true => Plain::List(items, depth),
            false => Plain::Tuple(items, depth),
        })
    }
}

/// The depth of a container holding an item `depth` deep, if within [`MAX_NESTING`].
fn nested_in(depth: u32) -> Option<u32> {
    Some(depth + 1).filter(|&depth| depth <= MAX_NESTING)
}

/// Opcodes of the pickle protocol (`pickletools` names), the ones parsed here.
mod op {
    pub const PROTO: u8 = 0x80;
    pub const FRAME: u8 = 0x95;
    pub const STOP: u8 = b'.';
    pub const MARK: u8 = b'(';
    pub const NONE: u8 = b'N';
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const BINFLOAT: u8 = b'G';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const BINBYTES: u8 = b'B';
    pub const BINBYTES8: u8 = 0x8e;
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE: u8 = b'X';
    pub const BINUNICODE8: u8 = 0x8d;
    pub const MEMOIZE: u8 = 0x94;
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const TUPLE: u8 = b't';
    pub const EMPTY_LIST: u8 = b']';
    pub const LIST: u8 = b'l';
    pub const APPEND: u8 = b'a';
    pub const APPENDS: u8 = b'e';
}

/// Runs the pickle machine over `pickled` as `serde-pickle` does, for the plain opcodes
/// only; `None` at the first other opcode, on malformed input, or when the machine does not
/// end with exactly one value and nothing after its `STOP`.
fn parse(pickled: &[u8]) -> Option<Plain<'_>> {
    let mut input = pickled;
    // The current stack, and those under its MARKs (as in serde-pickle, a MARK starts a
    // new stack: nothing under it can be popped until the mark is). The current one is on
    // the thread's stack while short, so a pickled number or string needs no allocation;
    // those under a MARK are plain vectors, 24 bytes a MARK however many a hostile pickle
    // holds.
    let mut stack: SmallVec<[Plain; 4]> = SmallVec::new();
    let mut marked: Vec<Vec<Plain>> = Vec::new();
    loop {
        let opcode = *take(&mut input, 1)?.first()?;
        match opcode {
            op::PROTO => {
                take(&mut input, 1)?;
            }
            op::FRAME => {
                take(&mut input, 8)?;
            }
            op::STOP => {
                let value = stack.pop()?;
                return (stack.is_empty() && marked.is_empty() && input.is_empty())
                    .then_some(value);
            }
            op::MARK => marked.push(std::mem::take(&mut stack).into_vec()),
            op::NONE => stack.push(Plain::None),
            op::NEWTRUE => stack.push(Plain::Bool(true)),
            op::NEWFALSE => stack.push(Plain::Bool(false)),
            op::BININT => stack.push(Plain::Int(i32::from_le_bytes(array(&mut input)?).into())),
            op::BININT1 => stack.push(Plain::Int(take(&mut input, 1)?[0].into())),
            op::BININT2 => stack.push(Plain::Int(u16::from_le_bytes(array(&mut input)?).into())),
            op::BINFLOAT => stack.push(Plain::Float(f64::from_be_bytes(array(&mut input)?))),
            op::SHORT_BINBYTES | op::BINBYTES | op::BINBYTES8 => {
                let len = length(&mut input, opcode)?;
                stack.push(Plain::Bytes(take(&mut input, len)?));
            }
            op::SHORT_BINUNICODE | op::BINUNICODE | op::BINUNICODE8 => {
                let len = length(&mut input, opcode)?;
                let text = std::str::from_utf8(take(&mut input, len)?).ok()?;
                stack.push(Plain::Str(text));
            }
            // The memo only matters to a later GET, which is not a plain opcode.
            op::MEMOIZE | op::BINPUT | op::LONG_BINPUT => {
                stack.last()?;
                let arg = match opcode {
                    op::BINPUT => 1,
                    op::LONG_BINPUT => 4,
                    _ => 0,
                };
                take(&mut input, arg)?;
            }
            op::EMPTY_TUPLE => stack.push(Plain::Tuple(Vec::new(), 1)),
            op::EMPTY_LIST => stack.push(Plain::List(Vec::new(), 1)),
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let n = usize::from(opcode - op::TUPLE1) + 1;
                let items = stack.drain(stack.len().checked_sub(n)?..).collect();
                stack.push(Plain::container(items, false)?);
            }
            op::TUPLE | op::LIST => {
                let items = std::mem::replace(&mut stack, SmallVec::from_vec(marked.pop()?));
                stack.push(Plain::container(items.into_vec(), opcode == op::LIST)?);
            }
            op::APPEND => {
                let item = stack.pop()?;
                let Plain::List(list, depth) = stack.last_mut()? else {
                    return None;
                };
                *depth = (*depth).max(nested_in(item.depth())?);
                list.push(item);
            }
            op::APPENDS => {
                let items = std::mem::replace(&mut stack, SmallVec::from_vec(marked.pop()?));
                let Plain::List(list, depth) = stack.last_mut()? else {
                    return None;
                };
                let deepest = items.iter().map(Plain::depth).max().unwrap_or(0);
                *depth = (*depth).max(nested_in(deepest)?);
                list.extend(items);
            }
            _ => return None,
        }
    }
}

/// The length argument of a `bytes` or `str` opcode: one byte for the short forms, four
/// for the plain ones, eight for the `8` forms, little-endian.
fn length(input: &mut &[u8], opcode: u8) -> Option<usize> {
    match opcode {
        op::SHORT_BINBYTES | op::SHORT_BINUNICODE => Some(take(input, 1)?[0].into()),
        op::BINBYTES | op::BINUNICODE => usize::try_from(u32::from_le_bytes(array(input)?)).ok(),
        _ => usize::try_from(u64::from_le_bytes(array(input)?)).ok(),
    }
}

/// Gives each value to a visitor as `serde-pickle` gives the same value. Enums are
/// refused (`serde-pickle` has rules of its own for them).
impl<'de> Deserializer<'de> for Plain<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Plain::None => visitor.visit_unit(),
            Plain::Bool(v) => visitor.visit_bool(v),
            Plain::Int(v) => visitor.visit_i64(v),
            Plain::Float(v) => visitor.visit_f64(v),
            Plain::Bytes(v) => visitor.visit_borrowed_bytes(v),
            Plain::Str(v) => visitor.visit_borrowed_str(v),
            Plain::Tuple(items, _) | Plain::List(items, _) => {
                visitor.visit_seq(SeqDeserializer::new(items.into_iter()))
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Plain::None => visitor.visit_none(),
            value => visitor.visit_some(value),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Error> {
        Err(Error::custom("enums are left to serde-pickle"))
    }

    serde::forward_to_deserialize_any! {
        bool u8 u16 u32 u64 i8 i16 i32 i64 f32 f64 char str string unit seq
        bytes byte_buf map tuple_struct struct identifier
        tuple ignored_any unit_struct
    }
}

impl<'de> IntoDeserializer<'de, Error> for Plain<'de> {
    type Deserializer = Plain<'de>;

    fn into_deserializer(self) -> Plain<'de> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;

    fn by_serde_pickle<T: DeserializeOwned>(pickled: &[u8]) -> T {
        serde_pickle::from_slice(pickled, serde_pickle::DeOptions::new()).unwrap()
    }

    /// What Python 3.11's `pickle.Pickler(out, 4).dump((7, data))` writes for a large
    /// `data`: the bytes outside any frame, memoized, then the tuple.
    fn python_pair(number: u8, data: &[u8]) -> Vec<u8> {
        let mut out = vec![op::PROTO, 4, op::BININT1, number, op::BINBYTES];
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(&[op::FRAME, 4, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&[op::MEMOIZE, op::TUPLE2, op::MEMOIZE, op::STOP]);
        out
    }

    #[test]
    fn a_large_bytes_result_is_copied_once_into_a_buffer_of_its_size() {
        let data: Vec<u8> = (0..(1 << 20) + 3).map(|i| (i % 251) as u8).collect();
        let pickled = python_pair(7, &data);
        let (number, back): (i64, ByteBuf) = decode(&pickled).unwrap();
        assert_eq!(number, 7);
        assert_eq!(back.as_slice(), data.as_slice());
        let back = back.into_vec();
        assert_eq!(back.capacity(), data.len(), "allocated at its exact size");

        // serde-pickle agrees on the value; its buffer grew by doubling.
        let (number, slow): (i64, ByteBuf) = by_serde_pickle(&pickled);
        assert_eq!((number, slow.as_slice()), (7, data.as_slice()));
        assert!(slow.into_vec().capacity() > data.len());
    }

    #[test]
    fn plain_values_decode_as_serde_pickle_decodes_them() {
        type Mixed = (
            Option<i64>,
            bool,
            i64,
            f64,
            String,
            Vec<ByteBuf>,
            Vec<i64>,
            (),
        );
        let value: Mixed = (
            None,
            true,
            -70_000,
            2.5,
            "snowman ☃".to_string(),
            vec![ByteBuf::from(vec![1; 100_000]), ByteBuf::from(vec![2; 3])],
            (0..2_500).collect(), // more than one APPENDS batch
            (),
        );
        let pickled = serde_pickle::to_vec(&value, serde_pickle::SerOptions::new()).unwrap();
        assert!(
            parse(&pickled).is_some(),
            "serde-pickle's own output is plain"
        );
        let fast: Mixed = decode(&pickled).unwrap();
        assert_eq!(fast, value);
        assert_eq!(fast, by_serde_pickle::<Mixed>(&pickled));

        // Python's protocol 4 for (1, 2.5, None, True, 'abc', b'..', ()): MARK ... TUPLE,
        // a memoized str, frames.
        let mut python = vec![op::PROTO, 4, op::FRAME, 20, 0, 0, 0, 0, 0, 0, 0, op::MARK];
        python.extend_from_slice(&[op::BININT1, 1, op::BINFLOAT]);
        python.extend_from_slice(&2.5_f64.to_be_bytes());
        python.extend_from_slice(&[op::NONE, op::NEWTRUE, op::SHORT_BINUNICODE, 3]);
        python.extend_from_slice(b"abc");
        python.extend_from_slice(&[op::MEMOIZE, op::SHORT_BINBYTES, 2, 9, 9]);
        python.extend_from_slice(&[op::MEMOIZE, op::EMPTY_TUPLE, op::TUPLE, op::MEMOIZE]);
        python.push(op::STOP);
        type Python = (i64, f64, Option<i64>, bool, String, ByteBuf, Vec<i64>);
        let fast: Python = decode(&python).unwrap();
        assert_eq!(fast, by_serde_pickle::<Python>(&python));
        assert_eq!(fast.5.as_slice(), [9, 9]);
    }

    #[test]
    fn bytes_appended_to_a_tuple_are_refused_as_serde_pickle_refuses_them() {
        // `80 04 ) B<70,000 bytes> a .`: malformed, an item appended to a tuple.
        let mut pickled = vec![op::PROTO, 4, op::EMPTY_TUPLE, op::BINBYTES];
        pickled.extend_from_slice(&70_000_u32.to_le_bytes());
        pickled.resize(pickled.len() + 70_000, 7);
        pickled.extend_from_slice(&[op::APPEND, op::STOP]);
        assert!(parse(&pickled).is_none());
        assert!(decode::<Vec<ByteBuf>>(&pickled).is_none());
        assert!(
            serde_pickle::from_slice::<Vec<ByteBuf>>(&pickled, serde_pickle::DeOptions::new())
                .is_err()
        );
        // The same bytes appended to a list are plain.
        pickled[2] = op::EMPTY_LIST;
        let fast: Vec<ByteBuf> = decode(&pickled).unwrap();
        assert_eq!(fast, by_serde_pickle::<Vec<ByteBuf>>(&pickled));
    }

    #[test]
    fn anything_else_is_left_to_serde_pickle() {
        let data = vec![5_u8; 1000];
        // A dict, an integer over 64 bits, an enum: not plain, or not decoded here.
        let dict = std::collections::BTreeMap::from([("k".to_string(), ByteBuf::from(data))]);
        let pickled = serde_pickle::to_vec(&dict, serde_pickle::SerOptions::new()).unwrap();
        assert!(parse(&pickled).is_none());
        let big = serde_pickle::to_vec(&u64::MAX, serde_pickle::SerOptions::new()).unwrap();
        assert!(parse(&big).is_none());
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        enum Shape {
            Square(i64),
        }
        let pickled =
            serde_pickle::to_vec(&Shape::Square(4), serde_pickle::SerOptions::new()).unwrap();
        assert!(decode::<Shape>(&pickled).is_none());
        assert_eq!(by_serde_pickle::<Shape>(&pickled), Shape::Square(4));

        // A value the type does not take: serde-pickle's error decides.
        let pickled = python_pair(1, b"abc");
        assert!(decode::<(i64, String, i64)>(&pickled).is_none());
        assert!(decode::<ByteBuf>(&pickled).is_none());

        // Malformed: truncated anywhere, trailing bytes, an unbalanced MARK, two values.
        for cut in 0..pickled.len() {
            assert!(parse(&pickled[..cut]).is_none(), "cut at {cut}");
        }
        let mut trailing = pickled.clone();
        trailing.push(0);
        assert!(parse(&trailing).is_none());
        assert!(parse(&[op::PROTO, 4, op::MARK, op::NONE, op::STOP]).is_none());
        assert!(parse(&[op::NONE, op::NONE, op::STOP]).is_none());
        assert!(parse(&[op::NONE, op::APPEND, op::STOP]).is_none());
        assert!(parse(&[op::EMPTY_TUPLE, op::NONE, op::APPEND, op::STOP]).is_none());
        assert!(parse(&[op::EMPTY_TUPLE, op::MARK, op::NONE, op::APPENDS, op::STOP]).is_none());
        // Nested deeper than the limit: left to the caller's check, which refuses it.
        let wrapped = |depth| {
            let mut pickled = vec![op::NONE];
            pickled.extend(std::iter::repeat_n(op::TUPLE1, depth));
            pickled.push(op::STOP);
            pickled
        };
        assert!(parse(&wrapped(MAX_NESTING as usize)).is_some());
        assert!(parse(&wrapped(MAX_NESTING as usize + 1)).is_none());
        assert!(parse(&[op::MEMOIZE, op::NONE, op::STOP]).is_none());
        assert!(parse(&[op::BINBYTES, 255, 255, 255, 255, 1, op::STOP]).is_none());
    }
}
