//! Streamed directory export (X30): walk `DIR` (never following symlinks; excludes and
//! `.gitignore` through the `ignore` crate's walker) and write each entry into the archive as it
//! is found, on one blocking thread, into a [`ChannelWriter`]. Entries are relative to `DIR`;
//! directories, regular files and symlinks (as links) are stored, hard-linked files once plus
//! links (tar), FIFOs, sockets and devices skipped. Any error after the start (a file unreadable
//! or shrinking mid-stream, the walk failing) cuts the stream instead of ending the archive.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use super::pipe::{ChannelWriter, Chunks, FailSlot, DEPTH};
use super::{ArchiveError, Format};
use crate::fs::bufpool::BufPool;
use crate::fs::{path, FsError};

/// Zip entries at least this large get zip64 sizes (deflate can grow incompressible data a
/// little past the 4 GiB limit of plain sizes).
const ZIP64_FROM: u64 = 0xF000_0000;
/// gzip level (as `gzip`'s default) and zstd level (as `zstd`'s default).
const GZIP_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;
/// Input per zstd job: libzstd's smallest, which bounds its buffers at a few MiB per export.
const ZSTD_JOB_SIZE: u32 = 512 * 1024;

/// libzstd's compression threads (`zstdmt`): one per core, at most two.
fn zstd_workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(2) as u32
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportOpts {
    /// The directory, as given (expanded, made absolute).
    pub dir: String,
    pub format: Format,
    /// Gitignore-style globs (matched relative to `dir`, a name without `/` at any depth);
    /// matching entries (and whole matching directories) are left out.
    pub exclude: Vec<String>,
    /// Honour `.gitignore` files (and `.git/info/exclude`) in and above `dir`.
    pub gitignore: bool,
    /// A reader that takes nothing for this long ends the export (zero: never).
    pub stall: Duration,
}

/// Checks `opts` (the directory exists and is one, the globs parse), then starts writing the
/// archive on a blocking thread. The receiver yields the archive's bytes; an `Err` item means the
/// archive is broken and the body must be cut. Dropping the receiver stops the writer.
pub async fn export(opts: ExportOpts) -> Result<Chunks, ArchiveError> {
    let prepared = crate::fs::blocking(move || Ok(prepare(opts))).await??;
    // One slot more than the writer uses: the failure's (see FailSlot).
    let (tx, rx) = mpsc::channel(DEPTH + 1);
    let slot = FailSlot::reserve(&tx).await.ok_or_else(|| FsError::Internal("archive channel closed".into()))?;
    let stall = prepared.stall;
    crate::fs::identity::spawn_blocking(move || {
        let (writer, abort) = ChannelWriter::new(tx, stall);
        let mut out = match Out::new(prepared.format, writer) {
            Ok(out) => out,
            Err(e) => return slot.fail(e),
        };
        match walk_into(&prepared, &mut out) {
            Ok(()) => {
                if let Err(e) = out.finish() {
                    tracing::warn!(error = %e, "archive export failed at its end; cutting it off");
                    slot.fail(e);
                }
            }
            Err(e) => {
                // Raised before the writer is dropped: its `Drop` must not end the archive.
                abort.raise();
                drop(out);
                if e.kind() != io::ErrorKind::BrokenPipe {
                    tracing::warn!(dir = %prepared.root.display(), error = %e, "archive export failed; cutting it off");
                }
                slot.fail(e);
            }
        }
    });
    Ok(rx)
}

struct Prepared {
    root: PathBuf,
    format: Format,
    overrides: ignore::overrides::Override,
    gitignore: bool,
    stall: Duration,
}

fn prepare(opts: ExportOpts) -> Result<Prepared, ArchiveError> {
    let root = path::resolve_checked(&opts.dir)?;
    let meta = std::fs::metadata(&root).map_err(|e| FsError::io("stat", &root, e))?;
    if !meta.is_dir() {
        return Err(FsError::Invalid(format!("not a directory: {}", root.display())).into());
    }
    let mut ob = ignore::overrides::OverrideBuilder::new(&root);
    for glob in &opts.exclude {
        if glob.is_empty() {
            continue;
        }
        // An override glob is a whitelist; `!` makes it an ignore rule, gitignore-style.
        ob.add(&format!("!{glob}")).map_err(|e| FsError::Invalid(format!("invalid exclude glob {glob:?}: {e}")))?;
    }
    let overrides = ob.build().map_err(|e| FsError::Invalid(format!("invalid exclude globs: {e}")))?;
    Ok(Prepared { root, format: opts.format, overrides, gitignore: opts.gitignore, stall: opts.stall })
}

