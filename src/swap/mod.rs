//! The name-preserving swap: rename the old container aside, create the new one beside it, stop
//! the old, give the new one the name, start and verify it; then remove the old one, or undo.
//! The journal entry in the state file is saved before every step that cannot be undone, so a
//! `kill -9` at any point is finished or undone by the next run (recovery.rs). Every change to
//! a container happens under this guerite's claim on its name (claim.rs), so that two guerites
//! on one engine never both act on it.

pub mod claim;
pub mod recovery;
#[cfg(test)]
pub mod tests;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use log::{error, info, warn};

use crate::action::ActionKind;
use crate::config::Config;
use crate::engine::api::{CallError, Created, Engine};
use crate::engine::{Container, Details, Health};
use crate::event::short;
use crate::plan::labels;
use crate::store::journal::{self, Entry, Phase, Resolution, Seen, Step, StopSent};
use crate::store::state::State;
use claim::Holder;

const POLL: Duration = Duration::from_millis(500);
const STOP_POLL: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Beyond its own stop timeout and verification, how long a claim holder may take: every
/// engine call is bounded (60 s), and a swap makes about ten.
const CLAIM_MARGIN: Duration = Duration::from_secs(15 * 60);

pub struct Swapper<'a, E> {
    pub docker: &'a E,
    pub config: &'a Config,
    pub state_file: &'a Path,
    pub now: DateTime<Utc>,
    /// This guerite, as its claims name it.
    pub me: &'a Holder,
}

#[derive(Debug, PartialEq)]
pub enum Swapped {
    Replaced,
    /// The new container failed; the old one is back under its name.
    RolledBack(String),
    /// The new container failed and the undo could not be finished now (the engine did not
    /// answer): the journal entry stays, and the next run finishes the rollback.
    UndoPending {
        reason: String,
        error: String,
    },
    /// The new container passed verification and has the name, but the claim could not be
    /// removed (the engine did not answer): the journal entry stays with it, in the commit
    /// phase, and the next run finishes the swap.
    CommitPending(String),
    /// Failed before anything changed.
    NotStarted(String),
    /// Nothing changed: another guerite holds the container's claim, or someone else removed
    /// or renamed it during the run.
    Skipped(String),
}

/// Why a swap failed, and whether the new image is to blame (only then is its digest
/// quarantined: an engine error says nothing about the image).
struct Failure {
    reason: String,
    image_fault: bool,
}

impl Failure {
    fn engine(reason: String) -> Failure {
        Failure {
            reason,
            image_fault: false,
        }
    }

    fn image(reason: impl Into<String>) -> Failure {
        Failure {
            reason: reason.into(),
            image_fault: true,
        }
    }
}

pub enum Claimed {
    Held(String),
    /// Someone else holds it: the line says who.
    Busy(String),
    Failed(String),
}

