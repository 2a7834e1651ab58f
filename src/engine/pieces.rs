//! Listing one range as several pieces at once, each on both sides.
//!
//! ListObjectsV2 is one sequential stream of pages per range, so a large
//! range lists only as fast as one request after another. Here a range is
//! cut into pieces while it lists ([`crate::model::keyspace`] says where), each piece
//! runs its own merge-join, and its pairs go to a [`PairSink`]: the write
//! phase's decide-and-copy, or verification. Pieces need no order among
//! themselves; every key is in exactly one.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;

use crate::backend::side::Listing;
use crate::base::error::SyncError;
use crate::engine::diff::merge_join;
use crate::model::entry::{Pair, Side};
use crate::model::keyspace::{KeySpace, MovableEnd, thin, tile};
use crate::model::location::KeyRange;
use crate::report::Stats;

/// Full source pages a serverless range lists before it may be split
/// ([`bisect`]), and again after each split. A split is a range record, a
/// queue message and a checkpoint, and costs up to one partly used page a
/// side (the last page before the cut runs past it), so this bounds that
/// waste to about one request in ten.
pub const PAGES_BEFORE_CUT: u64 = 10;

/// Full source pages the range lists as one stream before its first cut.
/// One: a page is sample enough to place cuts, and each page listed before
/// the cut is a round trip the whole range waits for (30 ms in a region,
/// 100 ms or more per page of a large S3 listing) while the other listers
/// stand idle. The first cut makes pieces of about a page ahead or more, so
/// its waste is at most one request a side per page it saves; a range of
/// one page lists as one stream, one request a side.
pub const PAGES_BEFORE_FIRST_CUT: u64 = 1;

/// Full source pages a piece lists before an idle lister may cut it in two
/// ([`bisect`]), and again after each cut. A piece here is a task, not a
/// record, and a cut is made only when a lister has nothing to do, so a
/// range with one hot folder doubles its listers every few round trips
/// instead of every ten; each cut still leaves both halves at least this
/// many pages, which bounds its partly used page to one request in that
/// many.
pub const PIECE_PAGES_BEFORE_CUT: u64 = 4;

/// What a piece does with each pair of its merge-join.
pub trait PairSink: Clone + Send + Sync + 'static {
    /// The sink for one piece: a clone, with whatever it keeps per piece
    /// (a cursor in the ledger, read in the piece's key order) fresh.
    fn for_piece(&self) -> Self {
        self.clone()
    }

    /// Take one pair; `false` stops the piece (its consumer is gone).
    fn take(&self, pair: Pair) -> impl Future<Output = bool> + Send;
}

/// The two sides of a range, and how many pieces of it to list at once.
#[derive(Clone)]
pub struct Sides {
    pub source: Listing,
    pub destination: Listing,
    pub range: KeyRange,
    pub list_concurrency: usize,
    /// Counts listed objects and pieces here (the write phase), or nowhere.
    pub counted: Option<Arc<Stats>>,
    /// Whether the first page is the run's preflight: a failure there that
    /// means the bucket cannot be used becomes a configuration error
    /// (nothing was written yet).
    pub preflight: bool,
}

