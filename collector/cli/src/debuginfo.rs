//! `holmes debuginfo upload <binary> [--debug-file F]`: a module's debug info sent to
//! the collector from CI, so that profiles of a binary that runs stripped (or whose
//! agents do not upload) are named. The build id comes from the binary; the sections
//! (symbol tables, DWARF) from the debug file when one is given (`objcopy
//! --only-keep-debug`), else from the binary itself — extracted with `holmes-symbolize`
//! into the upload blob agents send.

use std::path::Path;

use holmes_symbolize::UploadBlob;

/// The build id of `binary` and the upload blob of its debug info.
pub(crate) fn extract(
    binary: &Path,
    debug_file: Option<&Path>,
) -> anyhow::Result<(String, Vec<u8>)> {
    let read = |path: &Path| {
        UploadBlob::from_elf_file(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
    };
    let module = read(binary)?;
    let build_id = module
        .build_id()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{} has no GNU build id (link with --build-id): profiles could not be matched to it",
                binary.display()
            )
        })?
        .to_owned();
    let (source, blob) = match debug_file {
        Some(file) => {
            let blob = read(file)?;
            if blob.build_id() != Some(build_id.as_str()) {
                anyhow::bail!(
                    "{} is the debug file of build {}, not of {} (build {build_id})",
                    file.display(),
                    blob.build_id().unwrap_or("(none)"),
                    binary.display()
                );
            }
            (file, blob)
        }
        None => (binary, module),
    };
    if !blob.has_debug_info() {
        anyhow::bail!(
            "{} has neither a symbol table nor DWARF: pass its debug file with --debug-file",
            source.display()
        );
    }
    let bytes = blob
        .to_vec()
        .map_err(|e| anyhow::anyhow!("cannot read the debug info of {}: {e}", source.display()))?;
    Ok((build_id, bytes))
}
