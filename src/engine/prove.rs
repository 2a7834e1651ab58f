//! Stage 2b: prove a pair whose ETags cannot decide ([`Action::Compare`]).
//!
//! In order of cost:
//! 1. the ledger of proven pairs, read beside the listings: a pair whose
//!    two ETags are the ones an entry proved equal is equal, no request;
//! 2. the stored checksums, a HEAD of each side with checksum mode on:
//!    equal full-object checksums (or composites of one layout) are equal,
//!    different ones differ;
//! 3. with no comparable checksum, the listings' rule of old
//!    ([`compare_without_checksums`]).
//!
//! Every pair proven equal goes into the next ledger, and so does every
//! copy whose new ETag differs from its source's, since the copy itself
//! (conditional on the source's listed ETag) proves that pair.
//!
//! An S3-compatible server that stores no checksums would cost two HEADs
//! per pair for nothing, every run: after [`CHECKSUMLESS_BEFORE_GIVING_UP`]
//! pairs without a comparable checksum and none with one, the run stops
//! asking.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::backend::ledger::in_order::InOrderWriter;
use crate::backend::ledger::proven::Proven;
use crate::backend::ledger::read::{Cursor, Ledger};
use crate::backend::ledger::write::LedgerWriter;
use crate::backend::outcome::Copied;
use crate::backend::transfer::Mover;
use crate::engine::diff::{Action, Comparison, SkipReason, compare_without_checksums};
use crate::model::checksum::{Proof, prove};
use crate::model::entry::ObjectEntry;
use crate::model::options::DiffMode;
use crate::report::Stats;

/// Pairs HEADed without a comparable checksum, none with one, before a run
/// stops comparing checksums.
pub const CHECKSUMLESS_BEFORE_GIVING_UP: u64 = 64;

/// A run's proofs: the committed ledger it reads, the next one it writes
/// (the CLI's, from any worker in any order; a serverless lister's, in key
/// order).
#[derive(Default)]
pub struct Proofs {
    pub ledger: Option<Arc<Ledger>>,
    pub next: Option<Arc<LedgerWriter>>,
    pub in_order: Option<Arc<InOrderWriter>>,
    checksumless: AtomicU64,
    compared: AtomicU64,
    gave_up: AtomicBool,
}

impl Proofs {
    pub fn new(ledger: Option<Arc<Ledger>>, next: Option<Arc<LedgerWriter>>) -> Self {
        Proofs {
            ledger,
            next,
            ..Proofs::default()
        }
    }

    /// A walk in key order's proofs: it writes its entries as it goes.
    pub fn in_order(ledger: Option<Arc<Ledger>>, next: Option<Arc<InOrderWriter>>) -> Self {
        Proofs {
            ledger,
            in_order: next,
            ..Proofs::default()
        }
    }

    /// A cursor for one listed piece, when there is a ledger to read.
    pub fn cursor(&self) -> Option<Cursor> {
        self.ledger.as_ref().map(|l| l.cursor())
    }

    /// Whether HEADs can still prove anything this run.
    pub fn checksums_worth_asking(&self) -> bool {
        !self.gave_up.load(Ordering::Relaxed)
    }

    /// Keep a proven pair for the next ledger.
    pub fn keep(&self, entry: Proven) {
        if let Some(next) = &self.next {
            next.record(entry);
        } else if let Some(next) = &self.in_order {
            next.record(entry);
        }
    }

    /// Withdraw a pair from the next ledger: it was found different. (A
    /// walk in key order never kept it: it records each key once.)
    pub fn retract(&self, key: &str) {
        if let Some(next) = &self.next {
            next.retract(key);
        }
    }

    /// Whether the ledger entry at the cursor proves this pair; if so it is
    /// kept for the next ledger.
    pub async fn by_ledger(
        &self,
        cursor: &mut Cursor,
        source: &ObjectEntry,
        destination: &ObjectEntry,
        stats: &Stats,
    ) -> bool {
        match cursor.lookup(&source.key).await {
            Some(entry) if entry.proves(source, destination) => {
                Stats::add(&stats.proven_by_ledger, 1);
                self.keep(entry);
                true
            }
            _ => false,
        }
    }

