//! Parses the command line, builds a current-thread runtime, runs the command and maps its
//! outcome to the exit code: 0 nothing failed, 1 something failed, 2 could not run.

mod action;
mod check;
mod cli;
mod config;
mod engine;
mod event;
mod execute;
mod output;
mod plan;
mod process;
mod run;
mod store;
mod swap;
mod update;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use log::{LevelFilter, error};

use cli::{Cli, Command};
use config::Config;

const FAILED: u8 = 1;
const COULD_NOT_RUN: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(config::log_level_or_default(&cli.global));
    match execute(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(FAILED),
        Err(e) => {
            error!("{e:#}");
            ExitCode::from(COULD_NOT_RUN)
        }
    }
}

/// `Ok(true)`: ran and nothing failed; `Ok(false)`: ran, something failed; `Err`: could not run.
fn execute(cli: &Cli) -> anyhow::Result<bool> {
    let config = Config::from_cli(&cli.global)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match &cli.command {
        Command::Run(args) => {
            let options = run::Options {
                dry_run: config::flag("GUERITE_DRY_RUN", &args.dry_run, false)?,
                json: config::flag("GUERITE_JSON", &args.json, false)?,
                request: plan::Request {
                    only: config::only(&args.only)?,
                    force: config::force(&args.force)?,
                },
            };
            let ended = runtime.block_on(run::run(&config, &options, now()?))?;
            Ok(ended == run::Ended::Clean)
        }
        Command::Check(args) => {
            let json = config::flag("GUERITE_JSON", &args.json, false)?;
            let name = config::check_name(&args.name)?;
            let at = config::text("GUERITE_AT", &args.at)?
                .map(|t| check::parse_at(t, config.tz))
                .transpose()?;
            runtime.block_on(check::check(&config, name.as_deref(), json, at))
        }
    }
}

/// The run's clock. Test builds (the `test-hooks` feature) take it from GUERITE_TEST_NOW, so a
/// test can run guerite once per simulated minute across a change of offset.
fn now() -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    #[cfg(feature = "test-hooks")]
    if let Ok(t) = std::env::var("GUERITE_TEST_NOW") {
        use anyhow::Context;
        let t = chrono::DateTime::parse_from_rfc3339(&t)
            .with_context(|| format!("GUERITE_TEST_NOW={t:?} is not an RFC 3339 time"))?;
        return Ok(t.to_utc());
    }
    Ok(chrono::Utc::now())
}

/// Logs go to stderr, one line each, naming the container first; dependencies only speak up
/// when something is wrong.
fn init_logging(level: LevelFilter) {
    env_logger::Builder::new()
        .filter_level(LevelFilter::Warn)
        .filter_module("guerite", level)
        .format(|buf, record| {
            writeln!(
                buf,
                "{} {:<5} {}",
                chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
                record.level(),
                record.args()
            )
        })
        .init();
}
