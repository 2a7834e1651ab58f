//! A ListObjectsV2 page read straight from its XML, for the listings that
//! carry a sync: what a no-op re-sync of a large bucket spends its CPU on.
//!
//! The SDK's generated deserializer builds an `Object` per key (owner,
//! checksum algorithms, restore status, each field a `String`) and parses
//! each `LastModified` through a generic XML decoder; on two cores that was
//! 60% of a 100,000-object no-op's CPU (`perf`, issue 23). This reads the
//! five fields a sync compares with quick-xml, in one pass over the bytes,
//! inside the SDK's request path ([`crate::backend::s3::page_reader`]). A
//! body this cannot parse is left to the SDK, and its own deserialization
//! is used ([`Page::from_sdk`]), so an unexpected document costs speed,
//! never an object.

use crate::backend::s3::page_reader::{Document, Elements, Ended, last_modified_ms};
use crate::model::entry::ObjectEntry;

/// The interceptor that reads a ListObjectsV2 page.
pub type ReadPage = crate::backend::s3::page_reader::ReadPage<Page>;

/// One listed object, as a sync needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listed {
    /// As the page has it: URL-encoded when [`Page::url_encoded`].
    pub key: String,
    pub size: u64,
    /// Without the surrounding quotes.
    pub etag: String,
    /// Milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
    pub storage_class: Option<String>,
}

impl Listed {
    /// An object as the SDK deserialized it (from a listing page, or a
    /// page this module could not read).
    pub fn from_sdk(object: &aws_sdk_s3::types::Object) -> Listed {
        Listed {
            key: object.key().unwrap_or_default().to_owned(),
            size: object.size().unwrap_or(0).max(0) as u64,
            etag: object
                .e_tag()
                .unwrap_or_default()
                .trim_matches('"')
                .to_owned(),
            last_modified_ms: object
                .last_modified()
                .and_then(|t| t.to_millis().ok())
                .unwrap_or(0),
            storage_class: object.storage_class().map(|c| c.as_str().to_owned()),
        }
    }

    /// The entry of this object, `relative` being its decoded key relative
    /// to the listed location.
    pub fn entry(self, relative: &str) -> ObjectEntry {
        ObjectEntry {
            version_id: None,
            key: relative.to_owned(),
            size: self.size,
            etag: self.etag,
            last_modified_ms: self.last_modified_ms,
            storage_class: self.storage_class,
            checksum: None,
        }
    }
}

/// One ListObjectsV2 page.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    pub objects: Vec<Listed>,
    pub is_truncated: bool,
    pub next_continuation_token: Option<String>,
    /// The keys are URL-encoded (`EncodingType` is `url`).
    pub url_encoded: bool,
}

impl Page {
    /// The page as the SDK deserialized it: the way back when this module
    /// could not read the body.
    pub fn from_sdk(output: &aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output) -> Page {
        Page {
            objects: output.contents().iter().map(Listed::from_sdk).collect(),
            is_truncated: output.is_truncated() == Some(true),
            next_continuation_token: output.next_continuation_token().map(str::to_owned),
            url_encoded: output.encoding_type() == Some(&aws_sdk_s3::types::EncodingType::Url),
        }
    }
}

/// The elements listing pages are read from (ListObjectsV2's here,
/// ListObjectVersions' in [`crate::backend::s3::version_page`]); every
/// other is passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Element {
    Contents,
    Version,
    DeleteMarker,
    VersionId,
    NextKeyMarker,
    NextVersionIdMarker,
    Key,
    Size,
    ETag,
    LastModified,
    StorageClass,
    IsTruncated,
    NextContinuationToken,
    EncodingType,
    Other,
}

impl Element {
    pub(crate) fn of(local_name: &[u8]) -> Element {
        match local_name {
            b"Contents" => Element::Contents,
            b"Version" => Element::Version,
            b"DeleteMarker" => Element::DeleteMarker,
            b"VersionId" => Element::VersionId,
            b"NextKeyMarker" => Element::NextKeyMarker,
            b"NextVersionIdMarker" => Element::NextVersionIdMarker,
            b"Key" => Element::Key,
            b"Size" => Element::Size,
            b"ETag" => Element::ETag,
            b"LastModified" => Element::LastModified,
            b"StorageClass" => Element::StorageClass,
            b"IsTruncated" => Element::IsTruncated,
            b"NextContinuationToken" => Element::NextContinuationToken,
            b"EncodingType" => Element::EncodingType,
            _ => Element::Other,
        }
    }
}

