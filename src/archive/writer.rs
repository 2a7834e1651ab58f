//! Writing the tar: [`TarWriter`] appends entries in the format's order and
//! finishes with the manifest and the trailer; [`ArchiveWriter`] runs it on
//! a thread of its own so the export's async side can stream GET bodies
//! into it through a small bounded channel (memory: a few chunks per
//! object, whatever its size) while file writes and zstd run off the
//! runtime.
//!
//! A tar header states its entry's size before the bytes follow, and the
//! size is what the listing or GET said. If fewer bytes arrive (the source
//! changed mid-read and could not be resumed) the entry is padded with
//! zeros to keep the tar well formed, and reported as incomplete: the
//! export marks it `not_exported` in the manifest, so it is checked like
//! every entry but never applied.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::codec::{Compression, TarSink};
use super::digest::{Digested, HashingReader};
use super::format::{
    ARCHIVE_FORMAT, FORMAT_VERSION, MANIFEST_ENTRY, TRAILER_ENTRY, Trailer, object_entry_name,
};

/// An object entry, written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub name: String,
    pub digest: Digested,
    /// False when the body ended early and the entry was padded.
    pub complete: bool,
}

/// The synchronous writer of one archive.
pub struct TarWriter {
    builder: tar::Builder<TarSink>,
    objects: u64,
    object_bytes: u64,
    /// Seconds since the epoch, for the manifest and trailer entries.
    created: u64,
}

impl TarWriter {
    pub fn new(file: File, compression: Compression, created: u64) -> io::Result<Self> {
        Ok(Self {
            builder: tar::Builder::new(TarSink::new(file, compression)?),
            objects: 0,
            object_bytes: 0,
            created,
        })
    }

    /// Append the next object entry: exactly `size` bytes of `body`, padded
    /// with zeros if it ends early, never more.
    pub fn append_object(
        &mut self,
        mtime: u64,
        size: u64,
        body: impl Read,
    ) -> io::Result<Appended> {
        let name = object_entry_name(self.objects + 1);
        let mut padded = Padded {
            inner: body.take(size),
            remaining: size,
            short: false,
        };
        let mut hashing = HashingReader::new(&mut padded);
        append(&mut self.builder, &name, size, mtime, &mut hashing)?;
        let digest = hashing.finish();
        self.objects += 1;
        self.object_bytes += digest.length;
        Ok(Appended {
            name,
            digest,
            complete: !padded.short,
        })
    }

    /// Append the manifest (the spool at `manifest`, `objects` lines after
    /// its header) and the trailer, and close the file.
    pub fn finish(mut self, manifest: &Path, objects: u64) -> io::Result<Trailer> {
        let file = File::open(manifest)?;
        let size = file.metadata()?.len();
        let mut hashing = HashingReader::new(file);
        append(
            &mut self.builder,
            MANIFEST_ENTRY,
            size,
            self.created,
            &mut hashing,
        )?;
        let digest = hashing.finish();
        if digest.length != size {
            return Err(io::Error::other(
                "the manifest spool changed while it was archived",
            ));
        }
        let trailer = Trailer {
            format: ARCHIVE_FORMAT.into(),
            version: FORMAT_VERSION,
            manifest_sha256: digest.sha256,
            manifest_bytes: digest.length,
            manifest_objects: objects,
            object_entries: self.objects,
            object_bytes: self.object_bytes,
        };
        let mut json = serde_json::to_vec_pretty(&trailer).map_err(io::Error::from)?;
        json.push(b'\n');
        append(
            &mut self.builder,
            TRAILER_ENTRY,
            json.len() as u64,
            self.created,
            &mut &json[..],
        )?;
        self.builder.into_inner()?.finish()?;
        Ok(trailer)
    }
}

fn append(
    builder: &mut tar::Builder<TarSink>,
    name: &str,
    size: u64,
    mtime: u64,
    body: &mut dyn Read,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(mtime);
    builder.append_data(&mut header, name, body)
}

/// `remaining` bytes from `inner`, then zeros if it ran out first.
struct Padded<R> {
    inner: R,
    remaining: u64,
    short: bool,
}

