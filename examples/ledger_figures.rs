//! Figures of the ledger of proven pairs at scale: bytes per entry on disk,
//! the time to commit (spool, merge, write) and to read it back through
//! cursors, for N pairs of KMS-like ETags (random hex, which zstd cannot
//! squeeze) under date-folder keys.
//!
//!     cargo run --release --example ledger_figures -- [ENTRIES] [PIECES]
//!
//! `scripts/bench-ledger.sh` runs it; the README quotes its output.

use std::time::Instant;

use s3_fanout::backend::ledger::proven::Proven;
use s3_fanout::backend::ledger::read::Ledger;
use s3_fanout::backend::ledger::store::StateStore;
use s3_fanout::backend::ledger::write::LedgerWriter;

fn hex(mut state: u64) -> String {
    let mut out = String::with_capacity(32);
    for _ in 0..2 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.push_str(&format!("{:016x}", state ^ (state >> 29)));
    }
    out
}

fn key(i: u64) -> String {
    format!(
        "logs/2026/{:02}/{:02}/host-{:03}/part-{i:010}.json.gz",
        1 + (i / 2_000_000) % 12,
        1 + (i / 70_000) % 28,
        i % 997
    )
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let entries: u64 = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("ENTRIES"));
    let pieces: u64 = args.next().map_or(8, |a| a.parse().expect("PIECES"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = StateStore::Dir(dir.path().to_owned());
    let writer = LedgerWriter::new(store.clone(), "s3://src", "s3://dst", "bench").expect("spool");

    // Recorded out of key order, as copy workers finish.
    let started = Instant::now();
    let stride = 7_919u64;
    for n in 0..entries {
        let i = (n * stride) % entries;
        writer.record(Proven {
            key: key(i),
            size: 1_000 + i % 100_000,
            source_etag: hex(i),
            destination_etag: hex(!i),
        });
    }
    let recorded = started.elapsed();
    let started = Instant::now();
    let committed = writer.commit().await.expect("commit");
    let commit = started.elapsed();
    let bytes: u64 = std::fs::read_dir(dir.path())
        .expect("ledger dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum();

    // Read back as `pieces` cursors over disjoint key ranges, every key asked.
    let ledger = Ledger::open(store, "s3://src", "s3://dst").await;
    let started = Instant::now();
    let mut keys: Vec<String> = (0..entries).map(key).collect();
    keys.sort();
    let per_piece = keys.len().div_ceil(pieces as usize).max(1);
    let mut found = 0u64;
    for chunk in keys.chunks(per_piece) {
        let mut cursor = ledger.cursor();
        for k in chunk {
            if cursor.lookup(k).await.is_some() {
                found += 1;
            }
        }
    }
    let read = started.elapsed();
    assert_eq!(found, entries, "every entry read back");

    println!(
        "ledger of {entries} proven pairs, {} chunks",
        committed.chunks
    );
    println!(
        "  on disk     {bytes} bytes, {:.1} bytes per pair",
        bytes as f64 / entries as f64
    );
    println!(
        "  record      {:.2} s ({:.0} pairs/s, spooled in sorted runs)",
        recorded.as_secs_f64(),
        entries as f64 / recorded.as_secs_f64()
    );
    println!(
        "  commit      {:.2} s ({:.0} pairs/s: merge, chunk, write)",
        commit.as_secs_f64(),
        entries as f64 / commit.as_secs_f64()
    );
    println!(
        "  read back   {:.2} s ({:.0} lookups/s over {pieces} cursors)",
        read.as_secs_f64(),
        entries as f64 / read.as_secs_f64()
    );
}
