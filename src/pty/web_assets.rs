//! The browser terminal's files (EXTENSIONS X70): xterm.js and its fit add-on, fetched by
//! `scripts/fetch-xterm.sh` and embedded gzipped by `build.rs`. `api::terminal` serves them;
//! `/capabilities` reports whether they are here.

/// `(name, gzipped bytes)` of the fetched files; empty when the build had none (see build.rs).
pub static ASSETS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/terminal_assets.rs"));

/// Whether this binary carries the xterm.js files (the `terminal` capability).
pub fn embedded() -> bool {
    !ASSETS.is_empty()
}
