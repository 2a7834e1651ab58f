//! Everything a copy needs, built once per run: both buckets, their clients
//! and how to write; and how a source is named in `x-amz-copy-source`.

use aws_sdk_s3::Client;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::model::location::S3Location;
use crate::model::options::CopyOptions;

/// Characters kept literal in `x-amz-copy-source`: the RFC 3986 unreserved
/// set and `/`. Everything else, `+` and `%` included, is escaped so that a
/// key like `a+b%41` reaches S3 as itself.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// `x-amz-copy-source` of `key` in `bucket`, naming `version` when the
/// copy is of one ("CopyObject": "To copy a specific version of an object,
/// append `?versionId=<version-id>` to the value",
/// <https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html>).
pub fn copy_source(bucket: &str, key: &str, version: Option<&str>) -> String {
    let source = format!("{bucket}/{}", utf8_percent_encode(key, COPY_SOURCE));
    match version {
        Some(version) => format!(
            "{source}?versionId={}",
            utf8_percent_encode(version, COPY_SOURCE)
        ),
        None => source,
    }
}

/// Everything a copy needs: both sides and how to write.
#[derive(Debug, Clone)]
pub struct Copier {
    pub source_client: Client,
    pub destination_client: Client,
    pub source: S3Location,
    pub destination: S3Location,
    pub options: CopyOptions,
}

impl Copier {
    /// This copier with both clients reporting to `counter`.
    pub fn counted(&self, counter: &crate::base::metrics::RequestCounter) -> Copier {
        Copier {
            source_client: crate::base::client::with_counter(&self.source_client, counter),
            destination_client: crate::base::client::with_counter(
                &self.destination_client,
                counter,
            ),
            ..self.clone()
        }
    }
}
