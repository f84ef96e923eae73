//! `guerite check`: what guerite sees and why, read-only. The views are built from the same plan
//! a run would make, so `check` never disagrees with `run` about what is due.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::action::ActionKind;
use crate::config::{self, Config};
use crate::engine::Container;
use crate::engine::api::Engine;
use crate::engine::docker::Docker;
use crate::engine::own_container;
use crate::output::report::{local, reason_text};
use crate::plan::labels::Modifiers;
use crate::plan::labels::{self, LabelError};
use crate::plan::schedule::{Schedule, Shift};
use crate::plan::{self, Decision, Input, Planned, Request, Verdict};
use crate::store::journal;
use crate::store::state::{ActionResult, ContainerState, State};
use crate::update;

const NEXT_FIRES: usize = 3;
const TIME: &str = "%Y-%m-%d %H:%M %Z";

#[derive(Debug, Serialize)]
pub struct View {
    pub name: String,
    pub id: String,
    pub image: String,
    pub state: String,
    pub status: String,
    pub schedules: Vec<ScheduleView>,
    /// Verdicts about the whole container (scope, swarm, label error).
    pub container_verdicts: Vec<Verdict>,
    pub modifiers: Option<Modifiers>,
    pub depends_on: Vec<String>,
    pub label_errors: Vec<LabelError>,
    pub last_results: BTreeMap<ActionKind, ActionResult>,
    pub warnings: Vec<String>,
    /// Failed replacements in a row, and no scheduled replacement before `retry_after`.
    pub failures: u32,
    pub retry_after: Option<DateTime<Utc>>,
    /// A rolled-back digest that is not tried again.
    pub quarantined: Option<String>,
    /// A swap under way or interrupted.
    pub journal: Option<journal::Entry>,
    /// Filled in for one container with an update schedule: the registry is asked.
    pub update: Option<UpdateView>,
}

#[derive(Debug, Serialize)]
pub struct UpdateView {
    pub reference: String,
    pub local_digests: Vec<String>,
    pub remote: String,
    /// `None` when the registry could not tell.
    pub available: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct ScheduleView {
    pub action: ActionKind,
    pub label: String,
    pub expression: String,
    pub next: Vec<DateTime<Utc>>,
    /// What daylight saving does to those of `next` it touches.
    pub dst: Vec<DstView>,
    pub now: Decision,
}

/// A fire time moved or limited by a change of the zone's offset.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct DstView {
    pub fire: DateTime<Utc>,
    /// The matching wall-clock times concerned, in GUERITE_TZ (`YYYY-MM-DD HH:MM` in JSON).
    #[serde(serialize_with = "wall_times")]
    pub local: Vec<NaiveDateTime>,
    pub runs: DstRuns,
}

#[derive(Debug, Serialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum DstRuns {
    /// The local times do not exist (the clock jumps over them): they run once, at `fire`,
    /// the first instant after the gap.
    AfterTheGap,
    /// The local time happens twice (the clock goes back): a fixed-time schedule runs at the
    /// first only.
    FirstOnly,
    /// As `FirstOnly`, for a wildcard schedule, which runs at both.
    Both,
}

fn wall_times<S: serde::Serializer>(times: &[NaiveDateTime], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(times.iter().map(|t| t.format("%Y-%m-%d %H:%M").to_string()))
}

fn dst_views(sched: &Schedule, next: &[DateTime<Utc>], tz: Tz) -> Vec<DstView> {
    next.iter()
        .filter_map(|fire| {
            let (local, runs) = match sched.shift(*fire, tz)? {
                Shift::Skipped(times) => (times, DstRuns::AfterTheGap),
                Shift::Repeated { local, both } => (
                    vec![local],
                    if both {
                        DstRuns::Both
                    } else {
                        DstRuns::FirstOnly
                    },
                ),
            };
            Some(DstView {
                fire: *fire,
                local,
                runs,
            })
        })
        .collect()
}

