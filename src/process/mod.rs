//! Running child processes: the leaf module under `command/` and `session/` (std, tokio, nix,
//! serde and `crate::cgroup` only; it knows no ids and no HTTP). Every spawn gets a cgroup leaf
//! where execd has cgroups (X20): `spawn_with(spec, &Limits)` applies limits, `GroupChild`'s
//! group signals and kills reach the whole leaf, and `GroupChild::report()` gives the
//! `ExitReport { outcome, usage, leader_only, oom_killed }` read at the reap (X22).
//!
//! # Public API (stable; `session/` codes against it)
//! - [`spawn`]: `spawn::spawn(SpawnSpec) -> Result<(GroupChild, ChildPipes), SpawnError>`
//!   - `SpawnSpec { program: PathBuf, arg0: Option<OsString>, args: Vec<OsString>, env: Vec<(String, String)> /* complete,
//!     env_clear */, cwd: Option<PathBuf>, credentials: Option<Credentials>, output: OutputMode }`,
//!     `SpawnSpec::shell(cmd)` = `bash -c cmd` (or `sh -c`), separate pipes, empty env.
//!   - `OutputMode::{Separate, Merged /* one pipe for both */, Null}`; stdin is `/dev/null` unless
//!     `spawn_io` asks for `StdinMode::Pipe` or `StdinMode::Tty { cols, rows }` (a PTY: [`tty`]).
//!   - `ChildPipes { stdout: Option<OutputPipe>, stderr: Option<OutputPipe> }`;
//!     `OutputPipe::read(&mut self, &mut [u8]).await -> io::Result<usize>` (cancel-safe, 0 = EOF),
//!     `OutputPipe::read_now(&mut self, &mut [u8]) -> io::Result<Option<usize>>` (non-blocking,
//!     for the final drain after the leader exited), `OutputPipe::discard_rest(self)`.
//!   - `GroupChild` (share with `Arc`, all `&self`): `pid() -> u32`, `signal_group(Signal) ->
//!     io::Result<()>`, `kill_group()`, `terminate_group(grace).await` (SIGTERM, poll every 50 ms,
//!     SIGKILL after `grace`, returns when the group is gone or ~1 s after the SIGKILL),
//!     `exited().await` (leader exited, still unreaped), `has_exited() -> bool`, `group_alive()`,
//!     `wait().await -> ExitOutcome` (reaps; waits for a running `terminate_group`; idempotent),
//!     `outcome() -> Option<ExitOutcome>`. Nothing is signalled after the reap (D14).
//!   - `ExitOutcome::{Exited(i32), Signaled(i32)}` with `code()` (-1 for a signal), `describe()`
//!     (`exit status 3`, `signal: killed`), `success()`.
//!   - `resolve_credentials(uid, Option<gid>) -> Credentials { uid, gid, groups }` (D16),
//!     `shell() -> &'static Path`, `live_group_members(pgid) -> usize`.
//! - [`lines`]: `LineSplitter::new(max_line)` / `default()` (1 MiB); `push(&[u8], FnMut(String))`,
//!   `finish(FnMut(String))`, `push_collect(&[u8]) -> Vec<String>` (line endings kept, D10).
//! - [`event`]: `ExecEvent { kind: EventKind, text, execution_count, execution_time, timestamp,
//!   results, error: Option<EventError { ename, evalue, traceback }> }`; constructors `init(id)`,
//!   `ping()`, `stdout(t)`, `stderr(t)`, `complete(ms)`, `error(ename, evalue, tb)`,
//!   `runtime_error(msg)` (D4), `new(kind, text)`, `new_at(kind, text, ts)`, `.at(ts)`,
//!   `is_terminal()`, `to_json() -> Vec<u8>`, `write_json(&mut Vec<u8>)`; `now_ms()`;
//!   `event::COMMAND_EXEC_ERROR`, `event::RUNTIME_ERROR`.
//! - [`env`]: `child_env(envs_file: Option<&str>, request_envs) -> EnvMap` (execd env minus
//!   [`env::INTERNAL_VARS`] + `EXECD_ENVS` file + request), `base_env()`, `read_envs_file`,
//!   `parse_envs_file`, `expand_vars(s, lookup)`, `expand_path(s, lookup)` (D31).
//! - [`journal`]: `Journal::create(dir, name) -> (Journal, JournalWriter)`;
//!   `JournalWriter::append(StreamKind, &[u8])`, `finish(Option<ExecEvent>)`;
//!   `Journal::{len, is_closed, closed().await, terminal, out_path, raw_range(from), chunks(from)
//!   -> ChunkReader, line_events(max_line) -> LineEventReader, remove_files}`;
//!   `ChunkReader::next().await -> io::Result<Option<Chunk { kind, start, data, timestamp }>>`;
//!   `LineEventReader::next().await -> Option<ExecEvent>` (lines, then the terminal event).
//! - [`pump`]: `pump_output(&GroupChild, ChildPipes, &mut JournalWriter, PumpOptions { deadline:
//!   Option<Instant>, kill_group_on_exit: bool }, Option<mpsc::Receiver<MarkRequest>>).await ->
//!   (PumpResult { outcome, timed_out }, Option<io::Error>)`: copies the pipes into the journal as
//!   bytes arrive until the **leader** exits (left-behind children holding the pipe do not hang
//!   it), SIGKILLs the group at the deadline, drains, optionally kills the group, reaps; the rest
//!   of the pipe is discarded. It also places the X13 markers the watcher asks for, after the
//!   output already in the pipes.

pub mod env;
pub mod event;
pub mod idle;
pub mod journal;
pub mod lines;
pub mod pump;
pub mod spawn;
pub mod stdin;
pub mod tty;
pub mod waiting;

pub use env::{child_env, expand_path, expand_vars, EnvMap};
pub use event::{
    now_ms, EndedBy, EventError, EventKind, ExecDone, ExecEnd, ExecEvent, ExecObserver, ExecStart, ExitInfo,
};
pub use journal::{
    Chunk, ChunkReader, InputLog, Journal, JournalWriter, LineEventReader, OutputReader, OutputView, StreamKind,
};
pub use lines::{LineSplitter, DEFAULT_MAX_LINE};
pub use spawn::{
    resolve_credentials, shell, spawn, spawn_io, spawn_with, ChildPipes, Credentials, ExitOutcome, ExitReport,
    GroupChild, OutputMode, OutputPipe, SpawnError, SpawnSpec, StdinMode,
};
pub use stdin::{parse_signal, StdinPipe, WriteOutcome};
