//! The swap journal and its recovery. A swap writes its entry to the state file before every
//! step that cannot be undone; a run that starts after a crash finishes or undoes each entry
//! from what Docker shows now. Pure: `recover` only reads the entry and the observed containers
//! and returns the steps to take.
//!
//! The rule afterwards: exactly one container has the original name, it is running if the
//! original was, and it is either the verified new container or the old one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::action::ActionKind;
use crate::event::short;

pub const OLD_MARK: &str = "-guerite-old-";
pub const NEW_MARK: &str = "-guerite-new-";

/// The step a swap is about to take (or is taking): recorded before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    RenameOld,
    CreateNew,
    StopOld,
    StartNew,
    Verify,
    /// Verified: only removing the old container is left.
    Commit,
    /// The swap failed, its failure is recorded, and the old container is being given its
    /// name back.
    Undo,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::RenameOld => "rename_old",
            Phase::CreateNew => "create_new",
            Phase::StopOld => "stop_old",
            Phase::StartNew => "start_new",
            Phase::Verify => "verify",
            Phase::Commit => "commit",
            Phase::Undo => "undo",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The container's name before the swap: the name that must exist afterwards.
    pub name: String,
    pub kind: ActionKind,
    pub phase: Phase,
    pub old_id: String,
    pub old_was_running: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_id: Option<String>,
    pub started: DateTime<Utc>,
    /// The remote digest being tried, quarantined if the swap is undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// When the stop of the old container was sent, and its timeout. The engine finishes a
    /// stop after its client died, so after a crash the old container may still go down;
    /// recovery waits for that before it decides whether to start it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopSent>,
    /// The id of the claim container that tells other guerites this swap is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopSent {
    pub at: DateTime<Utc>,
    pub timeout_seconds: u64,
}

/// Beyond the stop timeout, the engine's kill and the exit take a moment more.
const STOP_GRACE_SECONDS: i64 = 10;

impl Entry {
    pub fn old_name(&self) -> String {
        temporary_name(&self.name, OLD_MARK, &self.old_id)
    }

    pub fn new_name(&self) -> String {
        temporary_name(&self.name, NEW_MARK, &self.old_id)
    }

    /// Until when a stop this swap sent may still be under way in the engine.
    pub fn stop_deadline(&self) -> Option<DateTime<Utc>> {
        let stop = self.stop?;
        let secs = i64::try_from(stop.timeout_seconds)
            .unwrap_or(i64::MAX)
            .saturating_add(STOP_GRACE_SECONDS);
        Some(
            chrono::TimeDelta::try_seconds(secs)
                .and_then(|d| stop.at.checked_add_signed(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        )
    }
}

/// An entry read back from the state file is only trusted as far as it is well formed: keyed
/// by its own name, a container name, full container ids. Anyone who can write the state file
/// could otherwise point recovery at any two containers.
pub fn validate(key: &str, e: &Entry) -> Result<(), String> {
    if key != e.name {
        return Err(format!(
            "the entry under {} names {}",
            shown(key),
            shown(&e.name)
        ));
    }
    if !is_container_name(&e.name) {
        return Err(format!("{} is not a container name", shown(&e.name)));
    }
    let ids = [
        ("old_id", Some(&e.old_id)),
        ("new_id", e.new_id.as_ref()),
        ("claim", e.claim.as_ref()),
    ];
    for (field, id) in ids {
        if let Some(id) = id
            && !is_full_id(id)
        {
            return Err(format!("its {field} {} is not a container id", shown(id)));
        }
    }
    if e.new_id.as_ref() == Some(&e.old_id) {
        return Err("its old and new container are the same".into());
    }
    Ok(())
}

/// Docker's grammar for container names.
pub fn is_container_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

pub fn is_full_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Untrusted text for a one-line message: escaped, and cut short.
fn shown(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((at, _)) => format!("{:?}…", &s[..at]),
        None => format!("{s:?}"),
    }
}

/// `<name>-guerite-old-<first 8 hex of the old id>`: unique per swap, and the base name can be
/// read back from it after a crash.
pub fn temporary_name(name: &str, mark: &str, old_id: &str) -> String {
    format!("{name}{mark}{}", &old_id[..old_id.len().min(8)])
}

/// A container as recovery sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub id: String,
    pub name: String,
    pub running: bool,
    /// Carries this guerite's labels and scope: recovery touches nothing else.
    pub covered: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Stop and remove (never its volumes).
    Remove {
        id: String,
        name: String,
    },
    Rename {
        id: String,
        from: String,
        to: String,
    },
    Start {
        id: String,
        name: String,
    },
}

