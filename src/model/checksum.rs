//! S3's additional checksums, and what two of them prove about two objects.
//!
//! An ETag is the MD5 of an object's bytes only for unencrypted and SSE-S3
//! objects uploaded in one part. SSE-KMS, DSSE-KMS and SSE-C objects have
//! ETags that are not ("Checking object integrity",
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html>;
//! `Object.ETag`, <https://docs.aws.amazon.com/AmazonS3/latest/API/API_Object.html>),
//! so two equal copies of a KMS object never have equal ETags. Their
//! checksums do: S3 stores one with every object written since December
//! 2024 (CRC64NVME unless the writer chose another), and HEAD returns it
//! with `x-amz-checksum-mode: ENABLED`.
//!
//! A checksum is FULL_OBJECT (of all the bytes, whatever the part layout)
//! or COMPOSITE (a checksum of the parts' checksums, `…-N`, which depends
//! on where the parts were cut).

use serde::{Deserialize, Serialize};

/// An additional checksum algorithm S3 supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChecksumAlgorithm {
    Crc64Nvme,
    Crc32,
    Crc32c,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    /// The CRC this algorithm is, to compute a full-object value from
    /// bytes; `None` for the SHAs, which S3 keeps only per part.
    pub fn crc(self) -> Option<crc_fast::CrcAlgorithm> {
        match self {
            ChecksumAlgorithm::Crc64Nvme => Some(crc_fast::CrcAlgorithm::Crc64Nvme),
            ChecksumAlgorithm::Crc32 => Some(crc_fast::CrcAlgorithm::Crc32IsoHdlc),
            ChecksumAlgorithm::Crc32c => Some(crc_fast::CrcAlgorithm::Crc32Iscsi),
            ChecksumAlgorithm::Sha1 | ChecksumAlgorithm::Sha256 => None,
        }
    }

    /// A CRC value as S3 carries it: base64 of its big-endian bytes (8 for
    /// CRC64NVME, 4 for the CRC32s).
    pub fn encode(self, value: u64) -> String {
        match self {
            ChecksumAlgorithm::Crc64Nvme => aws_smithy_types::base64::encode(value.to_be_bytes()),
            _ => aws_smithy_types::base64::encode((value as u32).to_be_bytes()),
        }
    }

    /// The algorithm S3 names so (`x-amz-checksum-algorithm`).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            ChecksumAlgorithm::Crc64Nvme,
            ChecksumAlgorithm::Crc32,
            ChecksumAlgorithm::Crc32c,
            ChecksumAlgorithm::Sha1,
            ChecksumAlgorithm::Sha256,
        ]
        .into_iter()
        .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// As S3 names it (`x-amz-checksum-algorithm`).
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc64Nvme => "CRC64NVME",
            ChecksumAlgorithm::Crc32 => "CRC32",
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Sha1 => "SHA1",
            ChecksumAlgorithm::Sha256 => "SHA256",
        }
    }
}

/// One object's stored checksum, as HEAD answers it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    /// Base64, as S3 sends it; a composite value ends in `-N`.
    pub value: String,
    /// Of all the bytes (FULL_OBJECT), not of the parts' checksums.
    pub full_object: bool,
}

/// What two objects' checksums prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    Equal,
    Different,
    /// No checksum on one side, or two that cannot be compared (other
    /// algorithms, or composites of other part counts).
    Unknown,
}

/// Compare two objects of equal size by their checksums: full-object
/// checksums of one algorithm compare whatever the part layouts; composite
/// ones only with the same algorithm and part count (a copy that mirrors
/// its source's parts has the same composite checksum). An equal value
/// proves equal bytes; a different one proves them different, since a
/// composite of the same part count that differs comes from other bytes or
/// other part boundaries, and a copy costs less than trusting either.
pub fn prove(source: Option<&Checksum>, destination: Option<&Checksum>) -> Proof {
    let (Some(a), Some(b)) = (source, destination) else {
        return Proof::Unknown;
    };
    if a.algorithm != b.algorithm || a.full_object != b.full_object {
        return Proof::Unknown;
    }
    if !a.full_object && part_count(&a.value) != part_count(&b.value) {
        return Proof::Unknown;
    }
    if a.value == b.value {
        Proof::Equal
    } else {
        Proof::Different
    }
}

fn part_count(value: &str) -> Option<&str> {
    value.rsplit_once('-').map(|(_, n)| n)
}

impl Checksum {
    /// The checksum of a HEAD or GET answer's fields, preferring the
    /// full-object ones: CRC64NVME is always FULL_OBJECT. `kind` is
    /// `x-amz-checksum-type`; S3 leaves it out only for full-object values.
    pub fn from_fields(
        crc64nvme: Option<&str>,
        crc32: Option<&str>,
        crc32c: Option<&str>,
        sha1: Option<&str>,
        sha256: Option<&str>,
        kind: Option<&str>,
    ) -> Option<Checksum> {
        let (algorithm, value) = [
            (ChecksumAlgorithm::Crc64Nvme, crc64nvme),
            (ChecksumAlgorithm::Crc32, crc32),
            (ChecksumAlgorithm::Crc32c, crc32c),
            (ChecksumAlgorithm::Sha1, sha1),
            (ChecksumAlgorithm::Sha256, sha256),
        ]
        .into_iter()
        .find_map(|(algorithm, value)| value.filter(|v| !v.is_empty()).map(|v| (algorithm, v)))?;
        let composite = kind == Some("COMPOSITE") || value.contains('-');
        Some(Checksum {
            algorithm,
            value: value.to_owned(),
            full_object: algorithm == ChecksumAlgorithm::Crc64Nvme || !composite,
        })
    }
}

