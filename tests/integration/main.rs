//! The integration tests, linked into one test binary: each module below was its own binary once,
//! and linking about thirty of them (each with every dependency) was a large part of CI's build
//! time (issue #14). Every test drives execd through real sockets; the binary under test is the
//! static release binary when `EXECD_STATIC_BIN` names it (as in CI), else `CARGO_BIN_EXE_execd`
//! (`common::execd_bin`). Tests that look at nothing process-wide (the file and directory API,
//! the auth matrix, the OpenAPI routing check) serve execd from the test process instead
//! (`ServerOptions::in_process`, `fsutil::Fx::in_process`: `execd::run` on its own runtime, port
//! 0); `common::InProcess` says what keeps a test on the binary.
//!
//! Run one module with `cargo test --test integration MODULE::` (e.g. `cargo test --test integration
//! watch::`).

mod common;
mod fsutil;

mod aarch64;
mod archive;
mod auth_matrix;
mod background;
mod bad_input;
mod cgroup;
mod code;
mod command;
mod command_load;
mod directories;
mod faults;
mod files;
mod files_heavy;
mod files_hostile;
mod files_identity;
mod foundation;
mod grep;
mod hardening;
mod image;
mod isolated;
mod lifetime;
mod metrics;
mod observability;
mod openapi;
mod otel;
mod parsers_prop;
mod prerequisites;
mod proxy;
mod pty;
mod restart;
mod session;
mod soak;
mod stdin;
mod streams;
mod terminal;
mod upload;
mod watch;
mod ws_exec;
