//! The planner: a pure function of (config, state, containers, now, request) that says, for every
//! labelled container and each of its schedules, what to do now or why not. No clock, no I/O.

pub mod labels;
pub mod order;
pub mod schedule;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::action::ActionKind;
use crate::config::Config;
use crate::engine::{Container, Health, RunState};
use crate::store::journal;
use crate::store::state::State;
use crate::swap::claim;
use labels::{LabelError, Settings};
use schedule::{Due, Schedule, Window};

/// What the operator asked of this run beyond the schedules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    pub only: Vec<String>,
    pub force: Option<ActionKind>,
}

impl Request {
    /// A run that evaluates every schedule of every container; only such a run may move the
    /// window start (`state.last_run`) forward.
    pub fn is_full(&self) -> bool {
        self.only.is_empty() && self.force.is_none()
    }
}

pub struct Input<'a, 'c> {
    pub config: &'a Config,
    pub state: &'a State,
    pub containers: &'c [Container],
    pub now: DateTime<Utc>,
    pub request: &'a Request,
    /// The container guerite itself runs in, if any: never acted on.
    pub self_id: Option<&'a str>,
    /// Names not to act on in this run (another guerite holds them, or an interrupted swap is
    /// not finished), with why.
    pub busy: &'a BTreeMap<String, String>,
}

pub use crate::event::Trigger;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    NotDue {
        next: Option<DateTime<Utc>>,
    },
    /// The fire time is older than GUERITE_MAX_CATCHUP_SECONDS: the host was off or guerite
    /// did not run, and a 03:00 maintenance action must not happen at noon.
    Missed {
        fire: DateTime<Utc>,
    },
    NotRunning {
        state: RunState,
    },
    /// A replacement failed recently (the backoff doubles with each failure), or a health
    /// replacement happened less than GUERITE_HEALTH_CHECK_BACKOFF_SECONDS ago.
    BackingOff {
        until: DateTime<Utc>,
    },
    NoHealthcheck,
    HealthStarting,
    Healthy,
    SwarmManaged,
    SelfContainer,
    OutOfScope {
        scope: Option<String>,
    },
    Excluded,
    NotIncluded,
    LabelError,
    /// Another guerite is working on it, or a swap of it is not recovered yet.
    Busy {
        why: String,
    },
}

impl Reason {
    /// Worth a line in every run report. The others are the ordinary state of most containers,
    /// are reported as errors, or are warned about once (swarm, no healthcheck) and then shown
    /// only by `check`.
    pub fn is_notable(&self) -> bool {
        !matches!(
            self,
            Reason::NotDue { .. }
                | Reason::OutOfScope { .. }
                | Reason::Excluded
                | Reason::NotIncluded
                | Reason::Healthy
                | Reason::LabelError
                | Reason::SwarmManaged
                | Reason::SelfContainer
                | Reason::NoHealthcheck
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum Decision {
    Act(Trigger),
    Skip(Reason),
}

/// One line of the plan: an action of a container, or (kind `None`) the whole container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub kind: Option<ActionKind>,
    #[serde(flatten)]
    pub decision: Decision,
}

/// A warning said once per container, remembered in state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    SwarmManaged,
    NoHealthcheck,
}

#[derive(Debug)]
pub struct Planned<'a> {
    pub container: &'a Container,
    pub settings: Option<Settings>,
    pub errors: Vec<LabelError>,
    pub verdicts: Vec<Verdict>,
    pub notices: Vec<Notice>,
}

impl Planned<'_> {
    #[cfg(test)]
    pub fn actions(&self) -> impl Iterator<Item = (ActionKind, Trigger)> + '_ {
        self.verdicts
            .iter()
            .filter_map(|v| match (v.kind, &v.decision) {
                (Some(kind), Decision::Act(trigger)) => Some((kind, *trigger)),
                _ => None,
            })
    }

    /// Selected by scope, include and exclude: counts as monitored in the report.
    pub fn is_selected(&self) -> bool {
        !self.verdicts.iter().any(|v| {
            matches!(
                v.decision,
                Decision::Skip(Reason::OutOfScope { .. } | Reason::Excluded | Reason::NotIncluded)
            )
        })
    }
}

