//! s3-fanout: keep very large S3 buckets in sync with server-side copies.
//!
//! The library is built in layers. Each imports only the layers listed
//! below it, and no two files import each other (`tests/layers.rs` checks
//! both on every test run), so the tree reads top-down:
//!
//! | layer | modules | what it holds |
//! |---|---|---|
//! | runtimes and tools | [`cli`] | the `s3-fanout` command: flags, output, exit codes, Ctrl-C, the progress line |
//! | | [`plan`], [`local_stack`] | a run predicted from its dry run; the serverless stack on this machine |
//! | | [`serverless`], [`archive`] | the Lambda handlers and the messages they exchange; offline archives |
//! | engine | [`engine`] | the sync itself, runtime-neutral: [`engine::pieces`] lists a range in pieces, [`engine::diff`] merge-joins and decides, [`engine::worker`] applies one action, [`engine::verify`] checks, [`engine::pipeline`] runs them in one process, [`engine::shards`] cuts shards for the fan-out |
//! | backends | [`backend`] | a side of a sync: [`backend::side::Listing`] is the engine's one view of it, [`backend::transfer::Mover`] moves one object; [`backend::s3`] (listing, folders, preflight, copy, multipart, stream, HEAD, deletes) and [`backend::local`] (walk, upload, download, POSIX attributes, file ETags, confined writes) |
//! | report | [`report`] | counters and rows ([`report::ledger`]), the summary, timeline, HTML page, delivery and CloudWatch metric lines |
//! | model | [`model`] | plain records and S3's rules: objects and sides, locations, the key space, ETag shapes and part limits, options, filters, prices |
//! | base | [`base`] | errors with their retry class, the one client factory, request metrics, concurrency and rate limits, the allocator, formatting |
//!
//! The pipeline's stages, and where each lives:
//!
//! | stage | module | what it does |
//! |---|---|---|
//! | config | [`model::options`], [`model::location`], [`model::filter`] | parse `s3://` URLs and flags, validate once |
//! | clients | [`base::client`], [`base::metrics`] | the one client factory; requests counted by operation |
//! | list | [`backend::s3::listing`], [`backend::local::walk`], [`engine::pieces`] | ordered listings of a [`model::location::KeyRange`], cut into pieces listed at once |
//! | diff | [`engine::diff`] | streaming merge-join of both listings, O(1) memory |
//! | move | [`backend::transfer`], [`backend::s3`], [`backend::local`], [`engine::worker`] | CopyObject / UploadPartCopy; or GET → PUT between endpoints; or upload / download with a directory; outcomes recorded |
//! | verify | [`engine::verify`] | HEAD what was written, or list again: the diff must now be empty |
//! | report | [`report`] | JSON summary, failure CSV (S3 Batch Operations columns), HTML page |
//!
//! Both runtimes run these same functions: [`engine::pipeline`] in one
//! process (`s3-fanout sync`), and [`serverless`] as Lambda functions under
//! Step Functions (`s3-fanout run`).

// The command and what only it runs are behind features (Cargo.toml), so
// the Lambda functions, built without them, do not compile them.
#[cfg(feature = "archive")]
pub mod archive;
pub mod backend;
pub mod base;
#[cfg(feature = "cli")]
pub mod cli;
pub mod engine;
#[cfg(feature = "local-stack")]
pub mod local_stack;
pub mod model;
#[cfg(feature = "cli")]
pub mod plan;
pub mod report;
pub mod serverless;
