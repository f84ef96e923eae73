//! Command line. Every option is also read from its environment variable; values stay raw
//! here, not even checked to be UTF-8 (which clap would reject without naming the variable),
//! so that `config.rs` can reject a bad one with a message naming the variable.

use std::ffi::OsString;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "guerite",
    version,
    about = "Keeps labelled Docker containers up to date and healthy, one run at a time.",
    long_about = "Keeps labelled Docker containers up to date and healthy, one run at a time.\n\n\
        Put cron expressions in container labels (guerite.update, guerite.restart, \
        guerite.recreate, guerite.health_check) and start `guerite run` every minute from cron, \
        a systemd timer or a Kubernetes CronJob. Each run does the work that fell due since the \
        previous one, saves its state and exits.\n\n\
        Exit codes: 0 nothing failed, 1 an action failed or a label is invalid, 2 could not run."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: Global,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Do the work that fell due since the previous run, then exit.
    Run(RunArgs),
    /// Explain what guerite sees: every monitored container, or one in detail.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Print the plan; change nothing (no pull, no container change, no state write).
    #[arg(long, env = "GUERITE_DRY_RUN", num_args = 0..=1, require_equals = true,
          default_missing_value = "true",
          value_name = "BOOL")]
    pub dry_run: Option<OsString>,
    /// Print the run report as JSON on stdout.
    #[arg(long, env = "GUERITE_JSON", num_args = 0..=1, require_equals = true,
          default_missing_value = "true",
          value_name = "BOOL")]
    pub json: Option<OsString>,
    /// Only consider these containers (repeat, or comma-separated).
    #[arg(long, env = "GUERITE_ONLY", value_delimiter = ',', value_name = "NAME")]
    pub only: Vec<OsString>,
    /// Act now, regardless of schedule, on the --only containers (all monitored ones without
    /// --only): update, restart, recreate or health.
    #[arg(long, env = "GUERITE_FORCE", value_name = "ACTION")]
    pub force: Option<OsString>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// A container to diagnose in detail; without it, a table of all monitored containers.
    pub name: Option<OsString>,
    /// Print JSON instead of text.
    #[arg(long, env = "GUERITE_JSON", num_args = 0..=1, require_equals = true,
          default_missing_value = "true",
          value_name = "BOOL")]
    pub json: Option<OsString>,
    /// Evaluate schedules as if it were this time (RFC 3339, or `YYYY-MM-DD HH:MM` in GUERITE_TZ).
    #[arg(long, env = "GUERITE_AT", value_name = "TIME")]
    pub at: Option<OsString>,
}

