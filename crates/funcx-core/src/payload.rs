//! Payloads: the bytes of arguments and results.

use std::fmt;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::TaskError;

/// The encoding of a [`Payload`]'s bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Format {
    /// Python's pickle format, any protocol Python reads.
    Pickle,
}

/// The serialized bytes of one argument or one result.
///
/// A Rust value becomes a payload with [`Payload::pickle`] (any `Serialize`, through
/// `serde-pickle`) and comes back with [`Payload::decode`] (any `Deserialize`). A payload Rust
/// cannot decode, such as a pickled numpy array, stays opaque bytes: keep it and pass it to
/// another task as an argument with [`crate::Args::payload`].
///
/// Cloning is cheap: the bytes are shared.
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
    bytes: Bytes,
}

impl Payload {
    /// Pickles `value`.
    ///
    /// Rust strings become `str`, `Vec` and slices `list`, tuples `tuple`, maps and structs
    /// `dict`, `Option::None` and `()` become `None`. For Python `bytes`, wrap the data in
    /// `serde_bytes::ByteBuf` or `serde_bytes::Bytes` (a plain `Vec<u8>` is a list of ints).
    pub fn pickle<T: Serialize + ?Sized>(value: &T) -> Result<Payload, TaskError> {
        // Protocol 3 keeps the output readable by every Python 3.
        let bytes = serde_pickle::to_vec(&value, serde_pickle::SerOptions::new())
            .map_err(TaskError::serialize)?;
        Ok(Payload {
            format: Format::Pickle,
            bytes: Bytes::from(bytes),
        })
    }

    /// A payload from bytes that are already pickled (by Python, or stored earlier).
    pub fn from_pickled(bytes: impl Into<Bytes>) -> Payload {
        Payload {
            format: Format::Pickle,
            bytes: bytes.into(),
        }
    }

    /// Decodes the payload into a Rust value.
    ///
    /// Fails with a [`TaskError::is_serialization`] error when the bytes hold something the
    /// type cannot represent, or a Python object with no Rust equivalent (a class instance,
    /// a numpy array); the payload itself is untouched and can still be passed on.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, TaskError> {
        match self.format {
            Format::Pickle => serde_pickle::from_slice(&self.bytes, serde_pickle::DeOptions::new())
                .map_err(TaskError::decode),
        }
    }

    /// The encoding of the bytes.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The serialized bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The serialized bytes, shared without a copy.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The number of serialized bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether there are no bytes at all (never the case for a valid pickle).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("format", &self.format)
            .field("len", &self.bytes.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
    fn decoding_into_the_wrong_type_is_a_serialization_error() {
        let payload = Payload::pickle("text").unwrap();
        let err = payload.decode::<i64>().unwrap_err();
        assert!(err.is_serialization(), "{err}");
    }

    #[test]
    fn garbage_bytes_do_not_panic() {
        let err = Payload::from_pickled(&b"\x80\x05not a pickle"[..])
            .decode::<i64>()
            .unwrap_err();
        assert!(err.is_serialization());
    }
}
