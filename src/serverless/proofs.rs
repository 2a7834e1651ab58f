//! The run's ledger of proven pairs, switched at its report.
//!
//! The ledger lives in the report bucket, under `REPORT_PREFIX/ledgers/`,
//! one per source and destination ([`super::input`] names it). Every lister
//! reads the committed one beside its listings. The run's last listing pass
//! (VALIDATE, else the write phase) writes the next one as it goes, each
//! invocation its own chunks in key order, named in its checkpoint
//! ([`crate::backend::ledger::in_order`]). Shards do not overlap, so the
//! chunks of all of them, sorted, are the next ledger: the report writes
//! the manifest that names them, and only when every shard of that pass is
//! done. A run that broke, or a shard that never finished, leaves the old
//! ledger, which stays valid: a ledger entry only ever saves requests.
//!
//! When VALIDATE follows, the write phase's chunks are only for VALIDATE:
//! it reads them beside the committed ledger (`proven/SHARD.json` names a
//! shard's), so a pair the write phase proved by checksums costs no second
//! pair of HEADs, and then records the pair in the next ledger itself. The
//! run's copies are proven by VALIDATE's HEADs. The write-phase chunks are
//! named by no manifest, and the switch's clean-up deletes them.
//!
//! The replicator appends the pairs it proves between runs to the ledger's
//! journal ([`crate::backend::ledger::journal`]). The planner folds the
//! journal into chunks of this run ([`fold_journal`], named in `run.json`),
//! which every lister reads as one more cursor; their hits are carried into
//! the next ledger, whose manifest names the last journal object folded,
//! and those objects are deleted once it is committed.

use crate::backend::ledger::journal;
use crate::backend::ledger::proven::ChunkInfo;
use crate::backend::ledger::read::Ledger;
use crate::backend::ledger::store::StateStore;
use crate::backend::ledger::write::{Committed, switch_to};
use crate::model::options::SyncOptions;
use crate::serverless::contract::{Checkpoint, JournalFold, RunManifest};

/// Fold the replicator's journal objects that the committed ledger does
/// not hold yet into chunks of `run_id`. `None` without a ledger or a
/// journal; a journal that cannot be read is a warning (its pairs cost
/// HEADs), never a failed plan.
pub async fn fold_journal(
    client: &aws_sdk_s3::Client,
    options: &SyncOptions,
    (run_id, settle_ms): (&str, u64),
) -> Option<JournalFold> {
    let store = StateStore::at(options.ledger.as_ref()?, client);
    let (source, destination) = (options.source.to_string(), options.destination.to_string());
    let ledger = Ledger::open(store.clone(), &source, &destination).await;
    let after = ledger.manifest().journal_through.as_deref();
    let now = crate::report::emf::now_ms().max(0) as u64;
    let pair = (source.as_str(), destination.as_str());
    match journal::fold(&store, pair, after, (now, settle_ms), run_id).await {
        Ok(fold) => {
            if fold.objects > 0 {
                tracing::info!(
                    objects = fold.objects,
                    entries = fold.entries,
                    "folded the replicator's journal into the run's ledger"
                );
            }
            Some(JournalFold {
                chunks: fold.chunks,
                through: fold.through?,
            })
        }
        Err(why) => {
            tracing::warn!(ledger = %store, error = %why, "could not fold the replicator's journal; its pairs are proven again (HEADs)");
            None
        }
    }
}

/// The chunks of the next ledger, sorted, when every one of the `shards`
/// has a finished checkpoint in `pass`; `None` while any has not.
pub fn next_ledger(shards: usize, pass: &[&Checkpoint]) -> Option<Vec<ChunkInfo>> {
    let mut finished = vec![false; shards];
    for checkpoint in pass {
        if checkpoint.done
            && let Some(shard) = finished.get_mut(checkpoint.shard)
        {
            *shard = true;
        }
    }
    if !finished.iter().all(|f| *f) {
        return None;
    }
    let mut chunks: Vec<ChunkInfo> = pass.iter().flat_map(|c| c.proven.iter().cloned()).collect();
    chunks.sort_by(|a, b| a.first.cmp(&b.first).then(a.last.cmp(&b.last)));
    // Chunks of one walk never overlap; two that do (a bug, or a shard
    // listed twice) would hide entries from a cursor, so none is used.
    if chunks.windows(2).any(|w| w[0].last >= w[1].first) {
        tracing::warn!(
            "the run's ledger chunks overlap; keeping the old ledger (its pairs cost HEADs)"
        );
        return None;
    }
    Some(chunks)
}

/// Switch the run's ledger to the chunks its last listing pass wrote, when
/// the run finished that pass. Errors are warnings: the old ledger stays.
pub async fn commit(
    client: &aws_sdk_s3::Client,
    manifest: &RunManifest,
    writes: &[&Checkpoint],
    validations: &[&Checkpoint],
) -> Option<Committed> {
    let options = SyncOptions::try_from(manifest.spec.clone()).ok()?;
    let location = options.ledger.as_ref()?;
    let pass = if manifest.settings.validate {
        validations
    } else {
        writes
    };
    let Some(chunks) = next_ledger(manifest.shards.len(), pass) else {
        tracing::info!(
            "the run did not finish its listing; the ledger of proven pairs is unchanged"
        );
        return None;
    };
    let store = StateStore::at(location, client);
    let (source, destination) = (options.source.to_string(), options.destination.to_string());
    let through = manifest.journal.as_ref().map(|j| j.through.clone());
    match switch_to(&store, &source, &destination, chunks, through.clone()).await {
        Ok(committed) => {
            if let Some(through) = &through {
                journal::forget(&store, through).await;
            }
            Some(committed)
        }
        Err(why) => {
            tracing::warn!(ledger = %store, error = %why, "could not write the ledger of proven pairs; the old one stays");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(shard: usize, done: bool, chunks: &[(&str, &str)]) -> Checkpoint {
        Checkpoint {
            shard,
            done,
            proven: chunks
                .iter()
                .map(|(first, last)| ChunkInfo {
                    name: format!("chunk-{first}"),
                    first: (*first).into(),
                    last: (*last).into(),
                    entries: 1,
                })
                .collect(),
            ..Checkpoint::default()
        }
    }

    #[test]
    fn every_shard_must_finish_and_chunks_come_sorted() {
        let a = checkpoint(0, false, &[("a", "b")]);
        let a_done = checkpoint(0, true, &[("c", "d")]);
        let b = checkpoint(1, true, &[("m", "n"), ("p", "q")]);
        assert_eq!(next_ledger(2, &[&a, &b]), None, "shard 0 is not done");
        let chunks = next_ledger(2, &[&b, &a_done, &a]).unwrap();
        let firsts: Vec<&str> = chunks.iter().map(|c| c.first.as_str()).collect();
        assert_eq!(firsts, ["a", "c", "m", "p"]);
        // A run with nothing to prove commits an empty ledger.
        let empty = checkpoint(0, true, &[]);
        assert_eq!(next_ledger(1, &[&empty]), Some(vec![]));
        // Overlapping chunks are never a ledger.
        let overlap = checkpoint(1, true, &[("b", "c")]);
        assert_eq!(next_ledger(2, &[&a_done, &a, &overlap]), None);
    }
}
