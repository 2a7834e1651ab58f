//! A run's counters, in DynamoDB: batches sent and done, and the outcomes
//! their copies recorded, so that progress is one Query and the report
//! reads no batch result it does not need.
//!
//! Before this table, every progress poll listed `results/` and read every
//! lister checkpoint, and the report read every batch result: at 1M
//! batches (100M objects copied) half a gigabyte of heap and half an hour
//! of GETs. Counting is the one thing S3 cannot do for many writers;
//! DynamoDB's atomic `ADD` does it, and a transaction makes each count
//! idempotent under SQS's at-least-once delivery and the listers' retries.
//!
//! Items of the table (keyed `pk`, `sk`; every one carries `expires_at`,
//! 30 days on, for the table's TTL):
//!
//! - `pk = RUN, sk = n#SLOT`: [`SLOTS`] counter items. A batch counts in the
//!   slot its id hashes to, so concurrent writers rarely touch one item (a
//!   transaction conflicts with any other write to an item it holds).
//!   Attributes: `batches_sent`, `tasks_sent`, `batches_done`,
//!   `batches_with_rows`, and `c_FIELD` for each outcome of [`Counts`].
//!   Progress sums them: one Query page of at most [`SLOTS`] small items.
//! - `pk = RUN#b#BATCH, sk = sent | done`: one marker per batch and side,
//!   written in the same transaction as its count, on condition that it
//!   does not exist: a batch sent twice (a lister retried) or done twice (a
//!   duplicate delivery) counts once. A done marker names the object that
//!   holds its report rows (`rows`), when it has any.
//! - `pk = RUN#r#PHASE, sk = sent#SHARD | done#SHARD`: one marker per range
//!   of a listing pass (`write`, `validate`) and side, counted in the
//!   slot items as `ranges_sent_PHASE` and `ranges_done_PHASE` in the same
//!   transaction. A done marker carries the batches the range sent
//!   (`batches`) and the keys it covered (`range`, JSON): VALIDATE is sent
//!   only the ranges that wrote something, each as it ended. One partition
//!   per pass, so the ranges done are one Query.
//! - `pk = RUN#r#write, sk = copied#SHARD`: the copies of a write-phase
//!   range: `copied`, its batches counted done, and `parts`, the part
//!   batches its copiers split large objects into, each added in the same
//!   transaction as the batch's own marker, so once. The range is copied
//!   when `copied` reaches its done marker's `batches` plus `parts` (a
//!   batch counts its parts sent before it counts itself done, so no count
//!   reaches that sum early), and VALIDATE may list it again then, while
//!   other ranges still copy ([`super::ranges::validate_when_copied`]).
//! - `pk = RUN, sk = ranges`: the numbers given to split ranges (`next`).
//! - `pk = RUN#l, sk = PHASE#SHARD#SEQ`: the lease of a range task, held by
//!   the lister working on it until its deadline (`until`, milliseconds).
//!   SQS may deliver a message twice at once; the second lister finds the
//!   lease held and hands its copy back, to find it done later.
//! - `pk = RUN#t, sk = s#SECOND`: the copies finished in each second, and the
//!   batches started in it, for the report's timeline and copy phase. Added
//!   after the batch's own transaction, outside it: a chart point lost to a
//!   crash in between costs the chart a little, never the totals, and these
//!   items stay out of transactions, so they never conflict. Their number
//!   grows with the run's duration, not with its batches.
//!
//! Costs at 100M objects copied (1M batches, on-demand at $0.625 per
//! million write units): a transaction's write is two units per item, so
//! about 4 units per batch sent and 4 per batch done, 8M units: $5, beside
//! the $500 of the 100M CopyObject requests. With VALIDATE, a batch done
//! also counts in its range's copies (2 more units) and reads them (2 read
//! units at $0.125 a million), and every delivery first reads its batch's
//! done marker (1): $1.63 more.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, TransactWriteItem, Update};

use crate::base::error::{S3Failure, SyncError, classify};
use crate::model::location::KeyRange;
use crate::report::Counts;
use crate::report::emf;
use crate::serverless::contract::{Phase, SentBatch, ShardCursor};

