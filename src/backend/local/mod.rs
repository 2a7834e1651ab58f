//! A directory on this machine as one side of a sync.
//!
//! The pipeline is the same as between buckets: [`walk`] lists the tree as
//! [`ObjectEntry`](crate::model::entry::ObjectEntry)s in S3's key order, so the same merge-join diffs it
//! against a bucket; [`upload`] and [`download`] move one object each way;
//! [`etag`] computes a file's ETag the way S3 would, only when a diff or a
//! verification needs it, and [`digests`] remembers it with the file's
//! fingerprint so an unchanged file is not read again; [`posix`] carries uid, gid, mode and mtime as user
//! metadata. A relative key is the file's path below the directory with `/`
//! between components.
//!
//! A directory being restored into is written only through [`confined`]:
//! every write, permission, owner and time change, and delete resolves
//! beneath it without following a symbolic link, and its walk does not
//! descend into links. A directory being uploaded is read as `aws s3 sync`
//! reads one, following links.

pub mod confined;
pub mod digests;
pub mod dir;
pub mod download;
pub mod etag;
pub mod posix;
pub mod remove;
pub mod upload;
pub mod walk;
