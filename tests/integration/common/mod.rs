//! Test harness shared by every integration test file: [`TestServer`] starts the real `execd`
//! binary on a free loopback port with its own state directory, waits for `/ping` with a deadline,
//! and stops it on drop. Also helpers to read execd's event streams, and [`prerequisite_missing`],
//! the one way a test skips (a failure in CI).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The one deadline for "eventually" in tests.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Whether this run is CI: the `CI` environment variable is `true` or `1` (any case), as CI
/// systems set it (`.ci/run` runs with `CI=true`).
pub fn in_ci() -> bool {
    ci_value_means_ci(std::env::var("CI").ok().as_deref())
}

/// Whether a value of the `CI` variable (`None`: unset) means "this is CI".
pub fn ci_value_means_ci(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A test cannot run because `what` (root, busybox, a Jupyter venv, a tmpfs mount...) is missing.
/// In CI ([`in_ci`]) that is a failure: this panics, so a missing install step can never pass as
/// a green run. Locally it prints `SKIPPED: <what>` and the caller returns. Call it at every
/// skip: `if !ok { common::prerequisite_missing("needs root"); return; }`.
pub fn prerequisite_missing(what: &str) {
    prerequisite_missing_in(in_ci(), what)
}

/// [`prerequisite_missing`] with the CI decision passed in (for testing it without touching the
/// process environment).
pub fn prerequisite_missing_in(ci: bool, what: &str) {
    if ci {
        panic!("prerequisite missing in CI (CI is set, so this is a failure, not a skip): {what}");
    }
    eprintln!("SKIPPED: {what}");
}

/// A 1 MiB tmpfs mounted for the test (a filesystem to fill); unmounted on drop.
pub struct SmallTmpfs {
    pub dir: tempfile::TempDir,
}

impl SmallTmpfs {
    /// `None` where mounting is not allowed (needs CAP_SYS_ADMIN).
    pub fn mount() -> Option<SmallTmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallTmpfs { dir })
    }

    /// Writes `name` until the filesystem is full; returns its path.
    pub fn fill(&self, name: &str) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![b'f'; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        path
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A 4 MiB ext4 image loop-mounted for the test (a disk to fill, with `reserved_pct` of its
/// blocks kept for root); unmounted on drop.
pub struct Ext4Image {
    dir: tempfile::TempDir,
    pub mnt: PathBuf,
}

impl Ext4Image {
    /// `None` where making or loop-mounting it is not possible (needs root and loop devices),
    /// after [`prerequisite_missing`] said so (a failure in CI).
    pub fn mount(reserved_pct: u8) -> Option<Ext4Image> {
        let image = is_root().then(|| Ext4Image::try_mount(reserved_pct)).flatten();
        if image.is_none() {
            prerequisite_missing("cannot make and loop-mount an ext4 image here (needs root and a loop device)");
        }
        image
    }

    fn try_mount(reserved_pct: u8) -> Option<Ext4Image> {
        let dir = tempfile::tempdir().ok()?;
        let (img, mnt) = (dir.path().join("fs.img"), dir.path().join("mnt"));
        std::fs::File::create(&img).ok()?.set_len(4 << 20).ok()?;
        std::fs::create_dir(&mnt).ok()?;
        let ok = |c: &mut std::process::Command| c.stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        let pct = reserved_pct.to_string();
        let made = ok(std::process::Command::new("mkfs.ext4").args(["-q", "-F", "-m", &pct]).arg(&img));
        (made && ok(std::process::Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&mnt)))
            .then_some(Ext4Image { dir, mnt })
    }

    /// Fills what the given command prefix (`[]`: the test's own uid) may write into `dir` (a
    /// directory it can write): new 1 KiB-block files synced one by one until `statvfs` shows no
    /// block available (ext4 holds some back for delayed allocation until a sync); at most 50.
    pub fn fill(&self, as_user: &[&str], dir: &Path) {
        let script = format!(
            "i=0; while [ $i -lt 50 ] && [ \"$(stat -f -c %a {0})\" != 0 ]; do \
             dd if=/dev/zero of={0}/f$i bs=1k 2>/dev/null; sync -f {0}; i=$((i+1)); done",
            dir.display()
        );
        let argv: Vec<&str> = as_user.iter().copied().chain(["sh", "-c", &script]).collect();
        let _ = std::process::Command::new(argv[0]).args(&argv[1..]).status();
    }
}

impl Drop for Ext4Image {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mnt).status();
        let _ = &self.dir;
    }
}

