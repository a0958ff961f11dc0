//! Arguments of a task: positional and keyword payloads.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::{Payload, TaskError};

/// The positional and keyword arguments of one call.
///
/// Each argument is its own [`Payload`], so an opaque payload returned by one task (a numpy
/// array, say) can be passed to the next one untouched, next to ordinary Rust values.
///
/// Most calls pass a tuple instead, through [`IntoArgs`]: `executor.submit(&f, (1, "x"))`.
///
/// ```
/// use funcx_core::Args;
///
/// let args = Args::new().arg(&3).arg(&"text").kwarg("scale", &0.5);
/// assert_eq!(args.positional().len(), 2);
/// assert_eq!(args.keyword()[0].0, "scale");
/// ```
///
/// A value that cannot be serialized does not panic and is not dropped: the task submitted
/// with these arguments fails with a [`TaskError::is_serialization`] error that says why.
///
/// Cloning is cheap (the arguments are shared, or a single one held in place), which matters
/// because a task's arguments are kept for a re-run while a copy travels to the worker.
#[derive(Clone, Default)]
pub struct Args {
    repr: Repr,
}

/// How the arguments are held.
///
/// No arguments or one positional argument (a map over a list is one call each) are held in
/// place: a task's arguments are built on the caller's thread, decoded on every hop and freed
/// on another thread, so an allocation here is one per task per hop, and the system allocator
/// pays most for memory freed on another thread than allocated it.
#[derive(Clone, Default)]
enum Repr {
    #[default]
    Empty,
    One(Payload),
    /// Anything else; never zero or one positional argument alone.
    Shared(Arc<Inner>),
}

/// Read from the wire as it is; written through [`Wire`].
#[derive(Clone, Default, Deserialize)]
struct Inner {
    /// Inline up to two, so that a call of two arguments, decoded on every hop, allocates
    /// only the `Arc` on each.
    positional: SmallVec<[Payload; 2]>,
    keyword: Vec<(String, Payload)>,
    /// Why an argument failed to serialize. Never sent anywhere: such arguments are
    /// refused before they leave the process.
    #[serde(skip)]
    error: Option<String>,
}

/// The wire form of arguments: the fields of [`Inner`] (under its name), borrowed from
/// arguments held either way.
#[derive(Serialize)]
#[serde(rename = "Inner")]
struct Wire<'a> {
    positional: &'a [Payload],
    keyword: &'a [(String, Payload)],
}

/// On the wire, arguments are their positional and keyword payloads; how they are held is a
/// local matter.
impl Serialize for Args {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Wire {
            positional: self.positional(),
            keyword: self.keyword(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Inner::deserialize(deserializer).map(Args::from_inner)
    }
}

/// Shows the arguments, not how they are held.
impl fmt::Debug for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Args");
        debug
            .field("positional", &self.positional())
            .field("keyword", &self.keyword());
        if let Some(error) = self.error() {
            debug.field("error", &error);
        }
        debug.finish()
    }
}

impl PartialEq for Args {
    fn eq(&self, other: &Args) -> bool {
        self.positional() == other.positional()
            && self.keyword() == other.keyword()
            && self.error() == other.error()
    }
}

impl Eq for Args {}

impl std::hash::Hash for Args {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.positional().hash(state);
        self.keyword().hash(state);
    }
}

impl Args {
    /// No arguments.
    pub fn new() -> Args {
        Args::default()
    }

    /// Held in place when `inner` is no or one positional argument alone.
    fn from_inner(mut inner: Inner) -> Args {
        let repr =
            if inner.positional.len() <= 1 && inner.keyword.is_empty() && inner.error.is_none() {
                inner.positional.pop().map_or(Repr::Empty, Repr::One)
            } else {
                Repr::Shared(Arc::new(inner))
            };
        Args { repr }
    }

    /// Makes `change` to the arguments once they are shared: every change but the first
    /// positional argument leaves them more than one payload can hold in place.
    fn change(&mut self, change: impl FnOnce(&mut Inner)) {
        let mut inner = match std::mem::take(&mut self.repr) {
            Repr::Shared(inner) => inner,
            Repr::One(payload) => Arc::new(Inner {
                positional: smallvec::smallvec![payload],
                ..Inner::default()
            }),
            Repr::Empty => Arc::default(),
        };
        change(Arc::make_mut(&mut inner));
        self.repr = Repr::Shared(inner);
    }

