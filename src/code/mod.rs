//! Code interpreting over Jupyter (reference §6, DECISIONS D50): [`CodeManager`] creates, lists and
//! deletes code contexts (a Jupyter session with its kernel), runs code in them and interrupts
//! them; [`CodeError`] says why not. No HTTP server types here; `api/code.rs` translates.
//!
//! - [`jupyter`]: the REST client (kernelspecs, sessions, kernels, interrupt); bounded retries.
//! - [`kernel`]: one execution over the kernel WebSocket; [`protocol`]: the message mapping.
//!
//! Decisions (beyond the reference):
//! - No Jupyter configured (host or token empty): every call fails at once with
//!   [`CodeError::NotConfigured`]. Jupyter down: connection attempts are retried for
//!   [`CodeOpts::retry_budget`], then [`CodeError::Unreachable`]. No kernelspec for the language:
//!   [`CodeError::NoKernelSpec`] at once. Never a hang (C93).
//! - Default contexts (a run without `context.id`) are created single-flight per language: two
//!   concurrent first runs share one context (§18.8).
//! - **Busy:** one run per context at a time. A second run on a context that is running fails
//!   before `init` with [`CodeError::Busy`] (HTTP 409 `CONFLICT`) instead of upstream's error
//!   after `init` (§18.8). It is not queued: runs have no timeout, so a queue could wait forever;
//!   the client can retry or interrupt.
//! - The WebSocket is opened before `init`, so a kernel that cannot be reached is a JSON error too.
//! - Kernel messages are matched by `parent_header.msg_id`; `display_data` becomes `result`.
//! - A kernelspec named `python3` is skipped, as upstream does (the image registers `python`),
//!   unless it is the only one for the language.

pub mod jupyter;
pub mod kernel;
pub mod protocol;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::{ExecEnd, ExecEvent, ExecObserver, ExecStart, ExitInfo};
use jupyter::JupyterClient;
use protocol::RunTracker;

/// Events buffered between a run and a slow client.
const EVENT_BUFFER: usize = 64;

/// The languages whose contexts the context routes refuse (reference §6.3).
pub const NON_CONTEXT_LANGUAGES: &[&str] = &["command", "background-command", "sql"];

/// What the code manager needs from the configuration.
#[derive(Debug, Clone)]
pub struct CodeOpts {
    /// `JUPYTER_HOST` (`http://host:port[/prefix]`); empty means no Jupyter.
    pub jupyter_host: String,
    /// `JUPYTER_TOKEN`; empty means no Jupyter (as upstream's `/code`).
    pub jupyter_token: String,
    /// How long connection failures to Jupyter are retried (Jupyter may still be starting).
    pub retry_budget: Duration,
    /// Bound on each Jupyter REST call.
    pub request_timeout: Duration,
    /// Bound on opening a kernel WebSocket (includes a fresh kernel's start-up).
    pub connect_timeout: Duration,
}

impl CodeOpts {
    /// The defaults with the given Jupyter host and token.
    pub fn new(jupyter_host: impl Into<String>, jupyter_token: impl Into<String>) -> CodeOpts {
        CodeOpts {
            jupyter_host: jupyter_host.into(),
            jupyter_token: jupyter_token.into(),
            retry_budget: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(60),
        }
    }
}

/// Why a code operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("error running codes language runtime server not configured, please check your image runtime")]
    NotConfigured,
    #[error("invalid JUPYTER_HOST {0}")]
    BadHost(String),
    #[error("jupyter server unreachable: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Jupyter(String),
    #[error("{0}")]
    Kernel(String),
    #[error("no kernel specs found for language: {0}")]
    NoKernelSpec(String),
    #[error("unsupported language context operation: {0}")]
    UnsupportedLanguage(String),
    #[error("{0}")]
    Invalid(String),
    /// `GET`/`DELETE /code/contexts/{id}` of an unknown id (404).
    #[error("context {0} not found")]
    ContextNotFound(String),
    /// `POST /code` with an unknown `context.id` (500, as upstream).
    #[error("error running codes context not found")]
    RunContextNotFound(String),
    #[error("error running codes session is busy: context {0} is already running code")]
    Busy(String),
    #[error("error creating the context directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("execd is shutting down")]
    ShuttingDown,
}