/// Walks the tree and writes every entry; returns the first error.
fn walk_into(p: &Prepared, out: &mut Out) -> io::Result<()> {
    let walk = ignore::WalkBuilder::new(&p.root)
        .standard_filters(false)
        .hidden(false)
        .ignore(false)
        .parents(p.gitignore)
        .git_ignore(p.gitignore)
        .git_exclude(p.gitignore)
        .git_global(false)
        .require_git(false)
        .follow_links(false)
        .overrides(p.overrides.clone())
        .sort_by_file_name(|a, b| a.cmp(b))
        .build();
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for entry in walk {
        let entry = match entry {
            Ok(e) => e,
            // Removed while we walked: as if it had not been there.
            Err(e) if e.io_error().is_some_and(|io| io.kind() == io::ErrorKind::NotFound) => continue,
            Err(e) => return Err(io::Error::other(format!("walking {}: {e}", p.root.display()))),
        };
        if entry.depth() == 0 {
            continue;
        }
        let full = entry.path();
        let Ok(rel) = full.strip_prefix(&p.root) else { continue };
        // A regular file by the directory listing: open it and take its metadata from the open
        // file (no separate lstat, and a path lookup less per file). One swapped for a symlink
        // since (`ELOOP` under `O_NOFOLLOW`) goes the lstat way below.
        if entry.file_type().is_some_and(|t| t.is_file()) {
            match open_file(full) {
                Ok((file, meta)) => {
                    write_file(out, rel, full, file, &meta, &mut links)?;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {}
                Err(e) => return Err(with_path(e, "open", full)),
            }
        }
        let meta = match std::fs::symlink_metadata(full) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(with_path(e, "stat", full)),
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            out.dir(rel, &meta)?;
        } else if ft.is_symlink() {
            let target = match std::fs::read_link(full) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(with_path(e, "readlink", full)),
            };
            out.symlink(rel, &target, &meta)?;
        } else if ft.is_file() {
            let (file, meta) = match open_file(full) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(with_path(e, "open", full)),
            };
            write_file(out, rel, full, file, &meta, &mut links)?;
        }
        // FIFOs, sockets, devices: skipped.
    }
    Ok(())
}

fn with_path(e: io::Error, op: &str, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{op} {}: {e}", p.display()))
}

/// Opens a file found as regular by the walk, with its metadata: never following a symlink put
/// there since, never blocking on a FIFO put there since (and refusing it: `NotFound`, so the
/// entry is skipped as a vanished one).
fn open_file(p: &Path) -> io::Result<(File, Metadata)> {
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(p)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "no longer a regular file"));
    }
    Ok((file, meta))
}

/// Writes an opened regular file: as a hard link to an earlier entry of the same inode (tar), or
/// its content, exactly the size its metadata says.
fn write_file(
    out: &mut Out,
    rel: &Path,
    full: &Path,
    file: File,
    meta: &Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    if meta.nlink() > 1 {
        if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
            if out.hard_link(rel, first, meta)? {
                return Ok(());
            }
        }
    }
    let mut reader = Exact { file, left: meta.len(), path: full.to_path_buf() };
    out.file(rel, meta, &mut reader)?;
    if meta.nlink() > 1 {
        links.insert((meta.dev(), meta.ino()), rel.to_path_buf());
    }
    Ok(())
}

/// Reads exactly the size the header announced: a file that shrank is an error (the archive
/// would be corrupt), bytes appended since are not read.
struct Exact {
    file: File,
    left: u64,
    path: PathBuf,
}