/// Settings shared by every command. `allow_hyphen_values` lets a negative number reach the
/// validator, which then names the variable, instead of clap taking it for a flag.
#[derive(Args, Debug, Default)]
pub struct Global {
    #[arg(
        long,
        global = true,
        env = "DOCKER_HOST",
        value_name = "URL",
        help_heading = "Docker engine",
        help = "Docker endpoint: unix:///path or tcp://host:port [default: unix:///var/run/docker.sock]"
    )]
    pub docker_host: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "DOCKER_TLS_VERIFY",
        value_name = "BOOL",
        help_heading = "Docker engine",
        help = "Use TLS with the client certificate in DOCKER_CERT_PATH"
    )]
    pub docker_tls_verify: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "DOCKER_CERT_PATH",
        value_name = "DIR",
        help_heading = "Docker engine",
        help = "Directory with ca.pem, cert.pem, key.pem [default: ~/.docker]"
    )]
    pub docker_cert_path: Option<OsString>,

    #[arg(
        long,
        global = true,
        env = "GUERITE_UPDATE_LABEL",
        value_name = "KEY",
        help_heading = "Labels",
        help = "Label holding the image update schedule [default: guerite.update]"
    )]
    pub update_label: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_RESTART_LABEL",
        value_name = "KEY",
        help_heading = "Labels",
        help = "Label holding the in-place restart schedule [default: guerite.restart]"
    )]
    pub restart_label: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_RECREATE_LABEL",
        value_name = "KEY",
        help_heading = "Labels",
        help = "Label holding the recreate (no pull) schedule [default: guerite.recreate]"
    )]
    pub recreate_label: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_HEALTH_CHECK_LABEL",
        value_name = "KEY",
        help_heading = "Labels",
        help = "Label holding the health check schedule [default: guerite.health_check]"
    )]
    pub health_check_label: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_SCOPE",
        value_name = "NAME",
        help_heading = "Selection",
        help = "Only containers whose guerite.scope label equals this; unset: only containers without one"
    )]
    pub scope: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_INCLUDE_CONTAINERS",
        value_name = "NAMES",
        help_heading = "Selection",
        help = "Comma-separated names; when set, only these containers are monitored"
    )]
    pub include_containers: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_EXCLUDE_CONTAINERS",
        value_name = "NAMES",
        help_heading = "Selection",
        help = "Comma-separated names that are never monitored"
    )]
    pub exclude_containers: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_MONITOR_ONLY",
        value_name = "BOOL",
        help_heading = "Selection",
        help = "Default for guerite.monitor_only: report available updates, never pull [default: false]"
    )]
    pub monitor_only: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_NO_PULL",
        value_name = "BOOL",
        help_heading = "Selection",
        help = "Default for guerite.no_pull: never pull, use images already on the host [default: false]"
    )]
    pub no_pull: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_NO_RESTART",
        value_name = "BOOL",
        help_heading = "Selection",
        help = "Default for guerite.no_restart: pull new images but do not replace containers [default: false]"
    )]
    pub no_restart: Option<OsString>,

    #[arg(
        long,
        global = true,
        env = "GUERITE_TZ",
        value_name = "ZONE",
        help_heading = "Schedules",
        help = "Time zone for cron expressions, e.g. Europe/Paris [default: UTC]"
    )]
    pub tz: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_MAX_CATCHUP_SECONDS",
        value_name = "SECONDS",
        allow_hyphen_values = true,
        help_heading = "Schedules",
        help = "Fire times older than this are reported as missed, not acted on [default: 3600]"
    )]
    pub max_catchup_seconds: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_PRUNE_CRON",
        value_name = "CRON",
        help_heading = "Schedules",
        help = "When to prune unused images; unset: never"
    )]
    pub prune_cron: Option<OsString>,

    #[arg(
        long,
        global = true,
        env = "GUERITE_HEALTH_CHECK_BACKOFF_SECONDS",
        value_name = "SECONDS",
        allow_hyphen_values = true,
        help_heading = "Timing",
        help = "Minimum time between health-based replacements; base of the failure backoff [default: 300]"
    )]
    pub health_check_backoff_seconds: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_HEALTH_CHECK_TIMEOUT_SECONDS",
        value_name = "SECONDS",
        allow_hyphen_values = true,
        help_heading = "Timing",
        help = "How long a new container may take to become healthy [default: 60]"
    )]
    pub health_check_timeout_seconds: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_SETTLE_SECONDS",
        value_name = "SECONDS",
        allow_hyphen_values = true,
        help_heading = "Timing",
        help = "How long a new container without healthcheck must keep running [default: 10]"
    )]
    pub settle_seconds: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_STOP_TIMEOUT_SECONDS",
        value_name = "SECONDS",
        allow_hyphen_values = true,
        help_heading = "Timing",
        help = "Stop timeout for containers that set none of their own [default: 10]"
    )]
    pub stop_timeout_seconds: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_ROLLBACK_GRACE_SECONDS",
        value_name = "SECONDS",
        allow_hyphen_values = true,
        help_heading = "Timing",
        help = "Keep rollback leftovers at least this long before prune removes them [default: 3600]"
    )]
    pub rollback_grace_seconds: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_LOCK_STALE_SECONDS",
        value_name = "SECONDS",
        allow_hyphen_values = true,
        help_heading = "Timing",
        help = "A run holding the lock longer than this is reported as an error [default: 21600]"
    )]
    pub lock_stale_seconds: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_PULL_FALLBACK",
        value_name = "BOOL",
        help_heading = "Timing",
        help = "Pull when the registry cannot be asked for a digest [default: true]"
    )]
    pub pull_fallback: Option<OsString>,

    #[arg(
        long,
        global = true,
        env = "GUERITE_STATE_FILE",
        value_name = "PATH",
        help_heading = "Files",
        help = "State file; its lock is <PATH>.lock [default: /var/lib/guerite/state.json]"
    )]
    pub state_file: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_METRICS_FILE",
        value_name = "PATH",
        help_heading = "Files",
        help = "Write Prometheus textfile-collector metrics here"
    )]
    pub metrics_file: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_LOG_LEVEL",
        value_name = "LEVEL",
        help_heading = "Files",
        help = "error, warn, info, debug or trace [default: info]"
    )]
    pub log_level: Option<OsString>,

    #[arg(
        long,
        global = true,
        env = "GUERITE_NOTIFICATIONS",
        value_name = "EVENTS",
        help_heading = "Notifications",
        help = "Comma-separated: update, restart, recreate, health, startup, detect, prune [default: update]"
    )]
    pub notifications: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_PUSHOVER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        help_heading = "Notifications",
        help = "Pushover application token (with GUERITE_PUSHOVER_USER)"
    )]
    pub pushover_token: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_PUSHOVER_USER",
        value_name = "KEY",
        hide_env_values = true,
        help_heading = "Notifications",
        help = "Pushover user key (with GUERITE_PUSHOVER_TOKEN)"
    )]
    pub pushover_user: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_PUSHOVER_API",
        value_name = "URL",
        help_heading = "Notifications",
        help = "Pushover endpoint [default: https://api.pushover.net/1/messages.json]"
    )]
    pub pushover_api: Option<OsString>,
    #[arg(
        long,
        global = true,
        env = "GUERITE_WEBHOOK_URL",
        value_name = "URL",
        hide_env_values = true,
        help_heading = "Notifications",
        help = "POST a JSON {title, message, events} here"
    )]
    pub webhook_url: Option<OsString>,
}
