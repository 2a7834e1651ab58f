//! Take the planned objects out of the archive, in order, into temp files.
//!
//! The plan lists the objects to put in manifest order, which is the order
//! of their entries, so one sequential read of the archive (a zstd stream
//! cannot seek) finds them all, skipping the rest. Each extracted file is
//! checked again against its manifest line (the archive passed its check,
//! but it is read a second time here) and handed to the uploaders over a
//! bounded channel: at most `--concurrency` + 1 objects on disk at once.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Lines, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tempfile::TempPath;

use super::codec::{Compression, open_tar_stream};
use super::digest::digest_all;
use super::error::ArchiveError;
use super::format::ManifestEntry;

/// One object the import will put: a new key, or one the destination has
/// in another version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedPut {
    pub update: bool,
    pub line: ManifestEntry,
}

/// A planned object, in a temp file that is deleted once dropped.
#[derive(Debug)]
pub struct Extracted {
    pub put: PlannedPut,
    pub file: TempPath,
}

/// Where extracted objects go, and how the plan is read.
pub struct Extraction<'a> {
    pub archive: &'a Path,
    pub compression: Compression,
    /// JSON Lines of [`PlannedPut`], in manifest order.
    pub plan: &'a Path,
    pub temp_dir: Option<&'a Path>,
}

impl Extraction<'_> {
    /// Extract every planned object and send it to `uploads`. Returns
    /// early, without error, if every receiver is gone (cancelled).
    pub fn run(&self, uploads: async_channel::Sender<Extracted>) -> Result<(), ArchiveError> {
        let mut plan = PlanReader::open(self.plan)?;
        let mut pending = plan.next()?;
        if pending.is_none() {
            return Ok(());
        }
        let changed = |why: String| ArchiveError::ChangedDuringImport {
            path: self.archive.display().to_string(),
            why,
        };
        let stream = open_tar_stream(self.archive, self.compression).map_err(ArchiveError::io(
            format!("reading {}", self.archive.display()),
        ))?;
        let mut archive = tar::Archive::new(stream);
        let entries = archive
            .entries()
            .map_err(|e| changed(e.to_string()))?
            .raw(true);
        for entry in entries {
            let mut entry = entry.map_err(|e| changed(e.to_string()))?;
            let Some(export) = pending.as_ref().and_then(|p| p.line.export.as_ref()) else {
                unreachable!("only exported objects are planned, and the loop ends with the plan");
            };
            if entry.path_bytes().as_ref() != export.entry.as_bytes() {
                continue; // not planned: the next entry skips its bytes
            }
            let (file, path) = self.temp_file()?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            // At most one byte past the checked length: an archive swapped
            // since its check may declare any size, and the temp disk is
            // not for finding out how much.
            let digest = digest_all((&mut entry).take(export.length + 1), &mut out)
                .map_err(|e| changed(e.to_string()))?;
            out.flush()
                .map_err(ArchiveError::io(format!("writing {}", path.display())))?;
            if digest.length != export.length || digest.sha256 != export.sha256 {
                return Err(changed(format!(
                    "entry {} no longer matches its checksum",
                    export.entry
                )));
            }
            let put = pending.take().expect("matched above");
            if uploads
                .send_blocking(Extracted { put, file: path })
                .is_err()
            {
                return Ok(());
            }
            pending = plan.next()?;
            if pending.is_none() {
                return Ok(());
            }
        }
        let missing = pending
            .and_then(|p| p.line.export)
            .map(|e| e.entry)
            .unwrap_or_default();
        Err(changed(format!("entry {missing} is no longer in it")))
    }

    fn temp_file(&self) -> Result<(File, TempPath), ArchiveError> {
        let dir: PathBuf = self
            .temp_dir
            .map(Path::to_owned)
            .unwrap_or_else(std::env::temp_dir);
        let file = tempfile::Builder::new()
            .prefix(".s3-fanout-import-")
            .tempfile_in(&dir)
            .map_err(ArchiveError::io(format!(
                "creating a file in {}",
                dir.display()
            )))?;
        Ok(file.into_parts())
    }
}

/// The plan, read back a line at a time.
struct PlanReader {
    lines: Lines<BufReader<File>>,
}

impl PlanReader {
    fn open(path: &Path) -> Result<Self, ArchiveError> {
        let file = File::open(path).map_err(ArchiveError::io("reading the import plan"))?;
        Ok(Self {
            lines: BufReader::new(file).lines(),
        })
    }

    fn next(&mut self) -> Result<Option<PlannedPut>, ArchiveError> {
        let Some(line) = self.lines.next() else {
            return Ok(None);
        };
        let line = line.map_err(ArchiveError::io("reading the import plan"))?;
        let put = serde_json::from_str(&line)
            .map_err(|e| ArchiveError::io("reading the import plan")(std::io::Error::other(e)))?;
        Ok(Some(put))
    }
}
