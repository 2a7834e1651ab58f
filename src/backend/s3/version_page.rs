//! A ListObjectVersions page read straight from its XML.
//!
//! S3 lists a key's versions and delete markers together, newest first,
//! keys in ascending order: the `Version` and `DeleteMarker` elements of a
//! page interleave in that order ("Listing objects in a versioning-enabled
//! bucket", <https://docs.aws.amazon.com/AmazonS3/latest/userguide/list-obj-version-enabled-bucket.html>;
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectVersions.html>).
//! The SDK's output splits them into two lists, which loses that order,
//! and with it which entry of a key came first when two share a
//! `LastModified` (whole seconds on S3). So this page has no SDK fallback:
//! a body it cannot read fails the listing, clearly, rather than guess an
//! order ([`crate::backend::s3::listing_versions`]).

use crate::backend::s3::list_page::{Element, Listed, read_field};
use crate::backend::s3::page_reader::{Document, Elements, Ended};
use crate::model::entry::ObjectEntry;
use crate::model::versions::ListedVersion;

/// The interceptor that reads a ListObjectVersions page.
pub type ReadVersions = crate::backend::s3::page_reader::ReadPage<VersionPage>;

/// One listed version or delete marker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListedEntry {
    /// A delete marker has no size, ETag or storage class.
    pub object: Listed,
    pub version_id: String,
    pub delete_marker: bool,
}

impl ListedEntry {
    /// This entry of the listing, `relative` being its decoded key
    /// relative to the listed location.
    pub fn version(self, relative: &str) -> ListedVersion {
        let mut entry: ObjectEntry = self.object.entry(relative);
        entry.version_id = Some(self.version_id);
        ListedVersion {
            entry,
            delete_marker: self.delete_marker,
        }
    }
}

/// One ListObjectVersions page.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VersionPage {
    /// Versions and delete markers, in the order the page lists them.
    pub entries: Vec<ListedEntry>,
    pub is_truncated: bool,
    /// Where the next page starts, as the page has it (URL-encoded when
    /// [`VersionPage::url_encoded`]).
    pub next_key_marker: Option<String>,
    pub next_version_id_marker: Option<String>,
    pub url_encoded: bool,
}

impl Document for VersionPage {
    const EMPTY_RESULT: &'static [u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListVersionsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"></ListVersionsResult>";

    fn parse(xml: &[u8]) -> Result<VersionPage, String> {
        let mut page = VersionPage::default();
        let mut entry = ListedEntry::default();
        Elements::new(xml, b"ListVersionsResult", Element::of).each(
            |Ended {
                 element,
                 parents,
                 text,
             }| {
                match (parents, element) {
                    ([], Element::Version | Element::DeleteMarker) => {
                        if entry.object.key.is_empty() || entry.version_id.is_empty() {
                            return Err("a version without a key or a version id".to_owned());
                        }
                        entry.delete_marker = element == Element::DeleteMarker;
                        page.entries.push(std::mem::take(&mut entry));
                    }
                    ([], Element::IsTruncated) => page.is_truncated = text == "true",
                    ([], Element::NextKeyMarker) => {
                        page.next_key_marker = Some(std::mem::take(text));
                    }
                    ([], Element::NextVersionIdMarker) => {
                        page.next_version_id_marker = Some(std::mem::take(text));
                    }
                    ([], Element::EncodingType) => page.url_encoded = text == "url",
                    ([Element::Version | Element::DeleteMarker], Element::VersionId) => {
                        entry.version_id = std::mem::take(text);
                    }
                    ([Element::Version | Element::DeleteMarker], field) => {
                        read_field(&mut entry.object, field, text)?;
                    }
                    _ => {}
                }
                Ok(())
            },
        )?;
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As S3 answers (the shape of the API reference's example), with a
    /// delete marker between two versions of `p/a b`: the order kept.
    const PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>p/</Prefix><KeyMarker></KeyMarker><VersionIdMarker></VersionIdMarker><NextKeyMarker>p/c%2B</NextKeyMarker><NextVersionIdMarker>v-c1</NextVersionIdMarker><MaxKeys>4</MaxKeys><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>
<Version><Key>p/a+b</Key><VersionId>v-a3</VersionId><IsLatest>true</IsLatest><LastModified>2026-12-06T11:30:17.000Z</LastModified><ETag>"5d41402abc4b2a76b9719d911017c592"</ETag><Size>5</Size><Owner><ID>x</ID></Owner><StorageClass>STANDARD</StorageClass></Version>
<DeleteMarker><Key>p/a+b</Key><VersionId>v-a2</VersionId><IsLatest>false</IsLatest><LastModified>2026-12-06T11:30:17.000Z</LastModified><Owner><ID>x</ID></Owner></DeleteMarker>
<Version><Key>p/a+b</Key><VersionId>null</VersionId><IsLatest>false</IsLatest><LastModified>2026-12-05T00:00:00.000Z</LastModified><ETag>&quot;abc-2&quot;</ETag><Size>6442450944</Size><StorageClass>GLACIER</StorageClass></Version>
<Version><Key>p/c%2B</Key><VersionId>v-c1</VersionId><IsLatest>true</IsLatest><LastModified>2026-12-01T00:00:00Z</LastModified><ETag>"e"</ETag><Size>1</Size></Version>
</ListVersionsResult>"#;

    #[test]
    fn a_page_keeps_versions_and_markers_in_listed_order() {
        let page = VersionPage::parse(PAGE.as_bytes()).unwrap();
        assert!(page.is_truncated && page.url_encoded);
        assert_eq!(page.next_key_marker.as_deref(), Some("p/c%2B"));
        assert_eq!(page.next_version_id_marker.as_deref(), Some("v-c1"));
        let seen: Vec<(&str, &str, bool, u64)> = page
            .entries
            .iter()
            .map(|e| {
                (
                    e.object.key.as_str(),
                    e.version_id.as_str(),
                    e.delete_marker,
                    e.object.size,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("p/a+b", "v-a3", false, 5),
                ("p/a+b", "v-a2", true, 0),
                ("p/a+b", "null", false, 6_442_450_944),
                ("p/c%2B", "v-c1", false, 1),
            ]
        );
        let oldest = &page.entries[2].object;
        assert_eq!(oldest.etag, "abc-2");
        assert_eq!(oldest.storage_class.as_deref(), Some("GLACIER"));
        assert_eq!(oldest.last_modified_ms, 1_796_428_800_000);
        let version = page.entries[0].clone().version("a b");
        assert_eq!(version.entry.key, "a b");
        assert_eq!(version.version_id(), "v-a3");
        assert!(!version.delete_marker);
    }

    #[test]
    fn what_is_not_a_version_page_is_refused() {
        for bad in [
            "<Error><Code>NoSuchBucket</Code></Error>",
            "<ListBucketResult></ListBucketResult>",
            "<ListVersionsResult><Version><Key>a</Key></Version></ListVersionsResult>",
            "<ListVersionsResult><DeleteMarker><VersionId>v</VersionId></DeleteMarker></ListVersionsResult>",
            "<ListVersionsResult><Version><Key>a</Key><VersionId>v</VersionId><Size>-1</Size></Version></ListVersionsResult>",
            "<ListVersionsResult><Version><Key>a</Key>",
            "",
        ] {
            assert!(VersionPage::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(
            VersionPage::parse(VersionPage::EMPTY_RESULT).unwrap(),
            VersionPage::default()
        );
    }
}
