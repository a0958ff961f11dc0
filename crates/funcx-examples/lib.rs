//! funcx's light examples (`examples/quickstart.rs` and the others in the repository's
//! `examples/` folder that need nothing heavy); this library is empty. The examples live in a
//! package of their own so that the root package's test dependencies stay out of the
//! quickstart's first build.