#[derive(Debug)]
pub struct Plan<'a> {
    pub containers: Vec<Planned<'a>>,
    /// Names given with --only that match no labelled container.
    pub unknown: Vec<String>,
    /// Names given with --only that are not under their name because someone is working on
    /// them (another guerite, an unfinished swap), with why.
    pub away: Vec<(String, String)>,
    /// Dependency cycles, each as a path back to its start; broken by name order.
    pub cycles: Vec<Vec<String>>,
}

pub fn plan<'c>(input: &Input<'_, 'c>) -> Plan<'c> {
    let cfg = input.config;
    let only: BTreeSet<&str> = input.request.only.iter().map(String::as_str).collect();
    let mut shared = Shared::default();
    let mut containers: Vec<Planned<'c>> = input
        .containers
        .iter()
        .filter(|c| labels::is_monitored(&c.labels, &cfg.labels))
        // The containers a swap keeps aside and its claims carry the labels they copy, but
        // they are the swap's machinery, not containers to act on.
        .filter(|c| journal::leftover(&c.name).is_none() && claim::base_of(c).is_none())
        .filter(|c| only.is_empty() || only.contains(c.name.as_str()))
        .map(|c| plan_container(input, c, &mut shared))
        .collect();
    let index = order::Index::new(input.containers);
    let deps = containers
        .iter()
        .map(|p| {
            (
                p.container.name.clone(),
                order::dependencies(
                    p.container,
                    p.settings.as_ref().map_or(&[], |s| s.depends_on.as_slice()),
                    &index,
                ),
            )
        })
        .collect();
    let names: Vec<String> = containers
        .iter()
        .map(|p| p.container.name.clone())
        .collect();
    let (ordered, cycles) = order::order(&names, &deps);
    // A lookup per container, not a scan of the order: at thousands of containers the scan,
    // once per comparison, was most of a run.
    let rank: HashMap<&str, usize> = ordered
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    containers.sort_by_cached_key(|p| rank.get(p.container.name.as_str()).copied());
    let planned: HashSet<&str> = containers
        .iter()
        .map(|p| p.container.name.as_str())
        .collect();
    let (away, unknown): (Vec<&str>, Vec<&str>) = only
        .iter()
        .filter(|n| !planned.contains(**n))
        .partition(|n| input.busy.contains_key(**n));
    Plan {
        containers,
        unknown: unknown.into_iter().map(str::to_string).collect(),
        away: away
            .into_iter()
            .map(|n| (n.to_string(), input.busy[n].clone()))
            .collect(),
        cycles,
    }
}

fn whole(reason: Reason) -> Vec<Verdict> {
    vec![Verdict {
        kind: None,
        decision: Decision::Skip(reason),
    }]
}

/// GUERITE_INCLUDE_CONTAINERS and GUERITE_EXCLUDE_CONTAINERS let this guerite act on `name`.
pub fn selects_name(cfg: &Config, name: &str) -> bool {
    !cfg.exclude.iter().any(|n| n == name)
        && (cfg.include.is_empty() || cfg.include.iter().any(|n| n == name))
}

fn selection(cfg: &Config, c: &Container, self_id: Option<&str>) -> Option<Reason> {
    let scope = c.labels.get(labels::SCOPE);
    if scope != cfg.scope.as_ref() {
        return Some(Reason::OutOfScope {
            scope: scope.cloned(),
        });
    }
    if !selects_name(cfg, &c.name) {
        return Some(if cfg.exclude.contains(&c.name) {
            Reason::Excluded
        } else {
            Reason::NotIncluded
        });
    }
    if self_id.is_some_and(|me| !me.is_empty() && c.id.starts_with(me)) {
        return Some(Reason::SelfContainer);
    }
    if c.is_swarm_managed() {
        return Some(Reason::SwarmManaged);
    }
    None
}