impl Document for Page {
    const EMPTY_RESULT: &'static [u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"></ListBucketResult>";

    fn parse(xml: &[u8]) -> Result<Page, String> {
        parse(xml)
    }
}

/// Parse a ListObjectsV2 result document. `Err` for anything that is not
/// one (the SDK then reads it).
pub fn parse(xml: &[u8]) -> Result<Page, String> {
    let mut page = Page::default();
    let mut object = Listed::default();
    Elements::new(xml, b"ListBucketResult", Element::of).each(
        |Ended {
             element,
             parents,
             text,
         }| {
            match (parents, element) {
                ([], Element::Contents) => {
                    if object.key.is_empty() {
                        return Err("an object without a key".to_owned());
                    }
                    page.objects.push(std::mem::take(&mut object));
                }
                ([], Element::IsTruncated) => page.is_truncated = text == "true",
                ([], Element::NextContinuationToken) => {
                    page.next_continuation_token = Some(std::mem::take(text));
                }
                ([], Element::EncodingType) => page.url_encoded = text == "url",
                ([Element::Contents], field) => read_field(&mut object, field, text)?,
                _ => {}
            }
            Ok(())
        },
    )?;
    Ok(page)
}

/// One field of an object (or version) into `object`; others pass.
pub(crate) fn read_field(
    object: &mut Listed,
    field: Element,
    text: &mut String,
) -> Result<(), String> {
    match field {
        Element::Key => object.key = std::mem::take(text),
        Element::Size => {
            object.size = text.parse().map_err(|e| format!("Size {text:?}: {e}"))?;
        }
        Element::ETag => object.etag = text.trim_matches('"').to_owned(),
        Element::LastModified => object.last_modified_ms = last_modified_ms(text)?,
        Element::StorageClass => object.storage_class = Some(std::mem::take(text)),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated><Contents><Key>p/a%20b+c%2B</Key><LastModified>2026-12-06T11:30:17.123Z</LastModified><ETag>&quot;5d41402abc4b2a76b9719d911017c592&quot;</ETag><ChecksumAlgorithm>CRC64NVME</ChecksumAlgorithm><ChecksumType>FULL_OBJECT</ChecksumType><Size>5</Size><Owner><ID>x</ID><DisplayName>y</DisplayName></Owner><StorageClass>GLACIER</StorageClass><RestoreStatus><IsRestoreInProgress>false</IsRestoreInProgress></RestoreStatus></Contents><Contents>
  <Key>p/&#x65E5;&lt;&amp;&gt;</Key>
  <LastModified>2026-01-01T00:00:00Z</LastModified>
  <ETag>"abc-12"</ETag>
  <Size>6442450944</Size>
</Contents><CommonPrefixes><Prefix>p/q/</Prefix></CommonPrefixes><NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken><StartAfter>p/</StartAfter></ListBucketResult>"#;

    #[test]
    fn a_page_reads_the_fields_a_sync_compares() {
        let page = parse(PAGE.as_bytes()).unwrap();
        assert!(page.is_truncated);
        assert!(page.url_encoded);
        assert_eq!(
            page.next_continuation_token.as_deref(),
            Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")
        );
        assert_eq!(
            page.objects,
            vec![
                Listed {
                    key: "p/a%20b+c%2B".into(),
                    size: 5,
                    etag: "5d41402abc4b2a76b9719d911017c592".into(),
                    last_modified_ms: 1_796_556_617_123,
                    storage_class: Some("GLACIER".into()),
                },
                Listed {
                    key: "p/日<&>".into(),
                    size: 6_442_450_944,
                    etag: "abc-12".into(),
                    last_modified_ms: 1_767_225_600_000,
                    storage_class: None,
                },
            ]
        );
    }

    #[test]
    fn what_is_not_a_page_is_left_to_the_sdk() {
        for bad in [
            "<Error><Code>NoSuchBucket</Code></Error>",
            "<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",
            "<ListBucketResult><Contents><Key>a</Key><Size>x</Size></Contents></ListBucketResult>",
            "<ListBucketResult><Contents><Key>a</Key><LastModified>yesterday</LastModified></Contents></ListBucketResult>",
            "<ListBucketResult><Contents><Key>&nbsp;</Key></Contents></ListBucketResult>",
            "",
            "<ListBucketResult><Contents><Key>a</Key>",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
        // An empty page is a page.
        assert_eq!(
            parse(<Page as Document>::EMPTY_RESULT).unwrap(),
            Page::default(),
            "the stand-in the SDK reads"
        );
    }
}