/// Counter items per run. More slots, fewer transaction conflicts between
/// concurrent copiers; progress reads them all, in one page (each is under
/// 1 KB, a Query page is 1 MB).
pub const SLOTS: u64 = 128;

/// How long a run's items outlive it: its report is the lasting record.
const KEEP_SECS: i64 = 30 * 24 * 3600;

/// DynamoDB's limit of items in one transaction.
const MAX_TRANSACTION_ITEMS: usize = 100;

/// Tries of a transaction that conflicts with another on the same counter.
const CONFLICT_TRIES: u32 = 10;

/// What the counters of a run add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub batches_sent: u64,
    pub tasks_sent: u64,
    pub batches_done: u64,
    /// Batches whose result has report rows (failures, warnings).
    pub batches_with_rows: u64,
    /// The outcomes the done batches recorded.
    pub counts: Counts,
    /// Ranges sent to the range queue and listed to their end, by pass.
    pub ranges_sent: [u64; 2],
    pub ranges_done: [u64; 2],
}

impl RunTotals {
    /// (ranges sent, ranges done) in `phase`.
    pub fn ranges(&self, phase: Phase) -> (u64, u64) {
        let i = phase_index(phase);
        (self.ranges_sent[i], self.ranges_done[i])
    }
}

fn phase_index(phase: Phase) -> usize {
    match phase {
        Phase::Write => 0,
        Phase::Validate => 1,
    }
}

/// A write-phase range's copies ([`RunCounters::range_copies`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeCopies {
    /// Batches its listing sent, and the keys it covered.
    pub batches: u64,
    pub range: Option<KeyRange>,
    /// Its batches and parts counted done, and the parts split off.
    pub copied: u64,
    pub parts: u64,
}

impl RangeCopies {
    /// Every batch the range sent, and every part its copies split off,
    /// is done: nothing of it is left to copy.
    pub fn all_done(&self) -> bool {
        self.batches > 0 && self.copied >= self.batches + self.parts
    }
}

/// One second of the run, as the copiers recorded it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tick {
    /// Seconds since the Unix epoch.
    pub second: i64,
    pub batches_started: u64,
    pub batches_finished: u64,
    pub copied: u64,
    pub updated: u64,
    pub bytes_copied: u64,
    pub failed: u64,
}