/// What planning one container leaves for the next: most containers share their schedule
/// expressions with many others, and what follows from an expression alone is worked out once.
#[derive(Default)]
struct Shared {
    /// The first fire time after `now`, by expression (`now` and the zone are the run's).
    next: HashMap<String, Option<DateTime<Utc>>>,
}

impl Shared {
    fn next_after(
        &mut self,
        sched: &Schedule,
        now: DateTime<Utc>,
        tz: Tz,
    ) -> Option<DateTime<Utc>> {
        if let Some(next) = self.next.get(sched.expr()) {
            return *next;
        }
        let next = sched.next_after(now, tz, 1).first().copied();
        self.next.insert(sched.expr().to_string(), next);
        next
    }
}

fn plan_container<'c>(input: &Input<'_, 'c>, c: &'c Container, shared: &mut Shared) -> Planned<'c> {
    let cfg = input.config;
    let remembered = input.state.container(&c.name);
    let mut planned = Planned {
        container: c,
        settings: None,
        errors: Vec::new(),
        verdicts: Vec::new(),
        notices: Vec::new(),
    };
    if let Some(reason) = selection(cfg, c, input.self_id) {
        if reason == Reason::SwarmManaged && !remembered.is_some_and(|r| r.swarm_warned) {
            planned.notices.push(Notice::SwarmManaged);
        }
        planned.verdicts = whole(reason);
        return planned;
    }
    let settings = match labels::parse(&c.labels, &cfg.labels, cfg.defaults) {
        Ok(s) => s,
        Err(errors) => {
            // A typo in any label makes the others untrustworthy too (no_pull=flase must not
            // lead to a pull), so the whole container waits for the operator.
            planned.errors = errors;
            planned.verdicts = whole(Reason::LabelError);
            return planned;
        }
    };
    let kinds: Vec<ActionKind> = match input.request.force {
        Some(kind) => vec![kind],
        None => settings.schedules.iter().map(|(k, _)| *k).collect(),
    };
    for kind in kinds {
        let decision = match input.request.force {
            Some(_) => Decision::Act(Trigger::Forced),
            None => {
                let Some(sched) = settings.schedule(kind) else {
                    continue;
                };
                let window = Window {
                    previous_run: input.state.last_run,
                    handled: remembered.and_then(|r| r.handled.get(&kind).copied()),
                    created: c.created,
                    now: input.now,
                    max_catchup: cfg.max_catchup,
                };
                match schedule::evaluate(sched, cfg.tz, &window) {
                    Due::Due { fire } => Decision::Act(Trigger::Schedule { fire }),
                    Due::Missed { fire } => Decision::Skip(Reason::Missed { fire }),
                    Due::NotDue => Decision::Skip(Reason::NotDue {
                        next: shared.next_after(sched, input.now, cfg.tz),
                    }),
                }
            }
        };
        // A failed replacement backs off every replacement; a health replacement only
        // limits the next health replacement. Restarts replace nothing.
        let backoff = remembered
            .and_then(|r| match kind {
                ActionKind::Restart => None,
                ActionKind::Health => r.retry_after.max(r.health_after),
                ActionKind::Update | ActionKind::Recreate => r.retry_after,
            })
            .filter(|until| *until > input.now);
        let decision = match (decision, backoff) {
            (Decision::Act(Trigger::Schedule { .. }), Some(until)) => {
                Decision::Skip(Reason::BackingOff { until })
            }
            (decision, _) => decision,
        };
        let decision = match decision {
            Decision::Act(trigger) => match gate(kind, trigger, c) {
                Some(reason) => Decision::Skip(reason),
                None => match input.busy.get(&c.name) {
                    Some(why) => Decision::Skip(Reason::Busy { why: why.clone() }),
                    None => Decision::Act(trigger),
                },
            },
            skip => skip,
        };
        if decision == Decision::Skip(Reason::NoHealthcheck)
            && !remembered.is_some_and(|r| r.no_healthcheck_warned)
        {
            planned.notices.push(Notice::NoHealthcheck);
        }
        planned.verdicts.push(Verdict {
            kind: Some(kind),
            decision,
        });
    }
    planned.settings = Some(settings);
    planned
}

