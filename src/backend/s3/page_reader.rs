//! Listing pages read straight from their XML, inside the SDK's request
//! path: what a no-op re-sync of a large bucket spends its CPU on, and, for
//! ListObjectVersions, the only way to keep the order S3 lists versions
//! and delete markers in (the SDK's output splits them into two lists).
//!
//! Signing, endpoints, retries, timeouts, error responses and the request
//! counter stay the SDK's as for every other call: [`ReadPage`], an
//! interceptor for one `send()`, wraps a successful response's body; once
//! the body has arrived whole, it is parsed by the page's [`Document`] and
//! the SDK is handed an empty result to deserialize. A body that cannot be
//! parsed is handed to the SDK unchanged, and [`ReadPage::take`] has
//! nothing: the caller decides whether the SDK's reading will do.

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;
use quick_xml::events::Event;

/// A listing result document this crate reads itself.
pub trait Document: Sized + Send + Sync + Debug + 'static {
    /// A valid, empty result of the operation: what the SDK deserializes
    /// instead of a page read here.
    const EMPTY_RESULT: &'static [u8];

    /// Parse a result document; `Err` for anything that is not one.
    fn parse(xml: &[u8]) -> Result<Self, String>;
}

/// The interceptor of one listing `send()`: the page it read, if it could
/// ([`ReadPage::take`]).
#[derive(Debug)]
pub struct ReadPage<D> {
    page: Arc<Mutex<Option<D>>>,
}

impl<D> Default for ReadPage<D> {
    fn default() -> Self {
        ReadPage {
            page: Arc::new(Mutex::new(None)),
        }
    }
}

impl<D> Clone for ReadPage<D> {
    fn clone(&self) -> Self {
        ReadPage {
            page: self.page.clone(),
        }
    }
}

impl<D> ReadPage<D> {
    /// The page of the last attempt, when this module read it; `None`
    /// when the SDK's own output holds it.
    pub fn take(&self) -> Option<D> {
        self.page.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl<D: Document> Intercept for ReadPage<D> {
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
struct Condensing<D> {
    inner: SdkBody,
    received: Vec<u8>,
    page: Arc<Mutex<Option<D>>>,
    done: bool,
}

impl<D: Document> http_body::Body for Condensing<D> {
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
                    let data = match D::parse(&received) {
                        Ok(page) => {
                            *this.page.lock().unwrap_or_else(|p| p.into_inner()) = Some(page);
                            Bytes::from_static(D::EMPTY_RESULT)
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

// Unpin: the inner body is an SdkBody, which is Unpin.
impl<D> Unpin for Condensing<D> {}

/// Walks a result document's elements below its root: for each element
/// that ends, the elements it is in and its text (text and entity
/// references come in pieces, gathered here). Elements are known by `E`,
/// a document's own small enum, so the walk allocates nothing per element:
/// a listing page has about ten per key.
pub struct Elements<'a, E> {
    reader: quick_xml::Reader<&'a [u8]>,
    root: &'static [u8],
    classify: fn(&[u8]) -> E,
}

/// One element that ended: what it is, the elements it is in (below the
/// root, outermost first), and its text.
pub struct Ended<'e, E> {
    pub element: E,
    pub parents: &'e [E],
    pub text: &'e mut String,
}

impl<'a, E: Copy> Elements<'a, E> {
    /// The elements of `xml`, whose root must be `root`, each named by
    /// `classify` of its local name.
    pub fn new(xml: &'a [u8], root: &'static [u8], classify: fn(&[u8]) -> E) -> Self {
        Elements {
            reader: quick_xml::Reader::from_reader(xml),
            root,
            classify,
        }
    }

    /// Call `on_end` for every element below the root as it ends; `Err`
    /// for a document that is not well formed, has another root, or ends
    /// before its root does.
    pub fn each(
        mut self,
        mut on_end: impl FnMut(Ended<'_, E>) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut path: Vec<E> = Vec::with_capacity(4);
        let mut text = String::new();
        let mut rooted = false;
        loop {
            match self.reader.read_event().map_err(|e| e.to_string())? {
                Event::Start(start) => {
                    let name = start.local_name();
                    if !rooted {
                        if name.as_ref() != self.root {
                            return Err(format!(
                                "the document is a {}, not a {}",
                                String::from_utf8_lossy(name.as_ref()),
                                String::from_utf8_lossy(self.root)
                            ));
                        }
                        rooted = true;
                        continue;
                    }
                    path.push((self.classify)(name.as_ref()));
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
                        return Ok(()); // the root's end
                    };
                    on_end(Ended {
                        element,
                        parents: &path,
                        text: &mut text,
                    })?;
                    text.clear();
                }
                Event::Eof => {
                    return Err(format!(
                        "the document ends before its {} does",
                        String::from_utf8_lossy(self.root)
                    ));
                }
                _ => {}
            }
        }
    }
}

/// A listing's `LastModified`, in milliseconds since the Unix epoch.
pub fn last_modified_ms(text: &str) -> Result<i64, String> {
    use aws_smithy_types::date_time::{DateTime, Format};
    DateTime::from_str(text, Format::DateTime)
        .map_err(|e| format!("LastModified {text:?}: {e}"))?
        .to_millis()
        .map_err(|e| format!("LastModified {text:?}: {e}"))
}