/// List the range as pieces, up to `list_concurrency` at once, handing
/// each piece's pairs to `sink`.
///
/// It starts as one piece. Once that piece's source side has listed
/// [`PAGES_BEFORE_FIRST_CUT`] full pages and more follow, the range is cut
/// (`model/keyspace.rs`): at its folders if the keys have any, else at keys placed
/// from what it has listed. After that, whenever a lister is idle, the piece
/// that has listed the most full pages since it was last cut (at least
/// [`PIECE_PAGES_BEFORE_CUT`]) has its remainder cut in two. Each piece runs its
/// own merge-join, so pieces need no order among themselves; actions from
/// all of them go to the one sink.
pub async fn list_in_pieces<S: PairSink>(sides: Sides, sink: S) -> Result<(), SyncError> {
    // A directory is walked as one stream (its cost is the disk, not
    // requests), so a range with one is one piece.
    let slots = if sides.source.lists_in_pieces() && sides.destination.lists_in_pieces() {
        sides.list_concurrency.max(1)
    } else {
        1
    };
    let notify = Arc::new(tokio::sync::Notify::new());
    let mut pieces: tokio::task::JoinSet<Result<(), SyncError>> = tokio::task::JoinSet::new();
    let mut running: Vec<(KeyRange, Arc<MovableEnd>)> = Vec::new();
    let mut queue: VecDeque<KeyRange> = VecDeque::from([sides.range.clone()]);
    let mut first_cut_done = slots == 1;
    let mut spawned = 0usize;
    loop {
        while pieces.len() < slots
            && let Some(range) = queue.pop_front()
        {
            let end = Arc::new(MovableEnd::new(range.end_before.clone(), notify.clone()));
            // Only the very first piece's first page is the bucket's
            // preflight: a later piece failing is an S3 error, since other
            // pieces may already have written.
            let preflight = sides.preflight && spawned == 0;
            spawned += 1;
            running.push((range.clone(), end.clone()));
            if let Some(stats) = &sides.counted {
                Stats::add(&stats.listed_pieces, 1);
            }
            tracing::debug!(piece = spawned, ?range, "listing piece");
            pieces.spawn(list_piece(
                sides.clone(),
                sink.for_piece(),
                range,
                end,
                preflight,
            ));
        }
        if pieces.is_empty() {
            return Ok(());
        }
        running.retain(|(_, end)| end.progress().is_some());
        if pieces.len() < slots {
            let cut = if first_cut_done {
                bisect_one(&sides, &running).await?
            } else {
                first_cut(&sides, &running, slots, &mut first_cut_done).await?
            };
            if !cut.is_empty() {
                queue.extend(cut);
                continue;
            }
        }
        tokio::select! {
            done = pieces.join_next() => match done {
                Some(Ok(Ok(()))) | None => {}
                // Dropping the JoinSet stops the other pieces.
                Some(Ok(Err(err))) => return Err(err),
                Some(Err(panic)) => {
                    return Err(SyncError::Report(format!("a listing task failed: {panic}")));
                }
            },
            _ = notify.notified() => {}
        }
    }
}

/// The first cut, once the first piece has listed
/// [`PAGES_BEFORE_FIRST_CUT`] full pages: at the range's folders when its
/// keys have folders, one per page the folders still ahead are estimated to
/// hold (up to the free listers); else at keys placed beyond what was
/// listed. Returns the new pieces.
async fn first_cut(
    sides: &Sides,
    running: &[(KeyRange, Arc<MovableEnd>)],
    slots: usize,
    done: &mut bool,
) -> Result<Vec<KeyRange>, SyncError> {
    let source = &sides.source;
    let (Some((range, end)), true) = (running.first(), source.lists_in_pieces()) else {
        return Ok(Vec::new());
    };
    let Some(progress) = end.progress() else {
        *done = true; // the range was listed before it was worth a cut
        return Ok(Vec::new());
    };
    let Some(sample) = progress
        .sample
        .filter(|_| progress.full_pages >= PAGES_BEFORE_FIRST_CUT)
    else {
        return Ok(Vec::new()); // not enough listed yet
    };
    *done = true;
    let past = progress.past.unwrap_or_default();
    let has_folders = sample.iter().any(|k| {
        k.strip_prefix(&range.prefix)
            .is_some_and(|rest| rest.contains('/'))
    });
    let cuts = if has_folders {
        // One delimiter page: a thousand folders are plenty of cuts.
        let folders = source.folders_below(&range.prefix, 1).await?;
        let passed = folders
            .iter()
            .filter(|f| f.as_str() <= past.as_str())
            .count();
        let ahead: Vec<String> = folders
            .into_iter()
            .filter(|f| f.as_str() > past.as_str())
            .collect();
        // Folders ahead hold about as many pages each as the ones passed.
        let pages_ahead = progress.full_pages * ahead.len() as u64 / passed.max(1) as u64;
        let wanted = pages_ahead.min(slots as u64 - 1) as usize;
        thin(ahead, wanted)
    } else {
        // Cuts at 1, 2, 4, … times the reach of what was listed, but none
        // past the last source key: a piece there would cost a request a
        // side to find nothing.
        let from = past.as_str().max(sample[sample.len() - 1].as_str());
        let spread: Vec<&str> = sample.iter().map(String::as_str).chain([from]).collect();
        let space = KeySpace::from_sample(&spread);
        let cuts = space.cuts_after_page(&sample[0], from, from, slots - 1);
        within_listing(source, &range.prefix, cuts).await?
    };
    tracing::debug!(past, ?cuts, "first cut");
    if cuts.is_empty() {
        // Not worth a cut yet: look again after as many pages more.
        end.defer();
    }
    Ok(cut_into_pieces(range, end, cuts))
}

