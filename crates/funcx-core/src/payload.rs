//! Payloads: the bytes of arguments and results.

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::TaskError;

/// Pickles of plain values, decoded without `serde-pickle`'s buffers.
pub(crate) mod plain_pickle;

/// The nesting limit checked before `serde-pickle` decodes a pickle.
mod nesting;

/// The encoding of a [`Payload`]'s bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Format {
    /// Python's pickle format, any protocol Python reads. Loading a pickle can run any
    /// code, so an endpoint may refuse it (see [`crate::ExecutorBuilder::allowed_formats`]).
    Pickle,
    /// JSON text (UTF-8): numbers, strings, booleans, `null`, lists and objects. The worker
    /// reads it with `json.loads`, which builds plain values and runs no code, and a task
    /// whose arguments are JSON returns its result as JSON.
    Json,
}

impl Format {
    /// The format's name in configuration files and the HTTP API: `"pickle"` or `"json"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Pickle => "pickle",
            Format::Json => "json",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The serialized bytes of one argument or one result.
///
/// A Rust value becomes a payload with [`Payload::pickle`] (any `Serialize`, through
/// `serde-pickle`) and comes back with [`Payload::decode`] (any `Deserialize`). A payload Rust
/// cannot decode, such as a pickled numpy array, stays opaque bytes: keep it and pass it to
/// another task as an argument with [`crate::Args::payload`].
///
/// Cloning is cheap: a payload of up to 22 bytes (a number, a short string, `None`: most
/// arguments and results of fan-out work) is held in place, and a larger one's bytes are
/// shared.
///
/// ```
/// use funcx_core::Payload;
///
/// let payload = Payload::pickle(&vec![1_i64, 2, 3]).unwrap();
/// let back: Vec<i64> = payload.decode().unwrap();
/// assert_eq!(back, [1, 2, 3]);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Payload {
    format: Format,
    #[serde(
        serialize_with = "lent_or_written",
        deserialize_with = "shared_or_copied"
    )]
    bytes: Repr,
}

/// The most bytes a payload holds in place, without an allocation of its own.
const IN_PLACE: usize = 22;

/// Where a payload's bytes are.
///
/// Small payloads are held in place because each allocation of a task's payload is made on
/// one thread and freed on another (the caller's, a connection's, the dispatcher's): for
/// no-op tasks those allocations, not the work, were what the system allocator spent its
/// time on.
#[derive(Clone)]
enum Repr {
    /// Up to [`IN_PLACE`] bytes: `data[..len]`.
    InPlace { len: u8, data: [u8; IN_PLACE] },
    /// More bytes, shared by every clone.
    Shared(Bytes),
}

impl Repr {
    /// Holds `slice` in place when it is small enough, else copies it.
    fn copy_from_slice(slice: &[u8]) -> Repr {
        Repr::in_place(slice).unwrap_or_else(|| Repr::Shared(Bytes::copy_from_slice(slice)))
    }

    /// `slice` held in place, if it is small enough.
    fn in_place(slice: &[u8]) -> Option<Repr> {
        let mut data = [0; IN_PLACE];
        data.get_mut(..slice.len())?.copy_from_slice(slice);
        Some(Repr::InPlace {
            len: slice.len() as u8,
            data,
        })
    }

    /// The bytes, wherever they are.
    fn as_slice(&self) -> &[u8] {
        match self {
            Repr::InPlace { len, data } => &data[..usize::from(*len)],
            Repr::Shared(bytes) => bytes,
        }
    }
}

impl From<Bytes> for Repr {
    fn from(bytes: Bytes) -> Repr {
        Repr::in_place(&bytes).unwrap_or(Repr::Shared(bytes))
    }
}

impl From<Vec<u8>> for Repr {
    fn from(bytes: Vec<u8>) -> Repr {
        Repr::in_place(&bytes).unwrap_or_else(|| Repr::Shared(Bytes::from(bytes)))
    }
}

