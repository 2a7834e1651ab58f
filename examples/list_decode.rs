//! What reading a ListObjectsV2 page costs this process: the SDK's own
//! deserializer against the page parser the listings use
//! (`src/backend/s3/list_page.rs`), on the same 1,000-object pages served
//! from loopback, one request at a time, through the same client.
//!
//!     cargo run --release --example list_decode -- [PAGES]
//!
//! `scripts/bench-list-decode.sh` runs it. It prints, for each reader, the
//! process CPU and wall time per page and per object; the server's share
//! (a canned page written back) is the same for both.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use s3_fanout::backend::s3::list_page::{Page, ReadPage};
use s3_fanout::base::client::{ClientSettings, build_s3_client};

const OBJECTS: usize = 1000;

/// A page as S3 writes one: URL-encoded keys under date folders, quoted
/// ETags (as `&quot;` entities), checksum fields, sizes, storage classes.
fn page_xml() -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>bench</Name><Prefix></Prefix><KeyCount>1000</KeyCount><MaxKeys>1000</MaxKeys><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>",
    );
    for i in 0..OBJECTS {
        xml.push_str(&format!(
            "<Contents><Key>logs/2026/12/{:02}/host-{:03}/part-{i:010}.json.gz</Key><LastModified>2026-12-{:02}T{:02}:{:02}:17.000Z</LastModified><ETag>&quot;{:032x}&quot;</ETag><ChecksumAlgorithm>CRC64NVME</ChecksumAlgorithm><ChecksumType>FULL_OBJECT</ChecksumType><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
            1 + i % 28,
            i % 997,
            1 + i % 28,
            i % 24,
            i % 60,
            (i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
            1_000 + i * 37,
        ));
    }
    xml.push_str("</ListBucketResult>");
    xml
}

/// This process's CPU time so far (user and system, all threads).
fn cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[tokio::main]
async fn main() {
    let pages: usize = std::env::args()
        .nth(1)
        .map_or(300, |a| a.parse().expect("PAGES"));
    let body = Bytes::from(page_xml());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let served = body.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let body = served.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_request| {
                    let body = body.clone();
                    async move {
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/xml")
                                .body(Full::new(body))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    // SAFETY: set before any other thread reads the environment.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let client = build_s3_client(
        &ClientSettings {
            endpoint_url: Some(format!("http://{address}")),
            force_path_style: true,
            ..Default::default()
        },
        None,
    )
    .await;

    println!(
        "ListObjectsV2 pages of {OBJECTS} objects ({} KiB each), {pages} pages per reader, one at a time:",
        body.len() / 1024
    );
    println!("| reader | CPU µs/page | CPU µs/object | wall µs/page | objects read |");
    println!("|---|---:|---:|---:|---:|");
    let mut figures = Vec::new();
    for fast in [false, true, false, true] {
        let (started, cpu_started) = (Instant::now(), cpu());
        let mut objects = 0usize;
        for _ in 0..pages {
            let request = client
                .list_objects_v2()
                .bucket("bench")
                .encoding_type(aws_sdk_s3::types::EncodingType::Url);
            let page = if fast {
                let read = ReadPage::default();
                let output = request
                    .customize()
                    .interceptor(read.clone())
                    .send()
                    .await
                    .unwrap();
                read.take().unwrap_or_else(|| Page::from_sdk(&output))
            } else {
                Page::from_sdk(&request.send().await.unwrap())
            };
            objects += page.objects.len();
        }
        let (wall, cpu_used) = (started.elapsed(), cpu() - cpu_started);
        assert_eq!(objects, pages * OBJECTS, "every object read");
        figures.push((fast, cpu_used, wall, objects));
    }
    // The first round of each warms up (connections, allocator): report
    // the second.
    for (fast, cpu_used, wall, objects) in &figures[2..] {
        let name = if *fast {
            "list_page (quick-xml)"
        } else {
            "the SDK's deserializer"
        };
        println!(
            "| {name} | {:.0} | {:.2} | {:.0} | {objects} |",
            cpu_used.as_secs_f64() * 1e6 / pages as f64,
            cpu_used.as_secs_f64() * 1e6 / *objects as f64,
            wall.as_secs_f64() * 1e6 / pages as f64,
        );
    }
    let ratio = figures[2].1.as_secs_f64() / figures[3].1.as_secs_f64();
    println!("CPU per page, SDK / list_page: {ratio:.2}x");
}
