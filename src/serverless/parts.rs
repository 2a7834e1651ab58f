//! Objects too large to copy within one copier invocation.
//!
//! The copier that meets such an object starts the multipart upload (the
//! same [`start_upload`] as every multipart copy: metadata, tags, the
//! source's part layout) and records it in `parts/UPLOAD/upload.json`. It
//! then splits the parts into groups of at most `S3_FANOUT_SPLIT_OBJECT_BYTES`
//! and sends one part-range task per group to the work queue, recorded in
//! `sent/UPLOAD.json` like any lister's batches and counted sent in the run
//! counters before its own batch is counted done, so progress waits for them.
//!
//! Each group copies its parts and writes their ETags to
//! `parts/UPLOAD/GROUP.json`, then lists the folder. The group that finds
//! every group's file claims the completion (`complete.json`, written only if
//! absent) and completes the upload, and only it counts the object. A group
//! that fails for good writes `aborted.json` and aborts the upload; the
//! others then stop without counting, so the object fails exactly once.
//! Upload ids and group ids are recorded before anything is sent, so a
//! redelivered message reuses them: no upload is started twice.

use std::ops::Range;

use aws_sdk_s3::types::CompletedPart;

use crate::backend::outcome::CopyError;
use crate::backend::s3::copier::Copier;
use crate::backend::s3::multipart::{
    abort_after, abort_other_uploads, complete_upload, copy_parts, start_upload,
};
use crate::base::error::{RetryClass, SyncError};
use crate::engine::worker::{Retry, WorkContext};
use crate::model::entry::ObjectEntry;
use crate::model::s3_shape::Layout;
use crate::report::Stats;
use crate::serverless::FunctionEnv;
use crate::serverless::batch::send_batches;
use crate::serverless::contract::{
    Checkpoint, CopyBatch, CopyTask, MESSAGE_VERSION, PartGroup, SavedUpload, SentBatch,
};
use crate::serverless::env::RunContext;

fn folder(upload: &str) -> String {
    format!("parts/{upload}/")
}

/// Contiguous groups of parts of at most `max_bytes` each (one part at least).
pub fn group_parts(layout: &Layout, max_bytes: u64) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, (first, last)) in layout.iter().enumerate() {
        let size = last - first + 1;
        if index > start && bytes + size > max_bytes {
            groups.push(start..index);
            start = index;
            bytes = 0;
        }
        bytes += size;
    }
    if start < layout.len() {
        groups.push(start..layout.len());
    }
    groups
}

