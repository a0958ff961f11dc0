//! Functions: the unit of work that is registered once and called many times.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A Python function that workers can run.
///
/// A function is either Python source text with the name of the entry point it defines, or
/// the bytes of a pickled function (for example `cloudpickle.dumps(f)`), which Rust never
/// looks inside. Its [`FunctionId`] is a hash of its content, so registering the same
/// function twice is free and a worker compiles it once, however many tasks call it.
///
/// A function may name the container image it runs in ([`Function::in_image`]); the image is
/// part of its identity, so the same body in two images is two functions, each run only by
/// workers started in its image.
///
/// Cloning is cheap: the body is shared.
///
/// ```
/// use funcx_core::Function;
///
/// let add = Function::from_source("def add(a, b):\n    return a + b\n", "add");
/// let again = Function::from_source("def add(a, b):\n    return a + b\n", "add");
/// assert_eq!(add.id(), again.id());
/// assert_eq!(add.name(), "add");
/// ```
#[derive(Clone)]
pub struct Function {
    inner: Arc<Inner>,
}

struct Inner {
    id: FunctionId,
    name: String,
    body: FunctionBody,
    image: Option<String>,
}

/// What a [`Function`] is made of, as the worker receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionBody {
    /// Python source text; the worker executes it and looks up the entry point by name.
    Source(String),
    /// A pickled callable; the worker unpickles it.
    Pickled(Bytes),
}

impl Function {
    /// A function defined by Python `source` whose entry point is the top-level name
    /// `entry_point`.
    ///
    /// The source may define helpers and import modules; the worker runs it once, in a
    /// namespace of its own, and calls `entry_point` for every task.
    pub fn from_source(source: impl Into<String>, entry_point: impl Into<String>) -> Function {
        Function::new(entry_point.into(), FunctionBody::Source(source.into()))
    }

    /// A function from pickled bytes (the output of `pickle.dumps`, `cloudpickle.dumps` or
    /// `dill.dumps`); `name` is used in logs and errors only.
    ///
    /// The worker needs whatever modules the pickle refers to (for `cloudpickle` output,
    /// `cloudpickle` itself).
    pub fn from_pickle(bytes: impl Into<Bytes>, name: impl Into<String>) -> Function {
        Function::new(name.into(), FunctionBody::Pickled(bytes.into()))
    }

    /// This function, run in container image `image` (for example
    /// `"localhost/analysis:1"`): its tasks run only on workers started in that image, which
    /// are kept warm while the image has work. How the image is started (podman, Apptainer)
    /// is the worker runtime's choice; a runtime that cannot start it fails the function's
    /// tasks with a [`crate::TaskError::is_no_workers`] error naming the image.
    ///
    /// The image is part of the function's identity:
    ///
    /// ```
    /// use funcx_core::Function;
    ///
    /// let plain = Function::from_source("def f():\n    return 1\n", "f");
    /// let boxed = plain.clone().in_image("localhost/analysis:1");
    /// assert_ne!(plain.id(), boxed.id());
    /// assert_eq!(boxed.image(), Some("localhost/analysis:1"));
    /// assert_eq!(plain.image(), None);
    /// ```
    pub fn in_image(self, image: impl Into<String>) -> Function {
        let image = Some(image.into());
        let (name, body) = match Arc::try_unwrap(self.inner) {
            Ok(inner) => (inner.name, inner.body),
            Err(shared) => (shared.name.clone(), shared.body.clone()),
        };
        Function::with_image(name, body, image)
    }

    fn new(name: String, body: FunctionBody) -> Function {
        Function::with_image(name, body, None)
    }

    fn with_image(name: String, body: FunctionBody, image: Option<String>) -> Function {
        let id = FunctionId::of(&name, &body, image.as_deref());
        Function {
            inner: Arc::new(Inner {
                id,
                name,
                body,
                image,
            }),
        }
    }

    /// The content hash that identifies this function.
    pub fn id(&self) -> FunctionId {
        self.inner.id
    }

    /// The entry point's name (or the name given to a pickled function).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The source text or pickled bytes the worker loads.
    pub fn body(&self) -> &FunctionBody {
        &self.inner.body
    }

    /// The container image its tasks run in (see [`Function::in_image`]); `None` for a
    /// function that runs on the endpoint's default workers.
    pub fn image(&self) -> Option<&str> {
        self.inner.image.as_deref()
    }
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.inner.name)
            .field("id", &self.inner.id)
            .field("image", &self.inner.image)
            .finish_non_exhaustive()
    }
}

