//! Include/exclude glob filters on relative keys.
//!
//! Globs follow `aws s3 sync`: `*` matches any run of characters, `/`
//! included, so `--exclude '*.tmp'` skips `.tmp` files at every depth. A key
//! is kept when it matches an include (or there are none) and no exclude.
//! Filters apply to both sides, so an excluded destination key is never
//! deleted.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::base::error::SyncError;

#[derive(Debug, Clone)]
pub struct KeyFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl KeyFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, SyncError> {
        Ok(Self {
            include: build(include, "--include")?,
            exclude: build(exclude, "--exclude")?,
        })
    }

    pub fn allow_all() -> Self {
        Self {
            include: None,
            exclude: None,
        }
    }

    pub fn matches(&self, relative_key: &str) -> bool {
        self.include
            .as_ref()
            .is_none_or(|set| set.is_match(relative_key))
            && !self
                .exclude
                .as_ref()
                .is_some_and(|set| set.is_match(relative_key))
    }
}

fn build(patterns: &[String], flag: &str) -> Result<Option<GlobSet>, SyncError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern)
            .map_err(|e| SyncError::Config(format!("invalid {flag} pattern {pattern:?}: {e}")))?;
        builder.add(glob);
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| SyncError::Config(format!("invalid {flag} patterns: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> KeyFilter {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        KeyFilter::new(&own(include), &own(exclude)).unwrap()
    }

    #[test]
    fn star_crosses_slashes_like_aws_cli() {
        let f = filter(&[], &["*.tmp"]);
        assert!(!f.matches("a/b/c.tmp"));
        assert!(!f.matches("c.tmp"));
        assert!(f.matches("a/b/c.txt"));
    }

    #[test]
    fn include_then_exclude() {
        let f = filter(&["logs/*"], &["logs/debug/*"]);
        assert!(f.matches("logs/app.log"));
        assert!(!f.matches("logs/debug/x.log"));
        assert!(!f.matches("data/x"));
    }

    #[test]
    fn bad_pattern_is_a_config_error() {
        let err = KeyFilter::new(&["a[".into()], &[]).unwrap_err();
        assert!(err.to_string().contains("--include"), "{err}");
    }
}
