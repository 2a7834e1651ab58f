//! Where a ledger lives: a directory (the CLI's default, under the user's
//! state directory) or a prefix of a bucket (`--state s3://…`, and the
//! serverless runtime's report bucket). Each holds a manifest and the
//! chunks it names; every write is a whole file or object, and the
//! manifest is written last.

use std::path::PathBuf;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;

use crate::base::error::classify;
use crate::model::location::{Location, S3Location};

/// Chunk names start with this, so clean-up never touches anything else.
pub const CHUNK_PREFIX: &str = "chunk-";

/// A ledger's home.
#[derive(Clone, Debug)]
pub enum StateStore {
    Dir(PathBuf),
    S3 {
        client: Client,
        location: S3Location,
    },
}

impl std::fmt::Display for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateStore::Dir(dir) => write!(f, "{}", dir.display()),
            StateStore::S3 { location, .. } => write!(f, "{location}"),
        }
    }
}

impl StateStore {
    /// The store at `location`, reached with `client` if it is a bucket.
    pub fn at(location: &Location, client: &Client) -> StateStore {
        match location {
            Location::Local(dir) => StateStore::Dir(dir.clone()),
            Location::S3(location) => StateStore::S3 {
                client: client.clone(),
                location: location.clone(),
            },
        }
    }

    /// The bytes of `name`; `None` when there is no such file or object.
    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        match self {
            StateStore::Dir(dir) => match tokio::fs::read(dir.join(name)).await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("reading {}: {e}", dir.join(name).display())),
            },
            StateStore::S3 { client, location } => {
                let key = location.key_for(name);
                let answer = client
                    .get_object()
                    .bucket(&location.bucket)
                    .key(&key)
                    .send()
                    .await;
                match answer {
                    Ok(object) => object
                        .body
                        .collect()
                        .await
                        .map(|b| Some(b.to_vec()))
                        .map_err(|e| format!("reading s3://{}/{key}: {e}", location.bucket)),
                    Err(e) => {
                        let failure = classify(&e);
                        if failure.http_status == Some(404) {
                            Ok(None)
                        } else {
                            Err(format!(
                                "reading s3://{}/{key}: {} ({})",
                                location.bucket, failure.message, failure.code
                            ))
                        }
                    }
                }
            }
        }
    }

    /// Write `name` whole: in a directory through a temporary file renamed
    /// into place, so a reader never sees half of it; an S3 PUT is whole
    /// by nature.
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), String> {
        match self {
            StateStore::Dir(dir) => {
                let (dir, owned) = (dir.clone(), name.to_owned());
                tokio::task::spawn_blocking(move || {
                    let name = owned;
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
                    let mut file = tempfile::NamedTempFile::new_in(&dir)
                        .map_err(|e| format!("writing in {}: {e}", dir.display()))?;
                    std::io::Write::write_all(&mut file, &bytes)
                        .and_then(|()| file.as_file().sync_all())
                        .map_err(|e| format!("writing in {}: {e}", dir.display()))?;
                    file.persist(dir.join(&name))
                        .map(|_| ())
                        .map_err(|e| format!("writing {}: {e}", dir.join(&name).display()))
                })
                .await
                .map_err(|e| format!("writing {name}: {e}"))?
            }
            StateStore::S3 { client, location } => {
                let key = location.key_for(name);
                client
                    .put_object()
                    .bucket(&location.bucket)
                    .key(&key)
                    .body(ByteStream::from(bytes))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        let failure = classify(&e);
                        format!(
                            "writing s3://{}/{key}: {} ({})",
                            location.bucket, failure.message, failure.code
                        )
                    })
            }
        }
    }

    /// The chunk names present, named in a manifest or not.
    pub async fn chunks(&self) -> Result<Vec<String>, String> {
        self.names(CHUNK_PREFIX).await
    }

    /// The names present that start with `prefix`.
    pub async fn names(&self, prefix: &str) -> Result<Vec<String>, String> {
        match self {
            StateStore::Dir(dir) => {
                let mut names = Vec::new();
                let mut entries = match tokio::fs::read_dir(dir).await {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
                    Err(e) => return Err(format!("reading {}: {e}", dir.display())),
                };
                while let Some(entry) = entries
                    .next_entry()
                    .await
                    .map_err(|e| format!("reading {}: {e}", dir.display()))?
                {
                    if let Some(name) = entry.file_name().to_str()
                        && name.starts_with(prefix)
                    {
                        names.push(name.to_owned());
                    }
                }
                Ok(names)
            }
            StateStore::S3 { client, location } => {
                let prefix = location.key_for(prefix);
                let mut pages = client
                    .list_objects_v2()
                    .bucket(&location.bucket)
                    .prefix(&prefix)
                    .into_paginator()
                    .send();
                let mut names = Vec::new();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| {
                        let failure = classify(&e);
                        format!("listing {location}: {} ({})", failure.message, failure.code)
                    })?;
                    names.extend(
                        page.contents()
                            .iter()
                            .filter_map(|o| o.key())
                            .filter_map(|k| location.relative(k))
                            .map(str::to_owned),
                    );
                }
                Ok(names)
            }
        }
    }

    /// Delete every one of `names`: in a bucket, a thousand per request.
    pub async fn delete_all(&self, names: &[String]) -> Result<(), String> {
        match self {
            StateStore::Dir(_) => {
                for name in names {
                    self.delete(name).await?;
                }
                Ok(())
            }
            StateStore::S3 { client, location } => {
                for some in names.chunks(1000) {
                    let objects = some
                        .iter()
                        .map(|name| {
                            aws_sdk_s3::types::ObjectIdentifier::builder()
                                .key(location.key_for(name))
                                .build()
                                .map_err(|e| e.to_string())
                        })
                        .collect::<Result<Vec<_>, String>>()?;
                    let delete = aws_sdk_s3::types::Delete::builder()
                        .set_objects(Some(objects))
                        .quiet(true)
                        .build()
                        .map_err(|e| e.to_string())?;
                    let answer = client
                        .delete_objects()
                        .bucket(&location.bucket)
                        .delete(delete)
                        .send()
                        .await
                        .map_err(|e| {
                            format!("deleting from {location}: {}", classify(&e).message)
                        })?;
                    if let Some(error) = answer.errors().first() {
                        return Err(format!(
                            "deleting {} from {location}: {}",
                            error.key().unwrap_or_default(),
                            error.message().unwrap_or_default()
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    pub async fn delete(&self, name: &str) -> Result<(), String> {
        match self {
            StateStore::Dir(dir) => match tokio::fs::remove_file(dir.join(name)).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(format!("deleting {}: {e}", dir.join(name).display()))
                }
                _ => Ok(()),
            },
            StateStore::S3 { client, location } => client
                .delete_object()
                .bucket(&location.bucket)
                .key(location.key_for(name))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| format!("deleting from {location}: {}", classify(&e).message)),
        }
    }
}