    /// Record a copy: its new ETag and its source's are a proven pair.
    pub fn copied(&self, copied: &Copied, size: u64, key: &str) {
        if let Some((source_etag, destination_etag)) = &copied.etags
            && source_etag != destination_etag
        {
            self.keep(Proven {
                key: key.to_owned(),
                size,
                source_etag: source_etag.clone(),
                destination_etag: destination_etag.clone(),
            });
        }
    }

    /// HEAD both sides of a pair and judge it by checksums; `None` when the
    /// HEADs failed or checksums cannot tell (the caller falls back to the
    /// listings' rule). Counts the HEADs and what they proved.
    pub async fn by_checksums(
        &self,
        mover: &Mover,
        key: &str,
        stats: &Stats,
    ) -> Option<(Proof, ObjectEntry, ObjectEntry)> {
        if !self.checksums_worth_asking() {
            return None;
        }
        let (source, destination) = mover.head_both(key).await;
        Stats::add(&stats.checksum_heads, 2);
        let (source, destination) = match (source, destination) {
            (Ok(Some(s)), Ok(Some(d))) => (s, d),
            (Err(failure), _) | (_, Err(failure)) => {
                tracing::warn!(%key, code = %failure.code, error = %failure.message, "could not HEAD the pair to compare checksums");
                return None;
            }
            _ => return None, // gone from a side since the listing
        };
        let proof = prove(source.checksum.as_ref(), destination.checksum.as_ref());
        self.note(proof);
        match proof {
            Proof::Unknown => None,
            Proof::Equal => {
                Stats::add(&stats.proven_by_checksum, 1);
                self.keep(Proven::of(&source, &destination));
                Some((proof, source, destination))
            }
            Proof::Different => {
                Stats::add(&stats.checksum_different, 1);
                Some((proof, source, destination))
            }
        }
    }

    fn note(&self, proof: Proof) {
        if proof == Proof::Unknown {
            let without = self.checksumless.fetch_add(1, Ordering::Relaxed) + 1;
            if without >= CHECKSUMLESS_BEFORE_GIVING_UP
                && self.compared.load(Ordering::Relaxed) == 0
                && !self.gave_up.swap(true, Ordering::Relaxed)
            {
                tracing::warn!(
                    pairs = without,
                    "no HEAD returned a comparable checksum (an S3-compatible server, or objects from before S3 stored checksums): comparing by ETags and times for the rest of the run"
                );
            }
        } else {
            self.compared.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Decide a pair of the write phase (the caller has asked the ledger):
    /// by checksums, else by the listings' rule.
    pub async fn decide(
        &self,
        mover: &Mover,
        source: ObjectEntry,
        destination: ObjectEntry,
        stats: &Stats,
    ) -> Action {
        match self.by_checksums(mover, &source.key, stats).await {
            Some((Proof::Equal, _, _)) => Action::Skip {
                key: source.key,
                size: source.size,
                reason: SkipReason::Equal,
            },
            Some((_, fresh_source, fresh_destination)) => Action::Update {
                // Copied as it is now, conditional on the ETag just seen.
                source: ObjectEntry {
                    version_id: None,
                    storage_class: source.storage_class.clone(),
                    ..fresh_source
                },
                destination: fresh_destination,
            },
            None => without_checksums(source, destination, true),
        }
    }
}

/// The listings' rule for a pair checksums could not prove.
pub fn without_checksums(
    source: ObjectEntry,
    destination: ObjectEntry,
    time_fallback: bool,
) -> Action {
    let skip = |reason| Action::Skip {
        key: source.key.clone(),
        size: source.size,
        reason,
    };
    match compare_without_checksums(&source, &destination, DiffMode::Etag, time_fallback) {
        Comparison::Same => skip(SkipReason::Equal),
        Comparison::SameUnverified | Comparison::Unproven => skip(SkipReason::Unverified),
        Comparison::Differs => Action::Update {
            source,
            destination,
        },
    }
}
