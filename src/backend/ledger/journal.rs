//! The replicator's journal: pairs it proved between runs, for the next run
//! to read as ledger entries.
//!
//! The replicator reconciles keys as S3 events arrive. A pair it copies
//! into a KMS destination, or finds equal by stored checksums, has ETags
//! that differ, so without an entry the next run would HEAD both sides to
//! prove it again. Each invocation therefore appends the pairs it proved to
//! the ledger's journal: one object per invocation, never one per key (a
//! PUT costs $0.005 per 1,000, three times the two HEADs it saves; one per
//! batch of events costs a fraction of them). An object is a chunk of
//! sorted entries named by its time, `journal-MS-ID.zst`.
//!
//! A run folds the journal in when it plans ([`fold`]): every object after
//! the ledger's `journal_through` that is older than a settling margin (an
//! invocation still writing is folded next time, never skipped), merged
//! through a spool like any ledger write into sorted chunks that the
//! listers read as one more cursor beside the committed ledger. A pair
//! proven through them is carried into the next ledger like any ledger
//! hit; that ledger's manifest names the last object folded, and the
//! objects up to it are deleted then ([`forget`]).
//!
//! Like every ledger entry, a journal entry only saves requests: it proves
//! a pair only while both ETags and the size are what they were. A lost or
//! unread journal object costs HEADs, never a wrong "equal".

use futures::StreamExt;

use crate::backend::ledger::proven::{ChunkInfo, Decoded, Proven, check, encode};
use crate::backend::ledger::store::StateStore;
use crate::backend::ledger::write::LedgerWriter;

/// Journal object names start with this.
pub const JOURNAL_PREFIX: &str = "journal-";

/// Entries one fold takes at most (a spool of about 150 MB): a journal
/// larger than that is folded over the next runs, oldest first.
pub const FOLD_ENTRIES: u64 = 5_000_000;

/// Journal objects read at once by a fold.
const READS_IN_FLIGHT: usize = 16;

/// The name of the journal object written at `at_ms` by invocation `id`:
/// names sort by time.
pub fn name(at_ms: u64, id: &str) -> String {
    let id: String = id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{JOURNAL_PREFIX}{at_ms:013}-{id}.zst")
}

