//! SHA-256 (what the manifest checks entries with) and MD5 (what a PUT's
//! ETag will be) of a byte stream, computed as the bytes pass, so no entry
//! is read twice to be checked.

use std::io::{self, Read};

use md5::Md5;
use sha2::Sha256;

use super::format::hex;

/// Running digests of a stream of bytes.
#[derive(Clone, Default)]
pub struct Digests {
    sha256: Sha256,
    md5: Md5,
    length: u64,
}

/// The digests of a finished stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digested {
    pub length: u64,
    /// Lowercase hex.
    pub sha256: String,
    pub md5: String,
}

impl Digests {
    pub fn update(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.sha256, bytes);
        md5::Digest::update(&mut self.md5, bytes);
        self.length += bytes.len() as u64;
    }

    pub fn length(&self) -> u64 {
        self.length
    }

    pub fn finish(self) -> Digested {
        Digested {
            length: self.length,
            sha256: hex(&sha2::Digest::finalize(self.sha256)),
            md5: hex(&md5::Digest::finalize(self.md5)),
        }
    }
}

/// A reader that digests what passes through it.
pub struct HashingReader<R> {
    inner: R,
    digests: Digests,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            digests: Digests::default(),
        }
    }

    pub fn finish(self) -> Digested {
        self.digests.finish()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digests.update(&buf[..n]);
        Ok(n)
    }
}

/// SHA-256 and length of everything `reader` yields.
pub fn digest_all(reader: impl Read, sink: &mut impl io::Write) -> io::Result<Digested> {
    let mut hashing = HashingReader::new(reader);
    io::copy(&mut hashing, sink)?;
    Ok(hashing.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_known_values() {
        let mut d = Digests::default();
        d.update(b"he");
        d.update(b"llo");
        let done = d.finish();
        assert_eq!(done.length, 5);
        assert_eq!(done.md5, "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(
            done.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let copied = digest_all(&b"hello"[..], &mut io::sink()).unwrap();
        assert_eq!(copied, done);
    }
}
