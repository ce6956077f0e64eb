//! More than one architecture (EXTENSIONS X55): the static aarch64 binary that
//! `scripts/build-static.sh --target aarch64` builds runs under qemu-user (Debian
//! `qemu-user-static`), serves `/ping`, runs a command through `POST /command`, exports a
//! `tar.zst` archive (libzstd, its one C dependency), answers `/capabilities` and stops cleanly on
//! SIGTERM.
//!
//! The binary comes from `EXECD_AARCH64_BIN` (`scripts/test.sh` builds it beside the x86_64 one
//! and sets it); without it, or without `qemu-aarch64-static`, the test is a missing prerequisite
//! (a failure in CI). Only execd is emulated: the shells it starts are the host's own binaries,
//! which the kernel runs natively.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{json, Value};

/// Emulated startup and requests are slow (tens of times slower than native, more on a loaded
/// machine): generous deadlines, still bounded.
const EMULATED: Duration = Duration::from_secs(90);

/// `e_machine` of an aarch64 ELF file.
const EM_AARCH64: u16 = 183;

fn qemu() -> Option<PathBuf> {
    ["/usr/bin/qemu-aarch64-static", "/usr/bin/qemu-aarch64"].iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Checks the ELF header and program headers: 64-bit little-endian aarch64, no PT_INTERP.
fn assert_static_aarch64(bin: &Path) {
    let elf = std::fs::read(bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(elf.len() > 64 && &elf[..4] == b"\x7fELF" && elf[4] == 2 && elf[5] == 1, "not a 64-bit LE ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]);
    assert_eq!(u16_at(0x12), EM_AARCH64, "{} is not an aarch64 binary", bin.display());
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36) as usize, u16_at(0x38) as usize);
    let interp = (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3 // PT_INTERP
    });
    assert!(!interp, "{} has a program interpreter (dynamically linked)", bin.display());
}

#[tokio::test]
async fn x55_aarch64_static_binary_runs_under_qemu() {
    let Some(bin) = std::env::var_os("EXECD_AARCH64_BIN").filter(|p| !p.is_empty()).map(PathBuf::from) else {
        common::prerequisite_missing("EXECD_AARCH64_BIN is not set (scripts/build-static.sh --target aarch64)");
        return;
    };
    let Some(qemu) = qemu() else {
        common::prerequisite_missing("qemu-aarch64-static (Debian qemu-user-static)");
        return;
    };
    assert_static_aarch64(&bin);

    let started = Instant::now();
    let mut s = TestServer::options().wrapper(&[qemu.to_str().unwrap()]).program(&bin).ready_timeout(EMULATED).start();
    eprintln!("aarch64 execd under qemu answered /ping after {:?}", started.elapsed());
    // It is the emulated aarch64 build that answers (the startup line names the arch).
    assert!(s.log().contains("aarch64"), "startup log does not name aarch64:\n{}", s.log());

    let client = reqwest::Client::builder().timeout(EMULATED).build().unwrap();
    let resp = client.post(s.url("/command")).json(&json!({"command": "echo hello"})).send().await.unwrap();
    assert_eq!(resp.status(), 200, "POST /command");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = common::without_pings(&common::parse_events(&resp.text().await.unwrap()));
    assert_eq!(events[0]["type"], "init", "{events:?}");
    assert_eq!(common::texts(&events, "stdout"), ["hello"], "{events:?}");
    assert_eq!(events.last().unwrap()["type"], "execution_complete", "{events:?}");
    let id = events[0]["text"].as_str().unwrap();
    let st: Value = client.get(s.url(&format!("/command/status/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!((st["running"].clone(), st["exit_code"].clone()), (json!(false), json!(0)), "{st}");

    // A non-zero exit code comes through as well (0 is not just a default).
    let resp = client.post(s.url("/command")).json(&json!({"command": "echo err >&2; exit 7"})).send().await.unwrap();
    let events = common::without_pings(&common::parse_events(&resp.text().await.unwrap()));
    assert_eq!(common::texts(&events, "stderr"), ["err"], "{events:?}");
    let id = events[0]["text"].as_str().unwrap();
    let st: Value = client.get(s.url(&format!("/command/status/{id}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(st["exit_code"], 7, "{st}");

    // The one C dependency, libzstd, cross-compiled with the glibc cross gcc and linked with musl
    // (scripts/build-static.sh): a tar.zst export decodes to what was archived.
    let dir = tempfile::tempdir().unwrap();
    let text = "compressible line\n".repeat(5000);
    std::fs::write(dir.path().join("a.txt"), &text).unwrap();
    let path = percent_encoding::utf8_percent_encode(dir.path().to_str().unwrap(), percent_encoding::NON_ALPHANUMERIC);
    let resp = client.get(s.url(&format!("/files/archive?path={path}&format=tar.zst"))).send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET /files/archive tar.zst");
    let zst = resp.bytes().await.unwrap();
    assert!(zst.len() < text.len() / 10, "{} bytes: not compressed", zst.len());
    let tar = zstd::decode_all(&zst[..]).expect("zstd frame from the aarch64 libzstd");
    let mut archive = tar::Archive::new(&tar[..]);
    let mut found = None;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().file_name() == Some("a.txt".as_ref()) {
            let mut body = String::new();
            std::io::Read::read_to_string(&mut entry, &mut body).unwrap();
            found = Some(body);
        }
    }
    assert!(found.as_deref() == Some(text.as_str()), "a.txt missing or different in the tar.zst export");

    let resp = client.get(s.url("/capabilities")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET /capabilities");
    let caps: Value = resp.json().await.unwrap();
    assert_eq!(caps["features"]["arch"], "aarch64", "{caps}");
    assert_eq!(caps["features"]["command_events"], true, "{caps}");
    assert_eq!(caps["features"]["archive"], json!(["tar", "tar.gz", "tar.zst", "zip"]), "{caps}");

    // SIGTERM reaches the emulated process (qemu-user delivers it to the guest's handler): a
    // graceful stop, exit status 0, within the common deadline.
    let pid = s.pid();
    let sent = Instant::now();
    let status = s.terminate().unwrap_or_else(|| panic!("execd under qemu (pid {pid}) ignored SIGTERM"));
    assert!(status.success(), "exit after SIGTERM: {status:?}; log:\n{}", s.log());
    eprintln!("stopped {:?} after SIGTERM", sent.elapsed());
}