impl PartialEq for Repr {
    fn eq(&self, other: &Repr) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Repr {}

impl std::hash::Hash for Repr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

/// Serializer output for [`Payload::pickle`] and [`Payload::json`]: on the stack while it
/// fits in place.
type Encoded = smallvec::SmallVec<[u8; IN_PLACE]>;

/// Held in place when small enough however it was grown (a size hint may have spilled it).
impl From<Encoded> for Repr {
    fn from(encoded: Encoded) -> Repr {
        Repr::in_place(&encoded).unwrap_or_else(|| Repr::Shared(Bytes::from(encoded.into_vec())))
    }
}

/// Payloads at least this large may share the buffer they were decoded from.
const SHARE_MIN: usize = 64 * 1024;

thread_local! {
    /// The buffer being decoded by [`Payload::with_shared_source`] on this thread.
    static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
    /// Within [`Payload::with_lent_payloads`] on this thread: `Some`, holding the large
    /// payload being serialized, if any.
    static LENT: RefCell<Option<Option<Bytes>>> = const { RefCell::new(None) };
}

impl Payload {
    /// Pickles `value`.
    ///
    /// Rust strings become `str`, `Vec` and slices `list`, tuples `tuple`, maps and structs
    /// `dict`, `Option::None` and `()` become `None`. For Python `bytes`, wrap the data in
    /// `serde_bytes::ByteBuf` or `serde_bytes::Bytes` (a plain `Vec<u8>` is a list of ints).
    pub fn pickle<T: Serialize + ?Sized>(value: &T) -> Result<Payload, TaskError> {
        // Protocol 3 keeps the output readable by every Python 3.
        let mut bytes = Encoded::new();
        serde_pickle::to_writer(&mut bytes, &value, serde_pickle::SerOptions::new())
            .map_err(TaskError::serialize)?;
        Ok(Payload {
            format: Format::Pickle,
            bytes: bytes.into(),
        })
    }

    /// A payload from bytes that are already pickled (by Python, or stored earlier).
    pub fn from_pickled(bytes: impl Into<Bytes>) -> Payload {
        Payload {
            format: Format::Pickle,
            bytes: Repr::from(bytes.into()),
        }
    }

    /// Encodes `value` as JSON, for an endpoint that refuses pickles or a caller in another
    /// language.
    ///
    /// Python sees what `json.loads` makes of it: maps become `dict` (their keys must be
    /// strings), sequences and tuples `list`, `None` and `()` `None`. A task whose arguments
    /// are all JSON gets its result back as JSON, decoded with [`Payload::decode`] as usual.
    ///
    /// ```
    /// use funcx_core::{Format, Payload};
    ///
    /// let payload = Payload::json(&(1, "two", [3.5])).unwrap();
    /// assert_eq!(payload.format(), Format::Json);
    /// assert_eq!(payload.as_bytes(), br#"[1,"two",[3.5]]"#);
    /// ```
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Payload, TaskError> {
        let mut bytes = Encoded::new();
        serde_json::to_writer(&mut bytes, value).map_err(TaskError::serialize)?;
        Ok(Payload {
            format: Format::Json,
            bytes: bytes.into(),
        })
    }

    /// A payload from bytes that are already JSON text (a worker's result, or a body received
    /// over HTTP). The bytes are not checked here: the worker or [`Payload::decode`] reports
    /// text that is not JSON.
    pub fn from_json(bytes: impl Into<Bytes>) -> Payload {
        Payload {
            format: Format::Json,
            bytes: Repr::from(bytes.into()),
        }
    }