/// What recovery decided for one swap, for the log and the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The verified new container keeps the name.
    Finished,
    /// The old container has the name back.
    Undone,
    /// Only the unverified new container was left: it gets the name rather than nothing.
    KeptNew,
    /// Neither container exists any more: someone else removed them.
    Lost,
    /// The entry names a container that does not belong to it (wrong name, not this guerite's);
    /// nothing is touched.
    Refused(String),
}

/// Which leftover of a crashed swap this is, by name: `(base name, is the old one)`.
pub fn leftover(name: &str) -> Option<(&str, bool)> {
    for (mark, old) in [(OLD_MARK, true), (NEW_MARK, false)] {
        if let Some(at) = name.rfind(mark) {
            let suffix = &name[at + mark.len()..];
            if at > 0 && !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Some((&name[..at], old));
            }
        }
    }
    None
}

fn find<'a>(seen: &'a [Seen], id: Option<&str>, name: &str) -> Option<&'a Seen> {
    id.and_then(|id| seen.iter().find(|s| s.id == id))
        .or_else(|| seen.iter().find(|s| s.name == name))
}

/// The steps that bring one journalled swap to the rule above.
pub fn recover(entry: &Entry, seen: &[Seen]) -> (Resolution, Vec<Step>) {
    let old = seen.iter().find(|s| s.id == entry.old_id);
    // Before the new container's id was recorded, it can only be found by its temporary name;
    // after the final rename it has the base name, but then its id is known.
    let new =
        find(seen, entry.new_id.as_deref(), &entry.new_name()).filter(|s| s.id != entry.old_id);
    // The swap only ever gives its containers these names, and copies the old one's labels to
    // the new one: a container under another name, or without this guerite's labels, is not
    // this swap's, whatever the entry says.
    let belongs = |c: &Seen, temporary: String| {
        if c.name != entry.name && c.name != temporary {
            Some(format!(
                "container {} is named {}, neither {} nor {}",
                short(&c.id),
                c.name,
                entry.name,
                temporary
            ))
        } else if !c.covered {
            Some(format!(
                "container {} ({}) does not carry this guerite's labels and scope",
                short(&c.id),
                c.name
            ))
        } else {
            None
        }
    };
    let refusal = old
        .and_then(|o| belongs(o, entry.old_name()))
        .or_else(|| new.and_then(|n| belongs(n, entry.new_name())));
    if let Some(why) = refusal {
        return (Resolution::Refused(why), Vec::new());
    }
    let mut steps = Vec::new();
    let bring_to_name = |c: &Seen, steps: &mut Vec<Step>, run: bool| {
        if c.name != entry.name {
            steps.push(Step::Rename {
                id: c.id.clone(),
                from: c.name.clone(),
                to: entry.name.clone(),
            });
        }
        if run && !c.running {
            steps.push(Step::Start {
                id: c.id.clone(),
                name: entry.name.clone(),
            });
        }
    };
    match (entry.phase, old, new) {
        (Phase::Commit, old, Some(new)) => {
            if let Some(old) = old {
                steps.push(Step::Remove {
                    id: old.id.clone(),
                    name: old.name.clone(),
                });
            }
            bring_to_name(new, &mut steps, entry.old_was_running);
            (Resolution::Finished, steps)
        }
        (_, Some(old), new) => {
            if let Some(new) = new {
                steps.push(Step::Remove {
                    id: new.id.clone(),
                    name: new.name.clone(),
                });
            }
            bring_to_name(old, &mut steps, entry.old_was_running);
            (Resolution::Undone, steps)
        }
        (_, None, Some(new)) => {
            bring_to_name(new, &mut steps, entry.old_was_running);
            (Resolution::KeptNew, steps)
        }
        (_, None, None) => (Resolution::Lost, steps),
    }
}

