//! `EXECD_CLONE3_COMPAT` (§1.6, C5): a seccomp filter that makes `clone3` fail with ENOSYS so that
//! libc and runtimes in children fall back to `clone` (for old container runtimes whose seccomp
//! profiles answer EPERM). Must run before any thread exists, i.e. before the tokio runtime.
//!
//! Side effect, as upstream: `no_new_privs` is set, so setuid binaries (sudo) stop elevating.
#![allow(unsafe_code)]

/// What `EXECD_CLONE3_COMPAT` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clone3Mode {
    Off,
    Filter,
    Reexec,
}

/// Marker set before re-exec so the new image does not loop.
pub const APPLIED_MARKER: &str = "_EXECD_CLONE3_COMPAT_APPLIED";

/// Parses the variable's value (trimmed, case-insensitive).
pub fn parse_mode(raw: &str) -> Result<Clone3Mode, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "off" | "no" => Ok(Clone3Mode::Off),
        "1" | "true" | "yes" | "on" => Ok(Clone3Mode::Filter),
        "reexec" => Ok(Clone3Mode::Reexec),
        _ => Err(format!("invalid EXECD_CLONE3_COMPAT={raw:?} (want 1/true/yes/on, reexec, or 0/false/off/no)")),
    }
}

const SYS_CLONE3: u32 = 435;
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_SET_MODE_FILTER: libc::c_long = 1;
const SECCOMP_FILTER_FLAG_TSYNC: libc::c_long = 1;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}
fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Installs the filter on every thread of this process (TSYNC).
pub fn install_filter() -> Result<(), String> {
    let mut prog = [
        stmt(BPF_LD_W_ABS, 4),                                      // arch
        jump(BPF_JEQ_K, AUDIT_ARCH, 0, 3),                          // other arch: allow
        stmt(BPF_LD_W_ABS, 0),                                      // syscall nr
        jump(BPF_JEQ_K, SYS_CLONE3, 0, 1),                          // clone3?
        stmt(BPF_RET_K, SECCOMP_RET_ERRNO | (libc::ENOSYS as u32)), // yes: ENOSYS
        stmt(BPF_RET_K, SECCOMP_RET_ALLOW),                         // no: allow
    ];
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_mut_ptr() };
    // SAFETY: plain prctl with integer arguments; no memory is passed.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(format!("prctl(PR_SET_NO_NEW_PRIVS): {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fprog` points at `prog`, both alive for the duration of the call; the kernel copies
    // the program before returning.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            SECCOMP_FILTER_FLAG_TSYNC,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(format!("seccomp(SET_MODE_FILTER): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Applies the mode named by the environment. Returns `Ok(true)` when a filter is active.
/// In reexec mode this does not return on success (the process image is replaced).
pub fn apply_from_env() -> Result<bool, String> {
    let raw = std::env::var("EXECD_CLONE3_COMPAT").unwrap_or_default();
    match parse_mode(&raw)? {
        Clone3Mode::Off => Ok(false),
        Clone3Mode::Filter => install_filter().map(|_| true),
        Clone3Mode::Reexec => {
            if std::env::var(APPLIED_MARKER).as_deref() == Ok("1") {
                // The filter survived execve; nothing more to do.
                return Ok(true);
            }
            install_filter()?;
            std::env::set_var(APPLIED_MARKER, "1");
            use std::os::unix::process::CommandExt;
            let mut args = std::env::args_os();
            let argv0 = args.next().unwrap_or_default();
            let err = std::process::Command::new("/proc/self/exe").arg0(argv0).args(args).exec();
            Err(format!("re-exec /proc/self/exe: {err}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        for v in ["", "0", "false", " OFF ", "no"] {
            assert_eq!(parse_mode(v), Ok(Clone3Mode::Off), "{v}");
        }
        for v in ["1", "true", "YES", "on"] {
            assert_eq!(parse_mode(v), Ok(Clone3Mode::Filter), "{v}");
        }
        assert_eq!(parse_mode("reexec"), Ok(Clone3Mode::Reexec));
        assert!(parse_mode("bogus").unwrap_err().contains("invalid EXECD_CLONE3_COMPAT"));
    }
}