/// Test-only: with the `test-hooks` feature, `GUERITE_TEST_CRASH_AT=before:<phase>` or
/// `after:<phase>` freezes the run there so that a test can SIGKILL it (or its engine) at that
/// exact point; with `GUERITE_TEST_RESUME_FILE` the run goes on once that file exists.
fn crash_point(when: &str, phase: Phase) {
    #[cfg(feature = "test-hooks")]
    if std::env::var("GUERITE_TEST_CRASH_AT").ok().as_deref()
        == Some(&format!("{when}:{}", phase.as_str()))
    {
        eprintln!("guerite-crash-point {when}:{}", phase.as_str());
        let resume = std::env::var_os("GUERITE_TEST_RESUME_FILE");
        for _ in 0..36_000 {
            if resume
                .as_ref()
                .is_some_and(|f| std::path::Path::new(f).exists())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = (when, phase);
}

fn claim_margin() -> Duration {
    #[cfg(feature = "test-hooks")]
    if let Some(s) = std::env::var("GUERITE_TEST_CLAIM_MARGIN_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return Duration::from_secs(s);
    }
    CLAIM_MARGIN
}

impl<E: Engine> Swapper<'_, E> {
    fn save(&self, state: &State) -> Result<(), String> {
        state.save(self.state_file).map_err(|e| format!("{e:#}"))
    }

    /// Moves the swap to `phase` and saves it, before the step is taken.
    fn enter(&self, state: &mut State, entry: &mut Entry, phase: Phase) -> Result<(), String> {
        entry.phase = phase;
        state.journal.insert(entry.name.clone(), entry.clone());
        self.save(state)?;
        crash_point("before", phase);
        Ok(())
    }

    /// Takes this guerite's claim on `name` before `action` changes `subject` (a container
    /// whose image is on the host). `budget`: how long the action may take at most.
    pub async fn claim(
        &self,
        name: &str,
        action: ActionKind,
        subject: Subject<'_>,
        budget: Duration,
        swap: bool,
    ) -> Claimed {
        let expires = chrono::TimeDelta::from_std(budget.saturating_add(claim_margin()))
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let labels = claim::labels(
            name,
            self.me,
            &claim::Purpose {
                action,
                swap,
                old_id: subject.id,
                old_running: subject.running,
                expires,
            },
        );
        let claim_name = claim::name(name);
        // The engine reserves a name before the container shows in its list, and frees it
        // after the container left the list: a claim being made or removed holds the name
        // unseen for a moment. Look a few times before calling it busy.
        for attempt in 0..5 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            match self
                .docker
                .create_claim(&claim_name, subject.image_id, labels.clone())
                .await
            {
                Ok(Created::Id(id)) => return Claimed::Held(id),
                Err(e) => return Claimed::Failed(format!("cannot create its claim: {e}")),
                Ok(Created::NameTaken) => {}
            }
            match self.docker.find(&claim_name).await {
                Ok(None) => continue,
                Ok(Some(c)) => {
                    return Claimed::Busy(match claim::parse(&c) {
                        Some(Ok(held)) if held.holder.instance == self.me.instance => format!(
                            "an earlier run of this guerite left its claim {claim_name}; \
                             the next run's recovery clears it"
                        ),
                        Some(Ok(held)) => claim::describe(&held),
                        Some(Err(why)) => format!(
                            "{why}; remove {claim_name} if no other guerite is at work on it"
                        ),
                        None => format!(
                            "a container named {claim_name} that is no claim of guerite's \
                             holds the name guerite locks it with"
                        ),
                    });
                }
                Err(e) => return Claimed::Failed(format!("cannot read its claim: {e}")),
            }
        }
        Claimed::Busy(format!(
            "another guerite is working on it (its claim {claim_name} is being made or removed)"
        ))
    }

    /// A claim that cannot be removed is cleared by the next run: it is ours.
    pub async fn release(&self, name: &str, claim_id: &str) {
        match self.docker.remove_claim(claim_id).await {
            Ok(()) | Err(CallError::Gone(_)) => {}
            Err(e) => warn!(
                "{name}: cannot remove its claim {}: {e}; the next run removes it",
                claim::name(name)
            ),
        }
    }

    /// How long a swap of `old` may hold its claim.
    fn budget(&self, old: &Details) -> Duration {
        stop_timeout(old, self.config)
            .saturating_add(self.config.health_timeout.max(self.config.settle))
    }

    /// Replaces the container `old` by one created from `image` (an image ID or reference),
    /// keeping its name and configuration.
    pub async fn swap(
        &self,
        state: &mut State,
        old: &Details,
        kind: ActionKind,
        image: &str,
        digest: Option<String>,
        names: &HashMap<String, String>,
    ) -> Swapped {
        let claim_id = match self
            .claim(&old.name, kind, old.into(), self.budget(old), true)
            .await
        {
            Claimed::Held(id) => id,
            Claimed::Busy(why) => return Swapped::Skipped(why),
            Claimed::Failed(why) => return Swapped::NotStarted(why),
        };
        let swapped = self
            .swap_claimed(state, old, kind, image, digest, names, &claim_id)
            .await;
        // A finished swap has released its claim (commit); an unfinished one keeps the claim
        // with its journal entry: the half-done swap is still this guerite's to finish.
        if !matches!(
            swapped,
            Swapped::Replaced | Swapped::UndoPending { .. } | Swapped::CommitPending(_)
        ) {
            self.release(&old.name, &claim_id).await;
        }
        swapped
    }

    #[allow(clippy::too_many_arguments)]
    async fn swap_claimed(
        &self,
        state: &mut State,
        planned: &Details,
        kind: ActionKind,
        image: &str,
        digest: Option<String>,
        names: &HashMap<String, String>,
        claim_id: &str,
    ) -> Swapped {
        // Read again now that nobody else may change it: the plan's view may be stale.
        let old = match self.docker.details(&planned.id).await {
            Ok(d) if d.name == planned.name => d,
            Ok(d) => {
                return Swapped::Skipped(format!(
                    "renamed to {} by someone else during the run",
                    d.name
                ));
            }
            Err(CallError::Gone(_)) => {
                return Swapped::Skipped("removed by someone else during the run".into());
            }
            Err(e) => return Swapped::NotStarted(format!("cannot inspect it: {e}")),
        };
        let spec = match self.docker.replacement(&old.id, image, names).await {
            Ok(s) => s,
            Err(CallError::Gone(_)) => {
                return Swapped::Skipped("removed by someone else during the run".into());
            }
            Err(e) => {
                return Swapped::NotStarted(format!("cannot prepare the new container: {e}"));
            }
        };
        let mut entry = Entry {
            name: old.name.clone(),
            kind,
            phase: Phase::RenameOld,
            old_id: old.id.clone(),
            old_was_running: old.running,
            new_id: None,
            started: self.now,
            digest,
            stop: None,
            claim: Some(claim_id.to_string()),
        };
        if let Err(e) = self.enter(state, &mut entry, Phase::RenameOld) {
            state.journal.remove(&entry.name);
            return Swapped::NotStarted(format!("cannot record the swap, nothing changed: {e}"));
        }
        match self.steps(state, &mut entry, &old, &spec).await {
            Ok(new_id) => match self.commit(state, &entry, &old, &new_id, claim_id).await {
                Ok(()) => Swapped::Replaced,
                Err(e) => Swapped::CommitPending(e),
            },
            Err(failure) => {
                warn!(
                    "{}: {kind} failed at {}: {}; rolling back",
                    entry.name,
                    entry.phase.as_str(),
                    failure.reason
                );
                let digest = entry.digest.clone().filter(|_| failure.image_fault);
                self.record_failure(state, &entry.name, digest);
                match self.undo(state, &mut entry).await {
                    Ok(()) => Swapped::RolledBack(failure.reason),
                    Err(error) => Swapped::UndoPending {
                        reason: failure.reason,
                        error,
                    },
                }
            }
        }
    }

    async fn steps(
        &self,
        state: &mut State,
        entry: &mut Entry,
        old: &Details,
        spec: &E::Spec,
    ) -> Result<String, Failure> {
        let call = |what: &str, e: CallError| Failure::engine(format!("{what}: {e}"));
        let saved = |e: String| Failure::engine(e);
        self.docker
            .rename(&old.id, &entry.old_name())
            .await
            .map_err(|e| call("rename the old container", e))?;
        crash_point("after", Phase::RenameOld);

        self.enter(state, entry, Phase::CreateNew).map_err(saved)?;
        let new_id = self
            .docker
            .create(&entry.new_name(), spec)
            .await
            .map_err(|e| call("create the new container", e))?;
        crash_point("after", Phase::CreateNew);
        entry.new_id = Some(new_id.clone());

        if old.running {
            let timeout = stop_timeout(old, self.config);
            // Recorded before it is sent: if this run dies, the engine still carries the stop
            // out, and recovery must wait for it before it starts the old container again.
            entry.stop = Some(StopSent {
                at: Utc::now(),
                timeout_seconds: timeout.as_secs(),
            });
            self.enter(state, entry, Phase::StopOld).map_err(saved)?;
            if let Err(e) = self.docker.stop(&old.id, timeout).await {
                // An engine that answered is done with the stop; only one that did not may
                // still be carrying it out.
                if !matches!(e, CallError::Other(_)) {
                    entry.stop = None;
                }
                return Err(call("stop the old container", e));
            }
        } else {
            self.enter(state, entry, Phase::StopOld).map_err(saved)?;
        }
        crash_point("after", Phase::StopOld);

        self.enter(state, entry, Phase::StartNew).map_err(saved)?;
        self.docker
            .rename(&new_id, &entry.name)
            .await
            .map_err(|e| call("rename the new container", e))?;
        if old.running {
            self.docker
                .start(&new_id)
                .await
                .map_err(|e| call("start the new container", e))?;
        }
        crash_point("after", Phase::StartNew);

        self.enter(state, entry, Phase::Verify).map_err(saved)?;
        if old.running {
            self.verify(&new_id).await?;
        }
        crash_point("after", Phase::Verify);
        self.enter(state, entry, Phase::Commit).map_err(saved)?;
        Ok(new_id)
    }

    /// Healthy within GUERITE_HEALTH_CHECK_TIMEOUT_SECONDS when there is a healthcheck, else
    /// running, not restarting, for GUERITE_SETTLE_SECONDS.
    async fn verify(&self, id: &str) -> Result<(), Failure> {
        let watch = |e: CallError| match e {
            CallError::Gone(_) => Failure::image("the new container disappeared"),
            e => Failure::engine(format!("cannot watch the new container: {e}")),
        };
        let first = self.docker.details(id).await.map_err(watch)?;
        let (limit, healthcheck) = if first.has_healthcheck {
            (self.config.health_timeout, true)
        } else {
            (self.config.settle, false)
        };
        // tokio's clock, not std's: the same in a run, and paused time in the unit tests.
        let start = tokio::time::Instant::now();
        loop {
            let d = self.docker.details(id).await.map_err(watch)?;
            if !d.running || d.restarting || d.restart_count != first.restart_count {
                return Err(Failure::image("the new container exited"));
            }
            if healthcheck {
                match d.health {
                    Some(Health::Healthy) => return Ok(()),
                    Some(Health::Unhealthy) => {
                        return Err(Failure::image("the new container is unhealthy"));
                    }
                    _ if start.elapsed() >= limit => {
                        return Err(Failure::image(format!(
                            "the new container was not healthy after {} s",
                            limit.as_secs()
                        )));
                    }
                    _ => {}
                }
            } else if start.elapsed() >= limit {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Verified: the old container goes (never its volumes), then the claim, then the old
    /// image if nothing else uses it, and only then the journal entry: a claim of this guerite's
    /// without an entry says the journal was lost, and recovery would undo the swap from it.
    /// An old container or image that cannot be removed costs disk, not service: it is left
    /// for prune. A claim that cannot be removed (the engine does not answer) keeps the entry:
    /// `Err`, and the next run finishes the swap.
    async fn commit(
        &self,
        state: &mut State,
        entry: &Entry,
        old: &Details,
        new_id: &str,
        claim_id: &str,
    ) -> Result<(), String> {
        crash_point("after", Phase::Commit);
        let old_removed = match self.docker.remove(&old.id).await {
            Ok(()) | Err(CallError::Gone(_)) => Ok(()),
            Err(e) => Err(e),
        };
        let c = state.container_mut(&entry.name);
        c.failures = 0;
        c.retry_after = None;
        c.quarantined = None;
        match self.docker.remove_claim(claim_id).await {
            Ok(()) | Err(CallError::Gone(_)) => {}
            Err(e) => {
                if let Err(e) = self.save(state) {
                    error!("{}: {e}", entry.name);
                }
                return Err(match old_removed {
                    Ok(()) => format!("cannot remove its claim {}: {e}", claim::name(&entry.name)),
                    Err(old) => format!(
                        "cannot remove the old container {} ({old}) nor its claim {}: {e}",
                        entry.old_name(),
                        claim::name(&entry.name)
                    ),
                });
            }
        }
        // After the claim: it was created from the old image, so the engine refuses to remove
        // the image while the claim exists.
        if let Ok(new) = self.docker.details(new_id).await
            && new.image_id != old.image_id
        {
            match self.docker.remove_image_if_unused(&old.image_id).await {
                Ok(true) => info!(
                    "{}: removed the old image {}",
                    entry.name,
                    short(&old.image_id)
                ),
                Ok(false) => {}
                Err(_) => warn!(
                    "{}: cannot remove the old image {}",
                    entry.name,
                    short(&old.image_id)
                ),
            }
        }
        if old_removed.is_err() {
            warn!(
                "{}: the old container {} stays for prune: cannot remove it",
                entry.name,
                entry.old_name()
            );
            state.leftovers.insert(entry.old_name(), self.now);
        }
        state.journal.remove(&entry.name);
        if let Err(e) = self.save(state) {
            error!("{}: {e}", entry.name);
        }
        Ok(())
    }

    /// Undoes a failed swap through the same rule recovery uses after a crash. The entry moves
    /// to the undo phase first, so that a recovery after a crash here knows the failure was
    /// already counted.
    async fn undo(&self, state: &mut State, entry: &mut Entry) -> Result<(), String> {
        self.enter(state, entry, Phase::Undo)?;
        let seen = self.observe_settled(entry).await?;
        let (verdict, steps) = journal::recover(entry, &seen);
        if let Resolution::Refused(why) = verdict {
            return Err(why);
        }
        self.apply(&steps).await?;
        state.journal.remove(&entry.name);
        self.save(state)
    }

    pub fn record_failure(&self, state: &mut State, name: &str, digest: Option<String>) {
        let base = self.config.health_backoff.max(Duration::from_secs(1));
        let c = state.container_mut(name);
        c.failures = c.failures.saturating_add(1);
        let backoff = base
            .saturating_mul(1u32 << (c.failures - 1).min(16))
            .min(MAX_BACKOFF);
        c.retry_after = Some(self.now + backoff);
        if digest.is_some() {
            c.quarantined = digest;
        }
        if let Err(e) = self.save(state) {
            error!("{name}: {e}");
        }
    }

    /// The two containers of a swap as Docker shows them now, by id (and the new one by its
    /// temporary name, when its id was never recorded). An engine error is an error, never
    /// "not there": recovery must not decide from an observation that failed.
    async fn observe(&self, entry: &Entry) -> Result<Vec<Seen>, String> {
        let mut seen = Vec::new();
        let new_ref = entry.new_id.clone().unwrap_or_else(|| entry.new_name());
        for id in [entry.old_id.clone(), new_ref] {
            match self.docker.details(&id).await {
                Ok(d) => seen.push(Seen {
                    covered: is_ours(self.config, &d.labels),
                    id: d.id,
                    name: d.name,
                    running: d.running,
                }),
                Err(CallError::Gone(_)) => {}
                Err(e) => return Err(format!("cannot see container {}: {e}", short(&id))),
            }
        }
        Ok(seen)
    }

    /// `observe`, after any stop the swap sent has run its course: the engine finishes a stop
    /// whose client died, so an old container seen running may still go down.
    pub async fn observe_settled(&self, entry: &Entry) -> Result<Vec<Seen>, String> {
        let seen = self.observe(entry).await?;
        let Some(deadline) = entry.stop_deadline() else {
            return Ok(seen);
        };
        let running = |seen: &[Seen]| seen.iter().any(|s| s.id == entry.old_id && s.running);
        if !running(&seen) || Utc::now() >= deadline {
            return Ok(seen);
        }
        info!(
            "{}: waiting until {} for the stop of {} sent at {} to end",
            entry.name,
            deadline.format("%H:%M:%S"),
            entry.old_name(),
            entry
                .stop
                .map(|s| s.at.format("%H:%M:%S").to_string())
                .unwrap_or_default()
        );
        // As long as the wall clock says is left, waited on tokio's clock: the same in a run,
        // and paused in the unit tests.
        let left = (deadline - Utc::now()).to_std().unwrap_or_default();
        // `None`: further than the clock can count, as a forged timeout may put it.
        let until = tokio::time::Instant::now().checked_add(left);
        while until.is_none_or(|until| tokio::time::Instant::now() < until) {
            tokio::time::sleep(STOP_POLL).await;
            match self.docker.details(&entry.old_id).await {
                Ok(d) if d.running => {}
                Ok(_) | Err(CallError::Gone(_)) => break,
                Err(e) => return Err(format!("cannot see container {}: {e}", entry.old_name())),
            }
        }
        self.observe(entry).await
    }

    pub async fn apply(&self, steps: &[Step]) -> Result<(), String> {
        for step in steps {
            let result = match step {
                Step::Remove { id, .. } => self.docker.remove(id).await,
                Step::Rename { id, to, .. } => self.docker.rename(id, to).await,
                Step::Start { id, .. } => self.docker.start(id).await,
            };
            match result {
                Ok(()) | Err(CallError::Gone(_)) => info!("recovery: {}", describe(step)),
                Err(e) => return Err(format!("{}: {e}", describe(step))),
            }
        }
        Ok(())
    }
}

/// The container a claim is taken for: its image (on the host, so the claim can be created
/// from it) and, for a swap, what recovery needs should the journal be lost.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub id: &'a str,
    pub image_id: &'a str,
    pub running: bool,
}

impl<'a> From<&'a Details> for Subject<'a> {
    fn from(d: &'a Details) -> Self {
        Subject {
            id: &d.id,
            image_id: &d.image_id,
            running: d.running,
        }
    }
}

impl<'a> From<&'a Container> for Subject<'a> {
    fn from(c: &'a Container) -> Self {
        Subject {
            id: &c.id,
            image_id: &c.image_id,
            running: c.state == crate::engine::RunState::Running,
        }
    }
}

/// The container's own StopTimeout wins; the variable covers containers that set none. Clamped
/// to the variable's bound: the engine accepts any 64-bit number there, and a deadline must be
/// computable from it.
pub fn stop_timeout(d: &Details, config: &Config) -> Duration {
    d.stop_timeout
        .and_then(|t| u64::try_from(t).ok())
        .map(|t| Duration::from_secs(t.min(crate::config::MAX_SECONDS)))
        .unwrap_or(config.stop_timeout)
}

/// Labelled for this guerite: one of its schedule labels, and its scope.
pub fn is_ours(config: &Config, labels: &std::collections::BTreeMap<String, String>) -> bool {
    labels::is_monitored(labels, &config.labels)
        && labels.get(labels::SCOPE) == config.scope.as_ref()
}

pub fn describe(step: &Step) -> String {
    match step {
        Step::Remove { name, .. } => format!("removed {name}"),
        Step::Rename { from, to, .. } => format!("renamed {from} to {to}"),
        Step::Start { name, .. } => format!("started {name}"),
    }
}
