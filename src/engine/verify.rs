//! Stage 4: verify. After the write phase, check that the diff now finds
//! nothing to do: every source key present at the destination, same size,
//! same ETag where comparable (and, with `--delete`, nothing extra). S3
//! listings are strongly consistent since 2020, so a mismatch is a real
//! problem, never something to wait out. Keys already in the report
//! (failed, skipped) are not reported twice.
//!
//! Two ways, one decision ([`check_pair`]): list both sides of the range
//! again ([`verify_range`]), or, when the run wrote few keys, HEAD each
//! written key on both sides ([`verify_written`]). The keys the run did not
//! write were compared by the write phase's own listing moments before;
//! HEADs cost a twelfth of a LIST each and run in parallel, where a listing
//! is one page after another, so a 1% re-sync is not billed (or timed) as
//! a second full listing.

use std::sync::Arc;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::backend::ledger::proven::Proven;
use crate::backend::ledger::read::Cursor;
use crate::backend::transfer::Mover;
use crate::base::error::SyncError;
use crate::engine::diff::{Action, decide_with};
use crate::engine::pieces::{PairSink, Sides, list_in_pieces};
use crate::engine::prove::{Proofs, without_checksums};
use crate::model::checksum::{Proof, prove};
use crate::model::entry::ObjectEntry;
use crate::model::entry::{Pair, Side};
use crate::model::location::Location;
use crate::model::options::DiffOptions;
use crate::report::{ReportRow, ReportRows, Stats, TaskStatus};

/// A mismatch found by verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub key: String,
    pub code: &'static str,
    pub message: String,
    /// The object that is wrong is at the destination (an extra object),
    /// not a source object that failed to arrive.
    pub at_destination: bool,
}

/// What one pair of the re-listing says.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per pair, returned and matched at once, never stored: boxing would allocate per key"
)]
pub enum Check {
    InSync,
    Mismatch(Mismatch),
    /// Same size, ETags that cannot decide: the ledger or checksums must
    /// ([`settle`]).
    Unproven(ObjectEntry, ObjectEntry),
}

/// Check one pair of the re-listing. The CLI's verify pass and the
/// serverless VALIDATE phase both decide with this.
pub fn check_pair(pair: Pair, diff: &DiffOptions, stats: &Stats) -> Check {
    let mismatch = |key: String, code, message: String, at_destination| {
        Check::Mismatch(Mismatch {
            key,
            code,
            message,
            at_destination,
        })
    };
    match decide_with(pair, diff, false) {
        Action::Skip { .. } => {
            Stats::add(&stats.verify_checked, 1);
            Check::InSync
        }
        Action::Copy { source } => {
            Stats::add(&stats.verify_checked, 1);
            mismatch(
                source.key,
                "MissingAtDestination",
                "verify: the object is not at the destination".to_owned(),
                false,
            )
        }
        Action::Update {
            source,
            destination,
        } => {
            Stats::add(&stats.verify_checked, 1);
            Check::Mismatch(differs(&source, &destination, "ETag"))
        }
        Action::Compare {
            source,
            destination,
        } => {
            Stats::add(&stats.verify_checked, 1);
            Check::Unproven(source, destination)
        }
        Action::Delete { destination } => mismatch(
            destination.key,
            "ExtraneousAtDestination",
            "verify: the object is still at the destination but not at the source".to_owned(),
            true,
        ),
    }
}

fn differs(source: &ObjectEntry, destination: &ObjectEntry, by: &str) -> Mismatch {
    let (shown_source, shown_destination) = match by {
        "checksum" => (
            source.checksum.as_ref().map(|c| c.value.as_str()),
            destination.checksum.as_ref().map(|c| c.value.as_str()),
        ),
        _ => (Some(source.etag.as_str()), Some(destination.etag.as_str())),
    };
    Mismatch {
        key: source.key.clone(),
        code: "VerifyMismatch",
        message: format!(
            "verify: destination differs (size {} vs {}, {by} {} vs {})",
            source.size,
            destination.size,
            shown_source.unwrap_or("-"),
            shown_destination.unwrap_or("-")
        ),
        at_destination: false,
    }
}