    /// Appends a positional argument, pickled.
    pub fn arg<T: Serialize + ?Sized>(mut self, value: &T) -> Args {
        match Payload::pickle(value) {
            Ok(payload) => self.payload(payload),
            Err(e) => {
                self.fail(e);
                self
            }
        }
    }

    /// Appends a positional argument that is already a payload.
    pub fn payload(mut self, payload: Payload) -> Args {
        match self.repr {
            Repr::Empty => self.repr = Repr::One(payload),
            _ => self.change(|inner| inner.positional.push(payload)),
        }
        self
    }

    /// Adds a keyword argument, pickled.
    pub fn kwarg<T: Serialize + ?Sized>(mut self, name: impl Into<String>, value: &T) -> Args {
        match Payload::pickle(value) {
            Ok(payload) => self.change(|inner| inner.keyword.push((name.into(), payload))),
            Err(e) => self.fail(e),
        }
        self
    }

    /// Adds a keyword argument that is already a payload.
    pub fn kwarg_payload(mut self, name: impl Into<String>, payload: Payload) -> Args {
        self.change(|inner| inner.keyword.push((name.into(), payload)));
        self
    }

    fn fail(&mut self, error: TaskError) {
        self.change(|inner| {
            if inner.error.is_none() {
                inner.error = Some(error.to_string());
            }
        });
    }

    /// Why an argument failed to serialize, if one did.
    fn error(&self) -> Option<&str> {
        match &self.repr {
            Repr::Shared(inner) => inner.error.as_deref(),
            Repr::Empty | Repr::One(_) => None,
        }
    }

    /// The positional arguments in order.
    pub fn positional(&self) -> &[Payload] {
        match &self.repr {
            Repr::Empty => &[],
            Repr::One(payload) => std::slice::from_ref(payload),
            Repr::Shared(inner) => &inner.positional,
        }
    }

    /// The keyword arguments in the order they were added.
    pub fn keyword(&self) -> &[(String, Payload)] {
        match &self.repr {
            Repr::Shared(inner) => &inner.keyword,
            Repr::Empty | Repr::One(_) => &[],
        }
    }

    /// The total number of argument bytes.
    pub fn byte_len(&self) -> usize {
        self.positional().iter().map(Payload::len).sum::<usize>()
            + self
                .keyword()
                .iter()
                .map(|(k, p)| k.len() + p.len())
                .sum::<usize>()
    }

    /// The data format every argument is in (pickle when there are none), or `None` when
    /// they mix formats. A worker reads a task's arguments in one format and answers in it.
    pub fn format(&self) -> Option<crate::Format> {
        let mut formats = self
            .positional()
            .iter()
            .chain(self.keyword().iter().map(|(_, payload)| payload))
            .map(Payload::format);
        let first = formats.next().unwrap_or(crate::Format::Pickle);
        formats.all(|format| format == first).then_some(first)
    }

    /// Checks that every argument was serialized, all in one format.
    pub fn validate(&self) -> Result<(), TaskError> {
        if let Some(reason) = self.error() {
            return Err(TaskError::serialize(reason));
        }
        if self.format().is_none() {
            return Err(TaskError::serialize(
                "the arguments mix data formats (pickle and JSON); a task's arguments share one format",
            ));
        }
        Ok(())
    }
}

/// Values that make the arguments of a call: [`Args`], `()`, a [`Payload`], or a tuple of up
/// to eight `Serialize` values.
///
/// A one-argument call is a one-element tuple: `(x,)`.
pub trait IntoArgs {
    /// Converts into positional and keyword arguments.
    fn into_args(self) -> Args;
}

impl IntoArgs for Args {
    fn into_args(self) -> Args {
        self
    }
}

impl IntoArgs for () {
    fn into_args(self) -> Args {
        Args::new()
    }
}

