//! The state file: one versioned JSON document, keyed by container name, replaced atomically
//! (temporary file in the same directory, fsync, rename, fsync of the directory) so that a crash
//! leaves either the old or the new state, never half of one.
//!
//! guerite usually runs as root, so the directory is a place where a planted link or file
//! would make root read or write what someone else chose: it must be writable by this user
//! alone, is created 0700, its files are 0600, and no path in it is followed as a link.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read as _, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::action::ActionKind;
use crate::store::journal;

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
    /// The file was unusable; it was moved here (or would be, in a dry run).
    MovedAside {
        to: PathBuf,
        why: Unusable,
    },
}

/// Why a state file was moved aside rather than read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unusable {
    DoesNotParse,
    /// Never followed: whoever planted it would choose what guerite reads, and where the next
    /// save would land.
    Symlink,
    NotRegular,
    TooLarge(u64),
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::DoesNotParse => f.write_str("did not parse"),
            Unusable::Symlink => f.write_str("is a symbolic link, which guerite does not follow"),
            Unusable::NotRegular => f.write_str("is not a regular file"),
            Unusable::TooLarge(n) => write!(
                f,
                "is {n} bytes, over the {} MiB cap",
                MAX_STATE_BYTES / (1024 * 1024)
            ),
        }
    }
}

/// Far above any real state (a few hundred bytes per container): a larger file is not one
/// guerite wrote, and reading it whole would cost its size in memory.
pub const MAX_STATE_BYTES: u64 = 16 * 1024 * 1024;

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

    /// Reads the state. A file that does not parse, is too large, is a symbolic link or is
    /// not a regular file is moved aside (unless `read_only`) and a fresh state is used; a file
    /// from a newer guerite is refused, since rewriting it in the old format would lose what
    /// the newer one recorded. A directory others can write is refused before anything is read.
    pub fn load(path: &Path, now: DateTime<Utc>, read_only: bool) -> Result<(State, Loaded)> {
        check_dir(path)?;
        let why = match read_capped(path)? {
            Read::Missing => return Ok((State::fresh(), Loaded::Fresh)),
            Read::Unusable(why) => why,
            Read::Bytes(bytes) => match parse(&bytes) {
                Parsed::State(mut state) => {
                    // A state written before instances existed gets one now: an empty one
                    // would be every such guerite's, and each would take the others' claims
                    // for its own.
                    if state.instance.is_empty() {
                        state.instance = crate::process::random_id();
                    }
                    return Ok((state, Loaded::Existing));
                }
                Parsed::Newer(version) => bail!(
                    "state file {} has version {version}, newer than this guerite understands \
                     ({VERSION}); upgrade guerite or move the file away",
                    path.display(),
                ),
                Parsed::Corrupt => Unusable::DoesNotParse,
            },
        };
        let to = aside_path(path, now, |p| p.symlink_metadata().is_ok()).map_err(|e| {
            anyhow!(
                "state file {} {why} and cannot be moved aside: {e}",
                path.display()
            )
        })?;
        if !read_only {
            // rename(2) moves a symbolic link itself, never its target.
            fs::rename(path, &to).with_context(|| {
                format!(
                    "state file {} {why} and cannot be moved aside",
                    path.display()
                )
            })?;
        }
        Ok((State::fresh(), Loaded::MovedAside { to, why }))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(self).context("cannot serialise state")?;
        text.push(b'\n');
        write_atomically(path, &text)
            .with_context(|| format!("cannot write state file {}", path.display()))
    }
}

enum Read {
    Missing,
    Bytes(Vec<u8>),
    Unusable(Unusable),
}

/// Opens without following a symbolic link (and without blocking on a FIFO), then reads at
/// most the cap and one byte more, so a huge file costs no memory even if it grows meanwhile.
fn read_capped(path: &Path) -> Result<Read> {
    let cannot = || format!("cannot read state file {}", path.display());
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Read::Missing),
        Err(e)
            if e.raw_os_error() == Some(libc::ELOOP)
                && path.symlink_metadata().is_ok_and(|m| m.is_symlink()) =>
        {
            return Ok(Read::Unusable(Unusable::Symlink));
        }
        Err(e) => return Err(e).with_context(cannot),
    };
    let meta = file.metadata().with_context(cannot)?;
    if !meta.is_file() {
        return Ok(Read::Unusable(Unusable::NotRegular));
    }
    if meta.len() > MAX_STATE_BYTES {
        return Ok(Read::Unusable(Unusable::TooLarge(meta.len())));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(cannot)?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Ok(Read::Unusable(Unusable::TooLarge(bytes.len() as u64)));
    }
    Ok(Read::Bytes(bytes))
}

enum Parsed {
    State(State),
    Newer(u32),
    Corrupt,
}

fn parse(bytes: &[u8]) -> Parsed {
    #[derive(Deserialize)]
    struct Probe {
        version: u32,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(p) if p.version > VERSION => Parsed::Newer(p.version),
        Ok(_) => serde_json::from_slice(bytes).map_or(Parsed::Corrupt, Parsed::State),
        Err(_) => Parsed::Corrupt,
    }
}

