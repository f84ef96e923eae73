//! Recovery, at the start of every run: each swap a previous run left half-done (a journal
//! entry), each claim whose holder is gone and each leftover of an older crash is finished or
//! undone from what Docker shows now, under this guerite's claim on the name. What another
//! guerite holds is left alone: those names are busy for this run.
//!
//! The rule afterwards: exactly one container has the name, it runs if the original ran (and
//! still runs once any stop the interrupted run sent has ended), and it is the verified new
//! container or the old one. Recovery never decides from an observation that failed, and it
//! acts only on containers that belong to the swap and carry this guerite's labels and scope.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use log::{error, info, warn};

use crate::action::ActionKind;
use crate::engine::api::{CallError, Engine};
use crate::engine::{Container, RunState};
use crate::event::{Event, Outcome};
use crate::plan::selects_name as selects;
use crate::process;
use crate::store::journal::{self, Entry, Phase, Resolution, Seen};
use crate::store::state::State;
use crate::swap::claim::{self, Abandon, Claim, Holder, Standing};
use crate::swap::{self, Claimed, Swapper, is_ours};

pub struct Recovered {
    pub items: Vec<Event>,
    /// Something on the engine changed: the container list is stale.
    pub changed: bool,
    /// Names this run must not act on, and why.
    pub busy: BTreeMap<String, String>,
}

/// What recovery found for one name.
enum Work {
    /// A swap to finish or undo; `lost` when its journal entry is gone and the claim's labels
    /// stand in for it.
    Entry { entry: Entry, lost: bool },
    /// A claim with nothing half-done behind it.
    DropClaim,
    /// Leftovers of a swap nobody has a record of.
    Orphans,
}

/// A recovery line: not the action it finishes (its verb would say that action was done), but
/// a recovery of it, named in the detail.
fn item(name: &str, outcome: Outcome, detail: String) -> Event {
    Event::new(name, outcome, detail)
}

/// The claims on the list, by the name they protect.
fn claims(containers: &[Container]) -> BTreeMap<String, Result<Claim, String>> {
    containers
        .iter()
        .filter_map(|c| {
            let parsed = claim::parse(c)?;
            Some((claim::base_of(c)?.to_string(), parsed))
        })
        .collect()
}

/// The name a container belongs to: its own, or the base name of a swap leftover.
fn base_name(c: &Container) -> &str {
    journal::leftover(&c.name).map_or(c.name.as_str(), |(base, _)| base)
}

/// This run, as its claims name it and as recovery judges others' claims against it.
pub fn this_run(instance: &str, state_file: &std::path::Path) -> Holder {
    Holder {
        instance: instance.to_string(),
        host: process::hostname(),
        process: process::current(),
        state_file: state_file.display().to_string(),
    }
}

fn standing(me: &Holder, claim: &Claim) -> Standing {
    let alive = match (&claim.holder.process, &me.process) {
        (Some(theirs), Some(mine)) => process::alive(theirs, mine),
        _ => None,
    };
    claim::standing(claim, &me.instance, Utc::now(), alive)
}

/// The names another guerite's claim holds, without acting on anything (dry runs, `check`).
pub fn busy(me: &Holder, containers: &[Container]) -> BTreeMap<String, String> {
    claims(containers)
        .into_iter()
        .filter_map(|(base, claim)| match claim {
            Ok(c) if standing(me, &c) == Standing::Held => Some((base, claim::describe(&c))),
            Ok(_) => None,
            Err(why) => Some((base, why)),
        })
        .collect()
}

