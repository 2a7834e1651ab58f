//! Tuning of the system allocator, set once at the start of every binary.
//!
//! A listing page is a few hundred kilobytes at every step: the response
//! body, the SDK's parsed objects, our entries. With pieces listing at once,
//! glibc serves these from its heaps, where freed space is fragmented among
//! small long-lived allocations and so is rarely given back: peak RSS then
//! climbs with the length of the run rather than with what is in use
//! (34 MiB at a million keys for 11 MiB of live heap, in
//! `scripts/bench-memory-scaling.sh`). Served by mmap instead, a page's
//! buffers go back to the system as soon as they are freed. Large buffers
//! are few (a handful per page, per part copy), so the extra system calls
//! cost nothing measurable.

/// Allocations at or above this size are mapped on their own, not carved
/// from a heap. glibc's default starts at 128 KiB and rises to 32 MiB with
/// use, which puts every page buffer back in the heaps.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: libc::c_int = 64 * 1024;
/// Free space at a heap's top above this is returned to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD_BYTES: libc::c_int = 128 * 1024;

/// The multi-threaded tokio runtime a binary runs on, started after
/// [`tune`]. Every binary's plain `fn main` begins with it (no
/// `#[tokio::main]`, which would build the runtime first), so the
/// allocator is set while the main thread is still the only one.
pub fn tuned_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tune();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Set the allocator's thresholds; call before the runtime starts, while
/// this is the process's only thread (see [`tuned_runtime`]).
/// Elsewhere than glibc it does nothing (musl and others keep their own).
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called
    // before any other thread exists, and a refused value leaves the
    // default in place, which is still correct.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_tuned_runtime_runs_tasks_on_its_worker_threads() {
        let runtime = super::tuned_runtime().expect("a runtime");
        let caller = std::thread::current().id();
        let worker = runtime.block_on(async {
            tokio::spawn(async { std::thread::current().id() })
                .await
                .expect("the task ran")
        });
        assert_ne!(
            worker, caller,
            "a multi-threaded runtime with its own workers"
        );
    }
}
