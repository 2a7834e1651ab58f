//! Parse, then validate: [`ExportSpec`] and [`ImportSpec`] are the flags as
//! given (clap, each with its environment variable); `TryFrom` turns them
//! into the [`ExportOptions`] and [`ImportOptions`] the runs read, one
//! small check per problem, every one before anything is written.

use std::path::{Path, PathBuf};

use aws_smithy_types::DateTime;

use super::codec::Compression;
use crate::base::client::ClientSettings;
use crate::base::error::SyncError;
use crate::model::location::{ReportLocation, S3Location};
use crate::model::options::{ClientFlags, parse_date};

/// `s3-fanout export SRC ARCHIVE`, as given.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportSpec {
    /// Source, s3://BUCKET[/PREFIX]
    #[arg(value_name = "SRC")]
    pub source: String,
    /// The archive to write: a tar, zstd-compressed with --zstd or when the
    /// name ends in .zst. Written under a temporary name beside it, renamed
    /// into place once complete.
    #[arg(value_name = "ARCHIVE")]
    pub archive: PathBuf,
    /// Only carry objects last modified at or after this time (RFC 3339, or
    /// YYYY-MM-DD for midnight UTC). The manifest still lists every key.
    #[arg(long, value_name = "DATE", conflicts_with = "since_manifest")]
    pub since: Option<String>,
    /// Only carry objects added or changed (size or ETag) since this
    /// previous archive, or a manifest taken out of one.
    #[arg(long, value_name = "PREV")]
    pub since_manifest: Option<PathBuf>,
    /// Export the source as it was at this time (RFC 3339, or a date):
    /// each key's version then, from a versioned bucket; a key deleted
    /// then, or not yet made, is not in the archive.
    #[arg(long, value_name = "TIME")]
    pub as_of: Option<String>,
    /// Compress the tar with zstd.
    #[arg(long)]
    pub zstd: bool,
    /// Also write the manifest to FILE (a later --since-manifest can take
    /// it instead of the whole archive).
    #[arg(long, value_name = "FILE")]
    pub manifest_out: Option<PathBuf>,
    /// Objects read ahead of the archive writer; each may hold up to 8 MiB.
    #[arg(
        long,
        default_value_t = 8,
        value_name = "N",
        env = "S3_FANOUT_ARCHIVE_CONCURRENCY"
    )]
    pub concurrency: usize,
    /// Write summary.json and failures.csv to this directory or s3:// prefix.
    #[arg(long, value_name = "DIR_OR_S3_URL", env = "S3_FANOUT_REPORT")]
    pub report: Option<String>,
    /// Account that must own the source bucket.
    #[arg(long, value_name = "ACCOUNT", env = "S3_FANOUT_EXPECTED_SOURCE_OWNER")]
    pub expected_source_owner: Option<String>,
    /// Accept requester-pays charges.
    #[arg(long, env = "S3_FANOUT_REQUEST_PAYER")]
    pub request_payer: bool,
    #[command(flatten)]
    pub client: ClientFlags,
}

/// `s3-fanout import ARCHIVE DST`, as given.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportSpec {
    /// An archive written by `s3-fanout export`.
    #[arg(value_name = "ARCHIVE")]
    pub archive: PathBuf,
    /// Destination, s3://BUCKET[/PREFIX]
    #[arg(value_name = "DST")]
    pub destination: String,
    /// Delete destination objects the archive's manifest does not list.
    #[arg(long)]
    pub delete: bool,
    /// Objects uploaded at once (each extracted to a temp file first).
    #[arg(
        long,
        default_value_t = 8,
        value_name = "N",
        env = "S3_FANOUT_ARCHIVE_CONCURRENCY"
    )]
    pub concurrency: usize,
    /// Where objects are extracted before upload (default: the system's
    /// temp directory); needs room for --concurrency + 1 objects.
    #[arg(long, value_name = "DIR", env = "S3_FANOUT_TEMP_DIR")]
    pub temp_dir: Option<PathBuf>,
    /// Write summary.json and failures.csv to this directory or s3:// prefix.
    #[arg(long, value_name = "DIR_OR_S3_URL", env = "S3_FANOUT_REPORT")]
    pub report: Option<String>,
    /// Account that must own the destination bucket.
    #[arg(long, value_name = "ACCOUNT", env = "S3_FANOUT_EXPECTED_DEST_OWNER")]
    pub expected_dest_owner: Option<String>,
    #[command(flatten)]
    pub client: ClientFlags,
}

