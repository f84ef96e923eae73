//! Carries out a plan, one container at a time. One container's failure never stops the others;
//! the state is saved after every step that changed anything.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use log::{error, info, warn};

use crate::action::ActionKind;
use crate::config::Config;
use crate::engine::api::{CallError, Engine};
use crate::engine::{Container, Details, Health};
use crate::event::{Event, Outcome, short};
use crate::output::report::reason_text;
use crate::plan::labels;
use crate::plan::{Decision, Notice, Plan, Planned, Reason, Trigger};
use crate::store::state::{ActionResult, State};
use crate::swap::claim::Holder;
use crate::swap::{Claimed, Swapped, Swapper, stop_timeout};
use crate::update::{self, Checked, Next};

pub struct Executor<'a, E> {
    pub docker: &'a E,
    /// This guerite, as its claims name it.
    pub me: &'a Holder,
    pub config: &'a Config,
    /// `None` in a dry run: nothing is written and nothing is changed.
    pub state_file: Option<&'a Path>,
    pub now: DateTime<Utc>,
    /// Every container on the engine: names for `container:<id>` network modes, dependents.
    pub containers: &'a [Container],
    /// The registry's answers for the due updates, by container name.
    pub checks: &'a HashMap<String, Checked>,
}

/// What one action came to.
struct Done {
    outcome: Outcome,
    detail: String,
    /// The container was replaced: its dependents need recreating.
    replaced: bool,
    /// For a replacement: the image reference, the image IDs before and after (or tried),
    /// and the digest found.
    image: Option<String>,
    old_image: Option<String>,
    new_image: Option<String>,
    digest: Option<String>,
    /// The cause of a failure, when it is shorter than `detail` (which says what followed).
    error: Option<String>,
}

impl Done {
    fn new(outcome: Outcome, detail: impl Into<String>) -> Done {
        Done {
            outcome,
            detail: detail.into(),
            replaced: false,
            image: None,
            old_image: None,
            new_image: None,
            digest: None,
            error: None,
        }
    }

    /// The event for `c`: a replacement names the container's image reference too.
    fn event(
        self,
        c: &Container,
        action: Option<ActionKind>,
        trigger: Option<Trigger>,
        took: std::time::Duration,
    ) -> Event {
        let mut event =
            Event::new(c.name.clone(), self.outcome, self.detail).action(action, trigger);
        event.image = self.image;
        event.old_image = self.old_image;
        event.new_image = self.new_image;
        event.digest = self.digest;
        if self.error.is_some() {
            event.error = self.error;
        }
        event.duration_ms = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
        event
    }

    /// A replacement of `d`'s container: its image reference, the image IDs before and after
    /// (or tried), and the digest found.
    fn images(mut self, d: &Details, new: &str, digest: Option<String>) -> Done {
        self.image = Some(d.image.clone());
        let old = &d.image_id;
        self.old_image = Some(old.to_string());
        self.new_image = Some(new.to_string());
        self.digest = digest;
        self
    }
}