/// Settle an unproven pair with what its checksums proved (`None`: no
/// comparable checksum): equal is in sync, different is a mismatch, and
/// unknown falls back to the listings' rule, under which ETags of one
/// shape that differ are a mismatch.
pub fn settle(source: ObjectEntry, destination: ObjectEntry, proof: Proof) -> Option<Mismatch> {
    match proof {
        Proof::Equal => None,
        Proof::Different => Some(differs(&source, &destination, "checksum")),
        Proof::Unknown => match without_checksums(source, destination, false) {
            Action::Update {
                source,
                destination,
            } => Some(differs(&source, &destination, "ETag")),
            _ => None,
        },
    }
}

/// Settle an unproven pair one at a time, as a walk in key order (the
/// serverless VALIDATE) does: the ledgers at `cursors`, else a HEAD of each
/// side for their checksums, else the listings' rule.
pub async fn prove_in_turn(
    (proofs, mover): (&Proofs, &Mover),
    cursors: &mut [Cursor],
    source: ObjectEntry,
    destination: ObjectEntry,
    stats: &Stats,
) -> Option<Mismatch> {
    for cursor in cursors {
        if proofs.by_ledger(cursor, &source, &destination, stats).await {
            return None;
        }
    }
    match proofs.by_checksums(mover, &source.key, stats).await {
        Some((proof, source, destination)) => settle(source, destination, proof),
        None => settle(source, destination, Proof::Unknown),
    }
}

impl Check {
    /// The mismatch of a pair that is not on both sides (never unproven).
    pub fn mismatch(self) -> Option<Mismatch> {
        match self {
            Check::Mismatch(mismatch) => Some(mismatch),
            Check::InSync | Check::Unproven(..) => None,
        }
    }
}

impl Mismatch {
    /// The report row, naming the bucket and full key of the object at fault.
    pub fn row(&self, source: &Location, destination: &Location) -> ReportRow {
        let side = if self.at_destination {
            destination
        } else {
            source
        };
        let (bucket, key) = side.row_names(&self.key);
        ReportRow::new(
            &bucket,
            &key,
            TaskStatus::Failed,
            self.code,
            None,
            &self.message,
        )
    }
}

/// List both sides of the range again, in pieces as the write phase did,
/// and report every pair that still differs.
pub async fn verify_range(
    sides: Sides,
    proving: (&Arc<Mover>, &Arc<Proofs>),
    diff: &DiffOptions,
    stats: &Arc<Stats>,
    rows: &Arc<ReportRows>,
    cancel: &CancellationToken,
) -> Result<(), SyncError> {
    check_range(sides, proving, (diff, Audit::Verify), (stats, rows), cancel).await
}

/// How strictly a re-listing is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audit {
    /// After a sync: a pair the listings call probably equal (other
    /// multipart layouts, no checksums) passes.
    Verify,
    /// `check`: every pair must be proven, and one that cannot be is
    /// reported as unproven.
    Check,
    /// `check --checksum`: every pair on both sides is compared by its
    /// stored checksums too, equal ETags or not.
    CheckChecksums,
}

/// List both sides of the range in pieces and report every pair that
/// differs, or, for an audit, cannot be proven equal.
pub async fn check_range(
    sides: Sides,
    (mover, proofs): (&Arc<Mover>, &Arc<Proofs>),
    (diff, audit): (&DiffOptions, Audit),
    (stats, rows): (&Arc<Stats>, &Arc<ReportRows>),
    cancel: &CancellationToken,
) -> Result<(), SyncError> {
    let sink = VerifySink {
        locations: Arc::new((sides.source.location(), sides.destination.location())),
        diff: diff.clone(),
        stats: stats.clone(),
        rows: rows.clone(),
        mover: mover.clone(),
        proofs: proofs.clone(),
        cursor: None,
        audit,
    };
    tokio::select! {
        _ = cancel.cancelled() => Err(SyncError::Cancelled),
        result = list_in_pieces(sides, sink) => result,
    }
}

