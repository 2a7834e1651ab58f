//! Who lists what: a location on the client that reaches it, with what
//! every listing of it sends (owner, requester pays, page size), and
//! whether it is listed as it was at a point in time (`--as-of`).

use aws_sdk_s3::Client;

use crate::model::entry::Side;
use crate::model::location::S3Location;
use crate::model::options::SyncOptions;
use crate::model::s3_shape::MAX_PAGE_SIZE;

/// Who is listing what: a location on the client that reaches it.
#[derive(Debug, Clone)]
pub struct ListTarget {
    pub client: Client,
    pub location: S3Location,
    pub expected_owner: Option<String>,
    pub request_payer: bool,
    /// Keys per ListObjectsV2 page ([`MAX_PAGE_SIZE`] but in tests).
    pub page_size: i32,
    /// List the bucket as it was at this time (milliseconds since the
    /// Unix epoch, `--as-of`): each key's version then, from
    /// ListObjectVersions ([`crate::backend::s3::listing_versions`]).
    pub as_of_ms: Option<i64>,
}

impl ListTarget {
    /// Full pages of `location`, as `client` reaches it.
    pub fn new(
        client: &Client,
        location: &S3Location,
        expected_owner: Option<String>,
        request_payer: bool,
    ) -> ListTarget {
        ListTarget {
            client: client.clone(),
            location: location.clone(),
            expected_owner,
            request_payer,
            page_size: MAX_PAGE_SIZE,
            as_of_ms: None,
        }
    }

    /// One side of a run, as its options say: that side's expected owner,
    /// requester pays, and the page size.
    pub fn for_side(
        client: &Client,
        location: &S3Location,
        options: &SyncOptions,
        side: Side,
    ) -> ListTarget {
        let owner = match side {
            Side::Source => &options.copy.expected_source_owner,
            Side::Destination => &options.copy.expected_dest_owner,
        };
        ListTarget {
            page_size: options.list_page_size,
            // Only the source is seen in the past: the destination is
            // compared as it is now, which is what a restore writes over.
            as_of_ms: match side {
                Side::Source => options.copy.as_of_ms,
                Side::Destination => None,
            },
            ..ListTarget::new(client, location, owner.clone(), options.copy.request_payer)
        }
    }
}
