//! The restore target as a directory descriptor: every write, permission,
//! owner and time change, and delete below it resolves beneath it and
//! never through a symbolic link.
//!
//! A restore runs as whoever runs it, often root, into a directory other
//! people may have written to. A path like `root/x/f` resolved by name
//! follows `x` wherever it points, and a check of the path beforehand is
//! raced by a link swapped in afterwards. So nothing here resolves a path
//! by name below the root: each directory is opened from its parent's
//! descriptor, one checked segment at a time, with `O_NOFOLLOW`, and files
//! are created, renamed and removed relative to their parent's descriptor.
//! A link met anywhere on the way is refused by the kernel (`ELOOP` or
//! `ENOTDIR`), at the moment of the call, so a swap cannot slip in between
//! a check and a use.
//!
//! Why a segment walk and not `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`: creating missing directories needs a call per
//! segment anyway, kernels before 5.6 and some sandboxes (gVisor, seccomp
//! filters) lack `openat2`, and with segments already checked (no `.`,
//! `..` or empty ones: [`super::dir::KeyPath`]) one `O_NOFOLLOW` open per
//! segment refuses exactly what those flags refuse. One code path, on every
//! kernel.
//!
//! The root itself is opened by name, following a link there: it is the
//! directory the user named.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, mkdirat, openat, renameat, unlinkat};

/// Directories a restore creates get this, less the umask, as `mkdir -p`.
const DIR_MODE: u32 = 0o777;

/// An open restore target.
#[derive(Debug)]
pub struct Confined {
    root: OwnedFd,
    path: PathBuf,
}

/// One directory below the root, and the chain of its ancestors below
/// the root (outermost first), for removing the directories a delete
/// leaves empty without resolving a name again.
#[derive(Debug)]
pub struct OpenDir {
    /// `(name, descriptor)` per segment, outermost first.
    chain: Vec<(String, OwnedFd)>,
}