/// A context as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextInfo {
    /// The Jupyter session id.
    pub id: String,
    pub language: String,
    /// The working directory asked for at creation, if any.
    pub cwd: Option<String>,
}

/// `POST /code` with a Jupyter language.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub code: String,
    /// Empty: the language's default context.
    pub context_id: String,
    pub language: String,
}

/// A started run: its context id and its events (`init` first, then the kernel's, ending with
/// `execution_complete` or `error`).
pub struct CodeRun {
    pub context_id: String,
    pub events: mpsc::Receiver<ExecEvent>,
}

/// One context: a Jupyter session and its kernel.
struct Context {
    info: ContextInfo,
    kernel_id: String,
    is_default: bool,
    /// Creation order, for stable listings.
    seq: u64,
    /// Our client session id in message headers; message ids are `<session>-<n>`.
    client_session: String,
    next_msg: AtomicU64,
    /// A run is in progress (see the busy decision in the module docs).
    running: AtomicBool,
    /// Cancelled when the context is deleted or execd shuts down: ends a run in progress.
    cancel: CancellationToken,
}

/// Clears the context's busy flag when the run ends, however it ends.
struct BusyGuard(Arc<Context>);

impl BusyGuard {
    fn acquire(ctx: &Arc<Context>) -> Result<BusyGuard, CodeError> {
        ctx.running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| CodeError::Busy(ctx.info.id.clone()))?;
        Ok(BusyGuard(ctx.clone()))
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

#[derive(Default)]
struct Registry {
    contexts: HashMap<String, Arc<Context>>,
    seq: u64,
}

struct Inner {
    client: Result<JupyterClient, CodeError>,
    opts: CodeOpts,
    // Plain mutexes: held only for map look-ups and inserts, never across an await.
    registry: Mutex<Registry>,
    /// Per language: held while the default context is looked up or created (single-flight).
    default_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    shutdown: CancellationToken,
    /// Told about every run (audit log, metrics, tracing).
    observer: std::sync::OnceLock<ExecObserver>,
}

/// Code contexts and runs. Cheap to clone.
#[derive(Clone)]
pub struct CodeManager {
    inner: Arc<Inner>,
}

fn unsupported(language: &str) -> Result<(), CodeError> {
    if NON_CONTEXT_LANGUAGES.contains(&language) {
        return Err(CodeError::UnsupportedLanguage(language.to_string()));
    }
    Ok(())
}

/// Picks the kernelspec for `language` from a `GET /api/kernelspecs` answer: a spec whose
/// `spec.language` matches, not named `python3` unless nothing else matches; by name order.
pub fn pick_kernelspec(specs: &Value, language: &str) -> Option<String> {
    let map = specs.get("kernelspecs")?.as_object()?;
    let mut names: Vec<&String> = map
        .iter()
        .filter(|(_, v)| v.pointer("/spec/language").and_then(Value::as_str) == Some(language))
        .map(|(k, _)| k)
        .collect();
    names.sort();
    names.iter().find(|n| n.as_str() != "python3").or(names.first()).map(|n| n.to_string())
}

/// Runs `work` in its own task, so that a caller that goes away (client disconnect) does not
/// cancel a context creation halfway: the kernel would be started in Jupyter and never recorded.
async fn detached<F>(work: F) -> Result<Arc<Context>, CodeError>
where
    F: std::future::Future<Output = Result<Arc<Context>, CodeError>> + Send + 'static,
{
    tokio::spawn(work).await.unwrap_or_else(|e| Err(CodeError::Jupyter(format!("creating the context failed: {e}"))))
}

impl CodeManager {
    /// A manager for the Jupyter server in `opts` (nothing is contacted yet).
    pub fn new(opts: CodeOpts) -> CodeManager {
        let client = if opts.jupyter_host.trim().is_empty() || opts.jupyter_token.is_empty() {
            Err(CodeError::NotConfigured)
        } else {
            JupyterClient::new(&opts.jupyter_host, &opts.jupyter_token, opts.request_timeout, opts.retry_budget)
        };
        CodeManager {
            inner: Arc::new(Inner {
                client,
                opts,
                registry: Mutex::new(Registry::default()),
                default_locks: Mutex::new(HashMap::new()),
                shutdown: CancellationToken::new(),
                observer: std::sync::OnceLock::new(),
            }),
        }
    }

