//! Plain or zstd-compressed tar: told apart by the file's first bytes when
//! reading (never by its name, which a transfer across the boundary may
//! change), chosen by flag or name when writing.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How an archive's tar stream is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd,
}

/// The zstd frame magic number, as it appears in the file.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// `ustar` at offset 257 of the first tar header (POSIX and GNU both).
const USTAR_OFFSET: usize = 257;
const USTAR_MAGIC: &[u8] = b"ustar";
/// zstd's default level: about 300 MB/s on one core here, which keeps an
/// export's pace set by S3 rather than by compression.
const ZSTD_LEVEL: i32 = 3;

/// What the first bytes of a file say it is: `Some` for a tar stream,
/// plain or compressed; `None` for anything else.
pub fn sniff(path: &Path) -> io::Result<Option<Compression>> {
    let mut head = [0u8; 512];
    let mut file = File::open(path)?;
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    if filled >= 4 && head[..4] == ZSTD_MAGIC {
        return Ok(Some(Compression::Zstd));
    }
    if filled >= USTAR_OFFSET + USTAR_MAGIC.len()
        && &head[USTAR_OFFSET..USTAR_OFFSET + USTAR_MAGIC.len()] == USTAR_MAGIC
    {
        return Ok(Some(Compression::None));
    }
    Ok(None)
}

/// The tar stream of an archive file.
pub fn open_tar_stream(path: &Path, compression: Compression) -> io::Result<Box<dyn Read + Send>> {
    open_counted_tar_stream(path, compression).map(|(stream, _)| stream)
}

/// The tar stream of an archive file, and a count of the file's bytes it
/// has used so far: what a decompressed entry is measured against, since a
/// zstd stream of a few KiB can expand to gigabytes.
pub fn open_counted_tar_stream(
    path: &Path,
    compression: Compression,
) -> io::Result<(Box<dyn Read + Send>, Consumed)> {
    let consumed = Consumed::default();
    let file = Counting {
        inner: BufReader::with_capacity(1 << 20, File::open(path)?),
        consumed: consumed.clone(),
    };
    let stream: Box<dyn Read + Send> = match compression {
        Compression::None => Box::new(file),
        // A truncated frame is an error from the decoder, not an early end.
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
    };
    Ok((stream, consumed))
}

/// Bytes of an archive file its tar stream has used. Shared, as the stream
/// is owned by the tar reader while its entries are measured.
#[derive(Debug, Clone, Default)]
pub struct Consumed(Arc<AtomicU64>);

impl Consumed {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Counts what its reader hands on. Counted at `consume`, not at `fill_buf`:
/// the zstd decoder fills a 1 MiB buffer but consumes only the input it
/// decodes, so the count runs ahead of the decompressed bytes by at most
/// the block being decoded (128 KiB of output), not by the read-ahead.
struct Counting<R> {
    inner: R,
    consumed: Consumed,
}

impl<R: BufRead> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.consumed.add(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.consumed.add(amount);
        self.inner.consume(amount);
    }
}

/// Where a tar stream is written: the archive file, directly or through
/// zstd. An enum rather than a boxed writer so the zstd frame can be
/// finished explicitly (a dropped encoder would leave it truncated).
pub enum TarSink {
    Plain(BufWriter<File>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<File>>),
}

impl TarSink {
    pub fn new(file: File, compression: Compression) -> io::Result<Self> {
        let file = BufWriter::with_capacity(1 << 20, file);
        Ok(match compression {
            Compression::None => TarSink::Plain(file),
            Compression::Zstd => {
                TarSink::Zstd(zstd::stream::write::Encoder::new(file, ZSTD_LEVEL)?)
            }
        })
    }

    /// Flush everything and sync it to disk.
    pub fn finish(self) -> io::Result<()> {
        let buffered = match self {
            TarSink::Plain(file) => file,
            TarSink::Zstd(encoder) => encoder.finish()?,
        };
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    }
}

impl Write for TarSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            TarSink::Plain(w) => w.write(buf),
            TarSink::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            TarSink::Plain(w) => w.flush(),
            TarSink::Zstd(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_tells_tar_zstd_and_other_files_apart() {
        let dir = tempfile::tempdir().unwrap();
        for compression in [Compression::None, Compression::Zstd] {
            let path = dir.path().join(format!("{compression:?}"));
            let mut builder =
                tar::Builder::new(TarSink::new(File::create(&path).unwrap(), compression).unwrap());
            let mut header = tar::Header::new_gnu();
            header.set_size(2);
            builder.append_data(&mut header, "x", &b"hi"[..]).unwrap();
            builder.into_inner().unwrap().finish().unwrap();
            assert_eq!(sniff(&path).unwrap(), Some(compression));
            let mut back = Vec::new();
            open_tar_stream(&path, compression)
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back.len(), 2048, "one header, one block, two end blocks");
        }
        let other = dir.path().join("manifest");
        std::fs::write(&other, b"{\"format\":1}\n").unwrap();
        assert_eq!(sniff(&other).unwrap(), None);
    }

    #[test]
    fn the_count_follows_what_the_decoder_consumed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z");
        let mut sink = TarSink::new(File::create(&path).unwrap(), Compression::Zstd).unwrap();
        sink.write_all(&vec![0u8; 8 << 20]).unwrap();
        sink.finish().unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        let (mut stream, consumed) = open_counted_tar_stream(&path, Compression::Zstd).unwrap();
        let mut first = vec![0u8; 1 << 20];
        stream.read_exact(&mut first).unwrap();
        // 8 MiB of zeros compress to a few hundred bytes, all read ahead into
        // the buffer at once: only what was decoded counts.
        assert!(consumed.get() < size, "{} of {size}", consumed.get());
        std::io::copy(&mut stream, &mut std::io::sink()).unwrap();
        assert_eq!(consumed.get(), size);
    }
}