/// `state.json.corrupt-<time>`, or with `-2`, `-3`… when that is taken: a file moved aside
/// earlier in the same second is evidence too. Checking then renaming is not atomic, but
/// only this user (or root) can write the directory and the lock keeps other runs out.
fn aside_path(
    path: &Path,
    now: DateTime<Utc>,
    taken: impl Fn(&Path) -> bool,
) -> Result<PathBuf, String> {
    let mut base = path.file_name().unwrap_or_default().to_os_string();
    base.push(format!(".corrupt-{}", now.format("%Y%m%dT%H%M%SZ")));
    for n in 1..=MAX_ASIDE {
        let mut name = base.clone();
        if n > 1 {
            name.push(format!("-{n}"));
        }
        let candidate = path.with_file_name(name);
        if !taken(&candidate) {
            return Ok(candidate);
        }
    }
    Err(format!(
        "{} names from {} on are taken",
        MAX_ASIDE,
        path.with_file_name(base).display()
    ))
}

const MAX_ASIDE: u32 = 1000;

/// The directory holding the state file (and its lock and temporary files).
pub fn state_dir(state_file: &Path) -> &Path {
    match state_file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Refuses a state directory that someone else could write: they could plant links, replace
/// the state between runs or swap the journal, and root would act on it. A missing directory
/// is fine (a real run creates it, a dry run reads nothing).
pub fn check_dir(state_file: &Path) -> Result<()> {
    let dir = state_dir(state_file);
    let meta = match fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot inspect the state directory {}", dir.display()));
        }
    };
    if !meta.is_dir() {
        bail!("state directory {} is not a directory", dir.display());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    match distrust(meta.mode(), meta.uid(), euid) {
        Some(why) => bail!(
            "state directory {} {why}; use a directory only this user can write, e.g. {}",
            dir.display(),
            DEFAULT_DIR
        ),
        None => Ok(()),
    }
}

const DEFAULT_DIR: &str = "/var/lib/guerite";

/// What makes a directory with this mode and owner untrustworthy to a process running as
/// `euid`, if anything.
fn distrust(mode: u32, owner: u32, euid: u32) -> Option<String> {
    let mode = mode & 0o7777;
    if mode & 0o002 != 0 {
        Some(format!("is writable by others (mode {mode:04o})"))
    } else if mode & 0o020 != 0 {
        Some(format!("is writable by its group (mode {mode:04o})"))
    } else if owner != euid && owner != 0 {
        Some(format!(
            "is owned by uid {owner}, neither this user (uid {euid}) nor root"
        ))
    } else {
        None
    }
}

/// Creates the state directory 0700 whatever the umask (and any missing parent, alike), then
/// checks it as `check_dir` does: an existing one is used as it is if it is trusted.
pub fn create_dir(state_file: &Path) -> Result<()> {
    let dir = state_dir(state_file);
    if fs::symlink_metadata(dir).is_err() {
        let made = || -> std::io::Result<()> {
            DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            // The umask may have taken bits from 0700 (or the parent's default ACL added
            // some): set the mode itself, on the directory just opened, not on a path.
            let handle = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                .open(dir)?;
            handle.set_permissions(fs::Permissions::from_mode(0o700))
        };
        made().with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    }
    check_dir(state_file)
}