impl<R: Read> Read for Padded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = if self.short {
            0
        } else {
            self.inner.read(&mut buf[..want])?
        };
        let n = if n == 0 {
            self.short = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Chunks from the async side, read on the writer's thread.
struct ChunkReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                // The sender is gone: the body ends here.
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Chunks a streamed body may run ahead of the file: with the SDK's chunks
/// of up to 64 KiB or so, a few hundred KiB per object in flight.
const CHUNKS_AHEAD: usize = 4;

enum Job {
    Object {
        mtime: u64,
        size: u64,
        body: Body,
        done: oneshot::Sender<io::Result<Appended>>,
    },
    Finish {
        manifest: tempfile::TempPath,
        objects: u64,
        done: oneshot::Sender<io::Result<Trailer>>,
    },
}

enum Body {
    Bytes(Bytes),
    Chunks(ChunkReader),
}

/// A [`TarWriter`] on its own thread.
pub struct ArchiveWriter {
    jobs: mpsc::Sender<Job>,
    thread: JoinHandle<()>,
}

/// A streamed entry being written: send its bytes, drop the sender when
/// done (early, if the body failed), then await `done`.
pub struct StreamedEntry {
    pub chunks: mpsc::Sender<Bytes>,
    pub done: oneshot::Receiver<io::Result<Appended>>,
}

fn stopped() -> io::Error {
    io::Error::other("the archive writer stopped after an earlier error")
}

impl ArchiveWriter {
    pub fn start(writer: TarWriter) -> Self {
        let (jobs, mut rx) = mpsc::channel::<Job>(1);
        let thread = std::thread::Builder::new()
            .name("archive-writer".into())
            .spawn(move || {
                let mut writer = Some(writer);
                while let Some(job) = rx.blocking_recv() {
                    match job {
                        Job::Object {
                            mtime,
                            size,
                            body,
                            done,
                        } => {
                            let result = match (writer.as_mut(), body) {
                                (None, _) => Err(stopped()),
                                (Some(w), Body::Bytes(bytes)) => {
                                    w.append_object(mtime, size, &bytes[..])
                                }
                                (Some(w), Body::Chunks(reader)) => {
                                    w.append_object(mtime, size, reader)
                                }
                            };
                            if result.is_err() {
                                // A half-written entry: nothing after it can be right.
                                writer = None;
                            }
                            let _ = done.send(result);
                        }
                        Job::Finish {
                            manifest,
                            objects,
                            done,
                        } => {
                            let result = match writer.take() {
                                Some(w) => w.finish(&manifest, objects),
                                None => Err(stopped()),
                            };
                            let _ = done.send(result);
                        }
                    }
                }
            })
            .expect("spawn the archive writer thread");
        Self { jobs, thread }
    }

    /// Append an object whose bytes are all here.
    pub async fn append_bytes(&self, mtime: u64, bytes: Bytes) -> io::Result<Appended> {
        let (done, answer) = oneshot::channel();
        let size = bytes.len() as u64;
        let job = Job::Object {
            mtime,
            size,
            body: Body::Bytes(bytes),
            done,
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Start an object entry of `size` bytes that arrive as chunks.
    pub async fn append_stream(&self, mtime: u64, size: u64) -> io::Result<StreamedEntry> {
        let (chunks, rx) = mpsc::channel(CHUNKS_AHEAD);
        let (done_tx, done) = oneshot::channel();
        let job = Job::Object {
            mtime,
            size,
            body: Body::Chunks(ChunkReader {
                rx,
                current: Bytes::new(),
            }),
            done: done_tx,
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        Ok(StreamedEntry { chunks, done })
    }

    /// Append the manifest and the trailer, and close the file.
    pub async fn finish(self, manifest: tempfile::TempPath, objects: u64) -> io::Result<Trailer> {
        let (done, answer) = oneshot::channel();
        let job = Job::Finish {
            manifest,
            objects,
            done,
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        let trailer = answer.await.map_err(|_| stopped())?;
        drop(self.jobs);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        trailer
    }
}
