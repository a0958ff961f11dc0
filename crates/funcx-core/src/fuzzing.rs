//! Entry points for the fuzz targets of `crates/funcx-fuzz` that reach private parts of the
//! core: the plain-pickle decoder, checked against `serde-pickle` (the `payload` target
//! only sees that a decode does not crash, not whether its answer is right).
//!
//! Not a stable API; compiled with the `fuzzing` feature.

use serde_pickle::Value;

use crate::payload::plain_pickle;

/// Decodes `data` with the plain-pickle decoder, and panics if it accepts a pickle that
/// `serde-pickle` decodes differently or refuses: the plain path must only ever be a faster
/// `serde-pickle`. (What it accepts nests within the limit, so `serde-pickle` can read it
/// on any stack.)
pub fn plain_pickle(data: &[u8]) {
    let Some(fast) = plain_pickle::decode::<Value>(data) else {
        return;
    };
    // Debug forms, so that a NaN compares equal to itself.
    let slow = serde_pickle::from_slice::<Value>(data, serde_pickle::DeOptions::new())
        .map(|value| format!("{value:?}"));
    assert_eq!(
        Ok(format!("{fast:?}")),
        slow.map_err(|e| e.to_string()),
        "the plain-pickle decoder and serde-pickle disagree"
    );
}