impl<E: Engine> Swapper<'_, E> {
    fn standing(&self, claim: &Claim) -> Standing {
        standing(self.me, claim)
    }

    pub fn busy(&self, containers: &[Container]) -> BTreeMap<String, String> {
        busy(self.me, containers)
    }

    /// Whether anything is there for `recover_all` to look at: costs no engine call.
    pub fn needs_recovery(&self, state: &State, containers: &[Container]) -> bool {
        !state.journal.is_empty()
            || containers.iter().any(|c| {
                claim::base_of(c).is_some()
                    || (journal::leftover(&c.name).is_some() && is_ours(self.config, &c.labels))
            })
    }

    pub async fn recover_all(&self, state: &mut State, containers: &[Container]) -> Recovered {
        let mut out = Recovered {
            items: Vec::new(),
            changed: false,
            busy: BTreeMap::new(),
        };
        let claims = claims(containers);
        let covered =
            |c: &Container| is_ours(self.config, &c.labels) && selects(self.config, base_name(c));
        let mut bases: BTreeSet<String> = state.journal.keys().cloned().collect();
        bases.extend(
            containers
                .iter()
                .filter(|c| journal::leftover(&c.name).is_some() && covered(c))
                .map(|c| base_name(c).to_string()),
        );
        // A claim concerns this guerite when it is its own, or when it sits on a name this
        // guerite covers; other guerites' claims on other names are none of its business.
        for (base, claim) in &claims {
            let mine = matches!(claim, Ok(c) if c.holder.instance == self.me.instance);
            let covers = containers
                .iter()
                .any(|c| base_name(c) == base && covered(c));
            if mine || covers {
                bases.insert(base.clone());
            }
        }
        for base in bases {
            self.recover_name(state, containers, claims.get(&base), &base, &mut out)
                .await;
        }
        out
    }

    async fn recover_name(
        &self,
        state: &mut State,
        containers: &[Container],
        claim: Option<&Result<Claim, String>>,
        base: &str,
        out: &mut Recovered,
    ) {
        let entry = state.journal.get(base).cloned();
        if let Some(e) = &entry
            && let Err(why) = journal::validate(base, e)
        {
            return self.refuse(base, e.kind, &why, out);
        }
        if let Some(e) = &entry
            && !selects(self.config, base)
        {
            let why = "GUERITE_INCLUDE_CONTAINERS or GUERITE_EXCLUDE_CONTAINERS excludes its name";
            return self.refuse(base, e.kind, why, out);
        }
        let standing = match claim {
            None => None,
            Some(Err(why)) => {
                let why = format!(
                    "{why}; remove {} if no guerite is at work on it",
                    claim::name(base)
                );
                warn!("{base}: {why}");
                out.items.push(item(base, Outcome::Skipped, why.clone()));
                out.busy.insert(base.to_string(), why);
                return;
            }
            Some(Ok(c)) => Some((c, self.standing(c))),
        };
        if let Some((c, Standing::Held)) = &standing {
            let why = claim::describe(c);
            if let Some(e) = &entry {
                info!("{base}: the interrupted {} waits: {why}", e.kind);
            }
            out.busy.insert(base.to_string(), why);
            return;
        }
        let family: Vec<&Container> = containers.iter().filter(|c| base_name(c) == base).collect();
        let work = match (&entry, &standing) {
            (Some(e), _) => Work::Entry {
                entry: e.clone(),
                lost: false,
            },
            (None, Some((c, _))) => match lost_entry(c, &family) {
                Some(entry) => Work::Entry { entry, lost: true },
                None => Work::DropClaim,
            },
            (None, None) => {
                if journal::recover_orphans(&self.orphan_view(&family), &[]).is_empty() {
                    self.note_leftovers(state, &family, out);
                    return;
                }
                Work::Orphans
            }
        };
        // The claim: kept if it is ours, taken over if abandoned, taken fresh otherwise.
        let held = match &standing {
            Some((c, Standing::Mine)) => Some(c.id.clone()),
            Some((c, Standing::Abandoned(why))) => {
                match self.docker.remove_claim(&c.id).await {
                    Ok(()) | Err(CallError::Gone(_)) => {}
                    Err(e) => {
                        let why = format!(
                            "cannot remove the abandoned claim {}: {e}",
                            claim::name(base)
                        );
                        error!("{base}: {why}");
                        out.items.push(item(base, Outcome::Failed, why.clone()));
                        out.busy.insert(base.to_string(), why);
                        return;
                    }
                }
                warn!(
                    "{base}: took over from a guerite whose claim {} ({})",
                    claim::name(base),
                    match why {
                        Abandon::HolderGone => "its process is gone",
                        Abandon::Expired => "its deadline has passed",
                    }
                );
                out.changed = true;
                None
            }
            _ => None,
        };
        let held = match held {
            Some(id) => Some(id),
            None => match self.take_claim(base, &work, &family).await {
                Ok(id) => id,
                Err((outcome, why)) => {
                    if outcome == Outcome::Failed {
                        error!("{base}: recovery failed: {why}");
                        out.items
                            .push(item(base, outcome, format!("recovery failed: {why}")));
                    } else {
                        info!("{base}: recovery waits: {why}");
                    }
                    out.busy.insert(base.to_string(), why);
                    return;
                }
            },
        };
        let done = match work {
            Work::Entry { entry, lost } => self.recover_entry(state, &entry, lost, out).await,
            Work::DropClaim => true,
            Work::Orphans => self.recover_orphans(state, base, out).await,
        };
        if let Some(id) = held
            && done
        {
            self.release(base, &id).await;
            out.changed = true;
        }
    }

    /// Takes the claim before acting; `Ok(None)` when there is nothing on the engine to claim.
    async fn take_claim(
        &self,
        base: &str,
        work: &Work,
        family: &[&Container],
    ) -> Result<Option<String>, (Outcome, String)> {
        let subject = match work {
            Work::Entry { entry, .. } => family
                .iter()
                .find(|c| c.id == entry.old_id)
                .or_else(|| family.first()),
            _ => family.first(),
        };
        let Some(subject) = subject else {
            return Ok(None);
        };
        let budget = match work {
            Work::Entry { entry, .. } => entry
                .stop
                .map(|s| Duration::from_secs(s.timeout_seconds.saturating_add(30)))
                .unwrap_or_default(),
            _ => Duration::ZERO,
        };
        let kind = match work {
            Work::Entry { entry, .. } => entry.kind,
            _ => ActionKind::Recreate,
        };
        // A recovery's claim guards no swap of its own: should it be left behind, it says
        // nothing a later run could rebuild a swap from.
        match self
            .claim(base, kind, (*subject).into(), budget, false)
            .await
        {
            Claimed::Held(id) => Ok(Some(id)),
            Claimed::Busy(why) => Err((Outcome::Skipped, why)),
            Claimed::Failed(why) => Err((Outcome::Failed, why)),
        }
    }

    /// Finishes or undoes one swap. Returns whether it is settled (the claim may go).
    async fn recover_entry(
        &self,
        state: &mut State,
        entry: &Entry,
        lost: bool,
        out: &mut Recovered,
    ) -> bool {
        let base = entry.name.as_str();
        let pending = |why: String, out: &mut Recovered| {
            let why = format!(
                "{why}; the interrupted {} is finished by a later run",
                entry.kind
            );
            error!("{base}: recovery failed: {why}");
            out.items.push(item(
                base,
                Outcome::Failed,
                format!("recovery failed: {why}"),
            ));
            out.busy.insert(base.to_string(), why);
            false
        };
        let seen = match self.observe_settled(entry).await {
            Ok(seen) => seen,
            Err(e) => return pending(e, out),
        };
        let (verdict, steps) = journal::recover(entry, &seen);
        if let Resolution::Refused(why) = &verdict {
            self.refuse(base, entry.kind, why, out);
            return false;
        }
        out.changed |= !steps.is_empty();
        if let Err(e) = self.apply(&steps).await {
            return pending(e, out);
        }
        state.journal.remove(base);
        // An interrupted swap backs off (a swap that keeps getting killed must not loop every
        // minute), but a crash says nothing against the image: its digest is not quarantined.
        // A failure already counted before the undo began is not counted twice.
        if verdict == Resolution::Undone && entry.phase != Phase::Undo {
            self.record_failure(state, base, None);
        }
        if let Err(e) = state.save(self.state_file) {
            error!("{base}: {e:#}");
        }
        let what = if lost {
            format!(
                "{} whose journal entry was lost (from its claim)",
                entry.kind
            )
        } else {
            format!("interrupted {}", entry.kind)
        };
        let text = match verdict {
            Resolution::Finished => {
                format!("finished the {what} (the new container passed verification)")
            }
            Resolution::Undone if entry.phase == Phase::Undo => {
                format!(
                    "finished rolling back the failed {}: the old container is back",
                    entry.kind
                )
            }
            Resolution::Undone => format!("undid the {what}: the old container is back"),
            Resolution::KeptNew => {
                format!("the old container of the {what} was gone; kept the new one")
            }
            Resolution::Lost => {
                format!("both containers of the {what} were removed by someone else")
            }
            Resolution::Refused(_) => unreachable!("refused above"),
        };
        warn!("{base}: {text}");
        out.items.push(item(base, Outcome::Done, text));
        true
    }

    async fn recover_orphans(&self, state: &mut State, base: &str, out: &mut Recovered) -> bool {
        // Read again under the claim: the list the run started with may be stale.
        let family = match self.docker.family(base).await {
            Ok(f) => f,
            Err(e) => {
                let why = format!("cannot list its containers: {e}");
                error!("{base}: recovery failed: {why}");
                out.items.push(item(
                    base,
                    Outcome::Failed,
                    format!("recovery failed: {why}"),
                ));
                return true;
            }
        };
        let family: Vec<&Container> = family.iter().collect();
        let steps = journal::recover_orphans(&self.orphan_view(&family), &[]);
        out.changed |= !steps.is_empty();
        let result = self.apply(&steps).await;
        let text: Vec<String> = steps.iter().map(swap::describe).collect();
        match result {
            Ok(()) if !steps.is_empty() => {
                let text = format!("leftovers of an earlier swap: {}", text.join("; "));
                warn!("{base}: {text}");
                out.items.push(item(base, Outcome::Done, text));
            }
            Ok(()) => {}
            Err(e) => {
                error!("{base}: recovery failed: {e}");
                out.items
                    .push(item(base, Outcome::Failed, format!("recovery failed: {e}")));
            }
        }
        if let Ok(now) = self.docker.family(base).await {
            self.note_leftovers(state, &now.iter().collect::<Vec<_>>(), out);
        }
        true
    }

    /// Recovery's view of a name's containers: leftovers only if they are this guerite's, and
    /// whatever holds the name itself (so that nothing is renamed onto it).
    fn orphan_view(&self, family: &[&Container]) -> Vec<Seen> {
        family
            .iter()
            .filter(|c| journal::leftover(&c.name).is_none() || is_ours(self.config, &c.labels))
            .map(|c| seen(self.config, c))
            .collect()
    }

    /// An old container left beside a working one has no journal to say when it was put
    /// aside: from now on the state does, so that prune's grace period counts, and the report
    /// says so once.
    fn note_leftovers(&self, state: &mut State, family: &[&Container], out: &mut Recovered) {
        for c in family {
            let old = matches!(journal::leftover(&c.name), Some((_, true)));
            if old && is_ours(self.config, &c.labels) && !state.leftovers.contains_key(&c.name) {
                state.leftovers.insert(c.name.clone(), self.now);
                let text = format!(
                    "{} is an old container left by a swap that has no journal entry; it is \
                     kept aside, stopped, for GUERITE_ROLLBACK_GRACE_SECONDS",
                    c.name
                );
                warn!("{}: {text}", base_name(c));
                out.items.push(item(base_name(c), Outcome::Skipped, text));
                if let Err(e) = state.save(self.state_file) {
                    error!("{e:#}");
                }
            }
        }
    }

    fn refuse(&self, base: &str, kind: ActionKind, why: &str, out: &mut Recovered) {
        let text = format!(
            "journal entry for the interrupted {kind} refused, nothing touched: {why}; \
             check the containers, then remove the entry from {}",
            self.state_file.display()
        );
        error!("{base}: {text}");
        out.items.push(item(base, Outcome::Error, text.clone()));
        out.busy.insert(base.to_string(), text);
    }
}