/// One line, e.g. "02:30 does not exist on 2027-03-14; runs at 03:00 EDT".
fn dst_text(d: &DstView, tz: Tz) -> String {
    let times: Vec<String> = d
        .local
        .iter()
        .map(|l| l.format("%H:%M").to_string())
        .collect();
    let day = d
        .local
        .first()
        .map(|l| l.date().to_string())
        .unwrap_or_default();
    let fire = local(d.fire, tz, "%H:%M %Z");
    let list = match times.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    };
    match d.runs {
        DstRuns::AfterTheGap if times.len() == 1 => {
            format!("{list} does not exist on {day}; runs at {fire}")
        }
        DstRuns::AfterTheGap => format!("{list} do not exist on {day}; they run once, at {fire}"),
        DstRuns::FirstOnly => {
            format!("{list} happens twice on {day}; runs at the first only, {fire}")
        }
        DstRuns::Both => format!("{list} happens twice on {day}; runs at both, here {fire}"),
    }
}

/// Parses `--at`: RFC 3339, or a wall-clock time in the configured zone.
pub fn parse_at(text: &str, tz: Tz) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text.trim(), format) {
            return tz
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                .with_context(|| {
                    format!(
                        "--at {} does not exist in {tz} (a daylight-saving gap)",
                        config::echo(text)
                    )
                });
        }
    }
    bail!(
        "--at {} is not a time: expected RFC 3339 (2026-11-21T04:00:00Z) or YYYY-MM-DD HH:MM in GUERITE_TZ",
        config::echo(text)
    )
}

pub fn view(
    config: &Config,
    planned: &Planned<'_>,
    state: Option<&ContainerState>,
    now: DateTime<Utc>,
) -> View {
    let c = planned.container;
    let tz = config.tz;
    let schedules = planned
        .settings
        .iter()
        .flat_map(|s| s.schedules.iter())
        .map(|(kind, sched)| {
            let next = sched.next_after(now, tz, NEXT_FIRES);
            ScheduleView {
                action: *kind,
                label: config.labels.key(*kind).to_string(),
                expression: sched.expr().to_string(),
                dst: dst_views(sched, &next, tz),
                next,
                now: planned
                    .verdicts
                    .iter()
                    .find(|v| v.kind == Some(*kind))
                    .map(|v| v.decision.clone())
                    .unwrap_or(Decision::Skip(plan::Reason::NotDue { next: None })),
            }
        })
        .collect();
    View {
        name: c.name.clone(),
        id: c.id.clone(),
        image: c.image.clone(),
        state: c.state.as_str().to_string(),
        status: c.status.clone(),
        schedules,
        container_verdicts: planned
            .verdicts
            .iter()
            .filter(|v| v.kind.is_none())
            .cloned()
            .collect(),
        modifiers: planned.settings.as_ref().map(|s| s.modifiers),
        depends_on: planned
            .settings
            .as_ref()
            .map(|s| s.depends_on.clone())
            .unwrap_or_default(),
        label_errors: planned.errors.clone(),
        last_results: state.map(|s| s.results.clone()).unwrap_or_default(),
        warnings: warnings(config, c),
        failures: state.map(|s| s.failures).unwrap_or_default(),
        retry_after: state.and_then(|s| s.retry_after),
        quarantined: state.and_then(|s| s.quarantined.clone()),
        journal: None,
        update: None,
    }
}

fn warnings(config: &Config, c: &Container) -> Vec<String> {
    let mut w = Vec::new();
    if c.labels.contains_key(&config.labels.health) && c.health().is_none() {
        w.push(format!(
            "{} is set but the container has no healthcheck: health checks are skipped",
            config.labels.health
        ));
    }
    if c.is_swarm_managed() {
        w.push("managed by a swarm service: guerite leaves it to swarm".into());
    }
    if !c.anonymous_volumes.is_empty() {
        w.push(format!(
            "anonymous volumes at {}: guerite re-attaches them by name when it replaces the container; \
             naming them would make them easier to keep",
            c.anonymous_volumes.join(", ")
        ));
    }
    if let Some(target) = c
        .network_mode
        .as_deref()
        .and_then(|m| m.strip_prefix("container:"))
    {
        w.push(format!(
            "shares the network of container {target}: it is recreated whenever that one is replaced"
        ));
    }
    if let Some(project) = c.compose_project() {
        w.push(format!(
            "part of compose project {project:?}: `docker compose up` may later recreate it from the compose file"
        ));
    }
    w
}