/// What an export leaves out.
#[derive(Debug, Clone)]
pub enum Since {
    Full,
    Date { text: String, at: DateTime },
    Manifest(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub source: S3Location,
    pub archive: PathBuf,
    pub since: Since,
    pub compression: Compression,
    pub manifest_out: Option<PathBuf>,
    pub concurrency: usize,
    pub report: Option<ReportLocation>,
    pub client: ClientSettings,
    pub expected_owner: Option<String>,
    pub request_payer: bool,
    /// `--as-of`, in milliseconds since the Unix epoch.
    pub as_of_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub archive: PathBuf,
    pub destination: S3Location,
    pub delete: bool,
    pub concurrency: usize,
    pub temp_dir: Option<PathBuf>,
    pub report: Option<ReportLocation>,
    pub client: ClientSettings,
    pub expected_owner: Option<String>,
}

fn config(why: String) -> SyncError {
    SyncError::Config(why)
}

fn at_least_one(concurrency: usize) -> Result<usize, SyncError> {
    if concurrency == 0 {
        return Err(config("--concurrency must be at least 1".into()));
    }
    Ok(concurrency)
}

impl TryFrom<ExportSpec> for ExportOptions {
    type Error = SyncError;

    fn try_from(spec: ExportSpec) -> Result<Self, SyncError> {
        let source: S3Location = spec.source.parse()?;
        let archive = spec.archive;
        if archive.is_dir() {
            return Err(config(format!(
                "ARCHIVE {} is a directory; name the archive file to write",
                archive.display()
            )));
        }
        let parent = match archive.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            return Err(config(format!(
                "the directory of ARCHIVE, {}, does not exist",
                parent.display()
            )));
        }
        let since = match (spec.since, spec.since_manifest) {
            (Some(text), _) => {
                let at = parse_date("--since", &text)?;
                Since::Date { text, at }
            }
            (None, Some(previous)) => {
                if !previous.is_file() {
                    return Err(config(format!(
                        "--since-manifest {}: no such file",
                        previous.display()
                    )));
                }
                if same_file(&previous, &archive) {
                    return Err(config(
                        "--since-manifest names the archive being written".into(),
                    ));
                }
                Since::Manifest(previous)
            }
            (None, None) => Since::Full,
        };
        if let Some(out) = &spec.manifest_out
            && same_file(out, &archive)
        {
            return Err(config("--manifest-out names the archive itself".into()));
        }
        let zst = archive
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("zst"));
        Ok(ExportOptions {
            source,
            archive,
            since,
            compression: if spec.zstd || zst {
                Compression::Zstd
            } else {
                Compression::None
            },
            manifest_out: spec.manifest_out,
            concurrency: at_least_one(spec.concurrency)?,
            report: spec.report.as_deref().map(str::parse).transpose()?,
            client: {
                spec.client.validate()?;
                spec.client.settings(None, None)
            },
            expected_owner: spec.expected_source_owner,
            request_payer: spec.request_payer,
            as_of_ms: spec
                .as_of
                .as_deref()
                .map(|text| {
                    let at = parse_date("--as-of", text)?;
                    at.to_millis()
                        .map_err(|e| config(format!("--as-of {text:?}: {e}")))
                })
                .transpose()?,
        })
    }
}