/// Leftovers without a journal entry (an older crash, or the Python original): when the base
/// name is missing, the old one gets it back (or, failing that, the new one), and a new one
/// next to a present base name is removed. An old one next to a present base name is kept:
/// prune removes it after the rollback grace period.
pub fn recover_orphans(seen: &[Seen], journalled: &[&str]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut bases: Vec<&str> = seen
        .iter()
        .filter_map(|s| leftover(&s.name).map(|(base, _)| base))
        .filter(|base| !journalled.contains(base))
        .collect();
    bases.sort_unstable();
    bases.dedup();
    for base in bases {
        let present = seen.iter().any(|s| s.name == base);
        let of = |old: bool| -> Vec<&Seen> {
            seen.iter()
                .filter(|s| leftover(&s.name) == Some((base, old)))
                .collect()
        };
        let (olds, news) = (of(true), of(false));
        let keep = if present {
            None
        } else {
            olds.first().or(news.first()).copied()
        };
        for n in &news {
            if Some(n.id.as_str()) != keep.map(|k| k.id.as_str()) {
                steps.push(Step::Remove {
                    id: n.id.clone(),
                    name: n.name.clone(),
                });
            }
        }
        if let Some(k) = keep {
            steps.push(Step::Rename {
                id: k.id.clone(),
                from: k.name.clone(),
                to: base.to_string(),
            });
            if !k.running {
                steps.push(Step::Start {
                    id: k.id.clone(),
                    name: base.to_string(),
                });
            }
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const NEW: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    fn entry(phase: Phase, new_id: Option<&str>) -> Entry {
        Entry {
            name: "web".into(),
            kind: ActionKind::Update,
            phase,
            old_id: OLD.into(),
            old_was_running: true,
            new_id: new_id.map(String::from),
            started: DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            digest: Some("sha256:aa".into()),
            stop: None,
            claim: None,
        }
    }

    fn seen(id: &str, name: &str, running: bool) -> Seen {
        Seen {
            id: id.into(),
            name: name.into(),
            running,
            covered: true,
        }
    }

    fn rename(id: &str, from: &str) -> Step {
        Step::Rename {
            id: id.into(),
            from: from.into(),
            to: "web".into(),
        }
    }

    fn start(id: &str) -> Step {
        Step::Start {
            id: id.into(),
            name: "web".into(),
        }
    }

    fn remove(id: &str, name: &str) -> Step {
        Step::Remove {
            id: id.into(),
            name: name.into(),
        }
    }

    #[test]
    fn names_are_derived_from_the_old_id() {
        let e = entry(Phase::RenameOld, None);
        assert_eq!(e.old_name(), "web-guerite-old-01234567");
        assert_eq!(e.new_name(), "web-guerite-new-01234567");
        assert_eq!(leftover("web-guerite-old-01234567"), Some(("web", true)));
        assert_eq!(leftover("my-app-guerite-new-1a2b"), Some(("my-app", false)));
        assert_eq!(leftover("web"), None);
        assert_eq!(leftover("-guerite-old-1"), None);
        assert_eq!(leftover("web-guerite-old-"), None);
    }

    /// Each row: crash phase, what Docker shows afterwards, the verdict and the steps.
    #[test]
    fn recovery_after_a_crash_at_every_phase() {
        use Phase::*;
        let old_tmp = "web-guerite-old-01234567";
        let new_tmp = "web-guerite-new-01234567";
        type Case = (&'static str, Entry, Vec<Seen>, Resolution, Vec<Step>);
        let cases: Vec<Case> = vec![
            (
                "killed before the rename: nothing to do",
                entry(RenameOld, None),
                vec![seen(OLD, "web", true)],
                Resolution::Undone,
                vec![],
            ),
            (
                "killed after the rename",
                entry(RenameOld, None),
                vec![seen(OLD, old_tmp, true)],
                Resolution::Undone,
                vec![rename(OLD, old_tmp)],
            ),
            (
                "killed after create, before its id was saved",
                entry(CreateNew, None),
                vec![seen(OLD, old_tmp, true), seen(NEW, new_tmp, false)],
                Resolution::Undone,
                vec![remove(NEW, new_tmp), rename(OLD, old_tmp)],
            ),
            (
                "killed while stopping the old one",
                entry(StopOld, Some(NEW)),
                vec![seen(OLD, old_tmp, false), seen(NEW, new_tmp, false)],
                Resolution::Undone,
                vec![remove(NEW, new_tmp), rename(OLD, old_tmp), start(OLD)],
            ),
            (
                "killed after the new one took the name",
                entry(StartNew, Some(NEW)),
                vec![seen(OLD, old_tmp, false), seen(NEW, "web", false)],
                Resolution::Undone,
                vec![remove(NEW, "web"), rename(OLD, old_tmp), start(OLD)],
            ),
            (
                "killed while verifying: unverified means undone",
                entry(Verify, Some(NEW)),
                vec![seen(OLD, old_tmp, false), seen(NEW, "web", true)],
                Resolution::Undone,
                vec![remove(NEW, "web"), rename(OLD, old_tmp), start(OLD)],
            ),
            (
                "killed after verifying: finish",
                entry(Commit, Some(NEW)),
                vec![seen(OLD, old_tmp, false), seen(NEW, "web", true)],
                Resolution::Finished,
                vec![remove(OLD, old_tmp)],
            ),
            (
                "killed after removing the old one",
                entry(Commit, Some(NEW)),
                vec![seen(NEW, "web", true)],
                Resolution::Finished,
                vec![],
            ),
            (
                "the new one stopped meanwhile: started again",
                entry(Commit, Some(NEW)),
                vec![seen(NEW, "web", false)],
                Resolution::Finished,
                vec![start(NEW)],
            ),
            (
                "someone removed the old one mid-swap: the new one is all there is",
                entry(StopOld, Some(NEW)),
                vec![seen(NEW, new_tmp, false)],
                Resolution::KeptNew,
                vec![rename(NEW, new_tmp), start(NEW)],
            ),
            (
                "both gone",
                entry(Verify, Some(NEW)),
                vec![],
                Resolution::Lost,
                vec![],
            ),
        ];
        for (name, e, observed, verdict, steps) in cases {
            assert_eq!(recover(&e, &observed), (verdict, steps), "{name}");
        }
    }

    #[test]
    fn a_stopped_original_is_not_started() {
        let mut e = entry(Phase::StopOld, Some(NEW));
        e.old_was_running = false;
        let (_, steps) = recover(&e, &[seen(OLD, "web-guerite-old-01234567", false)]);
        assert_eq!(steps, vec![rename(OLD, "web-guerite-old-01234567")]);
    }

    /// A forged or stale entry never moves a container that is not its own.
    #[test]
    fn containers_that_do_not_belong_are_refused() {
        let stranger = |name: &str, covered: bool| Seen {
            covered,
            ..seen(NEW, name, true)
        };
        type Case = (&'static str, Entry, Vec<Seen>, &'static str);
        let cases: Vec<Case> = vec![
            (
                "the new container is some other container",
                entry(Phase::Commit, Some(NEW)),
                vec![seen(OLD, "web", true), stranger("db", true)],
                "container fedcba987654 is named db, neither web nor web-guerite-new-01234567",
            ),
            (
                "the old container is some other container",
                entry(Phase::Verify, None),
                vec![seen(OLD, "db", true)],
                "container 0123456789ab is named db, neither web nor web-guerite-old-01234567",
            ),
            (
                "right name, but not this guerite's",
                entry(Phase::Commit, Some(NEW)),
                vec![
                    seen(OLD, "web-guerite-old-01234567", false),
                    stranger("web", false),
                ],
                "container fedcba987654 (web) does not carry this guerite's labels and scope",
            ),
        ];
        for (name, e, observed, why) in cases {
            assert_eq!(
                recover(&e, &observed),
                (Resolution::Refused(why.into()), vec![]),
                "{name}"
            );
        }
    }

    #[test]
    fn entries_are_validated_before_they_are_trusted() {
        let ok = entry(Phase::Commit, Some(NEW));
        assert_eq!(validate("web", &ok), Ok(()));
        let with = |f: fn(&mut Entry)| {
            let mut e = ok.clone();
            f(&mut e);
            e
        };
        let cases: Vec<(&str, Entry, &str)> = vec![
            ("db", ok.clone(), "the entry under \"db\" names \"web\""),
            (
                "web",
                with(|e| e.old_id = "abc".into()),
                "its old_id \"abc\" is not a container id",
            ),
            (
                "web",
                with(|e| e.new_id = Some(OLD.to_uppercase())),
                "is not a container id",
            ),
            (
                "web",
                with(|e| e.new_id = Some(OLD.into())),
                "its old and new container are the same",
            ),
            (
                "-x",
                with(|e| e.name = "-x".into()),
                "\"-x\" is not a container name",
            ),
        ];
        for (key, e, want) in cases {
            let got = validate(key, &e).unwrap_err();
            assert!(got.ends_with(want), "{got:?} should end with {want:?}");
        }
        let long = "x".repeat(5000);
        let msg = validate(&long, &ok).unwrap_err();
        assert!(msg.len() < 200 && !msg.contains('\n'), "{msg}");
    }

    #[test]
    fn a_stop_deadline_covers_the_timeout_and_the_kill() {
        let mut e = entry(Phase::StopOld, Some(NEW));
        assert_eq!(e.stop_deadline(), None);
        let at = e.started;
        e.stop = Some(StopSent {
            at,
            timeout_seconds: 4,
        });
        assert_eq!(e.stop_deadline(), Some(at + chrono::TimeDelta::seconds(14)));
        e.stop = Some(StopSent {
            at,
            timeout_seconds: u64::MAX,
        });
        assert_eq!(
            e.stop_deadline(),
            Some(DateTime::<Utc>::MAX_UTC),
            "no overflow: a stop without end"
        );
    }

    #[test]
    fn orphans_without_an_entry() {
        type Case = (&'static str, Vec<Seen>, Vec<&'static str>, Vec<Step>);
        let cases: Vec<Case> = vec![
            (
                "a pair left by the Python original, base name missing",
                vec![
                    seen(OLD, "web-guerite-old-ab12", false),
                    seen(NEW, "web-guerite-new-ab12", false),
                ],
                vec![],
                vec![
                    remove(NEW, "web-guerite-new-ab12"),
                    rename(OLD, "web-guerite-old-ab12"),
                    start(OLD),
                ],
            ),
            (
                "only a new one, base missing: it takes the name",
                vec![seen(NEW, "web-guerite-new-ab12", true)],
                vec![],
                vec![rename(NEW, "web-guerite-new-ab12")],
            ),
            (
                "base present: the new one goes, the old one waits for prune",
                vec![
                    seen("c", "web", true),
                    seen(OLD, "web-guerite-old-ab12", false),
                    seen(NEW, "web-guerite-new-ab12", false),
                ],
                vec![],
                vec![remove(NEW, "web-guerite-new-ab12")],
            ),
            (
                "journalled names are left to recover()",
                vec![seen(OLD, "web-guerite-old-ab12", false)],
                vec!["web"],
                vec![],
            ),
        ];
        for (name, observed, journalled, steps) in cases {
            assert_eq!(recover_orphans(&observed, &journalled), steps, "{name}");
        }
    }
}
