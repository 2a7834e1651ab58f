//! Delete one file of a restore target (for `--delete`), then each folder
//! left empty, up to the root: a restore leaves no empty folders where the
//! bucket has no keys. Also the look-up of one file that verification does.
//!
//! Everything resolves through [`super::confined`]: a directory that was
//! swapped for a link after the walk listed it fails the delete
//! (`UnsafePath`) instead of deleting the link target's files, and a link
//! at the file's own place is removed itself, never what it points to.

use super::dir::{LocalDir, io_failure};
use crate::base::error::S3Failure;

/// Remove the file of `relative`; a file already gone is not an error.
pub fn delete_file(dir: &LocalDir, relative: &str) -> Result<(), S3Failure> {
    let key = dir.key_path(relative)?;
    let path = dir.root.join(relative);
    let Some(target) = dir.target(false)? else {
        return Ok(());
    };
    let parent = match target.dir(&key.dirs, false) {
        Ok(Some(parent)) => parent,
        Ok(None) => return Ok(()),
        Err(e) => return Err(io_failure("deleting", &path, &e)),
    };
    target
        .remove_file(Some(&parent), key.name)
        .map_err(|e| io_failure("deleting", &path, &e))?;
    target.remove_empty_dirs(parent);
    Ok(())
}

/// The metadata of `relative`'s file, resolved as a delete resolves it
/// (a link is itself, and a path through one is an `UnsafePath` error);
/// `None` when absent.
pub fn metadata_beneath(
    dir: &LocalDir,
    relative: &str,
) -> Result<Option<std::fs::Metadata>, S3Failure> {
    let key = dir.key_path(relative)?;
    let path = dir.root.join(relative);
    let Some(target) = dir.target(false)? else {
        return Ok(None);
    };
    let parent = match target.dir(&key.dirs, false) {
        Ok(Some(parent)) => parent,
        Ok(None) => return Ok(None),
        Err(e) => return Err(io_failure("reading", &path, &e)),
    };
    target
        .metadata(Some(&parent), key.name)
        .map_err(|e| io_failure("reading", &path, &e))
}
