//! Directory archives (EXTENSIONS X30, X31): streamed export of a directory as tar, tar.gz,
//! tar.zst or zip ([`export()`]), and safe, all-or-nothing import of such an archive into a
//! directory ([`import()`]). No HTTP here: the API hands in plain options and byte channels and maps
//! [`ArchiveError`].
//!
//! - [`export()`]: a walker and an archive writer on one blocking thread, writing into a bounded
//!   channel ([`pipe::ChannelWriter`]) that the response body reads; memory stays flat whatever
//!   the tree's size (zip keeps its central directory, about 100 bytes per entry, as the format
//!   requires). An error mid-stream is sent as an error item, which cuts the body: a client never
//!   sees a clean end-of-archive after a failure.
//! - [`import()`]: the request body arrives through a bounded channel ([`pipe::ChannelReader`]);
//!   entries are checked one by one and written into a hidden staging directory inside the target
//!   (same filesystem), with every path walked from directory descriptors that never follow a
//!   symlink. Only a complete, valid archive is moved into place; any refusal or failure removes
//!   the staging directory, so nothing of that archive is left.

mod export;
mod import;
mod pipe;

use std::io;

pub use export::{export, ExportOpts};
pub use import::{import, ImportOpts, ImportSummary};
pub use pipe::Chunks;

use super::FsError;

/// The archive formats both directions speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Tar,
    TarGz,
    TarZst,
    Zip,
}

impl Format {
    /// Every format, in the order `/capabilities` lists them.
    pub const ALL: [Format; 4] = [Format::Tar, Format::TarGz, Format::TarZst, Format::Zip];

    /// Parses the `format` parameter (`tar`, `tar.gz`/`tgz`, `tar.zst`/`tzst`, `zip`).
    pub fn parse(s: &str) -> Result<Format, ArchiveError> {
        match s {
            "tar" => Ok(Format::Tar),
            "tar.gz" | "tgz" => Ok(Format::TarGz),
            "tar.zst" | "tzst" => Ok(Format::TarZst),
            "zip" => Ok(Format::Zip),
            _ => Err(ArchiveError::Fs(FsError::Invalid(format!(
                "unknown archive format {s:?}: expected tar, tar.gz, tar.zst or zip"
            )))),
        }
    }

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Tar => "tar",
            Format::TarGz => "tar.gz",
            Format::TarZst => "tar.zst",
            Format::Zip => "zip",
        }
    }

    /// The media type of an archive in this format.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Tar => "application/x-tar",
            Format::TarGz => "application/gzip",
            Format::TarZst => "application/zstd",
            Format::Zip => "application/zip",
        }
    }
}

/// What went wrong with an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An entry that would escape the target directory or is not allowed at all (absolute path,
    /// `..`, a path through a symlink, a hard link to something outside the archive, a device
    /// node or FIFO).
    #[error("unsafe archive entry {entry:?}: {reason}")]
    Unsafe { entry: String, reason: String },
    /// The archive is malformed or truncated (or uses something execd does not extract).
    #[error("invalid archive: {0}")]
    Invalid(String),
    /// An entry cannot be moved into place without replacing something of another kind (a file
    /// where a directory is, or the other way round). Checked before anything is moved.
    #[error("{path}: {reason}")]
    Conflict { path: String, reason: String },
    /// Any filesystem error (missing directory, no space left, ...).
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl ArchiveError {
    fn unsafe_entry(entry: &[u8], reason: impl Into<String>) -> ArchiveError {
        ArchiveError::Unsafe { entry: String::from_utf8_lossy(entry).into_owned(), reason: reason.into() }
    }

    /// Classifies an I/O error met while reading the archive stream: the body's own failures
    /// (client gone, stalled) and a cut stream are an invalid archive unless the disk is at fault.
    fn reading(e: io::Error) -> ArchiveError {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                ArchiveError::Fs(FsError::NoSpace { op: "writing", path: "archive entry".into(), source: e })
            }
            _ => ArchiveError::Invalid(e.to_string()),
        }
    }
}

impl From<zip::result::ZipError> for ArchiveError {
    fn from(e: zip::result::ZipError) -> Self {
        match e {
            zip::result::ZipError::Io(io) => ArchiveError::reading(io),
            other => ArchiveError::Invalid(other.to_string()),
        }
    }
}