impl Confined {
    /// Open `root`, creating it (and its parents) when `create`. `None`:
    /// it does not exist and was not to be created.
    pub fn open(root: &Path, create: bool) -> io::Result<Option<Confined>> {
        if create {
            std::fs::create_dir_all(root)?;
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        match openat(rustix::fs::CWD, root, flags, Mode::empty()) {
            Ok(fd) => Ok(Some(Confined {
                root: fd,
                path: root.to_owned(),
            })),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory of `segments` below the root, each segment opened
    /// from its parent without following a link; missing ones are made
    /// when `create`. `Ok(None)`: a segment does not exist.
    pub fn dir(&self, segments: &[&str], create: bool) -> io::Result<Option<OpenDir>> {
        let mut chain: Vec<(String, OwnedFd)> = Vec::with_capacity(segments.len());
        for segment in segments {
            let parent = chain.last().map_or(self.root.as_fd(), |(_, fd)| fd.as_fd());
            let fd = match open_subdir(parent, segment) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) if create => {
                    match mkdirat(parent, *segment, Mode::from_raw_mode(DIR_MODE)) {
                        // Made by a concurrent download of a sibling key.
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    open_subdir(parent, segment).map_err(io::Error::from)?
                }
                Err(rustix::io::Errno::NOENT) => return Ok(None),
                Err(e) => return Err(through_link(e, segment)),
            };
            chain.push(((*segment).to_owned(), fd));
        }
        Ok(Some(OpenDir { chain }))
    }

    /// The metadata of `name` in `dir` (the root when `dir` is `None`),
    /// of a link itself if it is one: `None` when absent.
    pub fn metadata(
        &self,
        dir: Option<&OpenDir>,
        name: &str,
    ) -> io::Result<Option<std::fs::Metadata>> {
        // O_PATH with O_NOFOLLOW opens a link as itself, and reads nothing.
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match openat(self.fd_of(dir), name, flags, Mode::empty()) {
            Ok(fd) => File::from(fd).metadata().map(Some),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Create `name` in `dir` for writing, exclusively and without
    /// following a link, with `mode` (less the umask). Something already
    /// there (a partial an interrupted run left, or a link planted at its
    /// name) is removed first, itself, never what it points to.
    pub fn create_exclusive(&self, dir: &OpenDir, name: &str, mode: u32) -> io::Result<File> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let parent = self.fd_of(Some(dir));
        let create = || openat(parent, name, flags, Mode::from_raw_mode(mode));
        let fd = match create() {
            Err(rustix::io::Errno::EXIST) => {
                unlinkat(parent, name, AtFlags::empty())?;
                create()?
            }
            other => other?,
        };
        Ok(File::from(fd))
    }

    /// Rename `from` to `to`, both in `dir`. A link at `to` is replaced,
    /// not followed, as rename(2) always does.
    pub fn rename(&self, dir: &OpenDir, from: &str, to: &str) -> io::Result<()> {
        let parent = self.fd_of(Some(dir));
        renameat(parent, from, parent, to).map_err(io::Error::from)
    }

    /// Remove the file `name` from `dir` (a link there is removed itself);
    /// `Ok(false)` when it was not there.
    pub fn remove_file(&self, dir: Option<&OpenDir>, name: &str) -> io::Result<bool> {
        match unlinkat(self.fd_of(dir), name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Remove `dir` and each ancestor below the root that is left empty,
    /// innermost first; stops at the first that still holds something.
    pub fn remove_empty_dirs(&self, dir: OpenDir) {
        let mut chain = dir.chain;
        while let Some((name, fd)) = chain.pop() {
            drop(fd);
            let parent = chain.last().map_or(self.root.as_fd(), |(_, fd)| fd.as_fd());
            if unlinkat(parent, name.as_str(), AtFlags::REMOVEDIR).is_err() {
                break;
            }
        }
    }

    fn fd_of<'a>(&'a self, dir: Option<&'a OpenDir>) -> std::os::fd::BorrowedFd<'a> {
        dir.and_then(|d| d.chain.last())
            .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd())
    }
}

fn open_subdir(parent: std::os::fd::BorrowedFd<'_>, segment: &str) -> rustix::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    openat(parent, segment, flags, Mode::empty())
}

/// `O_NOFOLLOW | O_DIRECTORY` on a link answers `ELOOP` (or `ENOTDIR`):
/// say what it means for a restore.
fn through_link(err: rustix::io::Errno, segment: &str) -> io::Error {
    match err {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => io::Error::new(
            io::ErrorKind::NotADirectory,
            format!(
                "{segment:?} is a symbolic link or a file, not a directory; a restore never writes through one"
            ),
        ),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::symlink;

    #[test]
    fn directories_are_made_and_links_are_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, outside) = (tmp.path().join("root"), tmp.path().join("outside"));
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("f"), b"keep").unwrap();
        let target = Confined::open(&root, true).unwrap().unwrap();
        let dir = target.dir(&["a", "b"], true).unwrap().unwrap();
        let mut file = target.create_exclusive(&dir, ".f.part", 0o600).unwrap();
        file.write_all(b"new").unwrap();
        target.rename(&dir, ".f.part", "f").unwrap();
        assert_eq!(std::fs::read(root.join("a/b/f")).unwrap(), b"new");

        // A link to a directory elsewhere is neither walked nor written.
        symlink(&outside, root.join("link")).unwrap();
        let err = target.dir(&["link"], true).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(target.metadata(None, "link").unwrap().unwrap().is_symlink());

        // A link planted at a partial's name is replaced, not written through.
        symlink(outside.join("f"), root.join("a/b/.g.part")).unwrap();
        let mut file = target.create_exclusive(&dir, ".g.part", 0o600).unwrap();
        file.write_all(b"mine").unwrap();
        assert_eq!(std::fs::read(outside.join("f")).unwrap(), b"keep");
        assert!(
            target
                .metadata(Some(&dir), ".g.part")
                .unwrap()
                .unwrap()
                .is_file()
        );

        // Removing a link removes the link.
        assert!(target.remove_file(None, "link").unwrap());
        assert_eq!(std::fs::read(outside.join("f")).unwrap(), b"keep");

        // Emptied directories go, up to the root and no further.
        for name in ["f", ".g.part"] {
            target.remove_file(Some(&dir), name).unwrap();
        }
        target.remove_empty_dirs(dir);
        assert!(!root.join("a").exists() && root.exists());
    }

    #[test]
    fn a_missing_root_is_none_unless_created() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(
            Confined::open(&tmp.path().join("x"), false)
                .unwrap()
                .is_none()
        );
        let target = Confined::open(tmp.path(), false).unwrap().unwrap();
        assert!(target.dir(&["nope"], false).unwrap().is_none());
    }
}