/// Verification's sink: check each pair, report each mismatch once.
#[derive(Clone)]
struct VerifySink {
    locations: Arc<(Location, Location)>,
    diff: DiffOptions,
    stats: Arc<Stats>,
    rows: Arc<ReportRows>,
    mover: Arc<Mover>,
    proofs: Arc<Proofs>,
    /// This piece's place in the ledger the write phase committed.
    cursor: Option<Arc<tokio::sync::Mutex<Cursor>>>,
    audit: Audit,
}

impl VerifySink {
    /// Settle a pair whose ETags cannot decide: the ledger (which holds the
    /// run's own copies), else checksums.
    async fn prove(&self, source: ObjectEntry, destination: ObjectEntry) -> Option<Mismatch> {
        if let Some(cursor) = &self.cursor {
            let mut cursor = cursor.lock().await;
            if self
                .proofs
                .by_ledger(&mut cursor, &source, &destination, &self.stats)
                .await
            {
                return None;
            }
        }
        self.by_checksums(source, destination).await
    }

    /// Settle a pair by its stored checksums; in an audit, one they cannot
    /// prove is reported as unproven.
    async fn by_checksums(
        &self,
        source: ObjectEntry,
        destination: ObjectEntry,
    ) -> Option<Mismatch> {
        let (source, destination, proof) = match self
            .proofs
            .by_checksums(&self.mover, &source.key, &self.stats)
            .await
        {
            Some((proof, fresh_source, fresh_destination)) => {
                (fresh_source, fresh_destination, proof)
            }
            None => (source, destination, Proof::Unknown),
        };
        if proof == Proof::Unknown && self.audit != Audit::Verify {
            return Some(unproven(&source, &destination));
        }
        settle(source, destination, proof)
    }
}

/// An audit's row for a pair nothing could prove equal or different.
fn unproven(source: &ObjectEntry, destination: &ObjectEntry) -> Mismatch {
    Mismatch {
        key: source.key.clone(),
        code: "Unproven",
        message: format!(
            "check: cannot prove the copy equal: same size ({}), ETags {} vs {}, and no comparable stored checksums",
            source.size, source.etag, destination.etag
        ),
        at_destination: false,
    }
}

impl PairSink for VerifySink {
    fn for_piece(&self) -> Self {
        VerifySink {
            cursor: self
                .proofs
                .cursor()
                .map(|c| Arc::new(tokio::sync::Mutex::new(c))),
            ..self.clone()
        }
    }

    async fn take(&self, pair: Pair) -> bool {
        let found = match (self.audit, pair) {
            (Audit::CheckChecksums, Pair::Both(source, destination))
                if source.size == destination.size =>
            {
                Stats::add(&self.stats.verify_checked, 1);
                self.by_checksums(source, destination).await
            }
            (audit, pair) => self.check(audit, pair).await,
        };
        if let Some(mismatch) = &found {
            // Whatever proved it before, this pair is not proven now.
            self.proofs.retract(&mismatch.key);
        }
        if let Some(mismatch) = found
            && !self.rows.already_reported(&mismatch.key)
        {
            Stats::add(&self.stats.verify_mismatched, 1);
            let (source, destination) = &*self.locations;
            self.rows
                .push(&mismatch.key, mismatch.row(source, destination));
        }
        true
    }
}

