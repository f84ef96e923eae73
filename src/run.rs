//! One `guerite run`: lock, load state, connect, list, plan, execute, save, report.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use log::{error, info, warn};

use std::collections::BTreeMap;

use crate::config::Config;
use crate::engine::api::Engine;
use crate::engine::docker::Docker;
use crate::engine::own_container;
use crate::event::{Event, Outcome};
use crate::execute::Executor;
use crate::output::report::Report;
use crate::plan::{self, Input, Request};
use crate::store::lock::{self, Acquired};
use crate::store::state::{self, Loaded, State};
use crate::swap::Swapper;
use crate::swap::recovery;
use crate::update;

/// How a run ended, for the exit code.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Clean,
    /// Ran, but something failed or a label is invalid (exit 1).
    Failed,
}

pub struct Options {
    pub dry_run: bool,
    pub json: bool,
    pub request: Request,
}

pub async fn run(config: &Config, options: &Options, now: DateTime<Utc>) -> Result<Ended> {
    let dry_run = options.dry_run;
    // A dry run writes nothing, not even the lock file; it reads a state that is only ever
    // replaced by rename, so it never sees half of one.
    // Before the lock: a run, dry or not, never reads a state others could have written.
    state::check_dir(&config.state_file)?;
    let _lock = if dry_run {
        None
    } else {
        match lock::acquire(&config.state_file, now)? {
            Acquired::Yes(l) => Some(l),
            Acquired::HeldBy(holder) => return Ok(overlap(config, holder, now)),
        }
    };
    let (state, loaded) = State::load(&config.state_file, now, dry_run)?;
    if let Loaded::MovedAside { to, why } = &loaded {
        warn!(
            "state file {} {why}; {} and starting from a fresh state",
            config.state_file.display(),
            if dry_run {
                format!("a real run would move it to {}", to.display())
            } else {
                format!("moved it to {}", to.display())
            }
        );
    }
    let docker = Docker::connect(&config.docker).await?;
    run_on(&docker, config, options, now, state).await
}

/// The run from the container list on, on any engine: recovery, plan, checks, execution, the
/// state's last save and the report. The caller holds the lock.
async fn run_on(
    docker: &impl Engine,
    config: &Config,
    options: &Options,
    now: DateTime<Utc>,
    mut state: State,
) -> Result<Ended> {
    let dry_run = options.dry_run;
    let mut containers = docker.list().await?;
    let me = recovery::this_run(&state.instance, &config.state_file);
    let swapper = Swapper {
        docker,
        config,
        state_file: &config.state_file,
        now,
        me: &me,
    };
    let mut items = Vec::new();
    let mut busy = BTreeMap::new();
    if swapper.needs_recovery(&state, &containers) {
        if dry_run {
            busy = swapper.busy(&containers);
            items.push(item(
                String::new(),
                Outcome::WouldDo,
                "recover interrupted swaps, abandoned claims or their leftovers".into(),
            ));
        } else {
            let recovered = swapper.recover_all(&mut state, &containers).await;
            items.extend(recovered.items);
            busy = recovered.busy;
            if recovered.changed {
                containers = docker.list().await?;
            }
        }
    }
    let self_id = own_container::detect();
    let plan = plan::plan(&Input {
        config,
        state: &state,
        containers: &containers,
        now,
        request: &options.request,
        self_id: self_id.as_deref(),
        busy: &busy,
    });
    let checks = update::check_all(docker, &plan).await;
    let executor = Executor {
        docker,
        me: &me,
        config,
        state_file: (!dry_run).then_some(config.state_file.as_path()),
        now,
        containers: &containers,
        checks: &checks,
    };
    items.extend(executor.run(&plan, &mut state).await);
    if !dry_run {
        if options.request.is_full() {
            state.last_run = Some(now);
            state.retain_names(containers.iter().map(|c| c.name.as_str()));
        }
        if let Err(e) = state.save(&config.state_file) {
            error!("{e:#}");
            items.push(item(String::new(), Outcome::Error, format!("{e:#}")));
        }
    }
    let report = Report {
        at: now,
        tz: config.tz,
        dry_run,
        engine: config.docker.host.clone(),
        api_version: docker.api_version(),
        monitored: plan.containers.iter().filter(|p| p.is_selected()).count(),
        items,
    };
    print(&report, options.json)?;
    Ok(if report.failed() {
        Ended::Failed
    } else {
        Ended::Clean
    })
}

fn item(container: String, outcome: Outcome, detail: String) -> Event {
    Event::new(container, outcome, detail)
}

fn overlap(config: &Config, holder: lock::Holder, now: DateTime<Utc>) -> Ended {
    let pid = holder
        .pid
        .map(|p| format!("pid {p}"))
        .unwrap_or_else(|| "another process".into());
    let since = holder
        .since
        .map(|t| format!(" since {}", t.to_rfc3339()))
        .unwrap_or_default();
    let held_for = holder.since.map(|t| (now - t).num_seconds().max(0) as u64);
    match held_for {
        Some(s) if s > config.lock_stale.as_secs() => {
            error!(
                "another guerite run ({pid}{since}) has held {} for {s} s, longer than \
                 GUERITE_LOCK_STALE_SECONDS ({}); is it stuck?",
                lock::lock_path(&config.state_file).display(),
                config.lock_stale.as_secs()
            );
            Ended::Failed
        }
        _ => {
            info!("another guerite run ({pid}{since}) holds the lock; this run does nothing");
            Ended::Clean
        }
    }
}

pub fn print(report: &Report, json: bool) -> Result<()> {
    use std::io::Write;
    let text = if json {
        let mut s = serde_json::to_string_pretty(report).context("cannot render the report")?;
        s.push('\n');
        s
    } else {
        report.render_text()
    };
    // A closed stdout (e.g. `| head`) is not worth failing a run that already did its work.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}
