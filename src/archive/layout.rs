//! How to upload an imported object so the destination gets the source's
//! ETag, which is what lets the verification (and the next import) prove
//! the two equal.
//!
//! A plain ETag is the MD5 of the bytes: one PutObject reproduces it (up to
//! 5 GiB). A `-N` ETag depends on the part layout, which S3 does not keep:
//! the exporter records part 1's size when the server reports it, and
//! otherwise the sizes common tools use are tried (the file's multipart
//! ETag is computed locally for each size that gives exactly N parts) until
//! one matches. When none can, the object is uploaded in a layout of
//! another shape on purpose, so its ETag is never compared with the
//! source's (a same-shaped but different ETag would read as "different"
//! forever), and the import says it could only check the size.

use std::io;
use std::path::Path;

use super::format::{Exported, ManifestEntry};
use crate::backend::local::etag::{md5_etag, part_size_candidates};
use crate::model::s3_shape::{EtagShape, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, etag_shape};

const MIB: u64 = 1024 * 1024;
/// The part size for an object whose layout cannot be reproduced and that
/// is too large for one PUT: the AWS CLI's, raised to stay within 10,000
/// parts.
const FALLBACK_PART_SIZE: u64 = 8 * MIB;

/// One PUT, or a multipart upload in parts of this size (the last shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Single,
    Parts(u64),
}

/// A layout, and whether it gives the destination the source's ETag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chosen {
    pub layout: Layout,
    pub reproduces_etag: bool,
}

/// Choose the layout for `line`'s object, whose bytes are in `file`.
/// Reads the file once per candidate part size at most, usually once.
pub fn choose_layout(file: &Path, line: &ManifestEntry, export: &Exported) -> io::Result<Chosen> {
    let size = export.length;
    let parts = match etag_shape(&line.etag) {
        EtagShape::Single if size <= MAX_PART_SIZE => {
            return Ok(Chosen {
                layout: Layout::Single,
                reproduces_etag: export.md5 == line.etag,
            });
        }
        EtagShape::Single => 0,
        EtagShape::Multipart(parts) => u64::from(parts),
    };
    if (1..=MAX_PARTS).contains(&parts) {
        let hint = export.part_size.unwrap_or(FALLBACK_PART_SIZE);
        let mut candidates = part_size_candidates(size, parts, hint);
        if parts == 1 {
            // One part of any size reproduces a `-1` ETag, empty included.
            candidates.push(size.max(1));
        }
        candidates.retain(|p| (parts == 1 || *p >= MIN_PART_SIZE) && *p <= MAX_PART_SIZE);
        for part_size in candidates {
            if md5_etag(file, size, Some(part_size))? == line.etag {
                return Ok(Chosen {
                    layout: Layout::Parts(part_size),
                    reproduces_etag: true,
                });
            }
        }
    }
    Ok(Chosen {
        layout: other_shape(size, parts),
        reproduces_etag: false,
    })
}

/// A layout whose ETag cannot be mistaken for a `parts`-part one.
fn other_shape(size: u64, parts: u64) -> Layout {
    if parts > 0 && size <= MAX_PART_SIZE {
        return Layout::Single;
    }
    let mut part_size = FALLBACK_PART_SIZE.max(size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB);
    if size.div_ceil(part_size) == parts {
        part_size += MIB;
    }
    Layout::Parts(part_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::format::{ObjectHeaders, object_entry_name};
    use crate::model::entry::ObjectEntry;

    fn line(etag: &str, size: u64, md5: &str, part_size: Option<u64>) -> (ManifestEntry, Exported) {
        let line = ManifestEntry::from_listed(&ObjectEntry {
            version_id: None,
            key: "k".into(),
            size,
            etag: etag.into(),
            last_modified_ms: 0,
            storage_class: None,
            checksum: None,
        });
        let export = Exported {
            entry: object_entry_name(1),
            length: size,
            sha256: String::new(),
            md5: md5.into(),
            part_size,
            headers: ObjectHeaders::default(),
            tags: vec![],
        };
        (line, export)
    }

    #[test]
    fn the_part_size_that_reproduces_the_etag_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let size = 12 * MIB;
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let five = md5_etag(&path, size, Some(5 * MIB)).unwrap();
        assert!(five.ends_with("-3"));
        let md5 = md5_etag(&path, size, None).unwrap();

        // Without a hint: 8 MiB gives 2 parts, so 5 MiB is the candidate tried.
        let (l, e) = line(&five, size, &md5, None);
        let chosen = choose_layout(&path, &l, &e).unwrap();
        assert_eq!(
            chosen,
            Chosen {
                layout: Layout::Parts(5 * MIB),
                reproduces_etag: true
            }
        );

        // A plain MD5 ETag: one PUT.
        let (l, e) = line(&md5, size, &md5, None);
        assert_eq!(choose_layout(&path, &l, &e).unwrap().layout, Layout::Single);

        // A `-3` ETag no layout reproduces: uploaded in another shape.
        let (l, e) = line(
            "00000000000000000000000000000000-3",
            size,
            &md5,
            Some(5 * MIB),
        );
        assert_eq!(
            choose_layout(&path, &l, &e).unwrap(),
            Chosen {
                layout: Layout::Single,
                reproduces_etag: false
            }
        );

        // A plain ETag that is not the MD5 (SSE-KMS): cannot be reproduced.
        let (l, e) = line("ffffffffffffffffffffffffffffffff", size, &md5, None);
        assert!(!choose_layout(&path, &l, &e).unwrap().reproduces_etag);
    }

    #[test]
    fn other_shapes_never_give_the_same_part_count() {
        let gib = 1024 * MIB;
        assert_eq!(other_shape(10, 3), Layout::Single);
        let Layout::Parts(p) = other_shape(6 * gib, 0) else {
            panic!()
        };
        assert!(p >= MIN_PART_SIZE && (6 * gib).div_ceil(p) <= MAX_PARTS);
        let size = 6 * gib;
        let clash = size.div_ceil(FALLBACK_PART_SIZE);
        let Layout::Parts(p) = other_shape(size, clash) else {
            panic!()
        };
        assert_ne!(size.div_ceil(p), clash);
    }
}