    /// Decodes the payload into a Rust value.
    ///
    /// Fails with a [`TaskError::is_serialization`] error when the bytes hold something the
    /// type cannot represent, or a Python object with no Rust equivalent (a class instance,
    /// a numpy array); the payload itself is untouched and can still be passed on. A pickle
    /// whose containers nest more than 128 levels deep (as deep as `serde_json` allows JSON)
    /// fails the same way, before a tree that deep is built, since decoding it could
    /// overflow the thread's stack.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        match self.format {
            Format::Pickle => match plain_pickle::decode(self.as_bytes()) {
                Some(value) => Ok(value),
                // The plain parser stops at the nesting limit; serde-pickle has none.
                None => {
                    nesting::check(self.as_bytes()).map_err(TaskError::decode)?;
                    serde_pickle::from_slice(self.as_bytes(), serde_pickle::DeOptions::new())
                        .map_err(TaskError::decode)
                }
            },
            Format::Json => serde_json::from_slice(self.as_bytes()).map_err(TaskError::decode),
        }
    }

    /// The encoding of the bytes.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The serialized bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// The serialized bytes as [`Bytes`]: shared without a copy, except for a payload of up
    /// to 22 bytes, which is held in place and copied here.
    pub fn to_bytes(&self) -> Bytes {
        match &self.bytes {
            Repr::InPlace { .. } => Bytes::copy_from_slice(self.as_bytes()),
            Repr::Shared(bytes) => bytes.clone(),
        }
    }

    /// The number of serialized bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether there are no bytes at all (never the case for a valid pickle).
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }
}

impl Payload {
    /// Runs `decode`, a deserialization of `source`, so that the large payloads it produces
    /// share `source`'s memory instead of copying out of it.
    ///
    /// A connection reads a message into one buffer and decodes it; without this, every
    /// large argument or result is copied once more on each hop, and that copy's fresh pages
    /// fault in one by one. A payload shares the buffer only when it is at least 64 KiB and
    /// at least half of `source`, so a small payload never keeps a large buffer alive. Only
    /// formats that lend out their input's bytes (postcard does) share; others copy, as
    /// before.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use funcx_core::Payload;
    ///
    /// let payload = Payload::from_pickled(vec![7_u8; 1 << 20]);
    /// let frame = Bytes::from(postcard::to_stdvec(&payload).unwrap());
    /// let back: Payload = Payload::with_shared_source(&frame, |bytes| postcard::from_bytes(bytes)).unwrap();
    /// assert_eq!(back, payload);
    /// // The payload points into the frame: no copy was made.
    /// assert!(frame.as_ptr_range().contains(&back.as_bytes().as_ptr()));
    /// ```
    pub fn with_shared_source<R>(source: &Bytes, decode: impl FnOnce(&[u8]) -> R) -> R {
        let outer = SOURCE.with(|cell| cell.replace(Some(source.clone())));
        let decoded = decode(source);
        SOURCE.with(|cell| *cell.borrow_mut() = outer);
        decoded
    }
}

impl Payload {
    /// Runs `encode`, a serialization, so that its output can refer to large payloads
    /// instead of holding copies of them: within it, [`Payload::lent`] hands back the bytes
    /// of the payload being serialized when the serializer is about to copy them.
    ///
    /// The mirror of [`Payload::with_shared_source`] for writing: a connection encodes a
    /// message into its write buffer, and without this every large argument or result is
    /// copied into that buffer on its way out. A serializer's output (postcard's, say) that
    /// meets a slice [`Payload::lent`] recognises can keep the returned [`Bytes`] in its place
    /// and write it from its own memory. Payloads of at least 64 KiB are lent; the bytes
    /// serialized are the same either way.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use funcx_core::Payload;
    ///
    /// /// Postcard output that keeps large payloads by reference.
    /// #[derive(Default)]
    /// struct Parts {
    ///     bytes: Vec<u8>,
    ///     lent: Vec<Bytes>,
    /// }
    ///
    /// impl postcard::ser_flavors::Flavor for Parts {
    ///     type Output = Parts;
    ///     fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
    ///         self.bytes.push(byte);
    ///         Ok(())
    ///     }
    ///     fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
    ///         match Payload::lent(data) {
    ///             Some(shared) => self.lent.push(shared),
    ///             None => self.bytes.extend_from_slice(data),
    ///         }
    ///         Ok(())
    ///     }
    ///     fn finalize(self) -> postcard::Result<Parts> {
    ///         Ok(self)
    ///     }
    /// }
    ///
    /// let payload = Payload::from_pickled(vec![7_u8; 1 << 20]);
    /// let parts = Payload::with_lent_payloads(|| {
    ///     postcard::serialize_with_flavor(&payload, Parts::default())
    /// })
    /// .unwrap();
    /// assert_eq!(parts.bytes.len(), 4, "the format and the length, not the 1 MiB");
    /// assert_eq!(parts.lent, [payload.to_bytes()]);
    /// ```
    pub fn with_lent_payloads<R>(encode: impl FnOnce() -> R) -> R {
        let outer = LENT.with(|cell| cell.replace(Some(None)));
        let encoded = encode();
        LENT.with(|cell| *cell.borrow_mut() = outer);
        encoded
    }

