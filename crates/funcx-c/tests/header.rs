//! The checked-in `include/funcx.h` is exactly what cbindgen generates from this crate, so C
//! programs never compile against a stale header. After changing the API, regenerate it with
//! `FUNCX_WRITE_HEADER=1 cargo test -p funcx-c --test header`.

use std::path::Path;

#[test]
fn the_checked_in_header_is_current() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml should parse");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen should understand the crate")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("a header is text");
    let path = crate_dir.join("include/funcx.h");
    if std::env::var_os("FUNCX_WRITE_HEADER").is_some() {
        std::fs::write(&path, &generated).expect("write include/funcx.h");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "include/funcx.h is stale; regenerate it with \
         FUNCX_WRITE_HEADER=1 cargo test -p funcx-c --test header"
    );
}