/// Whether the tests run as root (namespaces, other uids, cgroups need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Path of the binary under test: the static release binary when `EXECD_STATIC_BIN` names one
/// (CI builds it once per run, scripts/test.sh: the tests then drive what ships), else the one
/// cargo built beside these tests.
pub fn execd_bin() -> PathBuf {
    match std::env::var_os("EXECD_STATIC_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_execd")),
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes. Returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async twin of [`wait_until`].
pub async fn wait_until_async<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: another process may take it before the
/// caller binds it; [`TestServer`] listens on port 0 instead and learns its port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The IPv4 TCP port that process `pid` or one of its descendants (the daemon of `--init` mode
/// is a child) listens on, from their socket descriptors and `/proc/net/tcp`; `None` until one
/// listens.
pub fn listening_port(pid: u32) -> Option<u16> {
    let inodes: std::collections::HashSet<u64> = family(pid)
        .into_iter()
        .filter_map(|p| std::fs::read_dir(format!("/proc/{p}/fd")).ok())
        .flat_map(|d| d.flatten())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect();
    // Lines: `sl local_address rem_address st ... uid timeout inode ...`; `0A` is LISTEN.
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let inode: u64 = f.get(9)?.parse().ok()?;
        if f.get(3) != Some(&"0A") || !inodes.contains(&inode) {
            return None;
        }
        u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()
    })
}

/// `pid` and its descendants (from the parent pids in `/proc/*/stat`).
fn family(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// Options for starting a [`TestServer`].
#[derive(Default, Clone)]
pub struct ServerOptions {
    pub token: Option<String>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// Do not pass `--bind 127.0.0.1` (tests of the default bind address).
    pub default_bind: bool,
    /// Listen on this port instead of a free one (a restart on the same port, X50).
    pub port: Option<u16>,
    /// Start execd through this command line (`WRAPPER… execd ARGS…`), e.g. `unshare` to give it
    /// its own user namespace and limits. The wrapper must `exec` execd (pid stays execd's).
    pub wrapper: Vec<String>,
    /// Run this binary instead of [`execd_bin`] (another build, e.g. the aarch64 one under qemu).
    pub program: Option<PathBuf>,
    /// How long to wait for `/ping` (default [`TIMEOUT`]; an emulated binary starts slower).
    pub ready_timeout: Option<Duration>,
    /// execd's working directory (default: the test's).
    pub cwd: Option<PathBuf>,
    /// The state directory (default: `state` in the server's own scratch directory), e.g. one a
    /// test keeps to restart execd on it.
    pub state_dir: Option<PathBuf>,
    /// Serve from this test process ([`InProcess`]) instead of the binary.
    pub in_process: bool,
    /// Return once `/ping` answers, without asking for `/capabilities` (which prepares the cgroup
    /// placement execd otherwise prepares 20 ms after its start: tests that count execd's
    /// descriptors and threads take their baselines with it in place).
    pub ping_only: bool,
}

impl ServerOptions {
    pub fn token(mut self, t: &str) -> Self {
        self.token = Some(t.to_string());
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }
    pub fn ping_only(mut self) -> Self {
        self.ping_only = true;
        self
    }
    pub fn port(mut self, p: u16) -> Self {
        self.port = Some(p);
        self
    }
    pub fn wrapper(mut self, argv: &[&str]) -> Self {
        self.wrapper = argv.iter().map(|a| a.to_string()).collect();
        self
    }
    pub fn program(mut self, path: &Path) -> Self {
        self.program = Some(path.to_path_buf());
        self
    }
    pub fn ready_timeout(mut self, t: Duration) -> Self {
        self.ready_timeout = Some(t);
        self
    }
    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_path_buf());
        self
    }
    pub fn state_dir(mut self, dir: &Path) -> Self {
        self.state_dir = Some(dir.to_path_buf());
        self
    }
    /// Serve from this test process: `execd::run` on a runtime of its own ([`InProcess`]).
    pub fn in_process(mut self) -> Self {
        self.in_process = true;
        self
    }
    pub fn start(self) -> TestServer {
        TestServer::start_with(self)
    }
}