/// A run's counters in the stack's table.
#[derive(Debug, Clone)]
pub struct RunCounters {
    client: Client,
    table: String,
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// FNV-1a: stable across processes and versions, unlike std's hasher.
fn slot_of(batch_id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in batch_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % SLOTS
}

fn expires_at() -> AttributeValue {
    n(emf::now_ms() / 1000 + KEEP_SECS)
}

/// An `ADD` expression over `values` (attribute name → amount), skipping
/// zeros, with `expires_at` set; its names and values.
struct AddExpression {
    expression: String,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl AddExpression {
    fn of(values: &[(String, u64)]) -> Self {
        let mut adds = Vec::new();
        let mut names = HashMap::new();
        let mut attribute_values = HashMap::new();
        for (i, (name, value)) in values.iter().filter(|(_, v)| *v > 0).enumerate() {
            adds.push(format!("#a{i} :a{i}"));
            names.insert(format!("#a{i}"), name.clone());
            attribute_values.insert(format!(":a{i}"), n(value));
        }
        names.insert("#e".into(), "expires_at".into());
        attribute_values.insert(":e".into(), expires_at());
        let mut expression = "SET #e = :e".to_owned();
        if !adds.is_empty() {
            expression.push_str(" ADD ");
            expression.push_str(&adds.join(", "));
        }
        AddExpression {
            expression,
            names,
            values: attribute_values,
        }
    }
}

/// The `c_FIELD` attributes of counts, one per non-zero outcome.
fn count_attributes(counts: &Counts) -> Vec<(String, u64)> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(counts) else {
        return Vec::new();
    };
    fields
        .into_iter()
        .filter_map(|(name, value)| Some((format!("c_{name}"), value.as_u64()?)))
        .filter(|(_, value)| *value > 0)
        .collect()
}

/// The sort key of a range task's lease.
fn lease_key(phase: Phase, shard: usize, seq: u32) -> String {
    format!("{}#{shard:05}#{seq:05}", phase.name())
}

fn range_of(item: &HashMap<String, AttributeValue>) -> Option<KeyRange> {
    serde_json::from_str(item.get("range")?.as_s().ok()?).ok()
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Why a transaction was cancelled, by item.
enum Cancelled {
    /// A marker already exists: that batch was counted before.
    AlreadyCounted,
    /// Another write held an item, or the table was throttled: try again.
    Busy,
}

fn cancelled(err: &SdkError<TransactWriteItemsError>) -> Option<Cancelled> {
    let SdkError::ServiceError(service) = err else {
        return None;
    };
    match service.err() {
        TransactWriteItemsError::TransactionCanceledException(e) => {
            let codes: Vec<&str> = e
                .cancellation_reasons()
                .iter()
                .filter_map(|r| r.code())
                .collect();
            if codes.contains(&"ConditionalCheckFailed") {
                Some(Cancelled::AlreadyCounted)
            } else {
                Some(Cancelled::Busy)
            }
        }
        TransactWriteItemsError::TransactionInProgressException(_)
        | TransactWriteItemsError::ProvisionedThroughputExceededException(_)
        | TransactWriteItemsError::RequestLimitExceeded(_)
        | TransactWriteItemsError::ThrottlingException(_) => Some(Cancelled::Busy),
        _ => None,
    }
}

fn failed(what: &str, failure: S3Failure) -> SyncError {
    SyncError::s3(format!("{what} (DynamoDB)"), failure)
}

impl RunCounters {
    pub fn new(client: Client, table: String) -> Self {
        RunCounters { client, table }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// For the run's other items in the same table ([`super::stop`]).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    fn marker(&self, run_id: &str, batch_id: &str, side: &str) -> Put {
        Put::builder()
            .table_name(&self.table)
            .item("pk", s(format!("{run_id}#b#{batch_id}")))
            .item("sk", s(side))
            .item("expires_at", expires_at())
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .expect("pk, sk and table are set")
    }

    fn add_to_slot(&self, run_id: &str, slot: u64, values: &[(String, u64)]) -> Update {
        let add = AddExpression::of(values);
        Update::builder()
            .table_name(&self.table)
            .key("pk", s(run_id))
            .key("sk", s(format!("n#{slot:03}")))
            .update_expression(add.expression)
            .set_expression_attribute_names(Some(add.names))
            .set_expression_attribute_values(Some(add.values))
            .build()
            .expect("key, table and expression are set")
    }

    /// Run one transaction, again while it conflicts with others; `false`
    /// when a marker in it already existed (nothing was written).
    async fn transact(&self, what: &str, items: Vec<TransactWriteItem>) -> Result<bool, SyncError> {
        let mut wait = Duration::from_millis(20);
        for attempt in 1.. {
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            let err = match sent {
                Ok(_) => return Ok(true),
                Err(err) => err,
            };
            match cancelled(&err) {
                Some(Cancelled::AlreadyCounted) => return Ok(false),
                Some(Cancelled::Busy) if attempt < CONFLICT_TRIES => {
                    // Jittered, so writers that collided do not again.
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.subsec_nanos());
                    let jitter = Duration::from_micros(u64::from(nanos % 1000) * 20);
                    tokio::time::sleep(wait + jitter).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                _ => {
                    let mut failure = classify(&err);
                    if matches!(cancelled(&err), Some(Cancelled::Busy)) {
                        failure.class = crate::base::error::RetryClass::Retryable;
                    }
                    return Err(failed(what, failure));
                }
            }
        }
        unreachable!("the loop returns")
    }

    /// Count `batches` as sent, each once however often this is called
    /// for it (a retried lister sends its batches again under their ids).
    /// `parts_of`: the batches are parts a copier split a large object of
    /// that write-phase range into, which the range's copies wait for too.
    pub async fn record_sent(
        &self,
        run_id: &str,
        batches: &[SentBatch],
        parts_of: Option<usize>,
    ) -> Result<(), SyncError> {
        for chunk in batches.chunks(MAX_TRANSACTION_ITEMS - 2) {
            if !self.sent_together(run_id, chunk, parts_of).await? {
                // Some of them were counted before: one at a time.
                for batch in chunk {
                    self.sent_together(run_id, std::slice::from_ref(batch), parts_of)
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn sent_together(
        &self,
        run_id: &str,
        batches: &[SentBatch],
        parts_of: Option<usize>,
    ) -> Result<bool, SyncError> {
        let Some(first) = batches.first() else {
            return Ok(true);
        };
        let tasks: u64 = batches.iter().map(|b| b.tasks).sum();
        let mut items: Vec<TransactWriteItem> = batches
            .iter()
            .map(|b| {
                TransactWriteItem::builder()
                    .put(self.marker(run_id, &b.id, "sent"))
                    .build()
            })
            .collect();
        let values = [
            ("batches_sent".to_owned(), batches.len() as u64),
            ("tasks_sent".to_owned(), tasks),
        ];
        items.push(
            TransactWriteItem::builder()
                .update(self.add_to_slot(run_id, slot_of(&first.id), &values))
                .build(),
        );
        if let Some(shard) = parts_of {
            let parts = [("parts".to_owned(), batches.len() as u64)];
            items.push(
                TransactWriteItem::builder()
                    .update(self.add_to_range_copies(run_id, shard, &parts))
                    .build(),
            );
        }
        self.transact("counting the batches sent", items).await
    }

    /// Count a batch done with its outcomes, once; `rows` names the object
    /// holding its report rows, if it has any, and `range` the write-phase
    /// range that sent it, whose copies it counts too. `false`: it was
    /// counted before (a duplicate delivery), and nothing changed.
    pub async fn record_done(
        &self,
        run_id: &str,
        batch_id: &str,
        counts: &Counts,
        (rows, range): (Option<&str>, Option<usize>),
    ) -> Result<bool, SyncError> {
        let mut marker = self.marker(run_id, batch_id, "done");
        if let Some(rows) = rows {
            marker.item.insert("rows".into(), s(rows));
        }
        let mut values = count_attributes(counts);
        values.push(("batches_done".into(), 1));
        values.push(("batches_with_rows".into(), u64::from(rows.is_some())));
        let mut items = vec![
            TransactWriteItem::builder().put(marker).build(),
            TransactWriteItem::builder()
                .update(self.add_to_slot(run_id, slot_of(batch_id), &values))
                .build(),
        ];
        if let Some(shard) = range {
            let copied = [("copied".to_owned(), 1)];
            items.push(
                TransactWriteItem::builder()
                    .update(self.add_to_range_copies(run_id, shard, &copied))
                    .build(),
            );
        }
        self.transact("counting a batch done", items).await
    }

    fn range_copies_key(run_id: &str, shard: usize) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (
                "pk".to_owned(),
                s(format!("{run_id}#r#{}", Phase::Write.name())),
            ),
            ("sk".to_owned(), s(format!("copied#{shard:05}"))),
        ])
    }

    fn add_to_range_copies(&self, run_id: &str, shard: usize, values: &[(String, u64)]) -> Update {
        let add = AddExpression::of(values);
        Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::range_copies_key(run_id, shard)))
            .update_expression(add.expression)
            .set_expression_attribute_names(Some(add.names))
            .set_expression_attribute_values(Some(add.values))
            .build()
            .expect("key, table and expression are set")
    }

    /// Where the copies of write-phase range `shard` stand: `None` while
    /// the range is still listed (its done marker is not written yet).
    /// One BatchGetItem of its done marker and its copies, read
    /// consistently.
    pub async fn range_copies(
        &self,
        run_id: &str,
        shard: usize,
    ) -> Result<Option<RangeCopies>, SyncError> {
        let done_key = HashMap::from([
            (
                "pk".to_owned(),
                s(format!("{run_id}#r#{}", Phase::Write.name())),
            ),
            ("sk".to_owned(), s(format!("done#{shard:05}"))),
        ]);
        let keys = KeysAndAttributes::builder()
            .keys(done_key)
            .keys(Self::range_copies_key(run_id, shard))
            .consistent_read(true)
            .build()
            .expect("keys are set");
        let answer = self
            .client
            .batch_get_item()
            .request_items(&self.table, keys)
            .send()
            .await
            .map_err(|e| failed("reading a range's copies", classify(&e)))?;
        if answer
            .unprocessed_keys()
            .and_then(|u| u.get(&self.table))
            .is_some_and(|k| !k.keys().is_empty())
        {
            // Throttled: the caller's next look, or VALIDATE's start, will do.
            return Ok(None);
        }
        let items = answer.responses().and_then(|r| r.get(&self.table));
        let find = |prefix: &str| {
            items.into_iter().flatten().find(|item| {
                item.get("sk")
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|sk| sk.starts_with(prefix))
            })
        };
        let Some(done) = find("done#") else {
            return Ok(None);
        };
        let copies = find("copied#");
        Ok(Some(RangeCopies {
            batches: number(done, "batches"),
            range: range_of(done),
            copied: copies.map_or(0, |c| number(c, "copied")),
            parts: copies.map_or(0, |c| number(c, "parts")),
        }))
    }