impl Read for Exact {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while being archived", self.path.display()),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The compressor under a tar stream.
enum TarSink {
    Plain(ChannelWriter),
    /// gzip or zstd, on a thread of its own.
    Compressed(Offload),
}

impl Write for TarSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            TarSink::Plain(w) => w.write(buf),
            TarSink::Compressed(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TarSink {
    fn finish(self) -> io::Result<ChannelWriter> {
        match self {
            TarSink::Plain(w) => Ok(w),
            TarSink::Compressed(w) => w.finish(),
        }
    }
}

/// Bytes handed to the compressor thread at a time.
const OFFLOAD_CHUNK: usize = 256 * 1024;
/// Chunks in flight to the compressor thread: with the chunk being filled, at most 768 KiB.
const OFFLOAD_DEPTH: usize = 2;

/// A compressor on its own thread, as `tar | zstd`: the tar stream is cut into
/// [`OFFLOAD_CHUNK`]-byte buffers handed over a bounded channel, so walking and reading files
/// overlap compressing. Measured on 2 cores (BENCHMARKS.md, "Archives"). Dropped without
/// [`Offload::finish`] (the export failed), the thread stops without ending the compressed
/// stream, so a broken archive never gets a valid trailer.
struct Offload {
    buf: Vec<u8>,
    /// The compressor thread gives the buffers back here (see [`BufPool`]).
    pool: BufPool,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    finished: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<io::Result<ChannelWriter>>>,
}

impl Offload {
    /// Starts the thread that feeds `encoder` and ends it with `end` (which writes the trailer).
    /// Called on a thread of the runtime's blocking pool, as [`ChannelWriter::new`].
    fn spawn<E: Write + Send + 'static>(
        mut encoder: E,
        end: impl FnOnce(E) -> io::Result<ChannelWriter> + Send + 'static,
    ) -> io::Result<Offload> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(OFFLOAD_DEPTH);
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = finished.clone();
        // The writer's sends block on the runtime with a timer: the thread enters the runtime.
        let runtime = tokio::runtime::Handle::current();
        // Those in the channel, the one being compressed, the one being filled.
        let pool = BufPool::new(OFFLOAD_DEPTH + 2, OFFLOAD_CHUNK);
        let used = pool.clone();
        let thread = std::thread::Builder::new().name("execd-compress".into()).spawn(move || {
            let _entered = runtime.enter();
            for chunk in rx {
                encoder.write_all(&chunk)?;
                used.give(chunk);
            }
            if !done.load(std::sync::atomic::Ordering::Acquire) {
                return Err(io::Error::other("export stopped"));
            }
            end(encoder)
        })?;
        Ok(Offload { buf: pool.take(OFFLOAD_CHUNK), pool, tx: Some(tx), finished, thread: Some(thread) })
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, self.pool.take(OFFLOAD_CHUNK));
        let Some(tx) = &self.tx else { return Err(io::Error::other("compressor already finished")) };
        if tx.send(chunk).is_err() {
            // The thread ended early: its error says why.
            return Err(self.join().err().unwrap_or_else(|| io::Error::other("compressor stopped")));
        }
        Ok(())
    }

    fn join(&mut self) -> io::Result<ChannelWriter> {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("compressor thread panicked")),
            None => Err(io::Error::other("compressor already finished")),
        }
    }

    /// Hands over the rest, lets the thread end the compressed stream, and returns the writer.
    fn finish(mut self) -> io::Result<ChannelWriter> {
        self.send()?;
        self.finished.store(true, std::sync::atomic::Ordering::Release);
        self.join()
    }
}

