//! Carries out a plan, one container at a time. One container's failure never stops the others;
//! the state is saved after every step that changed anything.

use std::path::Path;

use chrono::{DateTime, Utc};
use log::{error, info, warn};

use crate::config::Config;
use crate::docker::{CallError, Docker};
use crate::plan::{ActionKind, Decision, Notice, Plan, Planned, Reason, Trigger};
use crate::report::{Item, Outcome, reason_text};
use crate::state::{ActionResult, State};

pub struct Executor<'a> {
    pub docker: &'a Docker,
    pub config: &'a Config,
    /// `None` in a dry run: nothing is written.
    pub state_file: Option<&'a Path>,
    pub now: DateTime<Utc>,
}

impl Executor<'_> {
    pub async fn run(&self, plan: &Plan<'_>, state: &mut State) -> Vec<Item> {
        let mut items = Vec::new();
        for name in &plan.unknown {
            error!("{name}: no labelled container has this name (--only)");
            items.push(Item {
                container: name.clone(),
                action: None,
                outcome: Outcome::Error,
                trigger: None,
                detail: "no labelled container has this name".into(),
            });
        }
        for planned in &plan.containers {
            self.notices(planned, state);
            items.extend(self.container(planned, state).await);
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

    async fn container(&self, planned: &Planned<'_>, state: &mut State) -> Vec<Item> {
        let c = planned.container;
        let tz = self.config.tz;
        let mut items = Vec::new();
        let item = |action, outcome, trigger, detail: String| Item {
            container: c.name.clone(),
            action,
            outcome,
            trigger,
            detail,
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
            let (outcome, detail) = self.act(c, kind, trigger).await;
            match outcome {
                Outcome::Done => info!("{}: {kind} done{}", c.name, suffix(&detail)),
                Outcome::Failed => error!("{}: {kind} failed: {detail}", c.name),
                Outcome::NotPerformed | Outcome::Skipped => {
                    warn!("{}: {kind} not done: {detail}", c.name)
                }
                _ => info!("{}: would {kind}{}", c.name, suffix(&detail)),
            }
            if matches!(outcome, Outcome::Done | Outcome::Failed) {
                self.record(
                    state,
                    &c.name,
                    kind,
                    trigger,
                    outcome == Outcome::Done,
                    &detail,
                );
            }
            if outcome == Outcome::Done {
                done = Some(kind);
            }
            items.push(item(Some(kind), outcome, Some(trigger), detail));
        }
        items
    }

    async fn act(
        &self,
        c: &crate::engine::Container,
        kind: ActionKind,
        _trigger: Trigger,
    ) -> (Outcome, String) {
        match kind {
            ActionKind::Restart => {
                if self.state_file.is_none() {
                    return (Outcome::WouldDo, String::new());
                }
                self.restart(c).await
            }
            other => {
                let outcome = if self.state_file.is_none() {
                    Outcome::WouldDo
                } else {
                    Outcome::NotPerformed
                };
                (
                    outcome,
                    format!("{other} actions are not performed by this version yet"),
                )
            }
        }
    }

    async fn restart(&self, c: &crate::engine::Container) -> (Outcome, String) {
        let gone = || {
            (
                Outcome::Skipped,
                "removed by someone else during the run".to_string(),
            )
        };
        let details = match self.docker.details(&c.id).await {
            Ok(d) => d,
            Err(CallError::Gone) => return gone(),
            Err(CallError::Other(e)) => return (Outcome::Failed, format!("cannot inspect: {e:#}")),
        };
        if details.name != c.name {
            return (
                Outcome::Skipped,
                format!("renamed to {} by someone else during the run", details.name),
            );
        }
        // The container's own StopTimeout wins; the variable covers containers that set none.
        let timeout = details
            .stop_timeout
            .and_then(|t| u64::try_from(t).ok())
            .map(std::time::Duration::from_secs)
            .unwrap_or(self.config.stop_timeout);
        match self.docker.restart(&c.id, timeout).await {
            Ok(()) => (Outcome::Done, String::new()),
            Err(CallError::Gone) => gone(),
            Err(CallError::Other(e)) => (Outcome::Failed, format!("{e:#}")),
        }
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

fn suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}
