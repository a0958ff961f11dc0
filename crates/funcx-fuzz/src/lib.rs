//! Fuzz targets for every funcx parser that reads outside input, and a mutation fuzzer that
//! runs them on stable Rust.
//!
//! A target ([`targets::all`]) is a function of arbitrary bytes that runs one parser — a
//! transport frame, the handshake, a Python worker's output, a gateway HTTP request, a
//! configuration file, a scheduler's output — and must never panic, hang, or allocate
//! without bound, whatever the bytes. A campaign ([`campaign::run`]) feeds it its corpus
//! (`corpus/<target>/` plus valid inputs made in code), then inputs mutated from it; every
//! input derives from the campaign's seed and its index, so any finding is reproduced by
//! those two numbers.
//!
//! The test command runs a short campaign per target (`tests/short.rs`); long ones run with
//! the `funcx-fuzz` program and are recorded in `FUZZING.md`:
//!
//! ```text
//! cargo run --release -p funcx-fuzz -- --inputs 10000000 --seed 1      # every target
//! cargo run --release -p funcx-fuzz -- --inputs 1000000 slurm frames   # some
//! ```
//!
//! A campaign in code:
//!
//! ```
//! #[global_allocator]
//! static ALLOCATOR: funcx_fuzz::alloc::Counting = funcx_fuzz::alloc::Counting;
//!
//! # fn main() {
//! use funcx_fuzz::campaign::{run, Options};
//!
//! let target = funcx_fuzz::targets::all().into_iter().find(|t| t.name == "slurm").unwrap();
//! let report = run(&target, &Options { inputs: 1_000, ..Options::default() })
//!     .unwrap_or_else(|finding| panic!("{finding}"));
//! assert_eq!(report.inputs, 1_000);
//! assert!(report.peak_alloc < 64 << 20);
//! # }
//! ```
//!
//! Coverage guidance (libFuzzer, AFL++) needs a nightly compiler or a C++ toolchain's
//! instrumentation; these targets are plain functions of bytes, so they drop into a
//! `cargo fuzz` harness unchanged when one is at hand.

pub mod alloc;
pub mod campaign;
pub mod mutate;
pub mod rng;
pub mod targets;