impl IntoArgs for Payload {
    fn into_args(self) -> Args {
        Args::new().payload(self)
    }
}

macro_rules! tuple_into_args {
    ($($name:ident)+) => {
        impl<$($name: Serialize),+> IntoArgs for ($($name,)+) {
            #[allow(non_snake_case)]
            fn into_args(self) -> Args {
                let ($($name,)+) = self;
                Args::new()$(.arg(&$name))+
            }
        }
    };
}

tuple_into_args!(A);
tuple_into_args!(A B);
tuple_into_args!(A B C);
tuple_into_args!(A B C D);
tuple_into_args!(A B C D E);
tuple_into_args!(A B C D E F);
tuple_into_args!(A B C D E F G);
tuple_into_args!(A B C D E F G H);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_become_positional_arguments() {
        let args = (1, "two", 3.0).into_args();
        assert_eq!(args.positional().len(), 3);
        assert_eq!(args.positional()[1].decode::<String>().unwrap(), "two");
        assert!(args.validate().is_ok());
    }

    #[test]
    fn serialized_arguments_come_back_equal_and_clones_are_independent() {
        let args = (1, "two").into_args().kwarg("k", &3.5);
        let bytes = serde_pickle::to_vec(&args, serde_pickle::SerOptions::new()).unwrap();
        let back: Args = serde_pickle::from_slice(&bytes, serde_pickle::DeOptions::new()).unwrap();
        assert_eq!(back, args);
        // A clone shares the payloads; extending one leaves the other as it was.
        let longer = args.clone().arg(&4);
        assert_eq!(args.positional().len(), 2);
        assert_eq!(longer.positional().len(), 3);
    }

    #[test]
    fn arguments_compare_and_travel_alike_however_they_are_held() {
        // One positional argument is held in place; more, or a keyword, are shared.
        let one = (5,).into_args();
        assert!(matches!(one.repr, Repr::One(_)));
        assert!(matches!(Args::new().repr, Repr::Empty));
        assert!(matches!((5, 6).into_args().repr, Repr::Shared(_)));
        let shared = Args {
            repr: Repr::Shared(Arc::new(Inner {
                positional: smallvec::smallvec![Payload::pickle(&5).unwrap()],
                ..Inner::default()
            })),
        };
        assert_eq!(shared, one);
        use std::hash::BuildHasher;
        let state = std::hash::RandomState::new();
        assert_eq!(state.hash_one(&shared), state.hash_one(&one));
        let wire = postcard::to_stdvec(&one).unwrap();
        assert_eq!(wire, postcard::to_stdvec(&shared).unwrap());
        // The wire form of the derived `Inner` before arguments were held in place: one
        // positional payload (format 0, pickle; 8 bytes: PROTO 3, BININT 5, STOP), no
        // keyword.
        assert_eq!(wire, [1, 0, 8, 0x80, 3, b'J', 5, 0, 0, 0, b'.', 0]);
        let back: Args = postcard::from_bytes(&wire).unwrap();
        assert!(matches!(back.repr, Repr::One(_)), "decoded in place");
        assert_eq!(back, one);
        for args in [
            Args::new(),
            (1, 2, 3).into_args(),
            (1,).into_args().kwarg("k", &2),
        ] {
            let back: Args = postcard::from_bytes(&postcard::to_stdvec(&args).unwrap()).unwrap();
            assert_eq!(back, args);
        }
        // A failed argument is remembered whichever way the others are held.
        struct Unserializable;
        impl Serialize for Unserializable {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        assert!(Args::new().arg(&Unserializable).validate().is_err());
        assert!((1,).into_args().arg(&Unserializable).validate().is_err());
        assert_ne!((1,).into_args().arg(&Unserializable), (1,).into_args());
    }

    #[test]
    fn payloads_pass_through_untouched() {
        let opaque = Payload::from_pickled(&b"\x80\x04opaque"[..]);
        let args = Args::new().payload(opaque.clone()).kwarg("k", &1);
        assert_eq!(args.positional()[0], opaque);
        assert_eq!(args.keyword()[0].1.decode::<i32>().unwrap(), 1);
    }
}