/// Split one large object of batch `batch_id` (its task number `task`),
/// sent by the write-phase range `range`, into part-range tasks, which name
/// that range too.
#[allow(clippy::too_many_arguments)] // the copier's context for one task, spelled out
pub async fn split(
    env: &FunctionEnv,
    run: &RunContext,
    context: &WorkContext,
    (batch_id, range): (&str, Option<usize>),
    task: usize,
    object: &ObjectEntry,
    update: bool,
    last_receive: bool,
) -> Retry {
    let run_id = &run.manifest.run_id;
    let upload = format!("{batch_id}-p{task:04}");
    let saved_name = format!("{}upload.json", folder(&upload));
    let saved = match recorded_upload(env, run, context.mover.copier(), object, &saved_name).await {
        Ok(saved) => saved,
        Err(err) if err.retry_class() == RetryClass::Retryable && !last_receive => {
            return Retry::Worthwhile;
        }
        Err(err) => return settle(context, &object.key, err),
    };
    let ranges = group_parts(&saved.layout, env.config.split_object_bytes);
    let groups = ranges.len() as u32;
    let batches: Vec<CopyBatch> = ranges
        .into_iter()
        .enumerate()
        .map(|(group, parts)| CopyBatch {
            version: MESSAGE_VERSION,
            run_id: run_id.clone(),
            batch_id: format!("{upload}-{group:04}"),
            tasks: vec![CopyTask::Parts(PartGroup {
                object: object.clone(),
                update,
                upload: upload.clone(),
                upload_id: saved.upload_id.clone(),
                group: group as u32,
                groups,
                first_part: parts.start as u32 + 1,
                last_part: parts.end as u32,
            })],
            range,
        })
        .collect();
    // Recorded before sent: progress must wait for every group, and a
    // retry sends the same ids.
    let sent = Checkpoint {
        done: true,
        batches: batches.iter().map(SentBatch::from).collect(),
        ..Checkpoint::default()
    };
    if let Err(err) = env
        .store
        .put_json(run_id, &format!("sent/{upload}.json"), &sent)
        .await
    {
        tracing::warn!(upload, error = %err, "could not record the part tasks");
        return Retry::Worthwhile;
    }
    let counted = match env.counters() {
        Ok(counters) => {
            // The range's copies wait for its parts only where VALIDATE
            // waits for the range's copies.
            let parts_of = range.filter(|_| run.manifest.settings.validate);
            counters.record_sent(run_id, &sent.batches, parts_of).await
        }
        Err(err) => Err(err),
    };
    if let Err(err) = counted {
        tracing::warn!(upload, error = %err, "could not count the part tasks as sent");
        return Retry::Worthwhile;
    }
    let Ok(queue) = env.config.queue_url() else {
        return settle(
            context,
            &object.key,
            CopyError::Failed(store_failure(SyncError::Config(
                "S3_FANOUT_WORK_QUEUE_URL is not set for the copier".into(),
            ))),
        );
    };
    if let Err(err) = send_batches(&env.sqs, queue, &batches).await {
        tracing::warn!(upload, error = %err, "could not send the part tasks");
        return Retry::Worthwhile;
    }
    tracing::info!(key = %object.key, upload, groups, "split a large object into part tasks");
    Stats::add(&context.stats.split_objects, 1);
    Retry::No
}

/// The upload of this object, started once. Two deliveries of the same
/// batch can split the same object at the same time; the record is written
/// only if absent, so one upload wins and the other is aborted at once
/// (otherwise groups of two uploads would mix their parts).
async fn recorded_upload(
    env: &FunctionEnv,
    run: &RunContext,
    copier: &Copier,
    object: &ObjectEntry,
    saved_name: &str,
) -> Result<SavedUpload, CopyError> {
    let run_id = &run.manifest.run_id;
    let store_error = |err| CopyError::Failed(store_failure(err));
    if let Some(saved) = env
        .store
        .get_json(run_id, saved_name)
        .await
        .map_err(store_error)?
    {
        return Ok(saved);
    }
    let saved = start_upload(copier, object, false).await?;
    let body = serde_json::to_vec(&saved).expect("an upload record serialises");
    match env.store.put_if_absent(run_id, saved_name, body).await {
        Ok(true) => {
            // An earlier delivery killed between starting its upload and
            // recording it left that upload open, and nothing else knows its
            // id: the one that records an upload aborts the others.
            abort_other_uploads(copier, object, &saved.upload_id).await;
            Ok(saved)
        }
        Ok(false) => {
            let _ = abort_after(copier, object, &saved.upload_id, CopyError::Cancelled).await;
            env.store
                .get_json(run_id, saved_name)
                .await
                .map_err(store_error)?
                .ok_or_else(|| {
                    store_error(SyncError::Report(format!(
                        "{saved_name} was written by another delivery but cannot be read"
                    )))
                })
        }
        Err(err) => Err(abort_after(copier, object, &saved.upload_id, store_error(err)).await),
    }
}

/// Copy one group of parts; the last group to finish completes the upload.
pub async fn copy_group(
    env: &FunctionEnv,
    run: &RunContext,
    context: &WorkContext,
    batch_id: &str,
    group: &PartGroup,
    last_receive: bool,
) -> Retry {
    match group_outcome(env, run, context, batch_id, group, last_receive).await {
        Ok(retry) => retry,
        Err(err) => retry_or_settle(
            context,
            &group.object.key,
            CopyError::Failed(store_failure(err)),
            last_receive,
        ),
    }
}

