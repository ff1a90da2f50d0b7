//! Why debug info could not be read.

use std::path::PathBuf;

/// Why a module's debug info (an ELF file, ELF bytes or an upload blob) could not be
/// read, or an upload blob could not be built from it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not an ELF file this crate can read.
    #[error("{what} is not a readable ELF file: {why}")]
    Elf {
        /// The file's path, or "ELF bytes".
        what: String,
        /// What is wrong with it.
        why: String,
    },
    /// A section is larger than this crate is willing to hold.
    #[error("section {section} is {bytes} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// The section's name.
        section: String,
        /// Its (uncompressed) size.
        bytes: u64,
        /// The limit, [`crate::MAX_SECTION_BYTES`].
        limit: u64,
    },
    /// The bytes do not start like an upload blob.
    #[error("not a holmes debug info upload: {why}")]
    NotUpload {
        /// What is wrong with it.
        why: String,
    },
    /// An upload blob of a format version this crate does not read.
    #[error(
        "debug info upload version {version} is not supported (this reader knows version {})",
        crate::UPLOAD_VERSION
    )]
    UploadVersion {
        /// The version byte found.
        version: u8,
    },
}

impl LoadError {
    pub(crate) fn elf(what: &str, why: impl std::fmt::Display) -> Self {
        LoadError::Elf {
            what: what.to_owned(),
            why: why.to_string(),
        }
    }
}