impl Write for Offload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(OFFLOAD_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == OFFLOAD_CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

type ZipOut = zip::ZipWriter<zip::write::StreamWriter<ChannelWriter>>;

/// The archive being written.
enum Out {
    Tar(tar::Builder<TarSink>),
    Zip(Box<ZipOut>),
}

impl Out {
    fn new(format: Format, w: ChannelWriter) -> io::Result<Out> {
        let sink = match format {
            Format::Zip => return Ok(Out::Zip(Box::new(zip::ZipWriter::new_stream(w)))),
            Format::Tar => TarSink::Plain(w),
            Format::TarGz => TarSink::Compressed(Offload::spawn(
                flate2::write::GzEncoder::new(w, flate2::Compression::new(GZIP_LEVEL)),
                |e| e.finish(),
            )?),
            Format::TarZst => {
                let mut encoder = zstd::stream::write::Encoder::new(w, ZSTD_LEVEL)?;
                encoder.multithread(zstd_workers())?;
                encoder.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_SIZE))?;
                TarSink::Compressed(Offload::spawn(encoder, |e| e.finish())?)
            }
        };
        let mut b = tar::Builder::new(sink);
        b.follow_symlinks(false);
        Ok(Out::Tar(b))
    }

    /// Ends the archive cleanly and sends its last bytes.
    fn finish(self) -> io::Result<()> {
        match self {
            Out::Tar(b) => b.into_inner()?.finish()?.finish(),
            Out::Zip(z) => z.finish().map_err(zip_io)?.into_inner().finish(),
        }
    }

    fn dir(&mut self, rel: &Path, meta: &Metadata) -> io::Result<()> {
        match self {
            Out::Tar(b) => {
                let mut h = tar_header(meta, tar::EntryType::Directory, 0);
                b.append_data(&mut h, rel, io::empty())
            }
            Out::Zip(z) => z.add_directory(zip_name(rel), zip_options(meta, 0)?).map_err(zip_io),
        }
    }

    fn file(&mut self, rel: &Path, meta: &Metadata, data: &mut Exact) -> io::Result<()> {
        match self {
            Out::Tar(b) => {
                let mut h = tar_header(meta, tar::EntryType::Regular, meta.len());
                b.append_data(&mut h, rel, data)
            }
            Out::Zip(z) => {
                let opts = zip_options(meta, meta.len())?.compression_method(zip::CompressionMethod::Deflated);
                z.start_file(zip_name(rel), opts).map_err(zip_io)?;
                io::copy(data, &mut **z)?;
                Ok(())
            }
        }
    }

    fn symlink(&mut self, rel: &Path, target: &Path, meta: &Metadata) -> io::Result<()> {
        match self {
            Out::Tar(b) => {
                let mut h = tar_header(meta, tar::EntryType::Symlink, 0);
                b.append_link(&mut h, rel, target)
            }
            Out::Zip(z) => z
                .add_symlink(zip_name(rel), target.to_string_lossy(), zip_options(meta, 0)?.unix_permissions(0o777))
                .map_err(zip_io),
        }
    }

    /// Stores `rel` as a hard link to the earlier entry `first`. False: the format has no hard
    /// links (zip); the caller stores the content again.
    fn hard_link(&mut self, rel: &Path, first: &Path, meta: &Metadata) -> io::Result<bool> {
        match self {
            Out::Tar(b) => {
                let mut h = tar_header(meta, tar::EntryType::Link, 0);
                b.append_link(&mut h, rel, first)?;
                Ok(true)
            }
            Out::Zip(_) => Ok(false),
        }
    }
}

fn tar_header(meta: &Metadata, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    h.set_size(size);
    h
}

fn zip_name(rel: &Path) -> String {
    String::from_utf8_lossy(rel.as_os_str().as_bytes()).into_owned()
}

fn zip_io(e: zip::result::ZipError) -> io::Error {
    match e {
        zip::result::ZipError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// Mode, mtime (DOS time in UTC plus the exact seconds in an extended-timestamp field), zip64
/// for large files.
fn zip_options(meta: &Metadata, size: u64) -> io::Result<zip::write::FullFileOptions<'static, 'static>> {
    let secs = meta.mtime();
    let mut opts = zip::write::FullFileOptions::default()
        .unix_permissions(meta.mode() & 0o7777)
        .last_modified_time(dos_time(secs))
        .large_file(size >= ZIP64_FROM);
    if let Ok(s) = u32::try_from(secs) {
        opts = opts.with_extended_timestamp(Some(s), None, None).map_err(zip_io)?;
    }
    Ok(opts)
}

/// Seconds since the epoch as a zip (DOS) time, read as UTC; outside 1980–2107 the DOS epoch.
fn dos_time(secs: i64) -> zip::DateTime {
    use chrono::{Datelike, Timelike};
    let Some(t) = chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0) else { return zip::DateTime::default() };
    let parts = (u16::try_from(t.year()), u8::try_from(t.month()), u8::try_from(t.day()));
    let (Ok(y), Ok(mo), Ok(d)) = parts else { return zip::DateTime::default() };
    let (h, mi, s) = (t.hour() as u8, t.minute() as u8, t.second() as u8);
    zip::DateTime::from_date_and_time(y, mo, d, h, mi, s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x30_dos_time_is_utc_and_clamped() {
        let t = dos_time(1_700_000_000); // 2023-11-14 22:13:20 UTC
        assert_eq!((t.year(), t.month(), t.day(), t.hour(), t.minute(), t.second()), (2023, 11, 14, 22, 13, 20));
        assert_eq!(dos_time(0), zip::DateTime::default());
        assert_eq!(dos_time(-5), zip::DateTime::default());
    }
}