fn seen(config: &crate::config::Config, c: &Container) -> Seen {
    Seen {
        id: c.id.clone(),
        name: c.name.clone(),
        running: c.state == RunState::Running,
        covered: is_ours(config, &c.labels),
    }
}

/// A swap whose journal entry is gone (the state file was lost or replaced) but whose claim
/// is still there: the claim says which container was the old one and whether it ran, which
/// is all recovery needs to undo it. The new container is the one under the temporary name, or
/// the one holding the name that was created after the claim. `None`: nothing to recover (a
/// claim that guards no swap, such as a restart's, leaves nothing half-done).
fn lost_entry(claim: &Claim, family: &[&Container]) -> Option<Entry> {
    if !claim.swap || !journal::is_full_id(&claim.old_id) {
        return None;
    }
    // Nothing aside: the swap got to its end (its commit removed the old container, or its
    // undo gave it its name back) before the claim could go.
    if !family.iter().any(|c| journal::leftover(&c.name).is_some()) {
        return None;
    }
    let holder = family.iter().find(|c| c.name == claim.base);
    let created_since = |t: DateTime<Utc>| t + chrono::TimeDelta::seconds(1) >= claim.created;
    let new_id = holder
        .filter(|h| h.id != claim.old_id && created_since(h.created))
        .map(|h| h.id.clone());
    Some(Entry {
        name: claim.base.clone(),
        kind: claim.action,
        // Nothing says the new container was verified: unverified means undone.
        phase: Phase::Verify,
        old_id: claim.old_id.clone(),
        old_was_running: claim.old_running,
        new_id,
        started: claim.created,
        digest: None,
        stop: None,
        claim: Some(claim.id.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sample;
    use crate::swap::claim::Holder;

    const OLD: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn claim(action: ActionKind) -> Claim {
        Claim {
            id: "c".repeat(64),
            base: "web".into(),
            created: at("2026-12-01T12:00:00Z"),
            holder: Holder {
                instance: "i".into(),
                host: "h".into(),
                process: None,
                state_file: "/s".into(),
            },
            action,
            swap: action != ActionKind::Restart,
            old_id: OLD.into(),
            old_running: true,
            expires: at("2026-12-01T12:20:00Z"),
        }
    }

    fn container(id: &str, name: &str, created: &str) -> Container {
        let mut c = sample(name, &[]);
        c.id = id.into();
        c.created = at(created);
        c
    }

    #[test]
    fn a_lost_journal_is_rebuilt_from_the_claim() {
        let new = "f".repeat(64);
        let old_aside = container(OLD, "web-guerite-old-01234567", "2026-11-01T00:00:00Z");
        let new_in_place = container(&new, "web", "2026-12-01T12:00:03Z");
        let stranger = container(&new, "web", "2026-11-30T08:00:00Z");
        let old_in_place = container(OLD, "web", "2026-11-01T00:00:00Z");
        let update = claim(ActionKind::Update);

        let e = lost_entry(&update, &[&old_aside, &new_in_place]).unwrap();
        assert_eq!(
            (
                e.phase,
                e.old_id.as_str(),
                e.new_id.as_deref(),
                e.old_was_running
            ),
            (Phase::Verify, OLD, Some(new.as_str()), true),
            "the new one holds the name: it is the swap's"
        );
        let e = lost_entry(&update, &[&old_aside, &stranger]).unwrap();
        assert_eq!(e.new_id, None, "older than the claim: not the swap's");
        assert_eq!(
            lost_entry(&update, &[&old_in_place]),
            None,
            "undo finished: nothing left"
        );
        assert_eq!(
            lost_entry(&update, &[&new_in_place]),
            None,
            "commit finished: nothing left"
        );
        assert_eq!(
            lost_entry(&claim(ActionKind::Restart), &[&old_aside]),
            None,
            "a restart leaves nothing half-done"
        );
    }
}