/// A running CRC64NVME, the full-object checksum this tool sends with the
/// bytes it uploads, so S3 rejects an upload that was damaged on its way.
pub struct Crc64Nvme(crc_fast::Digest);

impl Default for Crc64Nvme {
    fn default() -> Self {
        Crc64Nvme(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme))
    }
}

impl Crc64Nvme {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Base64 of the big-endian value, as `x-amz-checksum-crc64nvme` carries it.
    pub fn finish(&self) -> String {
        aws_smithy_types::base64::encode(self.0.finalize().to_be_bytes())
    }

    pub fn of(bytes: &[u8]) -> String {
        let mut crc = Crc64Nvme::default();
        crc.update(bytes);
        crc.finish()
    }

    /// The value so far, to combine with others ([`Crc64Nvme::combine`]).
    pub fn value(&self) -> u64 {
        self.0.finalize()
    }

    /// A value as `x-amz-checksum-crc64nvme` carries it.
    pub fn encode(value: u64) -> String {
        ChecksumAlgorithm::Crc64Nvme.encode(value)
    }

    /// The CRC of two runs of bytes one after the other, from the CRC of
    /// each and the second's length: a whole file's from its parts', each
    /// computed as the part is read for its upload.
    pub fn combine(first: u64, second: u64, second_len: u64) -> u64 {
        crc_fast::checksum_combine(crc_fast::CrcAlgorithm::Crc64Nvme, first, second, second_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(algorithm: ChecksumAlgorithm, value: &str, full_object: bool) -> Checksum {
        Checksum {
            algorithm,
            value: value.into(),
            full_object,
        }
    }

    #[test]
    fn part_crcs_combine_into_the_whole() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (a, b) = bytes.split_at(3_333);
        let crc = |part: &[u8]| {
            let mut c = Crc64Nvme::default();
            c.update(part);
            c.value()
        };
        let whole = Crc64Nvme::combine(crc(a), crc(b), b.len() as u64);
        assert_eq!(Crc64Nvme::encode(whole), Crc64Nvme::of(&bytes));
    }

    #[test]
    fn full_object_checksums_of_one_algorithm_prove_either_way() {
        let a = sum(ChecksumAlgorithm::Crc64Nvme, "AAAA", true);
        let b = sum(ChecksumAlgorithm::Crc64Nvme, "BBBB", true);
        assert_eq!(prove(Some(&a), Some(&a.clone())), Proof::Equal);
        assert_eq!(prove(Some(&a), Some(&b)), Proof::Different);
        assert_eq!(prove(Some(&a), None), Proof::Unknown);
        assert_eq!(prove(None, Some(&a)), Proof::Unknown);
    }

    #[test]
    fn other_algorithms_and_other_part_counts_prove_nothing() {
        let crc64 = sum(ChecksumAlgorithm::Crc64Nvme, "AAAA", true);
        let crc32 = sum(ChecksumAlgorithm::Crc32, "AAAA", true);
        assert_eq!(prove(Some(&crc64), Some(&crc32)), Proof::Unknown);
        let two = sum(ChecksumAlgorithm::Crc32, "AAAA-2", false);
        let three = sum(ChecksumAlgorithm::Crc32, "AAAA-3", false);
        assert_eq!(prove(Some(&two), Some(&three)), Proof::Unknown);
        assert_eq!(prove(Some(&two), Some(&crc32)), Proof::Unknown);
        let other_two = sum(ChecksumAlgorithm::Crc32, "BBBB-2", false);
        assert_eq!(prove(Some(&two), Some(&two.clone())), Proof::Equal);
        assert_eq!(prove(Some(&two), Some(&other_two)), Proof::Different);
    }

    #[test]
    fn fields_are_read_as_s3_sends_them() {
        let full = Checksum::from_fields(Some("x"), None, None, None, None, None).unwrap();
        assert_eq!(full, sum(ChecksumAlgorithm::Crc64Nvme, "x", true));
        let composite =
            Checksum::from_fields(None, Some("y-3"), None, None, None, Some("COMPOSITE")).unwrap();
        assert!(!composite.full_object);
        let crc32_full =
            Checksum::from_fields(None, Some("y"), None, None, None, Some("FULL_OBJECT")).unwrap();
        assert!(crc32_full.full_object);
        assert_eq!(
            Checksum::from_fields(None, None, None, None, None, None),
            None
        );
    }

    /// The check value of CRC-64/NVME: the CRC of the nine bytes
    /// "123456789" is 0xAE8B14860A799888.
    #[test]
    fn crc64nvme_is_the_nvme_polynomial() {
        let expected = aws_smithy_types::base64::encode(0xAE8B_1486_0A79_9888u64.to_be_bytes());
        assert_eq!(Crc64Nvme::of(b"123456789"), expected);
        let mut split = Crc64Nvme::default();
        split.update(b"1234");
        split.update(b"56789");
        assert_eq!(split.finish(), expected);
    }
}