impl VerifySink {
    async fn check(&self, audit: Audit, pair: Pair) -> Option<Mismatch> {
        // A pair the listings call probably equal (other multipart
        // layouts) is unproven in an audit: checksums may still prove it.
        if audit != Audit::Verify
            && let Pair::Both(source, destination) = &pair
            && source.size == destination.size
            && source.etag != destination.etag
        {
            Stats::add(&self.stats.verify_checked, 1);
            return self.prove(source.clone(), destination.clone()).await;
        }
        match check_pair(pair, &self.diff, &self.stats) {
            Check::InSync => None,
            Check::Mismatch(mismatch) => Some(mismatch),
            Check::Unproven(source, destination) => self.prove(source, destination).await,
        }
    }
}

/// HEAD each written key on both sides, up to `concurrency` keys at once,
/// and report every one that still differs.
pub async fn verify_written(
    (mover, proofs): (&Mover, &Proofs),
    mut keys: Vec<String>,
    diff: &DiffOptions,
    stats: &Stats,
    rows: &ReportRows,
    concurrency: usize,
    cancel: &CancellationToken,
) -> Result<(), SyncError> {
    // In key order, so one cursor reads the ledger beside them.
    keys.sort();
    keys.dedup();
    let mut cursor = proofs.cursor();
    let checks = futures::stream::iter(keys)
        .map(|key| async move {
            let (source, destination) = mover.head_both(&key).await;
            (key, source, destination)
        })
        .buffered(concurrency.max(1));
    futures::pin_mut!(checks);
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return Err(SyncError::Cancelled),
            next = checks.next() => next,
        };
        let Some((key, source, destination)) = next else {
            return Ok(());
        };
        let mismatch = match (source, destination) {
            (Ok(Some(s)), Ok(Some(d))) => match check_pair(Pair::Both(s, d), diff, stats) {
                Check::InSync => None,
                Check::Mismatch(mismatch) => Some(mismatch),
                // The HEADs brought the checksums, which decide first: a
                // copy's own ledger entry says what it was meant to be, the
                // checksums what it is. The ledger (holding this run's
                // copies) proves only what they cannot.
                Check::Unproven(s, d) => {
                    let proof = prove(s.checksum.as_ref(), d.checksum.as_ref());
                    let by_ledger = match (proof, cursor.as_mut()) {
                        (Proof::Unknown, Some(cursor)) => {
                            proofs.by_ledger(cursor, &s, &d, stats).await
                        }
                        _ => false,
                    };
                    if proof == Proof::Equal {
                        Stats::add(&stats.proven_by_checksum, 1);
                        proofs.keep(Proven::of(&s, &d));
                    }
                    if by_ledger { None } else { settle(s, d, proof) }
                }
            },
            (Ok(Some(s)), Ok(None)) => check_pair(Pair::SourceOnly(s), diff, stats).mismatch(),
            (Ok(None), Ok(Some(d))) => check_pair(Pair::DestinationOnly(d), diff, stats).mismatch(),
            (Ok(None), Ok(None)) => None, // deleted, and gone from both
            (Err(failure), _) | (_, Err(failure)) => {
                Stats::add(&stats.verify_checked, 1);
                Some(Mismatch {
                    key: key.clone(),
                    code: "VerifyFailed",
                    message: format!(
                        "verify: could not HEAD the object: {} ({})",
                        failure.message, failure.code
                    ),
                    at_destination: false,
                })
            }
        };
        if let Some(mismatch) = &mismatch {
            // Whatever proved it before, this pair is not proven now.
            proofs.retract(&mismatch.key);
        }
        if let Some(mismatch) = mismatch
            && !rows.already_reported(&mismatch.key)
        {
            Stats::add(&stats.verify_mismatched, 1);
            let names = |side: Side, key: &str| mover.row_names(side, key);
            let (bucket, key) = names(
                if mismatch.at_destination {
                    Side::Destination
                } else {
                    Side::Source
                },
                &mismatch.key,
            );
            rows.push(
                &mismatch.key,
                ReportRow::new(
                    &bucket,
                    &key,
                    TaskStatus::Failed,
                    mismatch.code,
                    None,
                    &mismatch.message,
                ),
            );
        }
        Stats::add(&stats.verify_heads, 1);
    }
}
