//! funcx: serverless supercomputing as a Rust SDK.
pub use funcx_core::*;
