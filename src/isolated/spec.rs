//! The create request of an isolated session (ISOLATED.md I7–I8): its wire shape, validation, and
//! the normalised settings that are stored and echoed back (I11). Pure functions of the request
//! and a few host lookups (`canonicalize`, `exists`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::IsolatedError;

/// At most this many mounts per session (overlays, extra writable paths and binds).
pub const MAX_MOUNTS: usize = 16;

/// Default writable allowlist for `extra_writable` and `binds` (I31).
pub const DEFAULT_ALLOWED_WRITABLE: &[&str] = &["/workspace", "/mnt", "/media", "/data"];

/// `workspace`: legacy sugar for one overlay.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkspaceReq {
    pub path: String,
    #[serde(default)]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OverlayReq {
    pub path: String,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub persist: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BindReq {
    pub source: String,
    #[serde(default)]
    pub dest: Option<String>,
    #[serde(default)]
    pub readonly: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct EnvPassReq {
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub keys: Option<Vec<String>>,
}

/// `POST /v1/isolated/session` body. Unknown keys are ignored; every field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CreateRequest {
    pub profile: Option<String>,
    pub workspace: Option<WorkspaceReq>,
    pub overlays: Option<Vec<OverlayReq>>,
    pub extra_writable: Option<Vec<String>>,
    pub binds: Option<Vec<BindReq>>,
    pub share_net: Option<bool>,
    pub env_passthrough: Option<EnvPassReq>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub uid_mode: Option<String>,
    pub idle_timeout_seconds: Option<i64>,
}

/// How a path is mounted in the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Rw,
    Overlay,
    Ro,
}

#[derive(Debug, Clone, Serialize)]
pub struct Overlay {
    pub path: String,
    pub mode: Mode,
    /// Only for `overlay` (absent on the wire for `rw`/`ro`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persist: Option<bool>,
}

