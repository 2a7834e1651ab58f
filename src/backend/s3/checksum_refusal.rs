//! Destinations that refuse the checksums this tool sends with bytes it
//! writes (uploads from a directory, streamed copies).
//!
//! AWS accepts them all: a checksum header, or a checksum in the trailer of
//! an `aws-chunked` body (`x-amz-content-sha256:
//! STREAMING-UNSIGNED-PAYLOAD-TRAILER`, "Signature calculations for
//! trailing headers",
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming-trailers.html>),
//! which is how a body of unknown bytes (a stream) carries one. Older
//! S3-compatible servers refuse one or the other, each in its own words:
//! 501 NotImplemented, `InvalidRequest` naming the header,
//! `XAmzContentSHA256Mismatch`, `AuthorizationHeaderMalformed`. The first
//! refusal turns checksums off for the rest of the process (its writes all
//! go to one destination) and the write is made again without one, so such
//! a server still gets its data, checked by its ETags alone.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::base::error::S3Failure;

/// Set once a server refused a checksum.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Whether writes still send checksums: until a server refuses one.
pub fn sends_checksums() -> bool {
    !REFUSED.load(Ordering::Relaxed)
}

/// Whether `failure`, the answer to a write that sent a checksum (in a
/// header, or with `trailer` in the body's trailer), refuses the checksum
/// itself rather than the bytes. S3's BadDigest for a mismatch is not a
/// refusal: it fails the write as damage should. A refusal is remembered
/// ([`sends_checksums`]) and logged once.
pub fn refuses_checksums(failure: &S3Failure, trailer: bool) -> bool {
    let refused = is_refusal(failure, trailer);
    if refused && !REFUSED.swap(true, Ordering::Relaxed) {
        tracing::warn!(code = %failure.code, error = %failure.message, "the destination refuses checksums sent with the bytes; writing without them, checked by ETags alone");
    }
    refused
}

fn is_refusal(failure: &S3Failure, trailer: bool) -> bool {
    let message = failure.message.to_ascii_lowercase();
    let names_it = ["checksum", "trailer", "chunked", "x-amz-content-sha256"]
        .iter()
        .any(|word| message.contains(word));
    match failure.code.as_str() {
        "BadDigest" => false,
        "NotImplemented" => trailer || names_it,
        // What servers that cannot read an aws-chunked body answer to one;
        // for a request without a trailer they mean a real fault.
        "XAmzContentSHA256Mismatch" | "AuthorizationHeaderMalformed" => trailer,
        "InvalidRequest" | "InvalidArgument" | "BadRequest" => names_it,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::error::RetryClass;

    fn failure(code: &str, message: &str) -> S3Failure {
        S3Failure {
            code: code.into(),
            http_status: Some(400),
            message: message.into(),
            class: RetryClass::NonRetryable,
        }
    }

    #[test]
    fn a_refusal_is_told_from_damage_and_from_other_faults() {
        assert!(!is_refusal(
            &failure("BadDigest", "The CRC64NVME you specified did not match"),
            true
        ));
        assert!(!is_refusal(
            &failure("AuthorizationHeaderMalformed", "the region is wrong"),
            false
        ));
        assert!(!is_refusal(
            &failure("InvalidArgument", "Invalid part number"),
            true
        ));
        assert!(!is_refusal(&failure("AccessDenied", "checksum"), true));
        assert!(is_refusal(
            &failure(
                "InvalidRequest",
                "The value specified in the x-amz-trailer header is not supported"
            ),
            true
        ));
        assert!(is_refusal(
            &failure("XAmzContentSHA256Mismatch", "invalid header"),
            true
        ));
    }
}