/// execd served from the test process itself: the library's `execd::run` on a runtime of its
/// own thread, its listener bound here on port 0, stopped through `run`'s shutdown future (the
/// daemon's own drain: managers stopped, connections finished).
///
/// Only for tests where nothing process-wide is involved: no cgroup placement (always
/// `--cgroup-root none`), no environment or working directory of its own (commands would
/// inherit the test process's), no signals, no memory or descriptor counts of "the execd
/// process", no restart, and no large JSON bodies (their decode slots are per process, shared by
/// every in-process server). Everything else runs the real binary; CI's is the static one.
pub struct InProcess {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl InProcess {
    fn start(config: execd::config::Config) -> (InProcess, u16) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        listener.set_nonblocking(true).expect("non-blocking listener");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("execd-in-process-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    execd::run(config, listener, async move {
                        let _ = stopped.await;
                    })
                    .await
                })
            })
            .expect("spawn the in-process execd thread");
        (InProcess { stop: Some(stop), thread: Some(thread) }, port)
    }

    /// Asks `run` to stop and waits (up to [`TIMEOUT`]) for it to return; its result.
    fn stop(&mut self) -> Option<std::io::Result<()>> {
        drop(self.stop.take());
        let thread = self.thread.take()?;
        if !wait_until(TIMEOUT, || thread.is_finished()) {
            panic!("the in-process execd did not stop within {TIMEOUT:?}");
        }
        Some(thread.join().unwrap_or_else(|_| Err(std::io::Error::other("the in-process execd panicked"))))
    }
}

/// The real execd binary, running on `127.0.0.1:<port>`.
pub struct TestServer {
    pub child: Option<Child>,
    pub port: u16,
    pub token: Option<String>,
    pub dir: tempfile::TempDir,
    pub state_dir: PathBuf,
    pub log_path: PathBuf,
    /// Started with `--init`: [`TestServer::kill`] kills the daemon and entrypoint under init too.
    pub init_mode: bool,
    /// Served from this process ([`ServerOptions::in_process`]) rather than a child.
    pub in_process: Option<InProcess>,
}

impl TestServer {
    /// Starts with defaults (no token).
    pub fn start() -> TestServer {
        ServerOptions::default().start()
    }

    pub fn options() -> ServerOptions {
        ServerOptions::default()
    }