impl<E: Engine> Executor<'_, E> {
    pub async fn run(&self, plan: &Plan<'_>, state: &mut State) -> Vec<Event> {
        let mut items = Vec::new();
        for name in &plan.unknown {
            error!("{name}: no labelled container has this name (--only)");
            items.push(Event::new(
                name.clone(),
                Outcome::Error,
                "no labelled container has this name",
            ));
        }
        for (name, why) in &plan.away {
            warn!("{name}: skipped: {why}");
            items.push(Event::new(name.clone(), Outcome::Skipped, why.clone()));
        }
        for cycle in &plan.cycles {
            let path = cycle.join(" -> ");
            warn!("dependency cycle {path}: ordered by name instead");
            items.push(Event::new(
                cycle.first().cloned().unwrap_or_default(),
                Outcome::Skipped,
                format!("dependency cycle {path}: ordered by name instead"),
            ));
        }
        // Containers recreated as dependents of another: their listed id is gone.
        let mut replaced = HashSet::new();
        for planned in &plan.containers {
            self.notices(planned, state);
            if replaced.contains(&planned.container.name) {
                if planned
                    .verdicts
                    .iter()
                    .any(|v| matches!(v.decision, Decision::Act(_)))
                {
                    items.push(Event::new(
                        planned.container.name.clone(),
                        Outcome::Skipped,
                        "recreated earlier in this run, as a dependent",
                    ));
                }
                continue;
            }
            items.extend(self.container(planned, state, &mut replaced).await);
        }
        items
    }

    fn notices(&self, planned: &Planned<'_>, state: &mut State) {
        let name = &planned.container.name;
        for notice in &planned.notices {
            let entry = state.container_mut(name);
            match notice {
                Notice::SwarmManaged => {
                    warn!(
                        "{name}: {}; skipped",
                        reason_text(&Reason::SwarmManaged, self.config.tz)
                    );
                    entry.swarm_warned = true;
                }
                Notice::NoHealthcheck => {
                    warn!(
                        "{name}: {}",
                        reason_text(&Reason::NoHealthcheck, self.config.tz)
                    );
                    entry.no_healthcheck_warned = true;
                }
            }
        }
    }

    async fn container(
        &self,
        planned: &Planned<'_>,
        state: &mut State,
        replaced: &mut HashSet<String>,
    ) -> Vec<Event> {
        let c = planned.container;
        let tz = self.config.tz;
        let mut items = Vec::new();
        let item = |action, outcome, trigger, detail: String| {
            Event::new(c.name.clone(), outcome, detail).action(action, trigger)
        };
        for e in &planned.errors {
            error!("{}: {e}; container skipped", c.name);
            items.push(item(None, Outcome::Error, None, e.to_string()));
        }
        let mut done: Option<ActionKind> = None;
        for verdict in &planned.verdicts {
            let (kind, trigger) = match (&verdict.decision, verdict.kind) {
                (Decision::Act(t), Some(kind)) => (kind, *t),
                (Decision::Skip(reason), kind) => {
                    if reason.is_notable() {
                        let outcome = match reason {
                            Reason::Missed { .. } => Outcome::Missed,
                            _ => Outcome::Skipped,
                        };
                        let text = reason_text(reason, tz);
                        info!(
                            "{}: {}{text}",
                            c.name,
                            kind.map(|k| format!("{k} skipped: ")).unwrap_or_default()
                        );
                        items.push(item(kind, outcome, None, text));
                    }
                    continue;
                }
                (Decision::Act(_), None) => continue,
            };
            if let Some(first) = done {
                items.push(item(
                    Some(kind),
                    Outcome::Skipped,
                    Some(trigger),
                    format!("superseded by the {first} in this run"),
                ));
                continue;
            }
            let started = std::time::Instant::now();
            let result = self.act(c, kind, trigger, state).await;
            let took = started.elapsed();
            match result.outcome {
                Outcome::Done => info!("{}: {kind} done{}", c.name, suffix(&result.detail)),
                Outcome::Failed => error!("{}: {kind} failed: {}", c.name, result.detail),
                Outcome::Skipped => warn!("{}: {kind} not done: {}", c.name, result.detail),
                Outcome::UpToDate => info!("{}: image is up to date", c.name),
                Outcome::Available => warn!("{}: update available: {}", c.name, result.detail),
                _ => info!("{}: would {kind}{}", c.name, suffix(&result.detail)),
            }
            if matches!(result.outcome, Outcome::Done | Outcome::Failed) {
                self.record(
                    state,
                    &c.name,
                    kind,
                    trigger,
                    result.outcome == Outcome::Done,
                    &result.detail,
                );
            }
            if result.outcome == Outcome::Done {
                done = Some(kind);
            }
            let replaced_it = result.replaced;
            items.push(result.event(c, Some(kind), Some(trigger), took));
            if replaced_it {
                items.extend(self.dependents(c, state, replaced).await);
            }
        }
        items
    }

    async fn act(
        &self,
        c: &Container,
        kind: ActionKind,
        trigger: Trigger,
        state: &mut State,
    ) -> Done {
        if kind == ActionKind::Update {
            return self.update(c, state).await;
        }
        if self.state_file.is_none() {
            return Done::new(Outcome::WouldDo, "");
        }
        let details = match self.docker.details(&c.id).await {
            Ok(d) => d,
            Err(CallError::Gone(_)) => {
                return Done::new(Outcome::Skipped, "removed by someone else during the run");
            }
            Err(e) => return Done::new(Outcome::Failed, format!("cannot inspect: {e}")),
        };
        if details.name != c.name {
            return Done::new(
                Outcome::Skipped,
                format!("renamed to {} by someone else during the run", details.name),
            );
        }
        match kind {
            ActionKind::Restart => self.restart(&details).await,
            ActionKind::Recreate => self
                .replace(state, &details, kind, &details.image_id, None)
                .await
                .images(&details, &details.image_id, None),
            ActionKind::Health => self.health(state, &details, trigger).await,
            ActionKind::Update => unreachable!("updates are handled above"),
        }
    }

    async fn update(&self, c: &Container, state: &mut State) -> Done {
        let Some(checked) = self.checks.get(&c.name) else {
            return Done::new(Outcome::Skipped, "removed by someone else during the run");
        };
        let d = &checked.details;
        let modifiers = labels::parse(&c.labels, &self.config.labels, self.config.defaults)
            .map(|s| s.modifiers)
            .unwrap_or(self.config.defaults);
        let quarantined = state.container(&c.name).and_then(|s| s.quarantined.clone());
        let next = update::decide(
            checked,
            modifiers,
            quarantined.as_deref(),
            self.config.pull_fallback,
        );
        let dry = self.state_file.is_none();
        let (digest, image) = match next {
            Next::UpToDate => return Done::new(Outcome::UpToDate, ""),
            Next::Available { digest } => {
                return Done::new(
                    Outcome::Available,
                    format!("{} (monitor only: not pulled)", short(&digest)),
                );
            }
            Next::Quarantined { digest } => {
                return Done::new(
                    Outcome::Skipped,
                    format!(
                        "{} was rolled back before; waiting for a newer one",
                        short(&digest)
                    ),
                );
            }
            Next::Skip(why) => return Done::new(Outcome::Skipped, why),
            Next::Fail(why) => return Done::new(Outcome::Failed, why),
            Next::Pull { digest } if dry => {
                let what = match digest.as_deref() {
                    Some(d) => format!("newer image {}", short(d)),
                    None => "the registry cannot tell".into(),
                };
                return Done::new(Outcome::WouldDo, format!("{what}; would pull and replace"));
            }
            Next::UseLocal if dry => {
                return Done::new(
                    Outcome::WouldDo,
                    "no_pull: would replace if the local image is newer",
                );
            }
            Next::Pull { digest } => {
                let Ok(reference) = &checked.reference else {
                    return Done::new(Outcome::Failed, "no reference to pull");
                };
                match update::pull(self.docker, reference, &d.image).await {
                    Ok(image) => (digest, image),
                    Err(why) => return Done::new(Outcome::Failed, why),
                }
            }
            Next::UseLocal => match self.docker.image(&d.image).await {
                Ok(image) => (None, image),
                Err(_) => {
                    return Done::new(
                        Outcome::Failed,
                        format!("no_pull: {} is not on this host", d.image),
                    );
                }
            },
        };
        if image.id == d.image_id {
            return Done::new(Outcome::UpToDate, "");
        }
        if modifiers.no_restart {
            return Done::new(
                Outcome::Available,
                format!("pulled {}; not replaced (no_restart)", short(&image.id)),
            );
        }
        let mut done = self
            .replace(state, d, ActionKind::Update, &image.id, digest.clone())
            .await
            .images(d, &image.id, digest);
        if done.outcome == Outcome::Done {
            done.detail = format!("{} -> {}", short(&d.image_id), short(&image.id));
        }
        done
    }

    /// In place, under the container's claim: another guerite may be swapping it.
    async fn restart(&self, d: &Details) -> Done {
        let Some(swapper) = self.swapper() else {
            return Done::new(Outcome::WouldDo, "");
        };
        let timeout = stop_timeout(d, self.config);
        let claim = match swapper
            .claim(&d.name, ActionKind::Restart, d.into(), timeout, false)
            .await
        {
            Claimed::Held(id) => id,
            Claimed::Busy(why) => return Done::new(Outcome::Skipped, why),
            Claimed::Failed(why) => return Done::new(Outcome::Failed, why),
        };
        let result = self.docker.restart(&d.id, timeout).await;
        swapper.release(&d.name, &claim).await;
        match result {
            Ok(()) => Done::new(Outcome::Done, ""),
            Err(CallError::Gone(_)) => {
                Done::new(Outcome::Skipped, "removed by someone else during the run")
            }
            Err(e) => Done::new(Outcome::Failed, e.to_string()),
        }
    }

    fn swapper(&self) -> Option<Swapper<'_, E>> {
        Some(Swapper {
            docker: self.docker,
            config: self.config,
            state_file: self.state_file?,
            now: self.now,
            me: self.me,
        })
    }

    /// A health replacement: only when the healthcheck says so now, and not while the
    /// container is young (it may still be starting up).
    async fn health(&self, state: &mut State, d: &Details, trigger: Trigger) -> Done {
        if !d.has_healthcheck {
            return Done::new(
                Outcome::Skipped,
                reason_text(&Reason::NoHealthcheck, self.config.tz),
            );
        }
        if d.health == Some(Health::Healthy) {
            return Done::new(Outcome::Skipped, "container is healthy");
        }
        let young = d.started_at.is_some_and(|t| {
            (self.now - t).to_std().unwrap_or_default() < self.config.health_backoff
        });
        if young && trigger != Trigger::Forced {
            return Done::new(
                Outcome::Skipped,
                format!(
                    "started less than GUERITE_HEALTH_CHECK_BACKOFF_SECONDS ({} s) ago",
                    self.config.health_backoff.as_secs()
                ),
            );
        }
        let done = self
            .replace(state, d, ActionKind::Health, &d.image_id, None)
            .await
            .images(d, &d.image_id, None);
        if done.outcome == Outcome::Done {
            // At most one health replacement per backoff period.
            state.container_mut(&d.name).health_after = Some(self.now + self.config.health_backoff);
            self.save(state);
        }
        done
    }

    /// A swap with the container's own image: recreate, health, and dependents.
    async fn replace(
        &self,
        state: &mut State,
        d: &Details,
        kind: ActionKind,
        image: &str,
        digest: Option<String>,
    ) -> Done {
        let Some(swapper) = self.swapper() else {
            return Done::new(Outcome::WouldDo, "");
        };
        let names = self.names();
        match swapper.swap(state, d, kind, image, digest, &names).await {
            Swapped::Replaced => Done {
                replaced: true,
                ..Done::new(Outcome::Done, "")
            },
            Swapped::RolledBack(why) => Done {
                error: Some(why.clone()),
                ..Done::new(
                    Outcome::Failed,
                    format!("{why}; rolled back to the old container"),
                )
            },
            Swapped::UndoPending { reason, error } => Done::new(
                Outcome::Failed,
                format!(
                    "{reason}; the rollback is not finished ({error}); the next run finishes it"
                ),
            ),
            // The new container has the name and passed verification: its dependents follow
            // it, even though the swap itself is finished by the next run.
            Swapped::CommitPending(error) => Done {
                replaced: true,
                ..Done::new(
                    Outcome::Failed,
                    format!(
                        "the new container passed verification, but the swap is not finished \
                         ({error}); the next run finishes it"
                    ),
                )
            },
            Swapped::NotStarted(why) => Done::new(Outcome::Failed, why),
            Swapped::Skipped(why) => Done::new(Outcome::Skipped, why),
        }
    }

    /// Containers in `container:<target>` network mode lost their network with the old
    /// container: recreate them, pointing at the new one.
    async fn dependents(
        &self,
        target: &Container,
        state: &mut State,
        replaced: &mut HashSet<String>,
    ) -> Vec<Event> {
        let mut items = Vec::new();
        for dep in self
            .containers
            .iter()
            .filter(|d| shares_network_of(d, target))
        {
            let Ok(details) = self.docker.details(&dep.id).await else {
                continue;
            };
            // The dependent's `container:<old id>` resolves to the name, now the new container's.
            let started = std::time::Instant::now();
            let done = self
                .replace(
                    state,
                    &details,
                    ActionKind::Recreate,
                    &details.image_id,
                    None,
                )
                .await;
            let took = started.elapsed();
            replaced.insert(dep.name.clone());
            let detail = format!(
                "shares the network of {}, which was replaced{}",
                target.name,
                suffix(&done.detail)
            );
            match done.outcome {
                Outcome::Done => info!("{}: recreated: {detail}", dep.name),
                _ => error!("{}: recreate failed: {detail}", dep.name),
            }
            let done = Done { detail, ..done };
            items.push(done.event(dep, Some(ActionKind::Recreate), None, took));
        }
        items
    }

    fn names(&self) -> HashMap<String, String> {
        self.containers
            .iter()
            .map(|c| (c.id.clone(), c.name.clone()))
            .collect()
    }

    fn record(
        &self,
        state: &mut State,
        name: &str,
        kind: ActionKind,
        trigger: Trigger,
        ok: bool,
        detail: &str,
    ) {
        let entry = state.container_mut(name);
        if let Trigger::Schedule { fire } = trigger {
            entry.handled.insert(kind, fire);
        }
        let message = if ok {
            format!("{kind} done")
        } else {
            format!("{kind} failed: {detail}")
        };
        entry.results.insert(
            kind,
            ActionResult {
                at: self.now,
                ok,
                message,
            },
        );
        self.save(state);
    }

    /// A failed save is logged and the run goes on: the next save may succeed, and the action
    /// it would have recorded has already happened.
    pub fn save(&self, state: &State) {
        if let Some(path) = self.state_file
            && let Err(e) = state.save(path)
        {
            error!("{e:#}");
        }
    }
}

fn shares_network_of(dep: &Container, of: &Container) -> bool {
    dep.network_mode
        .as_deref()
        .and_then(|m| m.strip_prefix("container:"))
        .is_some_and(|target| target == of.id || target == of.name || of.id.starts_with(target))
}

fn suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

#[cfg(test)]
mod tests;