impl TryFrom<ImportSpec> for ImportOptions {
    type Error = SyncError;

    fn try_from(spec: ImportSpec) -> Result<Self, SyncError> {
        if !spec.archive.is_file() {
            return Err(config(format!(
                "ARCHIVE {}: no such file",
                spec.archive.display()
            )));
        }
        if let Some(dir) = &spec.temp_dir
            && !dir.is_dir()
        {
            return Err(config(format!(
                "--temp-dir {}: no such directory",
                dir.display()
            )));
        }
        Ok(ImportOptions {
            archive: spec.archive,
            destination: spec.destination.parse()?,
            delete: spec.delete,
            concurrency: at_least_one(spec.concurrency)?,
            temp_dir: spec.temp_dir,
            report: spec.report.as_deref().map(str::parse).transpose()?,
            client: {
                spec.client.validate()?;
                spec.client.settings(None, None)
            },
            expected_owner: spec.expected_dest_owner,
        })
    }
}

/// Whether two paths name the same file (or would, once `b` exists).
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Export {
        #[command(flatten)]
        spec: ExportSpec,
    }

    #[derive(Parser)]
    struct Import {
        #[command(flatten)]
        spec: ImportSpec,
    }

    fn export(args: &[&str]) -> Result<ExportOptions, String> {
        let spec = Export::try_parse_from(std::iter::once("export").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?
            .spec;
        ExportOptions::try_from(spec).map_err(|e| e.to_string())
    }

    #[test]
    fn export_options_pick_compression_and_baseline() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name).display().to_string();
        let plain = export(&["s3://bkt/p", &at("a.tar")]).unwrap();
        assert_eq!(plain.compression, Compression::None);
        assert_eq!(plain.source.prefix, "p/");
        assert!(matches!(plain.since, Since::Full));
        assert_eq!(
            export(&["s3://bkt", &at("a.tar.zst")]).unwrap().compression,
            Compression::Zstd
        );
        assert_eq!(
            export(&["s3://bkt", &at("a.tar"), "--zstd"])
                .unwrap()
                .compression,
            Compression::Zstd
        );
        let dated = export(&["s3://bkt", &at("a.tar"), "--since", "2024-03-01"]).unwrap();
        assert!(matches!(dated.since, Since::Date { at, .. } if at.secs() == 1_709_251_200));
        let local = export(&[
            "s3://bkt",
            &at("a.tar"),
            "--endpoint-url",
            "http://127.0.0.1:9000",
        ])
        .unwrap();
        assert!(local.client.force_path_style);
    }

    #[test]
    fn bad_export_flags_are_refused_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name).display().to_string();
        let refused = |args: &[&str], why: &str| {
            let err = export(args).unwrap_err();
            assert!(err.contains(why), "{args:?}: {err}");
        };
        refused(&["bkt", &at("a.tar")], "s3://");
        refused(
            &["s3://bkt", &at("a.tar"), "--since", "yesterday"],
            "--since",
        );
        refused(&["s3://bkt", &at("missing/a.tar")], "does not exist");
        refused(&["s3://bkt", &at("")], "directory");
        refused(
            &["s3://bkt", &at("a.tar"), "--since-manifest", &at("nope")],
            "no such file",
        );
        refused(
            &[
                "s3://bkt",
                &at("a.tar"),
                "--since",
                "2024-01-01",
                "--since-manifest",
                &at("x"),
            ],
            "cannot be used with",
        );
        refused(
            &["s3://bkt", &at("a.tar"), "--concurrency", "0"],
            "at least 1",
        );
    }

    #[test]
    fn import_needs_an_existing_archive() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("a.tar").display().to_string();
        let spec = Import::try_parse_from(["import", &missing, "s3://bkt"])
            .unwrap()
            .spec;
        let err = ImportOptions::try_from(spec).unwrap_err().to_string();
        assert!(err.contains("no such file"), "{err}");
    }
}