    /// Within [`Payload::with_lent_payloads`]: when `slice` is exactly the bytes of the
    /// large payload being serialized, those bytes, shared (once: a second call for the same
    /// slice returns `None`). `None` for anything else, and outside it.
    pub fn lent(slice: &[u8]) -> Option<Bytes> {
        if slice.len() < SHARE_MIN {
            return None;
        }
        LENT.with(|cell| {
            let mut cell = cell.borrow_mut();
            let current = cell.as_mut()?;
            match current {
                Some(bytes) if bytes.as_ptr() == slice.as_ptr() && bytes.len() == slice.len() => {
                    current.take()
                }
                _ => None,
            }
        })
    }
}

/// A payload's bytes, written by the serializer; within [`Payload::with_lent_payloads`], a
/// large one is first offered to [`Payload::lent`].
fn lent_or_written<S: serde::Serializer>(bytes: &Repr, serializer: S) -> Result<S::Ok, S::Error> {
    if let Repr::Shared(bytes) = bytes {
        if bytes.len() >= SHARE_MIN {
            LENT.with(|cell| {
                if let Some(current) = cell.borrow_mut().as_mut() {
                    *current = Some(bytes.clone());
                }
            });
        }
    }
    serializer.serialize_bytes(bytes.as_slice())
}