    fn range_marker(
        &self,
        run_id: &str,
        phase: Phase,
        shard: usize,
        side: &str,
        range: Option<&KeyRange>,
    ) -> Put {
        let mut put = Put::builder()
            .table_name(&self.table)
            .item("pk", s(format!("{run_id}#r#{}", phase.name())))
            .item("sk", s(format!("{side}#{shard:05}")))
            .item("expires_at", expires_at())
            .condition_expression("attribute_not_exists(pk)");
        if let Some(range) = range.and_then(|r| serde_json::to_string(r).ok()) {
            put = put.item("range", s(range));
        }
        put.build().expect("pk, sk and table are set")
    }

    /// Count `tasks` (the first task of each) as ranges of their phase
    /// sent, each once however often this is called for it. Called before
    /// they are sent: a range counted and never sent (a crash in between)
    /// keeps the run waiting until its sender's retry sends it, never lets
    /// it end early. A range of its own keys (a split) keeps them on its
    /// marker, for the report to name a range never listed.
    pub async fn record_ranges_sent(
        &self,
        run_id: &str,
        tasks: &[ShardCursor],
    ) -> Result<(), SyncError> {
        for chunk in tasks.chunks(MAX_TRANSACTION_ITEMS - 1) {
            if !self.ranges_together(run_id, chunk).await? {
                for task in chunk {
                    self.ranges_together(run_id, std::slice::from_ref(task))
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Count one range sent, once: `true` when this call counted it,
    /// `false` when an earlier one had.
    pub async fn record_range_sent(
        &self,
        run_id: &str,
        task: &ShardCursor,
    ) -> Result<bool, SyncError> {
        self.ranges_together(run_id, std::slice::from_ref(task))
            .await
    }

    async fn ranges_together(
        &self,
        run_id: &str,
        tasks: &[ShardCursor],
    ) -> Result<bool, SyncError> {
        let Some(first) = tasks.first() else {
            return Ok(true);
        };
        let mut items: Vec<TransactWriteItem> = tasks
            .iter()
            .map(|task| {
                let marker =
                    self.range_marker(run_id, task.phase, task.shard, "sent", task.range.as_ref());
                TransactWriteItem::builder().put(marker).build()
            })
            .collect();
        let phase = first.phase;
        let counter = format!("ranges_sent_{}", phase.name());
        let slot = slot_of(&format!("{}#{}", phase.name(), first.shard));
        items.push(
            TransactWriteItem::builder()
                .update(self.add_to_slot(run_id, slot, &[(counter, tasks.len() as u64)]))
                .build(),
        );
        self.transact("counting the ranges sent", items).await
    }

    /// Count a range of `phase` listed to its end, once, with the batches
    /// its listing sent and the keys it covered (its end moved down by its
    /// splits): VALIDATE lists those. `false`: it was counted before.
    pub async fn record_range_done(
        &self,
        run_id: &str,
        (phase, shard): (Phase, usize),
        batches: u64,
        range: &KeyRange,
    ) -> Result<bool, SyncError> {
        self.end_range(run_id, (phase, shard), batches, range, false)
            .await
    }

    /// Count a range of a stopped run done without listing the rest of it
    /// (its listing is dropped, and counted so: `c_dropped_ranges`), so
    /// the run's progress still reaches its end. Once, as
    /// [`Self::record_range_done`]; its marker says `dropped`.
    pub async fn record_range_dropped(
        &self,
        run_id: &str,
        (phase, shard): (Phase, usize),
        batches: u64,
        range: &KeyRange,
    ) -> Result<bool, SyncError> {
        self.end_range(run_id, (phase, shard), batches, range, true)
            .await
    }

    async fn end_range(
        &self,
        run_id: &str,
        (phase, shard): (Phase, usize),
        batches: u64,
        range: &KeyRange,
        dropped: bool,
    ) -> Result<bool, SyncError> {
        let mut marker = self.range_marker(run_id, phase, shard, "done", Some(range));
        marker.item.insert("batches".into(), n(batches));
        let mut counts = vec![(format!("ranges_done_{}", phase.name()), 1)];
        if dropped {
            marker
                .item
                .insert("dropped".into(), AttributeValue::Bool(true));
            counts.push(("c_dropped_ranges".to_owned(), 1));
        }
        let slot = slot_of(&format!("{}#{shard}", phase.name()));
        let items = vec![
            TransactWriteItem::builder().put(marker).build(),
            TransactWriteItem::builder()
                .update(self.add_to_slot(run_id, slot, &counts))
                .build(),
        ];
        self.transact("counting a range done", items).await
    }

    /// The range markers of `phase` on `side` (`sent`, `done`), by shard,
    /// in shard order.
    async fn range_markers(
        &self,
        run_id: &str,
        phase: Phase,
        side: &str,
    ) -> Result<Vec<(usize, HashMap<String, AttributeValue>)>, SyncError> {
        let prefix = format!("{side}#");
        let items = self
            .query(&format!("{run_id}#r#{}", phase.name()), &prefix)
            .await?;
        Ok(items
            .into_iter()
            .filter_map(|item| {
                let sk = item.get("sk")?.as_s().ok()?;
                let shard = sk.strip_prefix(prefix.as_str())?.parse().ok()?;
                Some((shard, item))
            })
            .collect())
    }

    /// The ranges of `phase` listed to their end: (shard, batches sent,
    /// keys covered), in shard order.
    pub async fn ranges_done(
        &self,
        run_id: &str,
        phase: Phase,
    ) -> Result<Vec<(usize, u64, Option<KeyRange>)>, SyncError> {
        let markers = self.range_markers(run_id, phase, "done").await?;
        Ok(markers
            .iter()
            .map(|(shard, item)| (*shard, number(item, "batches"), range_of(item)))
            .collect())
    }

    /// The ranges of `phase` counted sent, in shard order, with their keys
    /// where they are not a manifest's shard.
    pub async fn ranges_sent(
        &self,
        run_id: &str,
        phase: Phase,
    ) -> Result<Vec<(usize, Option<KeyRange>)>, SyncError> {
        let markers = self.range_markers(run_id, phase, "sent").await?;
        Ok(markers
            .iter()
            .map(|(shard, item)| (*shard, range_of(item)))
            .collect())
    }

    /// `count` new range numbers for the run's splits, the first returned:
    /// one atomic ADD. A number taken by a lister that dies before it
    /// records its split is never used, which costs nothing.
    pub async fn new_ranges(&self, run_id: &str, count: u64) -> Result<u64, SyncError> {
        let added = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(run_id))
            .key("sk", s("ranges"))
            .update_expression("SET #e = :e ADD #n :count")
            .expression_attribute_names("#n", "next")
            .expression_attribute_names("#e", "expires_at")
            .expression_attribute_values(":count", n(count))
            .expression_attribute_values(":e", expires_at())
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| failed("numbering split ranges", classify(&e)))?;
        let next = added.attributes().map_or(0, |a| number(a, "next"));
        Ok(next - count)
    }

    /// Take the lease of a range task until `until_ms`: `None` while a
    /// lister that has not reached its deadline holds it, else whether
    /// this is the first attempt at the task (no lease was ever taken on
    /// it). One conditional write per invocation.
    pub async fn lease(
        &self,
        run_id: &str,
        (phase, shard, seq): (Phase, usize, u32),
        until_ms: i64,
    ) -> Result<Option<bool>, SyncError> {
        let now = emf::now_ms();
        let taken = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("{run_id}#l")))
            .key("sk", s(lease_key(phase, shard, seq)))
            .update_expression("SET #u = :until, #e = :e")
            .condition_expression("attribute_not_exists(#u) OR #u < :now")
            .expression_attribute_names("#u", "until")
            .expression_attribute_names("#e", "expires_at")
            .expression_attribute_values(":until", n(until_ms))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":e", expires_at())
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedOld)
            .send()
            .await;
        match taken {
            Ok(old) => Ok(Some(
                old.attributes().is_none_or(|a| !a.contains_key("until")),
            )),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(None)
            }
            Err(e) => Err(failed("taking a range task's lease", classify(&e))),
        }
    }

    /// Give a range task's lease up once it is handed on, so a duplicate
    /// of the task finds it free and the `handed_on` mark, and is dropped
    /// instead of handed back until the dead-letter queue takes it.
    pub async fn release(
        &self,
        run_id: &str,
        (phase, shard, seq): (Phase, usize, u32),
    ) -> Result<(), SyncError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("{run_id}#l")))
            .key("sk", s(lease_key(phase, shard, seq)))
            .update_expression("SET #u = :zero")
            .expression_attribute_names("#u", "until")
            .expression_attribute_values(":zero", n(0))
            .send()
            .await
            .map_err(|e| failed("releasing a range task's lease", classify(&e)))?;
        Ok(())
    }

    /// Add a counted batch to the timeline: started in one second,
    /// finished with `counts` in another. Best effort (see the module).
    pub async fn record_times(
        &self,
        run_id: &str,
        (started_ms, finished_ms): (i64, i64),
        counts: &Counts,
    ) {
        let (start, finish) = (started_ms.div_euclid(1000), finished_ms.div_euclid(1000));
        let mut finished = vec![
            ("batches_finished".to_owned(), 1),
            ("copied".to_owned(), counts.copied),
            ("updated".to_owned(), counts.updated),
            ("bytes_copied".to_owned(), counts.bytes_copied),
            ("failed".to_owned(), counts.failed),
        ];
        let started = vec![("batches_started".to_owned(), 1)];
        let ticks = if start == finish {
            finished.extend(started);
            vec![(finish, finished)]
        } else {
            vec![(start, started), (finish, finished)]
        };
        for (second, values) in ticks {
            let add = AddExpression::of(&values);
            let added = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(format!("{run_id}#t")))
                .key("sk", s(format!("s#{second:012}")))
                .update_expression(add.expression)
                .set_expression_attribute_names(Some(add.names))
                .set_expression_attribute_values(Some(add.values))
                .send()
                .await;
            if let Err(err) = added {
                tracing::warn!(run_id, error = %classify(&err).message, "the timeline misses a batch");
            }
        }
    }

    /// Every item of a partition whose sort key starts with `prefix`, page
    /// by page, read consistently.
    async fn query(
        &self,
        pk: &str,
        prefix: &str,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, SyncError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(pk))
                .expression_attribute_values(":prefix", s(prefix))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| failed("reading the run's counters", classify(&e)))?;
            items.extend(page.items().iter().cloned());
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// The run's totals: one Query of its counter items.
    pub async fn totals(&self, run_id: &str) -> Result<RunTotals, SyncError> {
        let mut totals = RunTotals::default();
        let mut outcomes = serde_json::Map::new();
        for item in self.query(run_id, "n#").await? {
            totals.batches_sent += number(&item, "batches_sent");
            totals.tasks_sent += number(&item, "tasks_sent");
            totals.batches_done += number(&item, "batches_done");
            totals.batches_with_rows += number(&item, "batches_with_rows");
            for phase in [Phase::Write, Phase::Validate] {
                let i = phase_index(phase);
                let name = phase.name();
                totals.ranges_sent[i] += number(&item, &format!("ranges_sent_{name}"));
                totals.ranges_done[i] += number(&item, &format!("ranges_done_{name}"));
            }
            for name in item.keys().filter_map(|k| k.strip_prefix("c_")) {
                let sum = outcomes.get(name).and_then(serde_json::Value::as_u64);
                let value = sum.unwrap_or(0) + number(&item, &format!("c_{name}"));
                outcomes.insert(name.to_owned(), value.into());
            }
        }
        totals.counts = serde_json::from_value(serde_json::Value::Object(outcomes))
            .map_err(|e| SyncError::Report(format!("the run's counters do not read: {e}")))?;
        Ok(totals)
    }

    /// The run's seconds with copies started or finished, in order.
    pub async fn timeline(&self, run_id: &str) -> Result<Vec<Tick>, SyncError> {
        // A key condition's begins_with needs a prefix of one character at
        // least: DynamoDB refuses an empty one.
        let items = self.query(&format!("{run_id}#t"), "s#").await?;
        Ok(items
            .iter()
            .filter_map(|item| {
                Some(Tick {
                    second: item
                        .get("sk")?
                        .as_s()
                        .ok()?
                        .strip_prefix("s#")?
                        .parse()
                        .ok()?,
                    batches_started: number(item, "batches_started"),
                    batches_finished: number(item, "batches_finished"),
                    copied: number(item, "copied"),
                    updated: number(item, "updated"),
                    bytes_copied: number(item, "bytes_copied"),
                    failed: number(item, "failed"),
                })
            })
            .collect())
    }

    /// Which of `batch_ids` are counted done, with the object naming their
    /// rows (`None`: none). Batched by 100, read consistently.
    pub async fn done(
        &self,
        run_id: &str,
        batch_ids: &[String],
    ) -> Result<HashMap<String, Option<String>>, SyncError> {
        let mut done = HashMap::new();
        for chunk in batch_ids.chunks(100) {
            let keys = chunk
                .iter()
                .map(|id| {
                    HashMap::from([
                        ("pk".to_owned(), s(format!("{run_id}#b#{id}"))),
                        ("sk".to_owned(), s("done")),
                    ])
                })
                .collect();
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .expect("keys are set"),
            );
            let mut wait = Duration::from_millis(50);
            while let Some(asked) = request.take() {
                let answer = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, asked)
                    .send()
                    .await
                    .map_err(|e| failed("reading which batches are done", classify(&e)))?;
                for item in answer
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    let Some(pk) = item.get("pk").and_then(|v| v.as_s().ok()) else {
                        continue;
                    };
                    let Some((_, id)) = pk.split_once("#b#") else {
                        continue;
                    };
                    let rows = item.get("rows").and_then(|v| v.as_s().ok()).cloned();
                    done.insert(id.to_owned(), rows);
                }
                // Keys DynamoDB did not get to (throttled): asked again.
                request = answer
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .filter(|k| !k.keys().is_empty())
                    .cloned();
                if request.is_some() {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_spread_over_every_slot() {
        let mut seen = [0u32; SLOTS as usize];
        for shard in 0..64 {
            for seq in 0..4 {
                for i in 0..10 {
                    seen[slot_of(&format!("{shard:05}-{seq:05}-{i:04}")) as usize] += 1;
                }
            }
        }
        // 2,560 ids over 128 slots: 20 each on average, none empty or hot.
        assert!(seen.iter().all(|&n| (5..=40).contains(&n)), "{seen:?}");
    }

    #[test]
    fn an_add_expression_skips_zeros_and_always_sets_the_expiry() {
        let add = AddExpression::of(&[("a".into(), 0), ("b".into(), 3)]);
        assert_eq!(add.expression, "SET #e = :e ADD #a0 :a0");
        assert_eq!(add.names["#a0"], "b");
        assert_eq!(add.values[":a0"], n(3));
        let none = AddExpression::of(&[("a".into(), 0)]);
        assert_eq!(none.expression, "SET #e = :e");
    }

    #[test]
    fn outcomes_round_trip_through_their_attributes() {
        let counts = Counts {
            copied: 7,
            bytes_copied: 700,
            failed: 1,
            ..Counts::default()
        };
        let attributes = count_attributes(&counts);
        assert_eq!(attributes.len(), 3);
        let map: serde_json::Map<String, serde_json::Value> = attributes
            .into_iter()
            .map(|(k, v)| (k.trim_start_matches("c_").to_owned(), v.into()))
            .collect();
        let back: Counts = serde_json::from_value(serde_json::Value::Object(map)).unwrap();
        assert_eq!(back, counts);
    }
}