impl Overlay {
    /// An overlay whose upper layer lives on the host (diff, commit, background logs).
    pub fn persistent(&self) -> bool {
        self.mode == Mode::Overlay && self.persist != Some(false)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Bind {
    pub source: String,
    pub dest: String,
    pub readonly: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnvPassthrough {
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
}

/// The normalised, validated request (I8), echoed by `GET /session/{id}` (I11).
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub profile: String,
    pub overlays: Vec<Overlay>,
    pub extra_writable: Vec<String>,
    pub binds: Vec<Bind>,
    /// As the caller gave it (echoed only if set); the effective value is [`Settings::net_shared`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_net: Option<bool>,
    pub env_passthrough: EnvPassthrough,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    pub uid_mode: String,
    pub idle_timeout_seconds: u64,
}

impl Settings {
    pub fn net_shared(&self) -> bool {
        self.share_net.unwrap_or(true)
    }
    pub fn strict(&self) -> bool {
        self.profile == "strict"
    }
    pub fn primary(&self) -> &Overlay {
        &self.overlays[0]
    }
}

fn invalid(m: impl Into<String>) -> IsolatedError {
    IsolatedError::Invalid(m.into())
}

/// An absolute, clean path: no trailing `/`, no `.`/`..`/empty components, no NUL, and none of
/// the characters overlayfs' option syntax gives a meaning (`,` `:` `\`).
pub fn check_path(what: &str, p: &str) -> Result<(), IsolatedError> {
    if !p.starts_with('/') {
        return Err(invalid(format!("{what} must be an absolute path: {p:?}")));
    }
    if p != "/" && (p.ends_with('/') || p.contains("//")) {
        return Err(invalid(format!("{what} must be a clean path (no trailing or double '/'): {p:?}")));
    }
    if p.split('/').any(|c| c == "." || c == "..") {
        return Err(invalid(format!("{what} must not contain '.' or '..': {p:?}")));
    }
    if p.contains(['\0', ',', ':', '\\', '\n']) {
        return Err(invalid(format!("{what} contains a character that cannot be mounted: {p:?}")));
    }
    Ok(())
}

fn parse_mode(m: Option<&str>) -> Result<Mode, IsolatedError> {
    match m.unwrap_or("") {
        "" | "overlay" => Ok(Mode::Overlay),
        "rw" => Ok(Mode::Rw),
        "ro" => Ok(Mode::Ro),
        other => Err(invalid(format!("invalid mode {other:?}: expected rw, overlay or ro"))),
    }
}

/// Paths no session may mount over (the kernel's and execd's own).
fn forbidden_mount(p: &Path, state_dir: &Path) -> bool {
    p == Path::new("/")
        || ["/proc", "/sys", "/dev"].iter().any(|f| p.starts_with(f))
        || p.starts_with(state_dir)
        || state_dir.starts_with(p)
}

/// Resolves `p` (symlinks followed) and checks it lies under the allowlist (I31).
fn allowed_source(what: &str, p: &str, allowed: &[PathBuf]) -> Result<PathBuf, IsolatedError> {
    check_path(what, p)?;
    let real = std::fs::canonicalize(p).map_err(|e| invalid(format!("{what} {p:?}: {e}")))?;
    if !allowed.iter().any(|a| real.starts_with(a)) {
        return Err(invalid(format!(
            "{what} {} is outside the writable allowlist ({})",
            real.display(),
            allowed.iter().map(|a| a.display().to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(real)
}

/// Validates and normalises `req` (I8). `allowed` must hold canonical paths.
pub fn normalise(req: CreateRequest, allowed: &[PathBuf], state_dir: &Path) -> Result<Settings, IsolatedError> {
    let profile = match req.profile.as_deref().unwrap_or("") {
        "" | "strict" => "strict",
        "balanced" => "balanced",
        other => return Err(invalid(format!("invalid profile {other:?}: expected strict or balanced"))),
    };
    let mut raw: Vec<OverlayReq> = Vec::new();
    if let Some(ws) = req.workspace {
        raw.push(OverlayReq { path: ws.path, mode: ws.mode, persist: None });
    }
    raw.extend(req.overlays.unwrap_or_default());
    if raw.is_empty() {
        return Err(invalid("workspace or overlays is required"));
    }
    let mut overlays = Vec::with_capacity(raw.len());
    for o in raw {
        check_path("overlay path", &o.path)?;
        if forbidden_mount(Path::new(&o.path), state_dir) {
            return Err(invalid(format!("overlay path {:?} cannot be mounted over", o.path)));
        }
        let mode = parse_mode(o.mode.as_deref())?;
        let persist = match (mode, o.persist) {
            (Mode::Overlay, p) => Some(p.unwrap_or(true)),
            (_, None) => None,
            (_, Some(_)) => return Err(invalid(format!("persist is only valid with mode overlay ({:?})", o.path))),
        };
        if overlays.iter().any(|x: &Overlay| x.path == o.path) {
            return Err(invalid(format!("duplicate overlay path {:?}", o.path)));
        }
        overlays.push(Overlay { path: o.path, mode, persist });
    }
    let mut extra_writable = Vec::new();
    for p in req.extra_writable.unwrap_or_default() {
        let real = allowed_source("extra_writable", &p, allowed)?;
        extra_writable.push(real.display().to_string());
    }
    let mut binds = Vec::new();
    for b in req.binds.unwrap_or_default() {
        let real = allowed_source("bind source", &b.source, allowed)?;
        let dest = b.dest.filter(|d| !d.is_empty()).unwrap_or_else(|| b.source.clone());
        check_path("bind dest", &dest)?;
        if forbidden_mount(Path::new(&dest), state_dir) {
            return Err(invalid(format!("bind dest {dest:?} cannot be mounted over")));
        }
        if !Path::new(&dest).exists() {
            return Err(invalid(format!("bind dest {dest:?} does not exist")));
        }
        binds.push(Bind { source: real.display().to_string(), dest, readonly: b.readonly.unwrap_or(false) });
    }
    if overlays.len() + extra_writable.len() + binds.len() > MAX_MOUNTS {
        return Err(invalid(format!("at most {MAX_MOUNTS} mounts per session")));
    }
    let env_passthrough = match req.env_passthrough.unwrap_or_default() {
        EnvPassReq { mode: None, .. } => EnvPassthrough { mode: "deny".into(), keys: None },
        EnvPassReq { mode: Some(m), keys } => match m.as_str() {
            "" => EnvPassthrough { mode: "deny".into(), keys: None },
            "allow" | "deny" => EnvPassthrough { mode: m, keys },
            other => return Err(invalid(format!("invalid env_passthrough.mode {other:?}: expected allow or deny"))),
        },
    };
    let uid_mode = match req.uid_mode.as_deref().unwrap_or("") {
        "" | "setpriv" => "setpriv",
        "userns" => "userns",
        other => return Err(invalid(format!("invalid uid_mode {other:?}: expected setpriv or userns"))),
    };
    Ok(Settings {
        profile: profile.into(),
        overlays,
        extra_writable,
        binds,
        share_net: req.share_net,
        env_passthrough,
        uid: req.uid,
        gid: req.gid,
        uid_mode: uid_mode.into(),
        idle_timeout_seconds: req.idle_timeout_seconds.unwrap_or(0).max(0) as u64,
    })
}

/// Names removed by the default pass-through rule (I33), matched case-insensitively.
fn blacklisted(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD"].iter().any(|s| n.ends_with(s))
        || ["AWS_", "ALI_", "ALIYUN_", "K8S_", "KUBE_"].iter().any(|p| n.starts_with(p))
        || n.starts_with("EXECD_")
        || n.starts_with("JUPYTER_")
}

/// The session's environment from execd's (already stripped of execd's secrets) (I33).
pub fn session_env(base: crate::process::env::EnvMap, pass: &EnvPassthrough) -> crate::process::env::EnvMap {
    let keys = pass.keys.clone().unwrap_or_default();
    let mut env: crate::process::env::EnvMap = match (pass.mode.as_str(), keys.is_empty()) {
        ("allow", _) => base.into_iter().filter(|(k, _)| keys.contains(k)).collect(),
        (_, true) => base.into_iter().filter(|(k, _)| !blacklisted(k)).collect(),
        (_, false) => base.into_iter().filter(|(k, _)| !keys.contains(k)).collect(),
    };
    // execd's own variables never reach a session, whatever the rule (D17).
    env.retain(|k, _| !k.starts_with("EXECD_") && !k.starts_with("JUPYTER_"));
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_clean_and_absolute() {
        for bad in ["rel", "/a/", "/a/../b", "/a/./b", "/a//b", "/a,b", "/a:b"] {
            assert!(check_path("p", bad).is_err(), "{bad}");
        }
        for good in ["/a", "/a/b c", "/workspace"] {
            assert!(check_path("p", good).is_ok(), "{good}");
        }
    }

    #[test]
    fn blacklist_matches_upstream_patterns() {
        for k in ["OPENAI_API_KEY", "gh_token", "DB_PASSWORD", "AWS_REGION", "KUBE_X", "EXECD_ACCESS_TOKEN"] {
            assert!(blacklisted(k), "{k}");
        }
        for k in ["PATH", "HOME", "TOKENIZER"] {
            assert!(!blacklisted(k), "{k}");
        }
    }
}
