//! `s3-fanout plan SRC DST`: print what a sync would do, cost and take.

use crate::base::error::SyncError;
use crate::base::format::human_bytes;
use crate::plan::{PlanReport, PlanSpec, plan as make_plan};

use crate::base::format::thousands as n;
use crate::cli::output::EXIT_USAGE;

pub async fn plan(spec: PlanSpec, json_output: bool) -> i32 {
    match make_plan(spec).await {
        Ok(report) => {
            if json_output {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("a plan serialises")
                );
            } else {
                print_plan(&report);
            }
            0
        }
        Err(err) => {
            eprintln!("error: {err}");
            if matches!(err, SyncError::Config(_)) {
                EXIT_USAGE
            } else {
                1
            }
        }
    }
}

fn usd(amount: f64) -> String {
    if amount > 0.0 && amount < 0.0001 {
        "<$0.0001".to_owned()
    } else if amount > 0.0 && amount < 0.01 {
        format!("${amount:.4}")
    } else {
        format!("${amount:.2}")
    }
}

/// 95 s → "1m 35s"; 7,300 s → "2h 1m".
fn duration(secs: f64) -> String {
    let secs = secs.round() as u64;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
    }
}

fn requests(requests: &std::collections::BTreeMap<String, u64>) -> String {
    requests
        .iter()
        .map(|(op, count)| format!("{op} {}", n(*count)))
        .collect::<Vec<_>>()
        .join(" · ")
}

fn print_plan(p: &PlanReport) {
    let w = &p.work;
    println!(
        "s3-fanout plan {} -> {}  ({})",
        p.source, p.destination, p.transfer
    );
    println!(
        "  listed     {} source objects ({}), {} destination objects",
        n(w.listed_source),
        human_bytes(w.listed_source_bytes),
        n(w.listed_destination)
    );
    println!(
        "  objects    copy {} ({}) · update {} ({}) · delete {}",
        n(w.copy.objects),
        human_bytes(w.copy.bytes),
        n(w.update.objects),
        human_bytes(w.update.bytes),
        n(w.delete)
    );
    let skipped: Vec<String> = w
        .skip
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(why, count)| format!("{} {}", why.replace('_', " "), n(*count)))
        .collect();
    println!(
        "  skip       {}",
        if skipped.is_empty() {
            "nothing".to_owned()
        } else {
            skipped.join(" · ")
        }
    );
    let l = &p.local;
    println!("\n  local runtime (s3-fanout sync)");
    println!("    requests   {}", requests(&l.s3_requests));
    println!(
        "    verify     {}",
        if l.verify_by_head {
            "HEAD of each written key"
        } else {
            "list both sides again"
        }
    );
    println!(
        "    cost       {}  (S3 requests {}, data transfer {})",
        usd(l.total_usd),
        usd(l.cost_usd["s3_requests"]),
        usd(l.cost_usd["data_transfer"])
    );
    println!(
        "    time       {}  (listing {} as measured now; copies at {:.0} objects/s, {}/s: {})",
        duration(l.wall_secs),
        duration(l.listing_secs),
        l.rate.objects_per_sec,
        human_bytes(l.rate.bytes_per_sec as u64),
        l.rate.basis
    );
    println!("\n  audit (s3-fanout check, writes nothing)");
    for (name, c) in [("check", &p.check), ("--checksum", &p.check_checksum)] {
        println!(
            "    {name:<10} {} pairs by checksums · {} · {} · {}",
            n(c.pairs_headed),
            requests(&c.s3_requests),
            usd(c.total_usd),
            duration(c.wall_secs)
        );
    }
    match &p.serverless {
        Some(s) => {
            println!("\n  serverless runtime (s3-fanout run)");
            println!("    requests   {}", requests(&s.s3_requests));
            println!(
                "    SQS        {} messages, {} requests",
                n(s.sqs_messages),
                n(s.sqs_requests)
            );
            let invocations: Vec<String> = s
                .lambda_invocations
                .iter()
                .map(|(f, count)| format!("{f} {}", n(*count)))
                .collect();
            println!(
                "    Lambda     {} invocations ({}), {:.1} GB-s ({})",
                n(s.lambda_invocations.values().sum()),
                invocations.join(" · "),
                s.lambda_gb_seconds.values().sum::<f64>(),
                s.stack.architecture
            );
            println!(
                "    Step Fns   {} state transitions, {} history events, {} shards (largest {} keys, {} listers at once)",
                n(s.state_transitions),
                n(s.history_events),
                n(s.shards),
                n(s.largest_shard_keys),
                s.stack.shard_concurrency
            );
            println!(
                "    DynamoDB   {} write units, {} read units (run counters)",
                n(s.dynamodb_write_units),
                n(s.dynamodb_read_units)
            );
            println!(
                "    cost       {}  (S3 {}, SQS {}, Lambda {}, Step Functions {}, DynamoDB {})",
                usd(s.total_usd),
                usd(s.cost_usd["s3_requests"]),
                usd(s.cost_usd["sqs"]),
                usd(s.cost_usd["lambda"]),
                usd(s.cost_usd["step_functions"]),
                usd(s.cost_usd["dynamodb"])
            );
            println!(
                "    time       {}  (write phase done after {}, at {} copiers at once, {} tasks each; listing {}, S3's per-prefix write rate {})",
                duration(s.wall_secs),
                duration(s.write_secs),
                s.stack.copier_concurrency,
                s.stack.copier_task_concurrency,
                duration(s.listing_secs),
                duration(s.partition_bound_secs)
            );
            // Worth a deploy only where the copiers, not S3, set the pace.
            if let Some(f) = p
                .serverless_first_copy
                .as_ref()
                .filter(|f| f.wall_secs < 0.8 * s.wall_secs)
            {
                println!(
                    "    faster     {}, {}  deployed with the first-copy settings (README): ListingConcurrency={} ListerStreams={} CopierMaxConcurrency={} CopierBatchSize={} CopierTaskConcurrency={}",
                    duration(f.wall_secs),
                    usd(f.total_usd),
                    f.stack.shard_concurrency,
                    f.stack.lister_streams,
                    f.stack.copier_concurrency,
                    f.stack.copier_batch_size,
                    f.stack.copier_task_concurrency
                );
            }
        }
        None => println!("\n  serverless runtime: not for a directory (it syncs buckets)"),
    }
    println!(
        "\n  prices     {} {}, {} ({})",
        p.prices.region, p.prices.currency, p.prices.date, p.prices.file
    );
    for note in &p.notes {
        println!("  assumes    {note}");
    }
}