/// Same-directory temporary file with an unpredictable name, created exclusively with mode
/// 0600 (so nothing planted at its name is followed or reused), fsync, rename, fsync of the
/// directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = state_dir(path);
    let mut prefix = path.file_name().unwrap_or_default().to_os_string();
    prefix.push(".tmp-");
    let mut tmp = tempfile::Builder::new().prefix(&prefix).tempfile_in(dir)?;
    // tempfile asks for 0600, but the umask could still take bits from it.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // On failure the temporary file comes back inside the error and is removed with it.
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
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
        assert!(matches!(how, Loaded::MovedAside { .. }));
        assert!(path.exists(), "a read-only load leaves the file alone");

        let (_, how) = State::load(&path, now(), false).unwrap();
        let aside = path.with_file_name("state.json.corrupt-20261121T120000Z");
        assert_eq!(
            how,
            Loaded::MovedAside {
                to: aside.clone(),
                why: Unusable::DoesNotParse
            }
        );
        assert!(!path.exists() && aside.exists());

        // A second one in the same second does not clobber the first.
        fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        let (_, how) = State::load(&path, now(), false).unwrap();
        let second = path.with_file_name("state.json.corrupt-20261121T120000Z-2");
        assert_eq!(
            how,
            Loaded::MovedAside {
                to: second.clone(),
                why: Unusable::DoesNotParse
            }
        );
        assert_eq!(
            fs::read(&aside).unwrap(),
            b"{\"version\": 1, \"containers\": "
        );
        assert_eq!(fs::read(&second).unwrap(), [0xff, 0xfe, 0x00]);
    }

    #[test]
    fn a_link_a_fifo_and_an_oversized_file_are_moved_aside_unread() {
        let path = scratch("unusable");
        let victim = path.with_file_name("victim");
        fs::write(&victim, r#"{"version": 1}"#).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let (s, how) = State::load(&path, now(), false).unwrap();
        assert_eq!(
            s,
            State {
                instance: s.instance.clone(),
                ..State::fresh()
            },
            "a fresh state"
        );
        let aside = path.with_file_name("state.json.corrupt-20261121T120000Z");
        assert_eq!(
            how,
            Loaded::MovedAside {
                to: aside.clone(),
                why: Unusable::Symlink
            }
        );
        assert_eq!(
            fs::read_link(&aside).unwrap(),
            victim,
            "the link itself moved"
        );

        let fifo = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let (_, how) = State::load(&path, now(), true).unwrap();
        assert!(
            matches!(
                how,
                Loaded::MovedAside {
                    why: Unusable::NotRegular,
                    ..
                }
            ),
            "{how:?}"
        );
        fs::remove_file(&path).unwrap();

        // Valid JSON, padded past the cap: the size alone decides.
        let mut big = br#"{"version": 1}"#.to_vec();
        big.resize(MAX_STATE_BYTES as usize + 1, b' ');
        fs::write(&path, &big).unwrap();
        let (_, how) = State::load(&path, now(), true).unwrap();
        assert!(
            matches!(how, Loaded::MovedAside { why: Unusable::TooLarge(n), .. } if n == MAX_STATE_BYTES + 1),
            "{how:?}"
        );
        big.truncate(MAX_STATE_BYTES as usize);
        fs::write(&path, &big).unwrap();
        assert_eq!(State::load(&path, now(), true).unwrap().1, Loaded::Existing);
    }

    #[test]
    fn aside_names_skip_taken_ones() {
        let path = Path::new("/s/state.json");
        let cases: &[(&[&str], &str)] = &[
            (&[], "/s/state.json.corrupt-20261121T120000Z"),
            (
                &["/s/state.json.corrupt-20261121T120000Z"],
                "/s/state.json.corrupt-20261121T120000Z-2",
            ),
            (
                &[
                    "/s/state.json.corrupt-20261121T120000Z",
                    "/s/state.json.corrupt-20261121T120000Z-2",
                ],
                "/s/state.json.corrupt-20261121T120000Z-3",
            ),
        ];
        for (taken, want) in cases {
            let got = aside_path(path, now(), |p| taken.iter().any(|t| Path::new(t) == p));
            assert_eq!(got, Ok(PathBuf::from(want)), "{taken:?}");
        }
        let err = aside_path(path, now(), |_| true).unwrap_err();
        assert_eq!(
            err,
            "1000 names from /s/state.json.corrupt-20261121T120000Z on are taken"
        );
    }

    #[test]
    fn directories_others_can_write_are_distrusted() {
        let cases: &[(u32, u32, u32, Option<&str>)] = &[
            (0o40700, 0, 0, None),
            (0o40755, 0, 0, None),
            (0o40755, 0, 1000, None),
            (0o40700, 1000, 1000, None),
            (0o41777, 0, 0, Some("is writable by others (mode 1777)")),
            (
                0o40777,
                1000,
                1000,
                Some("is writable by others (mode 0777)"),
            ),
            (0o40702, 0, 0, Some("is writable by others (mode 0702)")),
            (0o40770, 0, 0, Some("is writable by its group (mode 0770)")),
            (0o42775, 0, 0, Some("is writable by its group (mode 2775)")),
            (
                0o40700,
                1000,
                0,
                Some("is owned by uid 1000, neither this user (uid 0) nor root"),
            ),
            (
                0o40700,
                1001,
                1000,
                Some("is owned by uid 1001, neither this user (uid 1000) nor root"),
            ),
        ];
        for (mode, owner, euid, want) in cases {
            assert_eq!(
                distrust(*mode, *owner, *euid).as_deref(),
                *want,
                "{mode:o} {owner} {euid}"
            );
        }
    }

    #[test]
    fn created_directory_and_saved_file_are_private() {
        let path = scratch("modes").with_file_name("deeper/state.json");
        create_dir(&path).unwrap();
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        State::fresh().save(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        // A wider directory someone made is refused, by load as well.
        fs::set_permissions(path.parent().unwrap(), fs::Permissions::from_mode(0o777)).unwrap();
        let err = State::load(&path, now(), true).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "state directory {} is writable by others (mode 0777); use a directory only \
                 this user can write, e.g. /var/lib/guerite",
                path.parent().unwrap().display()
            )
        );
        assert!(create_dir(&path).is_err());
    }

    #[test]
    fn a_state_from_before_instances_gets_its_own() {
        let path = scratch("instance");
        fs::write(&path, r#"{"version": 1, "containers": {}}"#).unwrap();
        let (a, how) = State::load(&path, now(), true).unwrap();
        let (b, _) = State::load(&path, now(), true).unwrap();
        assert_eq!(how, Loaded::Existing);
        assert_eq!(a.instance.len(), 32);
        assert_ne!(
            a.instance, b.instance,
            "each copy its own, never a shared empty one"
        );
        let mut kept = a.clone();
        kept.save(&path).unwrap();
        kept = State::load(&path, now(), true).unwrap().0;
        assert_eq!(kept.instance, a.instance, "saved, it stays");
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