/// What the container's current condition says about a due action.
fn gate(kind: ActionKind, trigger: Trigger, c: &Container) -> Option<Reason> {
    let forced = trigger == Trigger::Forced;
    let running = c.state == RunState::Running;
    match kind {
        ActionKind::Health => match c.health() {
            None => Some(Reason::NoHealthcheck),
            Some(_) if !running => Some(Reason::NotRunning { state: c.state }),
            Some(Health::Starting) => Some(Reason::HealthStarting),
            Some(Health::Healthy) => Some(Reason::Healthy),
            Some(Health::Unhealthy) => None,
        },
        // A stopped container was stopped by someone: a schedule must not start it again, but
        // an operator who forces a restart means it.
        ActionKind::Restart if !running && !forced => Some(Reason::NotRunning { state: c.state }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Global;
    use crate::engine::sample;
    use crate::store::state::ContainerState;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn config(set: impl FnOnce(&mut Global)) -> Config {
        let mut g = Global::default();
        set(&mut g);
        Config::from_cli(&g).unwrap()
    }

    /// The verdicts of one container, as (kind, decision) pairs.
    fn verdicts(
        cfg: &Config,
        state: &State,
        containers: &[Container],
        now: &str,
        request: &Request,
    ) -> Vec<(String, Option<ActionKind>, Decision)> {
        let input = Input {
            config: cfg,
            state,
            containers,
            now: at(now),
            request,
            self_id: Some("5elf"),
            busy: &BTreeMap::new(),
        };
        plan(&input)
            .containers
            .iter()
            .flat_map(|p| {
                p.verdicts
                    .iter()
                    .map(|v| (p.container.name.clone(), v.kind, v.decision.clone()))
            })
            .collect()
    }

    fn after(state: &State, last_run: &str) -> State {
        State {
            last_run: Some(at(last_run)),
            ..state.clone()
        }
    }

    #[test]
    fn schedule_table() {
        use ActionKind::*;
        let cfg = config(|_| {});
        let fresh = State::fresh();
        let fire = |s| Decision::Act(Trigger::Schedule { fire: at(s) });
        let not_due = |s| Decision::Skip(Reason::NotDue { next: Some(at(s)) });
        let mut stopped = sample("web", &[("guerite.restart", "* * * * *")]);
        stopped.state = RunState::Exited;
        let mut handled = State::fresh();
        handled
            .container_mut("web")
            .handled
            .insert(Restart, at("2026-11-21T12:01:00Z"));
        let cases: Vec<(&str, Container, State, &str, Decision)> = vec![
            (
                "first run looks back a minute",
                sample("web", &[("guerite.restart", "* * * * *")]),
                fresh.clone(),
                "2026-11-21T12:01:05Z",
                fire("2026-11-21T12:01:00Z"),
            ),
            (
                "same minute again is not due",
                sample("web", &[("guerite.restart", "* * * * *")]),
                after(&fresh, "2026-11-21T12:01:05Z"),
                "2026-11-21T12:01:40Z",
                not_due("2026-11-21T12:02:00Z"),
            ),
            (
                "a fire handled by an --only run is not redone",
                sample("web", &[("guerite.restart", "* * * * *")]),
                after(&handled, "2026-11-21T12:00:30Z"),
                "2026-11-21T12:01:40Z",
                not_due("2026-11-21T12:02:00Z"),
            ),
            (
                "a day of downtime is reported missed, not acted on",
                sample("web", &[("guerite.restart", "0 3 * * *")]),
                after(&fresh, "2026-11-20T02:00:00Z"),
                "2026-11-21T12:00:00Z",
                Decision::Skip(Reason::Missed {
                    fire: at("2026-11-21T03:00:00Z"),
                }),
            ),
            (
                "a stopped container is not restarted by schedule",
                stopped,
                fresh.clone(),
                "2026-11-21T12:01:05Z",
                Decision::Skip(Reason::NotRunning {
                    state: RunState::Exited,
                }),
            ),
        ];
        for (name, container, state, now, expected) in cases {
            let got = verdicts(&cfg, &state, &[container], now, &Request::default());
            assert_eq!(
                got,
                vec![("web".to_string(), Some(Restart), expected)],
                "{name}"
            );
        }
    }

    #[test]
    fn bad_label_stops_only_its_container() {
        let cfg = config(|_| {});
        let containers = [
            sample(
                "bad",
                &[("guerite.restart", "* * * *"), ("guerite.update", "@daily")],
            ),
            sample("good", &[("guerite.restart", "* * * * *")]),
        ];
        let input = Input {
            config: &cfg,
            state: &State::fresh(),
            containers: &containers,
            now: at("2026-11-21T12:01:05Z"),
            request: &Request::default(),
            self_id: None,
            busy: &BTreeMap::new(),
        };
        let p = plan(&input);
        assert_eq!(p.containers[0].errors.len(), 1);
        assert_eq!(p.containers[0].errors[0].label, "guerite.restart");
        assert_eq!(p.containers[0].actions().count(), 0);
        assert_eq!(p.containers[1].actions().count(), 1);
    }

    #[test]
    fn selection_and_safety_skips() {
        let cfg = config(|g| {
            g.exclude_containers = Some("excluded".into());
            g.scope = Some("blue".into());
        });
        let r = |s: &'static str| vec![("guerite.restart", "* * * * *"), ("guerite.scope", s)];
        let mut me = sample("me", &r("blue"));
        me.id = "5elf".repeat(16);
        let mut swarm = sample("swarm", &r("blue"));
        swarm
            .labels
            .insert("com.docker.swarm.service.id".into(), "x".into());
        let containers = [
            sample("excluded", &r("blue")),
            sample("green", &r("green")),
            me,
            swarm,
            sample("unlabelled", &[("guerite.scope", "blue")]),
        ];
        let got = verdicts(
            &cfg,
            &State::fresh(),
            &containers,
            "2026-11-21T12:01:05Z",
            &Request::default(),
        );
        let skip = |n: &str, r| (n.to_string(), None, Decision::Skip(r));
        assert_eq!(
            got,
            vec![
                skip("excluded", Reason::Excluded),
                skip(
                    "green",
                    Reason::OutOfScope {
                        scope: Some("green".into())
                    }
                ),
                skip("me", Reason::SelfContainer),
                skip("swarm", Reason::SwarmManaged),
            ]
        );
        // Without GUERITE_SCOPE, a container that names a scope belongs to another guerite.
        let unscoped = config(|_| {});
        let got = verdicts(
            &unscoped,
            &State::fresh(),
            &containers[1..2],
            "2026-11-21T12:01:05Z",
            &Request::default(),
        );
        assert_eq!(
            got,
            vec![skip(
                "green",
                Reason::OutOfScope {
                    scope: Some("green".into())
                }
            )]
        );
    }

    #[test]
    fn swarm_warning_is_said_once() {
        let cfg = config(|_| {});
        let mut swarm = sample("swarm", &[("guerite.restart", "* * * * *")]);
        swarm
            .labels
            .insert("com.docker.swarm.task.id".into(), "x".into());
        let containers = [swarm];
        let mut state = State::fresh();
        for (warned, expected) in [(false, vec![Notice::SwarmManaged]), (true, vec![])] {
            state.containers.insert(
                "swarm".into(),
                ContainerState {
                    swarm_warned: warned,
                    ..Default::default()
                },
            );
            let input = Input {
                config: &cfg,
                state: &state,
                containers: &containers,
                now: at("2026-11-21T12:01:05Z"),
                request: &Request::default(),
                self_id: None,
                busy: &BTreeMap::new(),
            };
            assert_eq!(plan(&input).containers[0].notices, expected);
        }
    }

    #[test]
    fn health_gate() {
        let cfg = config(|_| {});
        let with_status = |status: &str| {
            let mut c = sample("web", &[("guerite.health_check", "* * * * *")]);
            c.status = status.into();
            c
        };
        let cases = [
            (
                "Up 5 minutes (unhealthy)",
                Decision::Act(Trigger::Schedule {
                    fire: at("2026-11-21T12:01:00Z"),
                }),
            ),
            ("Up 5 minutes (healthy)", Decision::Skip(Reason::Healthy)),
            (
                "Up 2 seconds (health: starting)",
                Decision::Skip(Reason::HealthStarting),
            ),
            ("Up 5 minutes", Decision::Skip(Reason::NoHealthcheck)),
        ];
        for (status, expected) in cases {
            let got = verdicts(
                &cfg,
                &State::fresh(),
                &[with_status(status)],
                "2026-11-21T12:01:05Z",
                &Request::default(),
            );
            assert_eq!(got[0].2, expected, "{status}");
        }
    }

    #[test]
    fn only_and_force() {
        let cfg = config(|_| {});
        let mut stopped = sample("b", &[("guerite.update", "0 4 * * *")]);
        stopped.state = RunState::Exited;
        let containers = [sample("a", &[("guerite.restart", "0 3 * * *")]), stopped];
        let request = Request {
            only: vec!["b".into(), "nope".into(), "held".into()],
            force: Some(ActionKind::Restart),
        };
        // Away under another name while someone works on it: not unknown.
        let busy = BTreeMap::from([("held".to_string(), "a swap is not finished".to_string())]);
        let input = Input {
            config: &cfg,
            state: &State::fresh(),
            containers: &containers,
            now: at("2026-11-21T12:01:05Z"),
            request: &request,
            self_id: None,
            busy: &busy,
        };
        let p = plan(&input);
        assert_eq!(p.unknown, ["nope"]);
        assert_eq!(
            p.away,
            [("held".to_string(), "a swap is not finished".to_string())]
        );
        assert_eq!(p.containers.len(), 1);
        let acts: Vec<_> = p.containers[0].actions().collect();
        assert_eq!(
            acts,
            [(ActionKind::Restart, Trigger::Forced)],
            "forcing starts a stopped container"
        );
        assert!(!request.is_full() && Request::default().is_full());
    }

    #[test]
    fn actions_come_in_precedence_order() {
        let cfg = config(|_| {});
        let c = sample(
            "web",
            &[
                ("guerite.restart", "* * * * *"),
                ("guerite.update", "* * * * *"),
                ("guerite.recreate", "* * * * *"),
            ],
        );
        let got: Vec<_> = verdicts(
            &cfg,
            &State::fresh(),
            &[c],
            "2026-11-21T12:01:05Z",
            &Request::default(),
        )
        .into_iter()
        .map(|(_, k, _)| k.unwrap())
        .collect();
        assert_eq!(
            got,
            [
                ActionKind::Update,
                ActionKind::Recreate,
                ActionKind::Restart
            ]
        );
    }

    #[test]
    fn backoffs_hold_back_only_what_they_are_for() {
        let cfg = config(|_| {});
        let mut c = sample(
            "web",
            &[
                ("guerite.update", "* * * * *"),
                ("guerite.health_check", "* * * * *"),
                ("guerite.restart", "* * * * *"),
            ],
        );
        c.status = "Up 1 hour (unhealthy)".into();
        let until = at("2026-11-21T12:05:00Z");
        let backing_off = Decision::Skip(Reason::BackingOff { until });
        let due = Decision::Act(Trigger::Schedule {
            fire: at("2026-11-21T12:01:00Z"),
        });
        let cases = [
            (
                "a recent health replacement holds back health only",
                ContainerState {
                    health_after: Some(until),
                    ..Default::default()
                },
                [due.clone(), backing_off.clone(), due.clone()],
            ),
            (
                "a failed replacement holds back every replacement, not restarts",
                ContainerState {
                    retry_after: Some(until),
                    ..Default::default()
                },
                [backing_off.clone(), backing_off.clone(), due.clone()],
            ),
        ];
        for (name, remembered, expected) in cases {
            let mut state = State::fresh();
            state.containers.insert("web".into(), remembered);
            let got: Vec<Decision> = verdicts(
                &cfg,
                &state,
                std::slice::from_ref(&c),
                "2026-11-21T12:01:05Z",
                &Request::default(),
            )
            .into_iter()
            .map(|(_, _, d)| d)
            .collect();
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn containers_are_planned_after_their_dependencies() {
        let cfg = config(|_| {});
        let containers = [
            sample(
                "a-web",
                &[
                    ("guerite.restart", "* * * * *"),
                    ("guerite.depends_on", "b-db"),
                ],
            ),
            sample("b-db", &[("guerite.restart", "* * * * *")]),
        ];
        assert_eq!(
            planned_order(&cfg, &containers),
            (vec!["b-db".to_string(), "a-web".to_string()], vec![])
        );
    }

    /// The names of a full run's plan in the order it acts in, and the cycles it broke.
    fn planned_order(cfg: &Config, containers: &[Container]) -> (Vec<String>, Vec<Vec<String>>) {
        let input = Input {
            config: cfg,
            state: &State::fresh(),
            containers,
            now: at("2026-11-21T12:01:05Z"),
            request: &Request::default(),
            self_id: None,
            busy: &BTreeMap::new(),
        };
        let p = plan(&input);
        let names = p.containers.iter().map(|c| c.container.name.clone());
        (names.collect(), p.cycles)
    }

    #[test]
    fn thousands_of_containers_in_dependency_order() {
        // Each depends on the one after it by name, and every tenth shares a network with the
        // one after that by id: the plan is the list backwards.
        let cfg = config(|_| {});
        let n = 2_000;
        let name = |i: usize| format!("c{i:04}");
        let containers: Vec<Container> = (0..n)
            .map(|i| {
                let mut c = sample(&name(i), &[("guerite.restart", "0 0 1 1 *")]);
                c.id = format!("{i:064}");
                let last = i + 1 == n;
                if !last && i % 10 == 0 {
                    c.network_mode = Some(format!("container:{:064}", i + 1));
                } else if !last {
                    c.labels.insert("guerite.depends_on".into(), name(i + 1));
                }
                c
            })
            .collect();
        let expected: Vec<String> = (0..n).rev().map(name).collect();
        assert_eq!(planned_order(&cfg, &containers), (expected, vec![]));
    }

    #[test]
    fn containers_sharing_an_expression_each_get_its_next_fire() {
        let cfg = config(|_| {});
        let containers = [
            sample("a", &[("guerite.restart", "0 3 * * *")]),
            sample(
                "b",
                &[
                    ("guerite.restart", "0 4 * * *"),
                    ("guerite.update", "0 3 * * *"),
                ],
            ),
            sample("c", &[("guerite.restart", "0 3 * * *")]),
            sample("d", &[("guerite.restart", " 0 3 * * * ")]),
        ];
        let got = verdicts(
            &cfg,
            &after(&State::fresh(), "2026-11-21T12:00:00Z"),
            &containers,
            "2026-11-21T12:01:05Z",
            &Request::default(),
        );
        let not_due = |n: &str, k, s| {
            (
                n.to_string(),
                Some(k),
                Decision::Skip(Reason::NotDue { next: Some(at(s)) }),
            )
        };
        assert_eq!(
            got,
            [
                not_due("a", ActionKind::Restart, "2026-11-22T03:00:00Z"),
                not_due("b", ActionKind::Update, "2026-11-22T03:00:00Z"),
                not_due("b", ActionKind::Restart, "2026-11-22T04:00:00Z"),
                not_due("c", ActionKind::Restart, "2026-11-22T03:00:00Z"),
                not_due("d", ActionKind::Restart, "2026-11-22T03:00:00Z"),
            ]
        );
    }
}