    /// Starts execd on port 0 (the kernel picks a free one: no race with other tests) unless
    /// `opts.port` names one, learns the port from the listening socket, and waits for `/ping`.
    pub fn start_with(opts: ServerOptions) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let state_dir = opts.state_dir.clone().unwrap_or_else(|| dir.path().join("state"));
        let log_path = dir.path().join("execd.log");
        if opts.in_process {
            return TestServer::start_in_process(opts, dir, state_dir, log_path);
        }
        let execd = opts.program.clone().unwrap_or_else(execd_bin);
        let mut cmd = match opts.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(execd);
                c
            }
            None => Command::new(execd),
        };
        cmd.arg("--port").arg(opts.port.unwrap_or(0).to_string()).arg("--state-dir").arg(&state_dir);
        if !opts.default_bind {
            cmd.arg("--bind").arg("127.0.0.1");
        }
        cmd.args(&opts.args);
        if let Some(cwd) = &opts.cwd {
            cmd.current_dir(cwd);
        }
        cmd.env_remove("EXECD_ACCESS_TOKEN").env_remove("EXECD_ENVS").env_remove("JUPYTER_HOST");
        if let Some(t) = &opts.token {
            cmd.env("EXECD_ACCESS_TOKEN", t);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let log = std::fs::File::create(&log_path).unwrap();
        cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
        let child = cmd.spawn().expect("spawn execd");
        let init_mode = opts.args.iter().any(|a| a == "--init" || a == "-init");
        let mut server = TestServer {
            child: Some(child),
            port: 0,
            token: opts.token.clone(),
            dir,
            state_dir,
            log_path,
            init_mode,
            in_process: None,
        };
        if server.wait_ready(opts.ready_timeout.unwrap_or(TIMEOUT)) {
            if !opts.ping_only {
                // Any answer will do (another build may not have the route).
                blocking_get(server.port, opts.token.as_deref(), "/capabilities");
            }
            return server;
        }
        let log = server.log();
        server.kill();
        panic!("execd did not become ready; log:\n{log}");
    }

    /// [`TestServer::start_with`] for [`ServerOptions::in_process`]: the same arguments and
    /// state-directory preparation as the binary's, then `execd::run` here.
    fn start_in_process(
        opts: ServerOptions,
        dir: tempfile::TempDir,
        state_dir: PathBuf,
        log_path: PathBuf,
    ) -> TestServer {
        assert!(
            opts.wrapper.is_empty()
                && opts.program.is_none()
                && opts.cwd.is_none()
                && opts.env.is_empty()
                && opts.port.is_none()
                && !opts.default_bind,
            "an in-process execd takes no wrapper, program, working directory, environment or port"
        );
        let mut args: Vec<String> =
            ["--port", "0", "--bind", "127.0.0.1", "--cgroup-root", "none", "--state-dir"].map(String::from).into();
        args.push(state_dir.display().to_string());
        args.extend(opts.args.iter().cloned());
        let token = opts.token.clone();
        let env = |k: &str| if k == "EXECD_ACCESS_TOKEN" { token.clone() } else { None };
        let mut config = match execd::config::Config::parse(args, env) {
            Ok(execd::config::Invocation::Run(c)) => *c,
            Ok(_) => panic!("not a daemon invocation: {:?}", opts.args),
            Err(e) => panic!("bad arguments {:?}: {e}", opts.args),
        };
        config.state_dir = execd::state_dir::prepare_first(&[config.state_dir.clone()]).expect("state directory");
        std::fs::write(&log_path, "(execd runs in the test process: no log of its own)\n").unwrap();
        let (inproc, port) = InProcess::start(config);
        let server = TestServer {
            child: None,
            port,
            token: opts.token.clone(),
            dir,
            state_dir,
            log_path,
            init_mode: false,
            in_process: Some(inproc),
        };
        let deadline = opts.ready_timeout.unwrap_or(TIMEOUT);
        assert!(
            wait_until(deadline, || blocking_ping(port, server.token.as_deref())),
            "the in-process execd did not answer /ping"
        );
        server
    }

    /// Waits until execd listens (its port learnt from `/proc`) and answers `/ping`; false when
    /// it exited or `timeout` passed.
    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let pid = self.pid();
        loop {
            if !self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None))) {
                return false;
            }
            if let Some(port) = listening_port(pid) {
                self.port = port;
                break;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let (port, token) = (self.port, self.token.clone());
        wait_until(deadline.saturating_duration_since(Instant::now()), || {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return true;
            }
            blocking_ping(port, token.as_deref())
        }) && self.child.as_mut().map(|c| matches!(c.try_wait(), Ok(None))).unwrap_or(false)
    }

    /// The execd process id (this process for an in-process execd).
    pub fn pid(&self) -> u32 {
        if self.in_process.is_some() {
            return std::process::id();
        }
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base(), path)
    }

    /// A reqwest client that sends the token (if any) on every request.
    pub fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &self.token {
            headers.insert("X-EXECD-ACCESS-TOKEN", t.parse().unwrap());
        }
        reqwest::Client::builder().default_headers(headers).build().unwrap()
    }

    /// What execd printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (with [`TIMEOUT`]) for exit; returns the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        if let Some(inproc) = self.in_process.as_mut() {
            use std::os::unix::process::ExitStatusExt;
            let code = match inproc.stop()? {
                Ok(()) => 0,
                Err(_) => 1,
            };
            return Some(std::process::ExitStatus::from_raw(code << 8));
        }
        let child = self.child.as_mut()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL and reap. In `--init` mode every descendant too (the daemon and the entrypoint
    /// are init's children: killing init alone would leave them running); otherwise what execd
    /// started stays, as after a real `kill -9` (the restart tests look for those orphans).
    pub fn kill(&mut self) {
        if let Some(inproc) = self.in_process.as_mut() {
            inproc.stop();
        }
        if let Some(mut c) = self.child.take() {
            let pids = if self.init_mode { family(c.id()) } else { Vec::new() };
            let _ = c.kill();
            for p in pids.into_iter().skip(1) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = c.wait();
        }
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.in_process.is_some() {
            // Not while unwinding from a failed assertion: a second panic would abort.
            if !std::thread::panicking() {
                self.terminate();
            } else if let Some(inproc) = self.in_process.as_mut() {
                drop(inproc.stop.take());
            }
            return;
        }
        if self.child.is_some() && self.terminate().is_none() {
            self.kill();
        }
    }
}