pub fn render_table(config: &Config, views: &[View]) -> String {
    if views.is_empty() {
        return format!(
            "No monitored containers: none carries {}, {}, {} or {}.\n",
            config.labels.update,
            config.labels.restart,
            config.labels.recreate,
            config.labels.health
        );
    }
    let tz = config.tz;
    let mut rows: Vec<[String; 6]> = vec![[
        "CONTAINER".into(),
        "STATE".into(),
        "ACTION".into(),
        "SCHEDULE".into(),
        format!("NEXT ({})", tz.name()),
        "LAST RESULT".into(),
    ]];
    for v in views {
        let mut first = true;
        let mut row = |action: String, schedule: String, next: String, last: String| {
            let (name, state) = if first {
                (v.name.clone(), v.state.clone())
            } else {
                (String::new(), String::new())
            };
            first = false;
            rows.push([name, state, action, schedule, next, last]);
        };
        for verdict in &v.container_verdicts {
            if let Decision::Skip(reason) = &verdict.decision {
                row(
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("skipped: {}", reason_text(reason, tz)),
                );
            }
        }
        for e in &v.label_errors {
            row("-".into(), "-".into(), "-".into(), format!("error: {e}"));
        }
        if !v.container_verdicts.is_empty() {
            continue;
        }
        for s in &v.schedules {
            let next = s
                .next
                .first()
                .map(|t| local(*t, tz, "%Y-%m-%d %H:%M"))
                .unwrap_or_else(|| "never".into());
            let last = match v.last_results.get(&s.action) {
                Some(r) => format!(
                    "{} {}",
                    if r.ok { "ok" } else { "FAILED" },
                    local(r.at, tz, "%Y-%m-%d %H:%M")
                ),
                None => "-".into(),
            };
            row(s.action.to_string(), s.expression.clone(), next, last);
        }
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn render_one(config: &Config, v: &View) -> String {
    let tz = config.tz;
    let mut out = format!(
        "{} ({}), {}: {}\n",
        v.name,
        &v.id[..v.id.len().min(12)],
        v.state,
        v.status
    );
    out.push_str(&format!("  image: {}\n", v.image));
    for verdict in &v.container_verdicts {
        if let Decision::Skip(reason) = &verdict.decision {
            out.push_str(&format!("  skipped: {}\n", reason_text(reason, tz)));
        }
    }
    for e in &v.label_errors {
        out.push_str(&format!("  error: {e}\n"));
    }
    if !v.schedules.is_empty() {
        out.push_str(&format!("  schedules (in {}):\n", tz.name()));
    }
    for s in &v.schedules {
        let next: Vec<String> = s.next.iter().map(|t| local(*t, tz, TIME)).collect();
        out.push_str(&format!(
            "    {:<9}{:?} ({})\n",
            s.action.as_str(),
            s.expression,
            s.label
        ));
        out.push_str(&format!(
            "             next: {}\n",
            if next.is_empty() {
                "never".into()
            } else {
                next.join(", ")
            }
        ));
        for d in &s.dst {
            out.push_str(&format!("             dst:  {}\n", dst_text(d, tz)));
        }
        let now = match &s.now {
            Decision::Act(plan::Trigger::Schedule { fire }) => {
                format!("due now (fire time {})", local(*fire, tz, TIME))
            }
            Decision::Act(plan::Trigger::Forced) => "forced".into(),
            Decision::Skip(reason) => reason_text(reason, tz),
        };
        out.push_str(&format!("             now:  {now}\n"));
        if let Some(r) = v.last_results.get(&s.action) {
            out.push_str(&format!(
                "             last: {} at {}\n",
                r.message,
                local(r.at, tz, TIME)
            ));
        }
    }
    if let Some(m) = v.modifiers {
        out.push_str(&format!(
            "  options: monitor_only={} no_pull={} no_restart={}\n",
            m.monitor_only, m.no_pull, m.no_restart
        ));
    }
    if !v.depends_on.is_empty() {
        out.push_str(&format!("  depends on: {}\n", v.depends_on.join(", ")));
    }
    if let Some(u) = &v.update {
        out.push_str(&format!("  image reference: {}\n", u.reference));
        out.push_str(&format!(
            "    local digests: {}\n",
            if u.local_digests.is_empty() {
                "none (built here, or pulled by ID)".into()
            } else {
                u.local_digests.join(", ")
            }
        ));
        out.push_str(&format!("    registry:      {}\n", u.remote));
        out.push_str(&format!(
            "    update available: {}\n",
            match u.available {
                Some(true) => "yes",
                Some(false) => "no",
                None => "unknown",
            }
        ));
    }
    if let Some(d) = &v.quarantined {
        out.push_str(&format!("  quarantined: {d} was rolled back; it is not tried again until the registry serves another\n"));
    }
    if let Some(t) = v.retry_after.filter(|t| *t > Utc::now()) {
        out.push_str(&format!(
            "  backoff: {} failed replacement(s) in a row; no scheduled replacement before {}\n",
            v.failures,
            local(t, tz, TIME)
        ));
    }
    if let Some(j) = &v.journal {
        out.push_str(&format!(
            "  journal: {} started {}, stopped at {}; the next run finishes or undoes it\n",
            j.kind,
            local(j.started, tz, TIME),
            j.phase.as_str()
        ));
    }
    for w in &v.warnings {
        out.push_str(&format!("  warning: {w}\n"));
    }
    out
}

fn update_view(c: &update::Checked, config: &Config, v: &View) -> UpdateView {
    let local_digests = c
        .local
        .as_ref()
        .map(|i| i.repo_digests.clone())
        .unwrap_or_default();
    let next = update::decide(
        c,
        v.modifiers.unwrap_or(config.defaults),
        v.quarantined.as_deref(),
        false,
    );
    let available = match next {
        update::Next::UpToDate => Some(false),
        update::Next::Pull { digest: Some(_) }
        | update::Next::Available { .. }
        | update::Next::Quarantined { .. } => Some(true),
        _ => None,
    };
    UpdateView {
        reference: match &c.reference {
            Ok(r) => r.to_string(),
            Err(why) => format!("{} ({why})", c.details.image),
        },
        local_digests,
        remote: match &c.answer {
            Some(a) => a.to_string(),
            None => "not asked".into(),
        },
        available,
    }
}

/// Runs `check`; returns whether everything it looked at is in order (exit 0) or not (exit 1).
pub async fn check(
    config: &Config,
    name: Option<&str>,
    json: bool,
    at: Option<DateTime<Utc>>,
) -> Result<bool> {
    let now = at.unwrap_or_else(Utc::now);
    let (state, _) = State::load(&config.state_file, now, true)?;
    let docker = Docker::connect(&config.docker).await?;
    check_on(&docker, config, name, json, now, state).await
}

/// `check` from the container list on, on any engine.
async fn check_on(
    docker: &impl Engine,
    config: &Config,
    name: Option<&str>,
    json: bool,
    now: DateTime<Utc>,
    state: State,
) -> Result<bool> {
    let containers = docker.list().await?;
    let self_id = own_container::detect();
    let request = Request::default();
    let me = crate::swap::recovery::this_run(&state.instance, &config.state_file);
    let busy = crate::swap::recovery::busy(&me, &containers);
    let plan = plan::plan(&Input {
        config,
        state: &state,
        containers: &containers,
        now,
        request: &request,
        self_id: self_id.as_deref(),
        busy: &busy,
    });
    let mut views: Vec<View> = plan
        .containers
        .iter()
        .filter(|p| name.is_none_or(|n| p.container.name == n))
        .map(|p| view(config, p, state.container(&p.container.name), now))
        .collect();
    for v in views.iter_mut() {
        v.journal = state.journal.get(&v.name).cloned();
    }
    // One container in detail: ask its registry (one HEAD; never a pull).
    if let (Some(_), [v]) = (name, views.as_mut_slice())
        && v.schedules.iter().any(|s| s.action == ActionKind::Update)
        && let Some(mut checked) = update::inspect(docker, &v.id).await
    {
        update::ask(docker, &mut [&mut checked]).await;
        // The list shows an image ID once the tag has moved on; inspect has the reference.
        v.image = checked.details.image.clone();
        v.update = Some(update_view(&checked, config, v));
    }
    let ok = views.iter().all(|v| v.label_errors.is_empty());
    let text = match name {
        None if json => serde_json::to_string_pretty(&views)? + "\n",
        None => render_table(config, &views),
        Some(n) => match views.first() {
            Some(v) if json => serde_json::to_string_pretty(v)? + "\n",
            Some(v) => render_one(config, v),
            None if state.journal.contains_key(n) || busy.contains_key(n) => {
                let entry = state.journal.get(n);
                let mut msg = format!("{n} is not under its name right now\n");
                if let Some(j) = entry {
                    msg.push_str(&format!(
                        "  journal: {} started {}, stopped at {}; the next run finishes or undoes it\n",
                        j.kind,
                        local(j.started, config.tz, TIME),
                        j.phase.as_str()
                    ));
                }
                if let Some(why) = busy.get(n) {
                    msg.push_str(&format!("  claimed: {why}\n"));
                }
                if json {
                    serde_json::to_string_pretty(&serde_json::json!({
                        "name": n,
                        "journal": entry,
                        "claimed": busy.get(n),
                    }))? + "\n"
                } else {
                    msg
                }
            }
            None => {
                let Some(c) = containers.iter().find(|c| c.name == n) else {
                    bail!("no container named {n:?} on {}", config.docker.host);
                };
                debug_assert!(!labels::is_monitored(&c.labels, &config.labels));
                let msg = format!(
                    "{n} is not monitored: it carries none of the labels {}, {}, {}, {}.",
                    config.labels.update,
                    config.labels.restart,
                    config.labels.recreate,
                    config.labels.health
                );
                if json {
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "name": n, "monitored": false, "why": msg }),
                    )? + "\n"
                } else {
                    msg + "\n"
                }
            }
        },
    };
    print!("{text}");
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_accepts_rfc3339_and_local_wall_time() {
        let paris = chrono_tz::Europe::Paris;
        let utc = |s| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            parse_at("2026-11-21T04:00:00Z", paris).unwrap(),
            utc("2026-11-21T04:00:00Z")
        );
        assert_eq!(
            parse_at("2026-11-21 04:00", paris).unwrap(),
            utc("2026-11-21T03:00:00Z")
        );
        assert!(
            parse_at("2026-03-29 02:30", paris)
                .unwrap_err()
                .to_string()
                .contains("daylight-saving gap")
        );
        assert!(
            parse_at("tomorrow", paris)
                .unwrap_err()
                .to_string()
                .contains("not a time")
        );
    }

    #[test]
    fn says_what_daylight_saving_does() {
        let ny = chrono_tz::America::New_York;
        let utc = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let views = |expr: &str, from: &str| {
            let sched = Schedule::parse(expr).unwrap();
            let next = sched.next_after(utc(from), ny, NEXT_FIRES);
            let views = dst_views(&sched, &next, ny);
            views.iter().map(|d| dst_text(d, ny)).collect::<Vec<_>>()
        };
        #[rustfmt::skip]
        let rows = [
            ("30 2 * * *", "2027-03-13T12:00:00Z", vec!["02:30 does not exist on 2027-03-14; runs at 03:00 EDT"]),
            ("0-59/20 2 * * *", "2027-03-13T12:00:00Z", vec!["02:00, 02:20 and 02:40 do not exist on 2027-03-14; they run once, at 03:00 EDT"]),
            ("5,30 2 * * *", "2027-03-13T12:00:00Z", vec!["02:05 and 02:30 do not exist on 2027-03-14; they run once, at 03:00 EDT"]),
            ("30 1 * * *", "2027-11-06T12:00:00Z", vec!["01:30 happens twice on 2027-11-07; runs at the first only, 01:30 EDT"]),
            ("30 1 * * *", "2027-11-07T12:00:00Z", vec![]),
            ("*/30 1 * * *", "2027-11-07T05:10:00Z", vec![
                "01:30 happens twice on 2027-11-07; runs at both, here 01:30 EDT",
                "01:00 happens twice on 2027-11-07; runs at both, here 01:00 EST",
                "01:30 happens twice on 2027-11-07; runs at both, here 01:30 EST",
            ]),
            ("0 * * * *", "2027-03-14T06:10:00Z", vec![]),
        ];
        for (expr, from, want) in rows {
            assert_eq!(views(expr, from), want, "{expr} from {from}");
        }
    }
}
