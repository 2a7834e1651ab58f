//! The previous archive a delta export is computed against.

use std::path::Path;

use super::check::check_archive;
use super::codec::sniff;
use super::error::ArchiveError;
use super::manifest::ManifestReader;

/// `--since-manifest PREV`: a previous archive, or a manifest file taken out
/// of one (`--manifest-out`, or `tar -xOf A manifest.jsonl`). An archive is
/// verified whole first, as an import would, so a delta is never computed
/// against a damaged manifest.
pub fn open_previous(path: &Path) -> Result<ManifestReader, ArchiveError> {
    let kind = sniff(path).map_err(ArchiveError::io(format!("reading {}", path.display())))?;
    if kind.is_some() {
        let checked = check_archive(path)?;
        return ManifestReader::open_spool(checked.manifest, path);
    }
    ManifestReader::open(path, path)
}