/// When the object `name` was written, in ms since the epoch.
fn written_at(name: &str) -> Option<u64> {
    name.strip_prefix(JOURNAL_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Append one invocation's proven pairs (any order; of two for one key,
/// the later wins) to the journal in `store`, as one object.
pub async fn append(
    store: &StateStore,
    mut entries: Vec<Proven>,
    at_ms: u64,
    id: &str,
) -> Result<(), String> {
    if entries.is_empty() {
        return Ok(());
    }
    // Reversed, then a stable sort: the entry recorded last is kept.
    entries.reverse();
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    entries.dedup_by(|later, kept| later.key == kept.key);
    let mut bytes = Vec::new();
    encode(&entries, &mut bytes).map_err(|e| format!("encoding the journal: {e}"))?;
    store.put(&name(at_ms, id), bytes).await
}

/// What a fold made: chunks no manifest names yet, sorted and apart, and
/// the last journal object they hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fold {
    pub chunks: Vec<ChunkInfo>,
    pub through: Option<String>,
    pub objects: usize,
    pub entries: u64,
}

/// Fold the journal objects of `store` written after `after` and at least
/// `settle_ms` before `now_ms` into chunks named for `run_id`. A journal
/// object that cannot be read ends the fold there, so the next fold starts
/// with it; a damaged one is skipped with a warning.
pub async fn fold(
    store: &StateStore,
    (source, destination): (&str, &str),
    after: Option<&str>,
    (now_ms, settle_ms): (u64, u64),
    run_id: &str,
) -> Result<Fold, String> {
    let mut names = store.names(JOURNAL_PREFIX).await?;
    names.retain(|n| {
        after.is_none_or(|a| n.as_str() > a)
            && written_at(n).is_some_and(|t| t.saturating_add(settle_ms) <= now_ms)
    });
    names.sort();
    if names.is_empty() {
        return Ok(Fold::default());
    }
    let writer = LedgerWriter::new(
        store.clone(),
        source,
        destination,
        &format!("{run_id}-journal"),
    )
    .map_err(|e| format!("a spool for the journal: {e}"))?;
    let mut fold = Fold::default();
    // In name order, so what was folded is every name up to `through`.
    // Built up front: a closure mapped over a stream inside an async fn
    // trips rustc's higher-ranked Send check once spawned.
    let reads: Vec<_> = names
        .iter()
        .map(|name| async move { (name, store.get(name).await) })
        .collect();
    let mut reads = futures::stream::iter(reads).buffered(READS_IN_FLIGHT);
    while let Some((name, read)) = reads.next().await {
        match read {
            Ok(Some(bytes)) => match entries_of(&bytes) {
                Ok(entries) => {
                    fold.entries += entries.len() as u64;
                    entries.into_iter().for_each(|e| writer.record(e));
                }
                Err(e) => {
                    tracing::warn!(ledger = %store, object = %name, error = %e, "a journal object is damaged; its pairs will be proven again (HEADs)");
                }
            },
            Ok(None) => {} // forgotten by a run that committed meanwhile
            Err(why) => {
                tracing::warn!(ledger = %store, error = %why, "the journal cannot be read; the rest is folded next run");
                break;
            }
        }
        fold.objects += 1;
        fold.through = Some(name.clone());
        if fold.entries >= FOLD_ENTRIES {
            break;
        }
    }
    fold.chunks = writer.write_chunks().await?;
    Ok(fold)
}

fn entries_of(bytes: &[u8]) -> std::io::Result<Vec<Proven>> {
    check(bytes)?;
    Decoded::new(std::io::Cursor::new(bytes))?.collect()
}

/// Delete the journal objects up to `through`: a ledger that holds their
/// entries is committed. Best effort: an object left behind is never
/// folded again, since the ledger names `through`.
pub async fn forget(store: &StateStore, through: &str) {
    let names = match store.names(JOURNAL_PREFIX).await {
        Ok(names) => names,
        Err(why) => {
            tracing::warn!(ledger = %store, error = %why, "could not list the folded journal to delete it");
            return;
        }
    };
    let folded: Vec<String> = names
        .into_iter()
        .filter(|n| n.as_str() <= through)
        .collect();
    if let Err(why) = store.delete_all(&folded).await {
        tracing::warn!(ledger = %store, error = %why, "could not delete the folded journal");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, etag: &str) -> Proven {
        Proven {
            key: key.into(),
            size: 1,
            source_etag: etag.into(),
            destination_etag: format!("kms-{etag}"),
        }
    }

    #[tokio::test]
    async fn a_fold_merges_settled_objects_after_the_last_one_folded() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::Dir(dir.path().to_owned());
        let pair = ("s3://s/", "s3://d/");
        append(&store, vec![entry("b", "1"), entry("a", "1")], 1_000, "x")
            .await
            .unwrap();
        append(&store, vec![entry("b", "2"), entry("c", "2")], 2_000, "y/z")
            .await
            .unwrap();
        append(&store, vec![entry("d", "3")], 9_000, "late")
            .await
            .unwrap();
        append(&store, Vec::new(), 3_000, "none").await.unwrap();

        // Objects younger than the margin wait for the next fold.
        let first = fold(&store, pair, None, (10_000, 5_000), "r1")
            .await
            .unwrap();
        assert_eq!((first.objects, first.entries), (2, 4));
        assert_eq!(first.through.as_deref(), Some(name(2_000, "y/z").as_str()));
        let ledger = crate::backend::ledger::read::Ledger::of_chunks(store.clone(), first.chunks);
        let mut cursor = ledger.cursor();
        let keys = ["a", "b", "c", "d"];
        let mut found = Vec::new();
        for key in keys {
            found.push(cursor.lookup(key).await.map(|e| e.source_etag));
        }
        // The later journal object's entry for "b" wins.
        assert_eq!(
            found,
            [Some("1".into()), Some("2".into()), Some("2".into()), None]
        );

        // The next fold starts after `through`; forgetting deletes up to it.
        let through = name(2_000, "y/z");
        let later = fold(&store, pair, Some(&through), (20_000, 5_000), "r2")
            .await
            .unwrap();
        assert_eq!((later.objects, later.entries), (1, 1));
        forget(&store, &through).await;
        let left = store.names(JOURNAL_PREFIX).await.unwrap();
        assert_eq!(left, [name(9_000, "late")]);
    }

    #[tokio::test]
    async fn a_damaged_object_is_skipped_and_folding_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::Dir(dir.path().to_owned());
        store
            .put(&name(1_000, "bad"), b"not zstd".to_vec())
            .await
            .unwrap();
        append(&store, vec![entry("k", "1")], 2_000, "good")
            .await
            .unwrap();
        let folded = fold(&store, ("s", "d"), None, (10_000, 0), "r")
            .await
            .unwrap();
        assert_eq!((folded.objects, folded.entries), (2, 1));
        assert_eq!(folded.chunks.len(), 1);
    }
}
