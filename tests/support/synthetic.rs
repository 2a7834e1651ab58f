//! The synthetic S3 endpoint of `scripts/bench/synthetic_s3.py`, for tests
//! that need listings of more keys than moto could be seeded with.

use std::time::Duration;

/// The synthetic listing server (`scripts/bench/synthetic_s3.py`): buckets
/// whose listings are computed, so 10,000 objects cost no seeding. Stopped
/// when dropped.
pub struct Synthetic {
    child: std::process::Child,
    pub endpoint: String,
}

impl Synthetic {
    pub fn start() -> Synthetic {
        // Its clients are the library's, which read the test credentials.
        super::init_env();
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench/synthetic_s3.py");
        let child = std::process::Command::new("python3")
            .args([script, "--port-file", port_file.to_str().unwrap()])
            .arg("--exit-with-stdin")
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs the synthetic server");
        let started = std::time::Instant::now();
        let port = loop {
            if let Ok(port) = std::fs::read_to_string(&port_file) {
                break port.trim().to_owned();
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no synthetic server"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Synthetic {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// One endpoint for the whole test binary, which its stack's proxy
    /// routes `syn-*` buckets to: tests of one binary share the proxy, so
    /// an endpoint of their own would be dropped under the next one. Never
    /// dropped; it exits with the process (its stdin closes).
    pub fn shared(proxy: &super::fault_proxy::FaultProxy) -> &'static Synthetic {
        static SHARED: std::sync::OnceLock<Synthetic> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let synthetic = Synthetic::start();
            proxy.route_buckets("syn-", &synthetic.endpoint);
            synthetic
        })
    }

    /// Requests answered so far, by operation.
    pub fn counts(&self) -> serde_json::Value {
        self.get("/__synthetic/counts")
    }

    /// A control endpoint's JSON answer (`/__synthetic/…`).
    pub fn get(&self, path: &str) -> serde_json::Value {
        use std::io::{Read, Write};
        let address = self.endpoint.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (_, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }
}

impl Drop for Synthetic {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
