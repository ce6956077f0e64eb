//! Running one child process: the layer under `command/`, `session/`, `pty/`, `code/` and
//! `isolated/` that knows processes and their output, but no ids, no registries and no HTTP.
//!
//! - [`spawn`](mod@spawn): a child in its own process group and, where execd has cgroups, its own leaf
//!   (X20), with credentials applied in the child; [`spawn::GroupChild`] waits through a pidfd,
//!   signals the whole group or leaf, and never signals after the reap (D14).
//! - [`pump`]: copies the pipes into the journal until the leader exits (left-behind children
//!   holding a pipe do not hang it), with the deadline, the drain and the X13 markers.
//! - [`journal`]: the append-only record of an execution's output with its index; every reader
//!   (the foreground stream, `/logs`, `/events`) follows it from an offset.
//! - [`lines`]: the line splitter of the upstream stream (line endings kept, D10).
//! - [`env`](mod@env): the environment a child gets; [`stdin`]: its input pipe; [`tty`]: PTYs;
//!   [`waiting`]: what a child waiting for input looks like (X13).
//!
//! The events an execution produces are [`crate::event`]'s, shared with code interpreting.

pub mod env;
pub mod journal;
pub mod lines;
pub mod pump;
pub mod spawn;
pub mod stdin;
pub mod tty;
pub mod waiting;

pub use env::{child_env, EnvMap};
pub use journal::{
    Chunk, ChunkReader, InputLog, Journal, JournalWriter, LineEventReader, OutputReader, OutputView, StreamKind,
};
pub use lines::{LineSplitter, DEFAULT_MAX_LINE};
pub use spawn::{
    resolve_credentials, shell, spawn, spawn_io, spawn_with, ChildPipes, Credentials, ExitOutcome, ExitReport,
    GroupChild, OutputMode, OutputPipe, SpawnError, SpawnSpec, StdinMode,
};
pub use stdin::{parse_signal, StdinPipe, WriteOutcome};
