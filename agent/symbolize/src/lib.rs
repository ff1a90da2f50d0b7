#![doc = include_str!("../README.md")]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bytes;
mod cache;
mod debuginfo;
mod elf;
mod error;
mod names;
mod notes;
mod symbols;
pub mod upload;

pub use cache::{Symbolizer, DEFAULT_CACHED_OFFSETS};
pub use debuginfo::{DebugInfo, Frame, DWARF_SECTIONS, MAX_SECTION_BYTES};
pub use error::LoadError;
pub use names::{crate_of_path, is_std_or_dependency, source_origin, SourceOrigin};
pub use notes::build_id_from_notes;
pub use symbols::strip_hash;
pub use upload::{is_upload, UploadBlob, UPLOAD_HEADER_BYTES, UPLOAD_MAGIC, UPLOAD_VERSION};