/// The leading `cuts` (ascending) that have a source key after them, found
/// by bisection with one-key listings: a few requests instead of an empty
/// page a side for every cut past the last key.
async fn within_listing(
    source: &Listing,
    prefix: &str,
    mut cuts: Vec<String>,
) -> Result<Vec<String>, SyncError> {
    // Invariant: cuts[..low] have a key after them, cuts[high..] have none.
    let (mut low, mut high) = (0, cuts.len());
    while low < high {
        let mid = (low + high) / 2;
        if source.any_key_after(prefix, &cuts[mid]).await? {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    cuts.truncate(low);
    Ok(cuts)
}

/// Cut `end`'s range at the first of `cuts` (ascending) that both sides
/// have not yet passed, and tile the rest of it between the others.
fn cut_into_pieces(range: &KeyRange, end: &MovableEnd, cuts: Vec<String>) -> Vec<KeyRange> {
    // The listing moves on while cuts are chosen (a delimiter page, probes),
    // so the nearest cuts may be behind it already; the others still hold.
    let Some((at, old_end)) = cuts
        .iter()
        .enumerate()
        .find_map(|(i, cut)| Some((i, end.cut(cut)?)))
    else {
        return Vec::new();
    };
    let rest = KeyRange {
        prefix: range.prefix.clone(),
        start_at: None,
        start_after: range.start_after.clone(),
        end_before: old_end,
    };
    let mut pieces = tile(&rest, cuts[at..].to_vec());
    pieces.remove(0); // before the first cut: the piece that was cut
    pieces
}

/// Cut in two the piece that has listed the most full pages since its last
/// cut (at least [`PIECE_PAGES_BEFORE_CUT`]) and is worth halving
/// ([`bisect`]).
async fn bisect_one(
    sides: &Sides,
    running: &[(KeyRange, Arc<MovableEnd>)],
) -> Result<Vec<KeyRange>, SyncError> {
    let source = &sides.source;
    if !source.lists_in_pieces() {
        return Ok(Vec::new());
    }
    let mut candidates: Vec<_> = running
        .iter()
        .filter_map(|(range, end)| Some((range, end, end.progress()?)))
        .filter(|(_, _, p)| p.full_pages >= PIECE_PAGES_BEFORE_CUT && p.sample.is_some())
        .collect();
    candidates.sort_by_key(|(_, _, p)| std::cmp::Reverse(p.full_pages));
    for (range, end, _) in candidates {
        let pieces = bisect(source, range, end, PIECE_PAGES_BEFORE_CUT).await?;
        if !pieces.is_empty() {
            return Ok(pieces);
        }
    }
    Ok(Vec::new())
}

/// Cut the remainder of a range being listed (`range`, its end `end`) in
/// two, if it has listed at least `pages` full pages since its last cut
/// and has at least twice as many ahead by its key space, so each
/// half is worth its partly used page: at the midpoint of what it has left,
/// or, for a range without an end, as far past where it is as it has come,
/// if the source has keys there (a few one-key listings say). Returns the
/// new range (the end moved down to its start), or none: then the range
/// is looked at again only after as many pages more.
///
/// The CLI's pieces and the serverless listers both cut by this.
pub async fn bisect(
    source: &Listing,
    range: &KeyRange,
    end: &MovableEnd,
    pages: u64,
) -> Result<Vec<KeyRange>, SyncError> {
    let Some(progress) = end.progress() else {
        return Ok(Vec::new());
    };
    let Some(mut sample) = progress
        .sample
        .clone()
        .filter(|_| progress.full_pages >= pages)
    else {
        return Ok(Vec::new());
    };
    let low = progress.past.clone().unwrap_or_default();
    let from = progress
        .counted_from
        .clone()
        .unwrap_or_else(|| sample[0].clone());
    // The first page's keys may all share a folder the piece has since
    // left: the space must also span where it is and where it ends.
    sample.extend(
        [low.clone(), from.clone()]
            .into_iter()
            .chain(progress.end.clone()),
    );
    sample.sort();
    let space = KeySpace::from_sample(&sample);
    let ahead = space
        .ratio_ahead(&from, &low, progress.end.as_deref())
        .map(|ratio| ratio * progress.full_pages as f64);
    if progress.end.is_some() && ahead.is_none_or(|ahead| ahead < 2.0 * pages as f64) {
        end.defer(); // too little left to halve
        return Ok(Vec::new());
    }
    let cuts: Vec<String> = match progress.end.as_deref() {
        Some(high) => space.midpoint(&low, Some(high)).into_iter().collect(),
        None => {
            let bet = space.extend(&from, &low).into_iter().collect();
            within_listing(source, &range.prefix, bet).await?
        }
    };
    if cuts.is_empty() {
        end.defer();
        return Ok(Vec::new());
    }
    Ok(cut_into_pieces(range, end, cuts))
}

/// One piece: list both sides up to its (movable) end, merge-join, and hand
/// the pairs to the sink.
async fn list_piece<S: PairSink>(
    sides: Sides,
    sink: S,
    range: KeyRange,
    end: Arc<MovableEnd>,
    preflight: bool,
) -> Result<(), SyncError> {
    let started = std::time::Instant::now();
    let counted = sides.counted.clone();
    let source_stream = sides
        .source
        .list(
            &range,
            Side::Source,
            Some((end.clone(), Side::Source)),
            preflight,
        )
        .inspect(move |entry| {
            if let (Ok(entry), Some(stats)) = (entry, &counted) {
                Stats::add(&stats.listed_source, 1);
                Stats::add(&stats.listed_source_bytes, entry.size);
            }
        });
    let counted = sides.counted.clone();
    let destination_stream = sides
        .destination
        .list(
            &range,
            Side::Destination,
            Some((end.clone(), Side::Destination)),
            preflight,
        )
        .inspect(move |entry| {
            if let (Ok(_), Some(stats)) = (entry, &counted) {
                Stats::add(&stats.listed_destination, 1);
            }
        });
    let pairs = merge_join(source_stream, destination_stream).boxed();
    // A file's ETag is only known by reading it: computed for the pairs
    // whose comparison needs it, a few files at a time.
    let pairs = sides.source.with_content_etags(pairs, Side::Source);
    let pairs = sides
        .destination
        .with_content_etags(pairs, Side::Destination);
    futures::pin_mut!(pairs);
    let result = loop {
        match pairs.next().await {
            None => break Ok(()),
            Some(Err(err)) => break Err(err),
            Some(Ok(pair)) => {
                if !sink.take(pair).await {
                    break Ok(()); // the consumer is gone: only after cancellation
                }
            }
        }
    };
    end.finish();
    tracing::debug!(
        ?range,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "piece listed"
    );
    result
}