/// A payload's bytes: a slice of the buffer being decoded (see
/// [`Payload::with_shared_source`]) when that is worth it, a copy otherwise.
fn shared_or_copied<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Repr, D::Error> {
    struct Visitor;

    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Repr;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes")
        }

        fn visit_borrowed_bytes<E>(self, v: &'de [u8]) -> Result<Repr, E> {
            if v.len() < SHARE_MIN {
                return Ok(Repr::copy_from_slice(v));
            }
            Ok(SOURCE.with(|cell| match cell.borrow().as_ref() {
                Some(source)
                    if v.len() * 2 >= source.len()
                        && source.as_ptr_range().start <= v.as_ptr_range().start
                        && v.as_ptr_range().end <= source.as_ptr_range().end =>
                {
                    Repr::Shared(source.slice_ref(v))
                }
                _ => Repr::copy_from_slice(v),
            }))
        }

        fn visit_bytes<E>(self, v: &[u8]) -> Result<Repr, E> {
            Ok(Repr::copy_from_slice(v))
        }

        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Repr, E> {
            Ok(Repr::from(v))
        }

        fn visit_str<E>(self, v: &str) -> Result<Repr, E> {
            Ok(Repr::copy_from_slice(v.as_bytes()))
        }

        // Self-describing formats (JSON) may carry bytes as a list of numbers, as `bytes`'
        // own `Deserialize` accepts.
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Repr, A::Error> {
            let mut bytes = Encoded::new();
            bytes.reserve(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(byte) = seq.next_element()? {
                bytes.push(byte);
            }
            Ok(Repr::from(bytes))
        }
    }

    // `deserialize_bytes`, not `_byte_buf`: postcard lends out its input only for the former.
    deserializer.deserialize_bytes(Visitor)
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("format", &self.format)
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn points_into(frame: &Bytes, payload: &Payload) -> bool {
        frame.as_ptr_range().contains(&payload.as_bytes().as_ptr())
    }

    #[test]
    fn large_payloads_share_the_buffer_they_are_decoded_from() {
        let large = Payload::from_pickled(vec![1_u8; 1 << 20]);
        let frame = Bytes::from(postcard::to_stdvec(&large).unwrap());
        let back: Payload =
            Payload::with_shared_source(&frame, |b| postcard::from_bytes(b)).unwrap();
        assert_eq!(back, large);
        assert!(points_into(&frame, &back));
        // Outside `with_shared_source`, decoding copies as before.
        let copied: Payload = postcard::from_bytes(&frame).unwrap();
        assert_eq!(copied, large);
        assert!(!points_into(&frame, &copied));
    }

    #[test]
    fn small_payloads_and_small_shares_of_a_buffer_are_copied() {
        let small = Payload::from_pickled(vec![2_u8; 1024]);
        let frame = Bytes::from(postcard::to_stdvec(&small).unwrap());
        let back: Payload =
            Payload::with_shared_source(&frame, |b| postcard::from_bytes(b)).unwrap();
        assert_eq!(back, small);
        assert!(!points_into(&frame, &back), "a 1 KiB payload is copied");

        // Three 100 KiB payloads in one message: each is a third of it, so none keeps the
        // whole message alive.
        let three: Vec<Payload> = (0..3)
            .map(|i| Payload::from_pickled(vec![i; 100 * 1024]))
            .collect();
        let frame = Bytes::from(postcard::to_stdvec(&three).unwrap());
        let back: Vec<Payload> =
            Payload::with_shared_source(&frame, |b| postcard::from_bytes(b)).unwrap();
        assert_eq!(back, three);
        assert!(back.iter().all(|p| !points_into(&frame, p)));
    }

    #[test]
    fn a_payload_from_another_buffer_is_copied() {
        let large = Payload::from_pickled(vec![3_u8; 1 << 20]);
        let frame = Bytes::from(postcard::to_stdvec(&large).unwrap());
        let other = Bytes::from_static(b"something else");
        let back: Payload =
            Payload::with_shared_source(&other, |_| postcard::from_bytes(&frame)).unwrap();
        assert_eq!(back, large);
        assert!(!points_into(&frame, &back));
    }

    /// Postcard output that notes which slices [`Payload::lent`] recognised.
    #[derive(Default)]
    struct Noting {
        bytes: Vec<u8>,
        lent: Vec<Bytes>,
    }

    impl postcard::ser_flavors::Flavor for Noting {
        type Output = Noting;
        fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
            self.bytes.push(byte);
            Ok(())
        }
        fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
            match Payload::lent(data) {
                Some(shared) => self.lent.push(shared),
                None => self.bytes.extend_from_slice(data),
            }
            Ok(())
        }
        fn finalize(self) -> postcard::Result<Noting> {
            Ok(self)
        }
    }

    #[test]
    fn large_payloads_are_lent_only_while_serialized_within_the_scope() {
        let large = Payload::from_pickled(vec![4_u8; 1 << 20]);
        let small = Payload::from_pickled(vec![5_u8; 1024]);
        let both = (small.clone(), large.clone(), "tail".to_string());
        let noted = Payload::with_lent_payloads(|| {
            postcard::serialize_with_flavor(&both, Noting::default())
        })
        .unwrap();
        assert_eq!(noted.lent.len(), 1, "the large payload, not the small one");
        assert!(std::ptr::eq(
            noted.lent[0].as_ptr(),
            large.as_bytes().as_ptr()
        ));
        // Splicing the lent bytes back in gives exactly the usual encoding.
        let plain = postcard::to_stdvec(&both).unwrap();
        let at = plain.len() - large.len() - 5; // "tail": a length byte and 4 bytes
        let mut spliced = noted.bytes[..at].to_vec();
        spliced.extend_from_slice(&noted.lent[0]);
        spliced.extend_from_slice(&noted.bytes[at..]);
        assert_eq!(spliced, plain);

        // Outside the scope nothing is lent, and inside it only the payload being
        // serialized is, once.
        let outside = postcard::serialize_with_flavor(&large, Noting::default()).unwrap();
        assert!(outside.lent.is_empty());
        assert!(Payload::with_lent_payloads(|| Payload::lent(large.as_bytes())).is_none());
        let copy = large.as_bytes().to_vec();
        Payload::with_lent_payloads(|| {
            let _ = postcard::to_stdvec(&large).unwrap();
            assert!(
                Payload::lent(&copy).is_none(),
                "equal bytes elsewhere are not lent"
            );
            assert!(Payload::lent(large.as_bytes()).is_some());
            assert!(Payload::lent(large.as_bytes()).is_none(), "lent once");
        });
    }

    #[test]
    fn small_payloads_are_held_in_place_and_compare_by_their_bytes() {
        // As large as a shared one: `Bytes` and the format.
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<Payload>(), 40);
        let small = Payload::pickle(&7_i64).unwrap();
        assert!(matches!(small.bytes, Repr::InPlace { .. }));
        let longest = Payload::from_pickled(vec![1_u8; IN_PLACE]);
        assert!(matches!(longest.bytes, Repr::InPlace { .. }));
        let shared = Payload::from_pickled(vec![1_u8; IN_PLACE + 1]);
        assert!(matches!(shared.bytes, Repr::Shared(_)));
        // Held in place or not, equal bytes are equal payloads, hashed alike.
        let same = Payload {
            format: Format::Pickle,
            bytes: Repr::Shared(small.to_bytes()),
        };
        assert_eq!(same, small);
        use std::hash::BuildHasher;
        let state = std::hash::RandomState::new();
        assert_eq!(state.hash_one(&same), state.hash_one(&small));
        // A JSON list of numbers spills its buffer by its size hint, and is still held in
        // place when it fits.
        let listed: Payload =
            serde_json::from_str(r#"{"format":"pickle","bytes":[128,3,78,46]}"#).unwrap();
        assert!(matches!(listed.bytes, Repr::InPlace { .. }));
        // And they survive the wire both ways.
        for payload in [small, longest, shared] {
            let frame = Bytes::from(postcard::to_stdvec(&payload).unwrap());
            let back: Payload =
                Payload::with_shared_source(&frame, |b| postcard::from_bytes(b)).unwrap();
            assert_eq!(back, payload);
            assert_eq!(back.to_bytes(), payload.as_bytes());
        }
    }

    #[test]
    fn round_trips_common_types() {
        let value = (
            1_i64,
            2.5_f64,
            "three".to_string(),
            None::<i32>,
            vec![true, false],
        );
        let back: (i64, f64, String, Option<i32>, Vec<bool>) =
            Payload::pickle(&value).unwrap().decode().unwrap();
        assert_eq!(back, value);

        let mut map = BTreeMap::new();
        map.insert("a".to_string(), 1_i32);
        let back: BTreeMap<String, i32> = Payload::pickle(&map).unwrap().decode().unwrap();
        assert_eq!(back, map);

        let bytes = serde_bytes::ByteBuf::from(vec![0_u8, 255]);
        let back: serde_bytes::ByteBuf = Payload::pickle(&bytes).unwrap().decode().unwrap();
        assert_eq!(back, bytes);
    }

    #[test]
    fn large_bytes_decode_into_buffers_of_their_size() {
        let data = serde_bytes::ByteBuf::from(vec![6_u8; 1 << 20]);
        let payload = Payload::pickle(&(3_i64, &data)).unwrap();
        let (number, back): (i64, serde_bytes::ByteBuf) = payload.decode().unwrap();
        assert_eq!((number, &back), (3, &data));
        assert_eq!(back.into_vec().capacity(), data.len());
        // Into a type that does not fit, it is the usual error.
        let err = payload.decode::<(i64, i64)>().unwrap_err();
        assert!(err.is_serialization(), "{err}");
    }

    #[test]
    fn decoding_into_the_wrong_type_is_a_serialization_error() {
        let payload = Payload::pickle("text").unwrap();
        let err = payload.decode::<i64>().unwrap_err();
        assert!(err.is_serialization(), "{err}");
    }

    #[test]
    fn json_round_trips_common_types() {
        let value = (
            1_i64,
            2.5_f64,
            "three".to_string(),
            None::<i32>,
            vec![true, false],
        );
        let payload = Payload::json(&value).unwrap();
        assert_eq!(payload.format(), Format::Json);
        let back: (i64, f64, String, Option<i32>, Vec<bool>) = payload.decode().unwrap();
        assert_eq!(back, value);

        let err = Payload::from_json(&b"{not json"[..])
            .decode::<i64>()
            .unwrap_err();
        assert!(err.is_serialization(), "{err}");
        // A map with non-string keys has no JSON form.
        let mut map = BTreeMap::new();
        map.insert(vec![1], 1);
        assert!(Payload::json(&map).unwrap_err().is_serialization());
    }

    #[test]
    fn formats_have_stable_names() {
        for (format, name) in [(Format::Pickle, "pickle"), (Format::Json, "json")] {
            assert_eq!(format.as_str(), name);
            assert_eq!(
                serde_json::to_string(&format).unwrap(),
                format!("\"{name}\"")
            );
        }
        // Stored payloads keep their meaning: the variants' postcard indexes never move.
        assert_eq!(postcard::to_stdvec(&Format::Pickle).unwrap(), [0]);
        assert_eq!(postcard::to_stdvec(&Format::Json).unwrap(), [1]);
    }

    #[test]
    fn deeply_nested_pickles_are_a_decode_error_not_a_stack_overflow() {
        // 300,000 and 50,000 lists each appended to the one below, decoded on a Tokio worker's
        // 2 MiB stack: plain values (the plain parser stops at the limit), and the same under
        // a dict (not plain: only serde-pickle would read it).
        let plain = |depth| {
            [0x80, 4]
                .into_iter()
                .chain(std::iter::repeat_n(b']', depth))
        };
        let in_dict = |depth| {
            plain(depth)
                .take(2)
                .chain([b'}'])
                .chain(plain(depth).skip(2))
        };
        for depth in [300_000, 50_000] {
            for start in [plain(depth).collect::<Vec<u8>>(), in_dict(depth).collect()] {
                let mut pickled = start;
                pickled.extend(std::iter::repeat_n(b'a', depth - 1));
                pickled.push(b'.');
                let payload = Payload::from_pickled(pickled);
                let outcome = std::thread::Builder::new()
                    .stack_size(2 << 20)
                    .spawn(move || {
                        (
                            payload.decode::<(String, String, String)>(),
                            payload.decode::<serde_pickle::Value>(),
                        )
                    })
                    .expect("spawn a thread")
                    .join()
                    .expect("no panic");
                for err in [outcome.0.unwrap_err(), outcome.1.unwrap_err()] {
                    assert!(err.is_serialization(), "{err}");
                    assert!(err.to_string().contains("128 levels deep"), "{err}");
                }
            }
        }
    }

    #[test]
    fn garbage_bytes_do_not_panic() {
        let err = Payload::from_pickled(&b"\x80\x05not a pickle"[..])
            .decode::<i64>()
            .unwrap_err();
        assert!(err.is_serialization());
    }
}
