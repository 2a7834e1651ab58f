//! S3's rules about shapes and limits: ETag shapes, part layouts, the part
//! and page limits. Pure facts, so the planner can predict what a copy does.

/// The shape of an ETag: S3 gives multipart objects `md5-of-md5s-N`, which
/// depends on the part layout, so only ETags of the same shape compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtagShape {
    Single,
    Multipart(u32),
}

pub fn etag_shape(etag: &str) -> EtagShape {
    match etag.rsplit_once('-') {
        Some((_, parts)) => parts
            .parse()
            .map(EtagShape::Multipart)
            .unwrap_or(EtagShape::Single),
        None => EtagShape::Single,
    }
}

/// ListObjectsV2's page size limit, and the default page size.
pub const MAX_PAGE_SIZE: i32 = 1000;

/// ETags go back to S3 quoted, as S3 sends them.
pub fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

pub const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * MIB;
/// S3's limits for a part of a multipart upload, and for a single CopyObject.
pub const MIN_PART_SIZE: u64 = 5 * MIB;
pub const MAX_PART_SIZE: u64 = 5 * GIB;
pub const MAX_PARTS: u64 = 10_000;

/// Byte ranges, inclusive, one per part.
pub type Layout = Vec<(u64, u64)>;

/// Parts of `size` bytes cut into `part_size` pieces.
pub fn uniform_layout(size: u64, part_size: u64) -> Layout {
    let mut parts = Vec::new();
    let mut start = 0;
    while start < size {
        let end = (start + part_size).min(size) - 1;
        parts.push((start, end));
        start = end + 1;
    }
    parts
}

/// The part size for a source with no layout of its own: the configured
/// size, raised if needed to stay within S3's 10,000 parts, rounded to MiB.
pub fn default_part_size(size: u64, configured: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS);
    let part = configured.max(needed).max(MIN_PART_SIZE);
    part.div_ceil(1024 * 1024) * 1024 * 1024
}

/// S3's limit of keys in one DeleteObjects request.
pub const MAX_DELETE_KEYS: usize = 1_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_shapes() {
        assert_eq!(
            etag_shape("d41d8cd98f00b204e9800998ecf8427e"),
            EtagShape::Single
        );
        assert_eq!(etag_shape("abc-12"), EtagShape::Multipart(12));
        assert_eq!(etag_shape("not-a-number"), EtagShape::Single);
    }

    #[test]
    fn uniform_layout_covers_every_byte_once() {
        assert_eq!(uniform_layout(10, 4), vec![(0, 3), (4, 7), (8, 9)]);
        assert_eq!(uniform_layout(8, 4), vec![(0, 3), (4, 7)]);
    }

    #[test]
    fn default_part_size_respects_the_part_limit() {
        let mib = 1024 * 1024;
        assert_eq!(default_part_size(100 * mib, 8 * mib), 8 * mib);
        // 5 TiB at 8 MiB would need 655,360 parts: raise to fit 10,000.
        let five_tib = 5 * 1024 * 1024 * mib;
        let part = default_part_size(five_tib, 8 * mib);
        assert!(five_tib.div_ceil(part) <= MAX_PARTS);
        assert_eq!(part % mib, 0);
    }
}
