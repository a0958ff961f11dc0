//! funcx's benchmarks (`e2e.rs`, `codec.rs`); this library is empty. The benches live in a
//! package of their own so that their dependencies stay out of the quickstart's build.