    fn client(&self) -> Result<&JupyterClient, CodeError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(CodeError::ShuttingDown);
        }
        match &self.inner.client {
            Ok(c) => Ok(c),
            Err(CodeError::BadHost(m)) => Err(CodeError::BadHost(m.clone())),
            Err(_) => Err(CodeError::NotConfigured),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn find(&self, id: &str) -> Option<Arc<Context>> {
        self.registry().contexts.get(id).cloned()
    }

    /// `POST /code/context`: starts a kernel for `language`, in `cwd` when given (`~`/`$VAR`
    /// expanded, created with its parents; the kernel starts in the notebook's directory, as
    /// upstream).
    pub async fn create_context(&self, language: &str, cwd: Option<&str>) -> Result<ContextInfo, CodeError> {
        let (this, language, cwd) = (self.clone(), language.to_string(), cwd.map(str::to_string));
        let ctx = detached(async move { this.create(&language, cwd.as_deref(), false).await }).await?;
        Ok(ctx.info.clone())
    }

    async fn create(&self, language: &str, cwd: Option<&str>, is_default: bool) -> Result<Arc<Context>, CodeError> {
        if language.is_empty() {
            return Err(CodeError::Invalid("language: must not be empty".into()));
        }
        unsupported(language)?;
        let client = self.client()?;
        let specs = client.kernelspecs().await?;
        let spec = pick_kernelspec(&specs, language).ok_or_else(|| CodeError::NoKernelSpec(language.to_string()))?;
        let name = uuid::Uuid::new_v4().simple().to_string();
        let cwd = cwd.filter(|c| !c.is_empty());
        let path = match cwd {
            Some(c) => {
                let dir = PathBuf::from(crate::expand::expand_path(c, |k| std::env::var(k).ok()));
                if dir.exists() && !dir.is_dir() {
                    return Err(CodeError::Invalid(format!("cwd {} is not a directory", dir.display())));
                }
                tokio::fs::create_dir_all(&dir)
                    .await
                    .map_err(|source| CodeError::CreateDir { path: dir.clone(), source })?;
                format!("{}/{name}.ipynb", dir.to_string_lossy().trim_end_matches('/'))
            }
            None => format!("{name}.ipynb"),
        };
        let (session_id, kernel_id) = client.create_session(&path, &name, &spec).await?;
        let exists = client.kernel_exists(&kernel_id).await;
        if !matches!(exists, Ok(true)) {
            let _ = client.delete_session(&session_id).await;
            return Err(exists.err().unwrap_or_else(|| {
                CodeError::Jupyter(format!("the kernel {kernel_id} of the new session is not running"))
            }));
        }
        let mut reg = self.registry();
        reg.seq += 1;
        let ctx = Arc::new(Context {
            info: ContextInfo { id: session_id.clone(), language: language.to_string(), cwd: cwd.map(str::to_string) },
            kernel_id,
            is_default,
            seq: reg.seq,
            client_session: uuid::Uuid::new_v4().to_string(),
            next_msg: AtomicU64::new(1),
            running: AtomicBool::new(false),
            cancel: self.inner.shutdown.child_token(),
        });
        reg.contexts.insert(session_id, ctx.clone());
        tracing::info!(context = %ctx.info.id, language, kernel = %spec, "code context created");
        Ok(ctx)
    }

    /// The default context of `language`, created on first use. Single-flight: concurrent
    /// callers wait for one creation.
    async fn default_context(&self, language: &str) -> Result<Arc<Context>, CodeError> {
        let (this, language) = (self.clone(), language.to_string());
        detached(async move { this.default_context_inner(&language).await }).await
    }

    async fn default_context_inner(&self, language: &str) -> Result<Arc<Context>, CodeError> {
        let lock = {
            let mut locks = self.inner.default_locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(language.to_string()).or_default().clone()
        };
        let _flight = lock.lock().await;
        let existing = self.registry().contexts.values().find(|c| c.is_default && c.info.language == language).cloned();
        match existing {
            Some(c) => Ok(c),
            None => self.create(language, None, true).await,
        }
    }

    /// Installs the observer of every later run (once; a second call is ignored).
    pub fn set_observer(&self, observer: ExecObserver) {
        let _ = self.inner.observer.set(observer);
    }

    /// `POST /code` with a Jupyter language: resolves the context (the default one when no id
    /// is given), claims it (busy → [`CodeError::Busy`]), opens the kernel WebSocket, sends the
    /// code, and returns the event stream. Everything that can fail does so before `init`.
    pub async fn run(&self, req: RunRequest) -> Result<CodeRun, CodeError> {
        let client = self.client()?.clone();
        let mut first_attempt = true;
        let (ctx, busy, mut ws) = loop {
            let ctx = if req.context_id.is_empty() {
                unsupported(&req.language)?;
                self.default_context(&req.language).await?
            } else {
                self.find(&req.context_id).ok_or_else(|| CodeError::RunContextNotFound(req.context_id.clone()))?
            };
            let busy = BusyGuard::acquire(&ctx)?;
            let url = client.channels_url(&ctx.kernel_id);
            match kernel::connect(&url, client.token(), self.inner.opts.connect_timeout).await {
                Ok(ws) => break (ctx, busy, ws),
                // A default context whose kernel is gone from Jupyter (deleted behind our back,
                // Jupyter restarted) is replaced once, transparently: callers never chose it.
                Err(e) if first_attempt && ctx.is_default && !self.kernel_alive(&client, &ctx).await => {
                    tracing::warn!(context = %ctx.info.id, error = %e, "default context lost its kernel; replacing it");
                    self.registry().contexts.remove(&ctx.info.id);
                    ctx.cancel.cancel();
                    let _ = client.delete_session(&ctx.info.id).await;
                    first_attempt = false;
                }
                Err(e) => return Err(e),
            }
        };
        let msg_id = format!("{}-{}", ctx.client_session, ctx.next_msg.fetch_add(1, Ordering::Relaxed));
        kernel::send(&mut ws, protocol::execute_request(&msg_id, &ctx.client_session, &req.code)).await?;
        let tracker = RunTracker::new(msg_id);
        let (tx, events) = mpsc::channel(EVENT_BUFFER);
        // The channel is empty: the first event always fits.
        let _ = tx.try_send(ExecEvent::init(&ctx.info.id));
        let cancel = ctx.cancel.clone();
        let observed = self.inner.observer.get().map(|o| {
            o(&ExecStart {
                operation: "run_code",
                id: &ctx.info.id,
                command: &req.code,
                cwd: ctx.info.cwd.as_deref().map(std::path::Path::new),
                uid: None,
                gid: None,
                background: false,
            })
        });
        let started = std::time::Instant::now();
        tokio::spawn(async move {
            let end = kernel::drive(ws, tracker, tx, cancel, busy).await;
            if let Some(done) = observed {
                let exit = ExitInfo::reason(end.reason);
                let success = end.reason == "exited" && !end.error;
                done(&ExecEnd { exit_code: None, success, exit: &exit, duration: started.elapsed() });
            }
        });
        Ok(CodeRun { context_id: ctx.info.id.clone(), events })
    }

    /// Whether Jupyter still lists the context's kernel (true when Jupyter cannot tell).
    async fn kernel_alive(&self, client: &JupyterClient, ctx: &Context) -> bool {
        client.kernel_exists(&ctx.kernel_id).await.unwrap_or(true)
    }

    /// `DELETE /code?id=`: when `id` is a context, interrupts its kernel and returns true; false
    /// when it is not a context (the caller tries commands next).
    pub async fn interrupt(&self, id: &str) -> Result<bool, CodeError> {
        let Some(ctx) = self.find(id) else { return Ok(false) };
        self.client()?.interrupt(&ctx.kernel_id).await?;
        Ok(true)
    }

    /// `GET /code/contexts[?language=]`: contexts (created and default) in creation order.
    pub fn list(&self, language: Option<&str>) -> Result<Vec<ContextInfo>, CodeError> {
        if let Some(l) = language {
            unsupported(l)?;
        }
        let reg = self.registry();
        let mut v: Vec<&Arc<Context>> =
            reg.contexts.values().filter(|c| language.is_none_or(|l| c.info.language == l)).collect();
        v.sort_by_key(|c| c.seq);
        Ok(v.into_iter().map(|c| c.info.clone()).collect())
    }

    /// `GET /code/contexts/{id}`.
    pub fn get(&self, id: &str) -> Result<ContextInfo, CodeError> {
        self.find(id).map(|c| c.info.clone()).ok_or_else(|| CodeError::ContextNotFound(id.to_string()))
    }

    /// `DELETE /code/contexts/{id}`: deletes the Jupyter session (its kernel stops), ends a run in
    /// progress, forgets the context (also as a default).
    pub async fn delete(&self, id: &str) -> Result<(), CodeError> {
        let ctx = self.find(id).ok_or_else(|| CodeError::ContextNotFound(id.to_string()))?;
        self.client()?.delete_session(id).await?;
        self.registry().contexts.remove(id);
        ctx.cancel.cancel();
        tracing::info!(context = %id, "code context deleted");
        Ok(())
    }

    /// `DELETE /code/contexts?language=`: deletes every context of `language`, stopping at the
    /// first failure.
    pub async fn delete_language(&self, language: &str) -> Result<(), CodeError> {
        for info in self.list(Some(language))? {
            match self.delete(&info.id).await {
                Ok(()) | Err(CodeError::ContextNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Shutdown: runs in progress end with an `error` event; new calls fail. Kernels are left
    /// running, as upstream (the Jupyter server owns them).
    pub fn stop(&self) {
        self.inner.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kernelspec_pick_skips_python3() {
        let specs = json!({"kernelspecs": {
            "python3": {"spec": {"language": "python"}},
            "python": {"spec": {"language": "python"}},
            "bash": {"spec": {"language": "bash"}},
        }});
        assert_eq!(pick_kernelspec(&specs, "python").as_deref(), Some("python"));
        assert_eq!(pick_kernelspec(&specs, "bash").as_deref(), Some("bash"));
        assert_eq!(pick_kernelspec(&specs, "cobol"), None);
        let only3 = json!({"kernelspecs": {"python3": {"spec": {"language": "python"}}}});
        assert_eq!(pick_kernelspec(&only3, "python").as_deref(), Some("python3"));
    }

    #[tokio::test]
    async fn not_configured_fails_at_once() {
        let m = CodeManager::new(CodeOpts::new("", ""));
        assert!(matches!(m.create_context("python", None).await, Err(CodeError::NotConfigured)));
        let m = CodeManager::new(CodeOpts::new("http://127.0.0.1:1", ""));
        let run = m.run(RunRequest { code: "1".into(), language: "python".into(), ..Default::default() }).await;
        assert!(matches!(run, Err(CodeError::NotConfigured)));
        assert_eq!(m.list(None).unwrap(), vec![]);
        assert!(matches!(m.list(Some("sql")), Err(CodeError::UnsupportedLanguage(_))));
        assert!(matches!(m.get("x"), Err(CodeError::ContextNotFound(_))));
        assert!(!m.interrupt("x").await.unwrap());
    }
}
