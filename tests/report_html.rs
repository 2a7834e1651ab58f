//! report.html in a real browser: a local sync with failures, its page
//! opened in headless Chromium, and the numbers checked twice, in the DOM
//! Chromium built and in the pixels it drew (read back by OCR).
//!
//! Needs Debian's `chromium` and `tesseract-ocr` packages; scripts/test.sh
//! installs them. Without them this test fails, saying so.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::fault_proxy::{FaultProxy, Op, Rule};
use support::*;

/// Keys the proxy refuses to copy: the failures table must show them,
/// escaped, and the page must still render.
const REFUSED: [&str; 2] = ["refused <one> & \"two\".txt", "日本/refused-2"];

fn tool(name: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    found.unwrap_or_else(|| {
        panic!(
            "{name} is not installed: this test renders the report in a real browser and reads it back. \
             Install Debian's packages: apt-get install --no-install-recommends chromium tesseract-ocr \
             (scripts/test.sh does)"
        )
    })
}

/// Chromium, headless, on a file: its DOM after rendering, and a screenshot.
fn chromium(page: &Path, screenshot: &Path) -> String {
    let chromium = tool("chromium");
    let url = format!("file://{}", page.display());
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        // Nothing leaves the machine: the page is self-contained anyway.
        "--proxy-server=127.0.0.1:9",
    ];
    let profile = tempfile::tempdir().unwrap();
    let profile_arg = format!("--user-data-dir={}", profile.path().display());
    let dom = Command::new(&chromium)
        .args(common)
        .arg(&profile_arg)
        .args(["--dump-dom", &url])
        .output()
        .expect("chromium runs");
    assert!(
        dom.status.success(),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let shot = Command::new(&chromium)
        .args(common)
        .arg(&profile_arg)
        .arg(format!("--screenshot={}", screenshot.display()))
        .args(["--window-size=1280,1400", &url])
        .output()
        .expect("chromium runs");
    assert!(
        shot.status.success() && screenshot.exists(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    String::from_utf8_lossy(&dom.stdout).into_owned()
}

/// The text of the element with `id`, from serialised HTML.
fn element_text<'a>(dom: &'a str, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\">");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no element #{id} in the rendered page"))
        + marker.len();
    let end = start + dom[start..].find('<').expect("the element closes");
    &dom[start..end]
}

/// A PNG's width and height, from its IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

fn thousands(n: u64) -> String {
    s3_fanout::base::format::thousands(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_html_report_of_a_real_run_renders_its_numbers_in_chromium() {
    let client = s3().await;
    let (src, dst) = bucket_pair(&client, "html").await;
    for i in 0..1_234u64 {
        put(
            &client,
            &src,
            &format!("data/obj-{i:05}"),
            body(i, 200 + (i % 5) as usize * 300),
        )
        .await;
    }
    for key in REFUSED {
        put(&client, &src, key, body(7, 100)).await;
    }
    let proxy = FaultProxy::start(&moto().endpoint);
    for key in REFUSED {
        proxy.add_rule(Rule::on(Op::CopyObject).key(key).respond(
            403,
            "<Error><Code>AccessDenied</Code><Message>refused by the test</Message></Error>",
        ));
    }
    let reports = tempfile::tempdir().unwrap();
    let report_dir = reports.path().to_str().unwrap();
    let (source, destination) = (format!("s3://{src}"), format!("s3://{dst}"));
    let out = run_cli(&[
        "sync",
        &source,
        &destination,
        "--endpoint-url",
        proxy.endpoint(),
        "--report",
        report_dir,
        "--json",
    ]);
    assert_eq!(out.status, 1, "two objects fail: {}", out.stderr);
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();
    let run_id = summary["run_id"].as_str().unwrap().to_owned();
    let copied = count(&summary, "copied");
    let bytes = count(&summary, "bytes_copied");
    assert_eq!(copied, 1_234);
    assert_eq!(count(&summary, "failed"), 2);
    assert!(
        summary["timeline"].as_array().is_some_and(|t| t.len() >= 2),
        "{summary}"
    );

    // The sync wrote the page beside summary.json.
    let folder = reports.path().join(&run_id);
    let written = folder.join("report.html");
    assert_eq!(summary["report_html"], written.display().to_string());
    assert!(written.exists());

    // `report RUN --open` renders it again from summary.json and failures.csv.
    let out_dir = tempfile::tempdir().unwrap();
    let page = out_dir.path().join("page.html");
    let folder_arg = folder.display().to_string();
    let opened = cli()
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .args([
            "report",
            &folder_arg,
            "--open",
            "--out",
            page.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&opened.stdout);
    let stderr = String::from_utf8_lossy(&opened.stderr);
    assert_eq!(
        opened.status.code(),
        Some(1),
        "the run's exit code: {stdout}{stderr}"
    );
    assert!(stderr.contains("no browser here"), "{stderr}");
    assert!(
        stdout.contains(&format!("html       {}", page.display())),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(&page).unwrap(),
        std::fs::read_to_string(&written).unwrap(),
        "the same page either way"
    );

    let screenshot = out_dir.path().join("page.png");
    let dom = chromium(&page, &screenshot);
    assert_eq!(element_text(&dom, "run-id"), run_id);
    assert_eq!(element_text(&dom, "copied"), thousands(copied));
    assert_eq!(element_text(&dom, "failed"), "2");
    assert_eq!(element_text(&dom, "status"), "failed");
    assert_eq!(element_text(&dom, "exit-code"), "1");
    assert_eq!(
        element_text(&dom, "bytes"),
        s3_fanout::base::format::human_bytes(bytes)
    );
    // Exact bytes in the summary table, and each refused key in the
    // failures table, as text (the DOM serialiser escapes it again).
    assert!(dom.contains(&format!("({} bytes)", thousands(bytes))));
    assert!(
        dom.contains("refused &lt;one&gt; &amp; \"two\".txt"),
        "the key, escaped, as text"
    );
    assert!(dom.contains("日本/refused-2"));
    assert_eq!(dom.matches("AccessDenied").count(), 2);
    assert!(
        dom.contains("<svg id=\"throughput\""),
        "a chart of the timeline"
    );
    assert!(
        dom.contains("list and diff") && dom.contains("verify"),
        "the phases"
    );

    // The pixels: a screenshot of the window, and the big numbers read
    // back from it.
    let png = std::fs::read(&screenshot).unwrap();
    assert_eq!(png_size(&png), (1280, 1400));
    let tesseract = tool("tesseract");
    let ocr = Command::new(tesseract)
        .arg(&screenshot)
        .arg("stdout")
        .output()
        .expect("tesseract runs");
    let text = String::from_utf8_lossy(&ocr.stdout);
    println!("--- OCR ---\n{text}");
    assert!(
        ocr.status.success(),
        "{}",
        String::from_utf8_lossy(&ocr.stderr)
    );
    for expected in [
        thousands(copied),
        "objects per second".to_owned(),
        "bytes copied".to_owned(),
        "exit code 1".to_owned(),
        "Throughput over time".to_owned(),
    ] {
        assert!(
            text.contains(&expected),
            "OCR did not read {expected:?}:\n{text}"
        );
    }
}
