//! The name-preserving swap: rename the old container aside, create the new one beside it, stop
//! the old, give the new one the name, start and verify it; then remove the old one, or undo.
//! The journal entry in the state file is saved before every step that cannot be undone, so a
//! `kill -9` at any point is finished or undone by the next run (`recover_all`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use log::{error, info, warn};

use crate::config::Config;
use crate::docker::{CallError, Docker};
use crate::engine::{Container, Details, Health};
use crate::journal::{self, Entry, Phase, Seen, Step, Verdict};
use crate::labels;
use crate::plan::ActionKind;
use crate::state::State;

const POLL: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

pub struct Swapper<'a> {
    pub docker: &'a Docker,
    pub config: &'a Config,
    pub state_file: &'a Path,
    pub now: DateTime<Utc>,
}

#[derive(Debug, PartialEq)]
pub enum Swapped {
    Replaced,
    /// The new container failed; the old one is back under its name.
    RolledBack(String),
    /// Failed before anything changed.
    NotStarted(String),
}

/// Test-only: with the `crash-hooks` feature, `GUERITE_TEST_CRASH_AT=before:<phase>` or
/// `after:<phase>` freezes the run there so that a test can SIGKILL it at that exact point.
fn crash_point(when: &str, phase: Phase) {
    #[cfg(feature = "crash-hooks")]
    if std::env::var("GUERITE_TEST_CRASH_AT").ok().as_deref()
        == Some(&format!("{when}:{}", phase.as_str()))
    {
        eprintln!("guerite-crash-point {when}:{}", phase.as_str());
        std::thread::sleep(Duration::from_secs(3600));
    }
    let _ = (when, phase);
}