/// A group of a stopped run: the upload is aborted (by the first group
/// that gets here; the others find it aborted) and the object counted
/// dropped, once, so no upload stays open after a stop.
pub async fn drop_group(
    env: &FunctionEnv,
    run: &RunContext,
    context: &WorkContext,
    group: &PartGroup,
) -> Retry {
    fail_upload(env, run, context, group, CopyError::Cancelled, false).await
}

/// The steps of [`copy_group`]; `Err` is a failure to read or write the
/// run's state, retried like a throttled copy.
async fn group_outcome(
    env: &FunctionEnv,
    run: &RunContext,
    context: &WorkContext,
    batch_id: &str,
    group: &PartGroup,
    last_receive: bool,
) -> Result<Retry, SyncError> {
    let run_id = &run.manifest.run_id;
    let dir = folder(&group.upload);
    let marker = |name: &str| {
        let name = format!("{dir}{name}");
        async move { env.store.get_bytes(run_id, &name).await }
    };
    let saved = env
        .store
        .get_json::<SavedUpload>(run_id, &format!("{dir}upload.json"))
        .await?
        .ok_or_else(|| {
            SyncError::Config(format!(
                "part task {batch_id}: the upload record {dir}upload.json is missing"
            ))
        })?;
    if marker("aborted.json").await?.is_some() {
        return Ok(Retry::No); // another group failed and counted it
    }
    let claimed_by = marker("complete.json").await?;
    if claimed_by.is_none() {
        let indexes = (group.first_part as usize - 1)..(group.last_part as usize);
        let copied = copy_parts(context.mover.copier(), &group.object, &saved, indexes).await;
        let parts = match copied {
            Ok(parts) => parts,
            // A duplicate delivery of this group can still be copying when
            // another group completes (or aborts) the upload; its parts then
            // fail with NoSuchUpload, and the object is the other group's
            // to count.
            Err(_) if settled_elsewhere(env, run_id, &dir, false).await? => return Ok(Retry::No),
            Err(err) if err.retry_class() == RetryClass::Retryable && !last_receive => {
                return Ok(Retry::Worthwhile);
            }
            Err(err) => return Ok(fail_upload(env, run, context, group, err, false).await),
        };
        let etags: Vec<(i32, String)> = parts
            .iter()
            .map(|p| {
                (
                    p.part_number().unwrap_or(0),
                    p.e_tag().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let name = format!("{dir}{:04}.json", group.group);
        env.store.put_json(run_id, &name, &etags).await?;
    }

    // Am I the last group? Every group lists after writing its own file, so
    // the last to write sees them all; more than one may, and the claim
    // (written only if absent) picks one.
    let names = env.store.list(run_id, &dir).await?;
    let finished: Vec<&String> = names.iter().filter(|n| is_group_file(n)).collect();
    if (finished.len() as u32) < group.groups {
        return Ok(Retry::No);
    }
    let me = batch_id.as_bytes().to_vec();
    let claimed = match claimed_by {
        Some(owner) => owner == me,
        None => {
            let name = format!("{dir}complete.json");
            env.store.put_if_absent(run_id, &name, me.clone()).await?
                || marker("complete.json").await?.as_deref() == Some(me.as_slice())
        }
    };
    if !claimed {
        return Ok(Retry::No); // another group completes and counts it
    }
    let mut parts = Vec::new();
    for name in finished {
        let Some(etags) = env
            .store
            .get_json::<Vec<(i32, String)>>(run_id, name)
            .await?
        else {
            return Ok(Retry::Worthwhile);
        };
        parts.extend(etags.into_iter().map(|(number, etag)| {
            CompletedPart::builder()
                .part_number(number)
                .e_tag(etag)
                .build()
        }));
    }
    match complete_upload(
        context.mover.copier(),
        &group.object,
        &group.upload_id,
        parts,
        saved.checksum.as_ref(),
    )
    .await
    {
        Ok(_) => {}
        // Completed by an earlier attempt of this same message.
        Err(CopyError::Failed(f))
            if f.code == "NoSuchUpload" && arrived(context.mover.copier(), &group.object).await => {
        }
        Err(err) if err.retry_class() == RetryClass::Retryable && !last_receive => {
            return Ok(Retry::Worthwhile);
        }
        Err(err) => return Ok(fail_upload(env, run, context, group, err, true).await),
    }
    let stats = &context.stats;
    Stats::add(
        if group.update {
            &stats.updated
        } else {
            &stats.copied
        },
        1,
    );
    Stats::add(&stats.bytes_copied, group.object.size);
    tracing::info!(key = %group.object.key, upload = group.upload, "completed a split multipart copy");
    Ok(Retry::No)
}

/// Another group has aborted the upload, or (unless `claimant`, the group
/// that claimed it) claimed its completion.
async fn settled_elsewhere(
    env: &FunctionEnv,
    run_id: &str,
    dir: &str,
    claimant: bool,
) -> Result<bool, SyncError> {
    let markers: &[&str] = if claimant {
        &["aborted.json"]
    } else {
        &["complete.json", "aborted.json"]
    };
    for marker in markers {
        if env
            .store
            .get_bytes(run_id, &format!("{dir}{marker}"))
            .await?
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `parts/UPLOAD/0003.json`: a finished group's part ETags.
fn is_group_file(name: &str) -> bool {
    name.rsplit('/')
        .next()
        .and_then(|file| file.strip_suffix(".json"))
        .is_some_and(|stem| stem.len() == 4 && stem.bytes().all(|b| b.is_ascii_digit()))
}

/// The destination object is there with the source's size (its ETag
/// depends on the layout, which a split copy chose).
async fn arrived(copier: &Copier, object: &ObjectEntry) -> bool {
    copier
        .destination_client
        .head_object()
        .bucket(&copier.destination.bucket)
        .key(copier.destination.key_for(&object.key))
        .send()
        .await
        .is_ok_and(|h| h.content_length() == Some(object.size as i64))
}

/// A group failed for good: mark the upload aborted, abort it, report once.
async fn fail_upload(
    env: &FunctionEnv,
    run: &RunContext,
    context: &WorkContext,
    group: &PartGroup,
    err: CopyError,
    claimant: bool,
) -> Retry {
    let run_id = &run.manifest.run_id;
    let dir = folder(&group.upload);
    // Never abort an upload another group has claimed to complete, and
    // report an object only once.
    if let Ok(true) = settled_elsewhere(env, run_id, &dir, claimant).await {
        return Retry::No;
    }
    let _ = env
        .store
        .put_bytes(
            run_id,
            &format!("{dir}aborted.json"),
            format!("{err:?}").into_bytes(),
            "text/plain",
        )
        .await;
    let err = abort_after(context.mover.copier(), &group.object, &group.upload_id, err).await;
    settle(context, &group.object.key, err)
}

fn retry_or_settle(context: &WorkContext, key: &str, err: CopyError, last_receive: bool) -> Retry {
    if last_receive {
        settle(context, key, err)
    } else {
        Retry::Worthwhile
    }
}

/// Record a final outcome for the object.
fn settle(context: &WorkContext, key: &str, err: CopyError) -> Retry {
    let retry = Retry::from(err.retry_class());
    context.record_copy_error(key, err);
    retry
}

fn store_failure(err: SyncError) -> crate::base::error::S3Failure {
    match err {
        SyncError::S3 { failure, .. } => failure,
        other => crate::base::error::S3Failure {
            code: "RunStateError".into(),
            http_status: None,
            message: other.to_string(),
            class: other.retry_class(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::s3_shape::uniform_layout;

    #[test]
    fn groups_are_contiguous_cover_every_part_and_stay_under_the_limit() {
        let layout = uniform_layout(26 * 1024 * 1024, 5 * 1024 * 1024);
        assert_eq!(layout.len(), 6);
        let groups = group_parts(&layout, 12 * 1024 * 1024);
        assert_eq!(groups, vec![0..2, 2..4, 4..6]);
        // A part larger than the limit is a group of its own.
        assert_eq!(
            group_parts(&layout, 1),
            (0..6).map(|i| i..i + 1).collect::<Vec<_>>()
        );
        assert_eq!(group_parts(&layout, u64::MAX), vec![0..6]);
    }
}
