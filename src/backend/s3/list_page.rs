//! A ListObjectsV2 page read straight from its XML, for the listings that
//! carry a sync: what a no-op re-sync of a large bucket spends its CPU on.
//!
//! The SDK's generated deserializer builds an `Object` per key (owner,
//! checksum algorithms, restore status, each field a `String`) and parses
//! each `LastModified` through a generic XML decoder; on two cores that was
//! 60% of a 100,000-object no-op's CPU (`perf`, issue 23). This reads the
//! five fields a sync compares with quick-xml, in one pass over the bytes.
//!
//! It stays inside the SDK's request path, so signing, endpoints, retries,
//! timeouts, error responses and the request counter are the SDK's as for
//! every other call: [`ReadPage`], an interceptor for one `send()`, wraps a
//! successful response's body; once the body has arrived whole, the page
//! is parsed here and the SDK is handed a page with no contents to
//! deserialize. A body this cannot parse is handed to the SDK unchanged,
//! and its own deserialization is used ([`Page::from_sdk`]), so an
//! unexpected document costs speed, never an object.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::date_time::{DateTime, Format};
use bytes::Bytes;
use quick_xml::events::Event;

use crate::model::entry::ObjectEntry;

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

/// What the SDK deserializes instead of a page read here: a valid, empty
/// ListObjectsV2 result.
const EMPTY_RESULT: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"></ListBucketResult>";

/// The elements a page is read from; every other is passed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    Contents,
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
    fn of(local_name: &[u8]) -> Element {
        match local_name {
            b"Contents" => Element::Contents,
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

/// Parse a ListObjectsV2 result document. `Err` for anything that is not
/// one (the SDK then reads it).
pub fn parse(xml: &[u8]) -> Result<Page, String> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut page = Page::default();
    // The elements open below the root; the text of the innermost so far
    // (text and entity references come in pieces).
    let mut path: Vec<Element> = Vec::with_capacity(4);
    let mut text = String::new();
    let mut object = Listed::default();
    let (mut rooted, mut closed) = (false, false);
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(start) => {
                if !rooted {
                    if start.local_name().as_ref() != b"ListBucketResult" {
                        return Err(format!(
                            "the document is a {}, not a ListBucketResult",
                            String::from_utf8_lossy(start.local_name().as_ref())
                        ));
                    }
                    rooted = true;
                    continue;
                }
                let element = Element::of(start.local_name().as_ref());
                if path.is_empty() && element == Element::Contents {
                    object = Listed::default();
                }
                path.push(element);
                text.clear();
            }
            Event::Empty(_) => {}
            Event::Text(t) => text.push_str(&t.decode().map_err(|e| e.to_string())?),
            Event::CData(t) => text.push_str(&t.decode().map_err(|e| e.to_string())?),
            Event::GeneralRef(r) => {
                if let Some(c) = r.resolve_char_ref().map_err(|e| e.to_string())? {
                    text.push(c);
                } else {
                    let name = r.decode().map_err(|e| e.to_string())?;
                    let resolved = quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or_else(|| format!("unknown entity &{name};"))?;
                    text.push_str(resolved);
                }
            }
            Event::End(_) => {
                let Some(element) = path.pop() else {
                    closed = true; // the root's end
                    break;
                };
                match (path.as_slice(), element) {
                    ([], Element::Contents) => {
                        if object.key.is_empty() {
                            return Err("an object without a key".to_owned());
                        }
                        page.objects.push(std::mem::take(&mut object));
                    }
                    ([], Element::IsTruncated) => page.is_truncated = text == "true",
                    ([], Element::NextContinuationToken) => {
                        page.next_continuation_token = Some(std::mem::take(&mut text));
                    }
                    ([], Element::EncodingType) => page.url_encoded = text == "url",
                    ([Element::Contents], field) => match field {
                        Element::Key => object.key = std::mem::take(&mut text),
                        Element::Size => {
                            object.size =
                                text.parse().map_err(|e| format!("Size {text:?}: {e}"))?;
                        }
                        Element::ETag => object.etag = text.trim_matches('"').to_owned(),
                        Element::LastModified => {
                            object.last_modified_ms = DateTime::from_str(&text, Format::DateTime)
                                .map_err(|e| format!("LastModified {text:?}: {e}"))?
                                .to_millis()
                                .map_err(|e| format!("LastModified {text:?}: {e}"))?;
                        }
                        Element::StorageClass => {
                            object.storage_class = Some(std::mem::take(&mut text));
                        }
                        _ => {}
                    },
                    _ => {}
                }
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !closed {
        return Err("the document ends before its ListBucketResult does".to_owned());
    }
    Ok(page)
}

/// The interceptor of one ListObjectsV2 `send()`: the page it read, if it
/// could ([`ReadPage::take`]).
#[derive(Debug, Clone, Default)]
pub struct ReadPage {
    page: Arc<Mutex<Option<Page>>>,
}

impl ReadPage {
    /// The page of the last attempt, when this module read it; `None`
    /// when the SDK's own output holds it.
    pub fn take(&self) -> Option<Page> {
        self.page.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Intercept for ReadPage {
    fn name(&self) -> &'static str {
        "ReadPage"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // An earlier attempt's page is not this attempt's.
        self.page.lock().unwrap_or_else(|p| p.into_inner()).take();
        let response = context.response_mut();
        if !response.status().is_success() {
            return Ok(()); // an error document: the SDK's to read
        }
        let body = std::mem::replace(response.body_mut(), SdkBody::taken());
        *response.body_mut() = SdkBody::from_body_1_x(Condensing {
            inner: body,
            received: Vec::new(),
            page: self.page.clone(),
            done: false,
        });
        Ok(())
    }
}

/// A response body that gathers the page, parses it at its end, and then
/// yields the empty result in its place (or, unparsed, the page itself).
struct Condensing {
    inner: SdkBody,
    received: Vec<u8>,
    page: Arc<Mutex<Option<Page>>>,
    done: bool,
}

impl http_body::Body for Condensing {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.received.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.done = true;
                    let received = std::mem::take(&mut this.received);
                    let data = match parse(&received) {
                        Ok(page) => {
                            *this.page.lock().unwrap_or_else(|p| p.into_inner()) = Some(page);
                            Bytes::from_static(EMPTY_RESULT)
                        }
                        Err(why) => {
                            tracing::debug!(why, "a listing page read by the SDK instead");
                            Bytes::from(received)
                        }
                    };
                    return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
                }
            }
        }
    }
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
            parse(EMPTY_RESULT).unwrap(),
            Page::default(),
            "the stand-in the SDK reads"
        );
    }
}