/// `read`, retried when a signal interrupts it. With a read timeout set, the kernel never
/// restarts a socket read after a signal handler ran (signal(7)), and this process has one for
/// SIGCHLD (tokio's, for the tests spawning children): without the retry a child of another test
/// exiting reads here as the connection closing (as in CI run 63, an idle connection "closed after 430 ms").
pub fn read_retrying(s: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// One blocking `GET /ping` over a raw socket; true on 200.
pub fn blocking_ping(port: u16, token: Option<&str>) -> bool {
    blocking_get(port, token, "/ping")
}

/// One `GET path` on a fresh connection; true on a 200.
pub fn blocking_get(port: u16, token: Option<&str>, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let auth = token.map(|t| format!("X-EXECD-ACCESS-TOKEN: {t}\r\n")).unwrap_or_default();
    if s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

/// Parses a complete execd event stream body (`{json}\n\n` framing, §3.1) into events.
/// Panics on any line that is not JSON, so framing bugs fail the test.
pub fn parse_events(body: &str) -> Vec<Value> {
    body.split("\n\n")
        .filter(|chunk| !chunk.is_empty())
        .map(|chunk| {
            assert!(!chunk.contains('\n'), "event spans lines: {chunk:?}");
            serde_json::from_str::<Value>(chunk).unwrap_or_else(|e| panic!("bad event {chunk:?}: {e}"))
        })
        .collect()
}

/// Events other than `ping`.
pub fn without_pings(events: &[Value]) -> Vec<Value> {
    events.iter().filter(|e| e["type"] != "ping").cloned().collect()
}

/// The `text` of every event of `kind`, in order, each without its one line ending (`\r\n`, `\n`
/// or `\r`): output events keep their endings (docs/COMPATIBILITY.md), and most tests compare
/// lines. Tests of the framing itself use [`raw_texts`].
pub fn texts(events: &[Value], kind: &str) -> Vec<String> {
    raw_texts(events, kind)
        .into_iter()
        .map(|t| {
            let line = t.strip_suffix("\r\n").or_else(|| t.strip_suffix('\n')).or_else(|| t.strip_suffix('\r'));
            line.unwrap_or(&t).to_string()
        })
        .collect()
}

/// The exact `text` of every event of `kind`, in order.
pub fn raw_texts(events: &[Value], kind: &str) -> Vec<String> {
    events.iter().filter(|e| e["type"] == kind).map(|e| e["text"].as_str().unwrap_or("").to_string()).collect()
}

/// Incremental reader of an event stream: yields one parsed event at a time.
pub struct EventReader {
    resp: reqwest::Response,
    buf: Vec<u8>,
    /// Where the next event starts in `buf` (bytes before it are consumed).
    start: usize,
    /// How far from `start` the current event was searched for its `\n\n` already.
    scanned: usize,
}

impl EventReader {
    pub fn new(resp: reqwest::Response) -> Self {
        EventReader { resp, buf: Vec::new(), start: 0, scanned: 0 }
    }

    /// The next event, or `None` at the end of the stream. Each byte is searched once (memchr)
    /// and moved at most once more: a GiB-sized stream is read at memory speed, not by the test's
    /// unoptimized code.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            let rest = &self.buf[self.start..];
            if let Some(pos) = memchr::memmem::find(&rest[self.scanned..], b"\n\n").map(|p| p + self.scanned) {
                let event = &rest[..pos];
                let value = (!event.iter().all(u8::is_ascii_whitespace)).then(|| {
                    serde_json::from_slice(event)
                        .unwrap_or_else(|e| panic!("bad event {:?}: {e}", String::from_utf8_lossy(event)))
                });
                self.start += pos + 2;
                self.scanned = 0;
                match value {
                    Some(v) => return Some(v),
                    None => continue,
                }
            }
            // The separator may straddle the next chunk.
            self.scanned = rest.len().saturating_sub(1);
            if self.start > 0 && self.start * 2 >= self.buf.len() {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            match self.resp.chunk().await.expect("stream read") {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => {
                    let rest = &self.buf[self.start..];
                    assert!(
                        rest.iter().all(|b| b.is_ascii_whitespace()),
                        "trailing bytes: {:?}",
                        String::from_utf8_lossy(rest)
                    );
                    return None;
                }
            }
        }
    }

    /// The next event that is not a `ping`.
    pub async fn next_non_ping(&mut self) -> Option<Value> {
        loop {
            let e = self.next().await?;
            if e["type"] != "ping" {
                return Some(e);
            }
        }
    }

    /// Reads to the end of the stream.
    pub async fn rest(&mut self) -> Vec<Value> {
        let mut v = Vec::new();
        while let Some(e) = self.next().await {
            v.push(e);
        }
        v
    }
}

/// Resident set size of `pid` in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_field(pid, "VmRSS:")
}

