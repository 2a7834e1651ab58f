//! s3-fanout: keep very large S3 buckets in sync with server-side copies.
//!
//! The pipeline, one file per stage, the same code in every runtime:
//!
//! | stage | module | what it does |
//! |---|---|---|
//! | config | [`location`], [`config`], [`filter`] | parse `s3://` URLs and flags, validate once |
//! | clients | [`client`], [`metrics`] | the one client factory; requests counted by operation |
//! | list | [`listing`], [`split`] | paginated ListObjectsV2 over a [`location::KeyRange`], cut into pieces listed at once |
//! | diff | [`diff`] | streaming merge-join of both listings, O(1) memory |
//! | copy | [`transfer`], [`copy`], [`multipart`], [`stream`], [`local`], [`worker`] | CopyObject / UploadPartCopy; or GET → PUT between endpoints; or upload / download with a directory; outcomes recorded |
//! | verify | [`verify`] | list again: the diff must now be empty |
//! | report | [`report`] | JSON summary + failure CSV (S3 Batch Operations columns) |
//!
//! Runtimes: [`pipeline`] runs it all in one process with bounded channels
//! and a worker pool (`s3-fanout sync`, see [`cli`]). Errors carry their
//! retry class ([`error`]).

pub mod archive;
pub mod backend;
pub mod base;
pub mod cli;
pub mod engine;
pub mod local_stack;
pub mod model;
pub mod plan;
pub mod report;
pub mod serverless;
