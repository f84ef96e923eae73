//! The state file: one versioned JSON document, keyed by container name, replaced atomically
//! (temporary file in the same directory, fsync, rename, fsync of the directory) so that a crash
//! leaves either the old or the new state, never half of one.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::journal;
use crate::plan::ActionKind;

pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Names this state among the guerites that may share an engine: the claims it makes
    /// carry it, so a later run knows its own.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
    /// The `now` of the last run that evaluated every schedule: the start of the next window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<DateTime<Utc>>,
    #[serde(default)]
    pub containers: BTreeMap<String, ContainerState>,
    /// Swaps under way, by container name: written before every step that cannot be undone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub journal: BTreeMap<String, journal::Entry>,
    /// Old containers kept after a swap whose removal failed, by their temporary name, with
    /// when they were renamed: prune removes them after GUERITE_ROLLBACK_GRACE_SECONDS.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub leftovers: BTreeMap<String, DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerState {
    /// The fire time last acted on, per action: a run limited with --only must not make the
    /// next full run act on the same fire time again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub handled: BTreeMap<ActionKind, DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub results: BTreeMap<ActionKind, ActionResult>,
    /// Warnings that are said once per container, not every minute.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub swarm_warned: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_healthcheck_warned: bool,
    /// Failed swaps in a row; the backoff doubles with each.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// No scheduled replacement before this time: the failure backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<DateTime<Utc>>,
    /// No health replacement before this time: at most one per backoff period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_after: Option<DateTime<Utc>>,
    /// A remote digest that was rolled back: not tried again until the registry serves another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ContainerState {
    fn is_empty(&self) -> bool {
        self == &ContainerState::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionResult {
    pub at: DateTime<Utc>,
    pub ok: bool,
    pub message: String,
}

/// How the state was found, for the report.
#[derive(Debug, PartialEq)]
pub enum Loaded {
    Fresh,
    Existing,
    /// The file did not parse; it was moved here (or would be, in a dry run).
    MovedAside(PathBuf),
}

impl State {
    pub fn fresh() -> State {
        State {
            version: VERSION,
            instance: crate::process::random_id(),
            ..State::default()
        }
    }

    pub fn container(&self, name: &str) -> Option<&ContainerState> {
        self.containers.get(name)
    }

    pub fn container_mut(&mut self, name: &str) -> &mut ContainerState {
        self.containers.entry(name.to_string()).or_default()
    }

    /// Forget containers that no longer exist, keeping the file small.
    pub fn retain_names<'a>(&mut self, present: impl IntoIterator<Item = &'a str>) {
        let present: std::collections::BTreeSet<&str> = present.into_iter().collect();
        self.containers
            .retain(|name, c| present.contains(name.as_str()) && !c.is_empty());
        self.leftovers
            .retain(|name, _| present.contains(name.as_str()));
    }

    /// Reads the state. A file that does not parse is moved aside (unless `read_only`) and a
    /// fresh state is used; a file from a newer guerite is refused, since rewriting it in the
    /// old format would lose what the newer one recorded.
    pub fn load(path: &Path, now: DateTime<Utc>, read_only: bool) -> Result<(State, Loaded)> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok((State::fresh(), Loaded::Fresh));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read state file {}", path.display()));
            }
        };
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
        }
        match serde_json::from_str::<Probe>(&text) {
            Ok(p) if p.version > VERSION => bail!(
                "state file {} has version {}, newer than this guerite understands ({VERSION}); \
                 upgrade guerite or move the file away",
                path.display(),
                p.version
            ),
            Ok(_) => {
                if let Ok(state) = serde_json::from_str::<State>(&text) {
                    return Ok((state, Loaded::Existing));
                }
            }
            Err(_) => {}
        }
        let aside = corrupt_path(path, now);
        if !read_only {
            fs::rename(path, &aside).with_context(|| {
                format!(
                    "state file {} does not parse and cannot be moved aside",
                    path.display()
                )
            })?;
        }
        Ok((State::fresh(), Loaded::MovedAside(aside)))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(self).context("cannot serialise state")?;
        text.push(b'\n');
        write_atomically(path, &text)
            .with_context(|| format!("cannot write state file {}", path.display()))
    }
}

fn corrupt_path(path: &Path, now: DateTime<Utc>) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{}", now.format("%Y%m%dT%H%M%SZ")));
    path.with_file_name(name)
}

/// Same-directory temporary file, fsync, rename, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("guerite-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir.join("state.json")
    }

    #[test]
    fn round_trip_and_missing_file() {
        let path = scratch("roundtrip");
        let (s, how) = State::load(&path, now(), false).unwrap();
        assert_eq!(how, Loaded::Fresh);
        assert_eq!(s.instance.len(), 32, "a fresh state names its instance");
        let mut s = s;
        s.last_run = Some(now());
        s.container_mut("web").results.insert(
            ActionKind::Restart,
            ActionResult {
                at: now(),
                ok: true,
                message: "restarted".into(),
            },
        );
        s.save(&path).unwrap();
        assert_eq!(
            State::load(&path, now(), false).unwrap(),
            (s, Loaded::Existing)
        );
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn corrupt_file_is_moved_aside_unless_read_only() {
        let path = scratch("corrupt");
        fs::write(&path, "{\"version\": 1, \"containers\": ").unwrap();
        let (s, how) = State::load(&path, now(), true).unwrap();
        assert_eq!(s.containers.len() + s.journal.len(), 0);
        assert!(matches!(how, Loaded::MovedAside(_)));
        assert!(path.exists(), "a read-only load leaves the file alone");

        let (_, how) = State::load(&path, now(), false).unwrap();
        let aside = path.with_file_name("state.json.corrupt-20261121T120000Z");
        assert_eq!(how, Loaded::MovedAside(aside.clone()));
        assert!(!path.exists() && aside.exists());
    }

    #[test]
    fn wrong_shape_counts_as_corrupt_but_newer_version_is_refused() {
        let path = scratch("version");
        fs::write(&path, r#"{"version": 1, "containers": []}"#).unwrap();
        assert!(matches!(
            State::load(&path, now(), true).unwrap().1,
            Loaded::MovedAside(_)
        ));
        fs::write(&path, r#"{"version": 9}"#).unwrap();
        let err = State::load(&path, now(), false).unwrap_err().to_string();
        assert!(
            err.contains("has version 9, newer than this guerite understands (1)"),
            "{err}"
        );
        assert!(path.exists(), "a newer file is never moved or rewritten");
    }

    #[test]
    fn retain_drops_absent_and_empty_entries() {
        let mut s = State::fresh();
        s.container_mut("gone").swarm_warned = true;
        s.container_mut("kept").swarm_warned = true;
        s.container_mut("empty");
        s.retain_names(["kept", "empty"]);
        assert_eq!(s.containers.keys().collect::<Vec<_>>(), ["kept"]);
    }
}