/// Peak resident set size of `pid` in KiB.
pub fn hwm_kib(pid: u32) -> u64 {
    proc_status_field(pid, "VmHWM:")
}

/// Number of threads of `pid`.
pub fn threads(pid: u32) -> u64 {
    proc_status_field(pid, "Threads:")
}

fn proc_status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Whether leaf `name` of execd `pid` (cgroup v1) is a spare made ahead of time: marked by an
/// empty `execd::cgroup::SPARE_MARK` cgroup in the `pids` hierarchy while it waits.
pub fn is_spare_leaf(pid: u32, name: &str) -> bool {
    std::path::Path::new(&format!("/sys/fs/cgroup/pids/execd-{pid}"))
        .join(name)
        .join(execd::cgroup::SPARE_MARK)
        .is_dir()
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    // The files of execd's spare cgroup leaves (a fixed number made ahead of time after the
    // first command, see `cgroup::leaf_for_spawn`; marked while they wait) are not what a leak
    // check looks for.
    let marker = format!("/execd-{pid}/");
    let spare = |target: &std::path::Path| {
        let t = target.to_string_lossy();
        let Some(at) = t.find(&marker) else { return false };
        t[at + marker.len()..].split('/').next().is_some_and(|leaf| is_spare_leaf(pid, leaf))
    };
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.flatten().filter(|e| !std::fs::read_link(e.path()).is_ok_and(|t| spare(&t))).count())
        .unwrap_or(0)
}

/// Direct children of `pid` (from /proc/*/stat), with their state letter.
pub fn children(pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
            let Some(close) = stat.rfind(')') else { continue };
            let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
            if fields.len() > 2 && fields[1].parse::<u32>().ok() == Some(pid) {
                out.push((p, fields[0].chars().next().unwrap_or('?')));
            }
        }
    }
    out
}

/// Whether a process with this pid exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rfind(')').and_then(|i| stat[i + 2..].chars().next()).is_some_and(|c| c != 'Z'),
        Err(_) => false,
    }
}

/// `GET /command/status/{id}` as JSON.
pub async fn command_status(s: &TestServer, id: &str) -> serde_json::Value {
    s.client().get(s.url(&format!("/command/status/{id}"))).send().await.unwrap().json().await.unwrap()
}

/// Polls the status of command `id` until it is no longer running (at most [`TIMEOUT`]) and
/// returns that status.
pub async fn wait_finished(s: &TestServer, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let st = command_status(s, id).await;
        if st["running"] == false {
            return st;
        }
        assert!(Instant::now() < deadline, "command {id} still running: {st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