impl Swapper<'_> {
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
        let spec = match self.docker.replacement(&old.id, image, names).await {
            Ok(s) => s,
            Err(CallError::Gone(_)) => {
                return Swapped::NotStarted("removed by someone else during the run".into());
            }
            Err(CallError::Other(e)) => {
                return Swapped::NotStarted(format!("cannot prepare the new container: {e:#}"));
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
        };
        if let Err(e) = self.enter(state, &mut entry, Phase::RenameOld) {
            state.journal.remove(&entry.name);
            return Swapped::NotStarted(format!("cannot record the swap, nothing changed: {e}"));
        }
        match self.steps(state, &mut entry, old, &spec).await {
            Ok(new_id) => {
                self.commit(state, &entry, old, &new_id).await;
                Swapped::Replaced
            }
            Err(reason) => {
                warn!(
                    "{}: {kind} failed at {}: {reason}; rolling back",
                    entry.name,
                    entry.phase.as_str()
                );
                match self.undo(state, &entry).await {
                    Ok(()) => Swapped::RolledBack(reason),
                    Err(e) => Swapped::RolledBack(format!(
                        "{reason}; rollback incomplete, the next run finishes it: {e}"
                    )),
                }
            }
        }
    }

    async fn steps(
        &self,
        state: &mut State,
        entry: &mut Entry,
        old: &Details,
        spec: &crate::recreate::Spec,
    ) -> Result<String, String> {
        let call = |what: &str, e: CallError| match e {
            CallError::Gone(m) => format!("{what}: {m}"),
            CallError::Other(e) => format!("{what}: {e:#}"),
        };
        self.docker
            .rename(&old.id, &entry.old_name())
            .await
            .map_err(|e| call("rename the old container", e))?;
        crash_point("after", Phase::RenameOld);

        self.enter(state, entry, Phase::CreateNew)?;
        let new_id = self
            .docker
            .create(&entry.new_name(), spec)
            .await
            .map_err(|e| call("create the new container", e))?;
        crash_point("after", Phase::CreateNew);
        entry.new_id = Some(new_id.clone());

        self.enter(state, entry, Phase::StopOld)?;
        if old.running {
            let timeout = stop_timeout(old, self.config);
            self.docker
                .stop(&old.id, timeout)
                .await
                .map_err(|e| call("stop the old container", e))?;
        }
        crash_point("after", Phase::StopOld);

        self.enter(state, entry, Phase::StartNew)?;
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

        self.enter(state, entry, Phase::Verify)?;
        if old.running {
            self.verify(&new_id).await?;
        }
        crash_point("after", Phase::Verify);
        self.enter(state, entry, Phase::Commit)?;
        Ok(new_id)
    }

    /// Healthy within GUERITE_HEALTH_CHECK_TIMEOUT_SECONDS when there is a healthcheck, else
    /// running, not restarting, for GUERITE_SETTLE_SECONDS.
    async fn verify(&self, id: &str) -> Result<(), String> {
        let first = self
            .docker
            .details(id)
            .await
            .map_err(|_| "the new container disappeared".to_string())?;
        let (limit, healthcheck) = if first.has_healthcheck {
            (self.config.health_timeout, true)
        } else {
            (self.config.settle, false)
        };
        let start = std::time::Instant::now();
        loop {
            let d = self
                .docker
                .details(id)
                .await
                .map_err(|_| "the new container disappeared".to_string())?;
            if !d.running || d.restarting || d.restart_count != first.restart_count {
                return Err("the new container exited".into());
            }
            if healthcheck {
                match d.health {
                    Some(Health::Healthy) => return Ok(()),
                    Some(Health::Unhealthy) => return Err("the new container is unhealthy".into()),
                    _ if start.elapsed() >= limit => {
                        return Err(format!(
                            "the new container was not healthy after {} s",
                            limit.as_secs()
                        ));
                    }
                    _ => {}
                }
            } else if start.elapsed() >= limit {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Verified: the old container goes (never its volumes), then its image if nothing else
    /// uses it. A failure here costs disk, not service: it is left for prune.
    async fn commit(&self, state: &mut State, entry: &Entry, old: &Details, new_id: &str) {
        crash_point("after", Phase::Commit);
        if let Err(e) = self.docker.remove(&old.id).await
            && !matches!(e, CallError::Gone(_))
        {
            warn!(
                "{}: the old container {} stays for prune: cannot remove it",
                entry.name,
                entry.old_name()
            );
            state.leftovers.insert(entry.old_name(), self.now);
        }
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
        state.journal.remove(&entry.name);
        let c = state.container_mut(&entry.name);
        c.failures = 0;
        c.retry_after = None;
        c.quarantined = None;
        if let Err(e) = self.save(state) {
            error!("{}: {e}", entry.name);
        }
    }

    /// Undoes a swap through the same rule recovery uses after a crash, then records the
    /// failure: backoff, and the digest that failed is not tried again.
    async fn undo(&self, state: &mut State, entry: &Entry) -> Result<(), String> {
        let seen = self.observe(entry).await;
        let mut rollback = entry.clone();
        // Whatever phase it reached, a failed swap is undone, never finished.
        rollback.phase = rollback.phase.min(Phase::Verify);
        let (_, steps) = journal::recover(&rollback, &seen);
        let result = self.apply(&steps).await;
        if result.is_ok() {
            state.journal.remove(&entry.name);
        }
        self.record_failure(state, &entry.name, entry.digest.clone());
        result
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
    /// temporary name, when its id was never recorded).
    async fn observe(&self, entry: &Entry) -> Vec<Seen> {
        let mut seen = Vec::new();
        let new_ref = entry.new_id.clone().unwrap_or_else(|| entry.new_name());
        for id in [entry.old_id.clone(), new_ref] {
            if let Ok(d) = self.docker.details(&id).await {
                seen.push(Seen {
                    id: d.id,
                    name: d.name,
                    running: d.running,
                });
            }
        }
        seen
    }

    async fn apply(&self, steps: &[Step]) -> Result<(), String> {
        for step in steps {
            let result = match step {
                Step::Remove { id, .. } => self.docker.remove(id).await,
                Step::Rename { id, to, .. } => self.docker.rename(id, to).await,
                Step::Start { id, .. } => self.docker.start(id).await,
            };
            match result {
                Ok(()) | Err(CallError::Gone(_)) => info!("recovery: {}", describe(step)),
                Err(CallError::Other(e)) => return Err(format!("{}: {e:#}", describe(step))),
            }
        }
        Ok(())
    }

    /// Finishes or undoes every journalled swap and every leftover of an older crash, from
    /// what Docker shows now. Returns one line per swap handled, and whether anything changed.
    pub async fn recover_all(
        &self,
        state: &mut State,
        containers: &[Container],
    ) -> (Vec<(String, Result<String, String>)>, bool) {
        let seen: Vec<Seen> = containers
            .iter()
            .map(|c| Seen {
                id: c.id.clone(),
                name: c.name.clone(),
                running: c.state == crate::engine::RunState::Running,
            })
            .collect();
        let mut outcomes = Vec::new();
        let mut changed = false;
        let entries: Vec<Entry> = state.journal.values().cloned().collect();
        let journalled: Vec<String> = state.journal.keys().cloned().collect();
        for entry in entries {
            let (verdict, steps) = journal::recover(&entry, &seen);
            changed |= !steps.is_empty();
            let result = self.apply(&steps).await;
            let text = match verdict {
                Verdict::Finished => format!(
                    "finished the interrupted {} (the new container passed verification)",
                    entry.kind
                ),
                Verdict::Undone => format!(
                    "undid the interrupted {}: the old container is back",
                    entry.kind
                ),
                Verdict::KeptNew => format!(
                    "the old container of the interrupted {} was gone; kept the new one",
                    entry.kind
                ),
                Verdict::Lost => format!(
                    "both containers of the interrupted {} were removed by someone else",
                    entry.kind
                ),
            };
            if result.is_ok() {
                state.journal.remove(&entry.name);
                // An interrupted swap backs off (a swap that keeps getting killed must not
                // loop every minute), but a crash says nothing against the image: its digest
                // is not quarantined.
                if verdict == Verdict::Undone {
                    self.record_failure(state, &entry.name, None);
                }
            }
            let _ = self.save(state);
            outcomes.push((entry.name.clone(), result.map(|()| text)));
        }
        // Only leftovers of containers this guerite monitors: another guerite (another scope,
        // other labels) may be in the middle of its own swap.
        let ours: Vec<Seen> = containers
            .iter()
            .zip(&seen)
            .filter(|(c, _)| journal::leftover(&c.name).is_none() || is_ours(self.config, c))
            .map(|(_, s)| s.clone())
            .collect();
        let journalled: Vec<&str> = journalled.iter().map(String::as_str).collect();
        let orphans = journal::recover_orphans(&ours, &journalled);
        if !orphans.is_empty() {
            changed = true;
            let result = self.apply(&orphans).await;
            let names: Vec<String> = orphans.iter().map(describe).collect();
            outcomes.push(("leftovers".into(), result.map(|()| names.join("; "))));
        }
        (outcomes, changed)
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
pub fn is_ours(config: &Config, c: &Container) -> bool {
    labels::is_monitored(&c.labels, &config.labels)
        && c.labels.get(labels::SCOPE) == config.scope.as_ref()
}

fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

fn describe(step: &Step) -> String {
    match step {
        Step::Remove { name, .. } => format!("removed {name}"),
        Step::Rename { from, to, .. } => format!("renamed {from} to {to}"),
        Step::Start { name, .. } => format!("started {name}"),
    }
}
