//! `scripts/disk-room.sh`, which CI runs before building: on a disk short
//! of room it drops what cargo rebuilds on demand (a stale generation of
//! test executables, incremental state) and keeps the libraries; with too
//! little room left it stops with the figures. A full disk once failed the
//! project's CI far from its cause: moto answered UploadPart with HTTP 500
//! when it could not spool a 5 MiB part (ENOSPC).

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

fn script(target: &Path, want_gib: &str, need_gib: &str) -> Output {
    Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/disk-room.sh"))
        .arg(target)
        .env("DISK_WANT_GIB", want_gib)
        .env("DISK_NEED_GIB", need_gib)
        .output()
        .expect("bash runs")
}

fn file(path: &Path, executable: bool, age: Duration) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, b"x").unwrap();
    if executable {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

#[test]
fn short_of_room_it_drops_stale_executables_and_incremental_state_only() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path();
    let deps = target.join("debug/deps");
    let hours = Duration::from_secs(2 * 3600);
    file(&deps.join("kms-0123456789abcdef"), true, hours);
    file(&deps.join("libaws_sdk_s3-0123.rlib"), false, hours);
    file(&deps.join("kms-0123456789abcdef.d"), false, hours);
    file(&deps.join("kms-fedcba9876543210"), true, Duration::ZERO);
    file(
        &target.join("debug/incremental/kms-1/s-1/query-cache.bin"),
        false,
        hours,
    );

    // A threshold no disk meets: prune whatever is prunable.
    let out = script(target, "1000000", "0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("pruned"), "{stderr}");
    assert!(
        !deps.join("kms-0123456789abcdef").exists(),
        "the stale executable stays"
    );
    assert!(
        !target.join("debug/incremental").exists(),
        "incremental state stays"
    );
    for kept in [
        "libaws_sdk_s3-0123.rlib",
        "kms-0123456789abcdef.d",
        "kms-fedcba9876543210",
    ] {
        assert!(deps.join(kept).exists(), "{kept} was removed");
    }
}

#[test]
fn with_room_it_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("debug/deps/kms-0123456789abcdef");
    file(&stale, true, Duration::from_secs(2 * 3600));
    let out = script(dir.path(), "0", "0");
    assert!(out.status.success());
    assert!(stale.exists());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("pruned"));
}

#[test]
fn without_enough_room_it_stops_and_says_how_much_there_is() {
    let dir = tempfile::tempdir().unwrap();
    let out = script(dir.path(), "0", "1000000");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("GiB free is not enough"), "{stderr}");
    assert!(
        stderr.contains(&dir.path().display().to_string()),
        "{stderr}"
    );
}