/// A function travels as its name, body and image; its id is recomputed on arrival, never
/// trusted from the wire.
impl Serialize for Function {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (&self.inner.name, &self.inner.body, &self.inner.image).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Function {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (name, body, image) =
            <(String, FunctionBody, Option<String>)>::deserialize(deserializer)?;
        Ok(Function::with_image(name, body, image))
    }
}

impl PartialEq for Function {
    fn eq(&self, other: &Self) -> bool {
        self.inner.id == other.inner.id
    }
}

impl Eq for Function {}

impl std::hash::Hash for Function {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.id.hash(state);
    }
}

/// The identity of a [`Function`]: a BLAKE3 hash of its name, body and image.
///
/// Two functions with the same id are the same function; the id is stable across processes
/// and machines, so it can be stored and sent over the network.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FunctionId([u8; 32]);

impl FunctionId {
    fn of(name: &str, body: &FunctionBody, image: Option<&str>) -> FunctionId {
        let mut hasher = blake3::Hasher::new();
        // Domain separation and length prefixes keep (name, body) pairs from colliding.
        hasher.update(b"funcx-function-v1");
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        match body {
            FunctionBody::Source(source) => {
                hasher.update(b"S");
                hasher.update(source.as_bytes());
            }
            FunctionBody::Pickled(bytes) => {
                hasher.update(b"P");
                hasher.update(bytes);
            }
        }
        // Hashed only when named, after the body, so a function without an image keeps the
        // id it had before functions could name one (stored ids, allow-lists).
        if let Some(image) = image {
            hasher.update(b"I");
            hasher.update(&(image.len() as u64).to_le_bytes());
            hasher.update(image.as_bytes());
        }
        FunctionId(*hasher.finalize().as_bytes())
    }

    /// The 32 bytes of the hash.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Rebuilds an id from bytes obtained with [`FunctionId::as_bytes`].
    pub fn from_bytes(bytes: [u8; 32]) -> FunctionId {
        FunctionId(bytes)
    }
}

/// Reads the 64 hexadecimal digits [`FunctionId`]'s `Display` writes (as configuration
/// files and the HTTP API spell ids).
impl std::str::FromStr for FunctionId {
    type Err = String;

    fn from_str(text: &str) -> Result<FunctionId, String> {
        let bad = || format!("{text:?} is not a function id (64 hexadecimal digits)");
        if text.len() != 64 || !text.is_ascii() {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(FunctionId(bytes))
    }
}

impl fmt::Display for FunctionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for FunctionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Twelve hex digits identify a function in logs, as a short git hash does.
        for byte in &self.0[..6] {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_back_from_their_hex_text() {
        let id = Function::from_source("def f(): pass", "f").id();
        assert_eq!(id.to_string().parse::<FunctionId>(), Ok(id));
        assert!("abc".parse::<FunctionId>().is_err());
        assert!("zz".repeat(32).parse::<FunctionId>().is_err());
    }

    #[test]
    fn id_depends_on_name_and_body() {
        let a = Function::from_source("def f(): pass", "f");
        let b = Function::from_source("def f(): pass ", "f");
        let c = Function::from_source("def f(): pass", "g");
        let d = Function::from_pickle(Bytes::from_static(b"def f(): pass"), "f");
        assert_ne!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert_ne!(a.id(), d.id());
        assert_eq!(a.id(), Function::from_source("def f(): pass", "f").id());
    }

    #[test]
    fn the_image_is_part_of_the_identity_and_travels() {
        let plain = Function::from_source("def f(): pass", "f");
        let a = plain.clone().in_image("localhost/a:1");
        let b = plain.clone().in_image("localhost/b:1");
        assert_ne!(plain.id(), a.id());
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id(), plain.clone().in_image("localhost/a:1").id());
        let json = serde_json::to_string(&a).expect("serializes");
        let back: Function = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back.id(), a.id());
        assert_eq!(back.image(), Some("localhost/a:1"));
        // As a remote manager receives it: the image must not be lost on the way.
        let message = crate::worker::ToWorker::Function {
            key: crate::worker::FunctionKey(3),
            function: a.clone(),
        };
        let bytes = postcard::to_allocvec(&message).expect("encodes");
        match postcard::from_bytes(&bytes).expect("decodes") {
            crate::worker::ToWorker::Function { function, .. } => {
                assert_eq!(function.id(), a.id());
                assert_eq!(function.image(), Some("localhost/a:1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn id_displays_as_hex() {
        let id = Function::from_source("x", "f").id();
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert!(text.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(FunctionId::from_bytes(*id.as_bytes()), id);
    }
}
