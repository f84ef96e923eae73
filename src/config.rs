//! The validated, typed configuration. `Config::from_cli` is pure: every raw value from a flag
//! or its variable is checked here, and a bad one is reported naming the variable, the value
//! and what is accepted, before anything touches Docker or the state file.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;
use log::LevelFilter;

use crate::cli::Global;
use crate::plan::ActionKind;
use crate::schedule::Schedule;

pub const DEFAULT_STATE_FILE: &str = "/var/lib/guerite/state.json";
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";
const DEFAULT_PUSHOVER_API: &str = "https://api.pushover.net/1/messages.json";

// Some settings are validated now, so that a typo fails today, but are only consumed by the
// update, health, prune and notification work that builds on this base.
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub struct Config {
    pub docker: DockerEndpoint,
    pub labels: LabelKeys,
    pub defaults: Modifiers,
    pub scope: Option<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub tz: Tz,
    pub max_catchup: Duration,
    pub prune: Option<Schedule>,
    pub health_backoff: Duration,
    pub health_timeout: Duration,
    pub settle: Duration,
    pub stop_timeout: Duration,
    pub rollback_grace: Duration,
    pub lock_stale: Duration,
    pub pull_fallback: bool,
    pub state_file: PathBuf,
    pub metrics_file: Option<PathBuf>,
    pub log_level: LevelFilter,
    pub notifications: BTreeSet<Event>,
    pub pushover: Option<Pushover>,
    pub webhook: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DockerEndpoint {
    pub host: String,
    /// Present when DOCKER_TLS_VERIFY is on: the directory holding ca.pem, cert.pem, key.pem.
    pub tls_cert_path: Option<PathBuf>,
}

/// The label keys that opt a container in, one per scheduled action.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelKeys {
    pub update: String,
    pub restart: String,
    pub recreate: String,
    pub health: String,
}

impl LabelKeys {
    pub fn key(&self, kind: ActionKind) -> &str {
        match kind {
            ActionKind::Update => &self.update,
            ActionKind::Restart => &self.restart,
            ActionKind::Recreate => &self.recreate,
            ActionKind::Health => &self.health,
        }
    }
}

/// Per-container switches; the global variables give their defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Modifiers {
    pub monitor_only: bool,
    pub no_pull: bool,
    pub no_restart: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pushover {
    pub token: String,
    pub user: String,
    pub api: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    Update,
    Restart,
    Recreate,
    Health,
    Startup,
    Detect,
    Prune,
}

const EVENT_NAMES: &str =
    "update, restart, recreate, health (or health_check), startup, detect, prune";

impl FromStr for Event {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "update" => Event::Update,
            "restart" => Event::Restart,
            "recreate" => Event::Recreate,
            "health" | "health_check" => Event::Health,
            "startup" => Event::Startup,
            "detect" => Event::Detect,
            "prune" => Event::Prune,
            _ => return Err(()),
        })
    }
}

/// A rejected setting, rendered as one line for the operator.
#[derive(Debug, PartialEq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn invalid(var: &str, value: &str, accepted: &str) -> ConfigError {
    ConfigError(format!("{var}={value:?} is not valid: {accepted}"))
}

/// Strict booleans: a typo such as `flase` is an error, never silently false.
pub fn parse_bool(var: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(invalid(
            var,
            value,
            "expected true or false (also 1/0, yes/no, on/off)",
        )),
    }
}

pub fn opt_bool(var: &str, value: Option<&str>, default: bool) -> Result<bool, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v.trim().is_empty() => Ok(default),
        Some(v) => parse_bool(var, v),
    }
}

fn seconds(var: &str, value: Option<&str>, default: u64) -> Result<Duration, ConfigError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(Duration::from_secs(default));
    };
    v.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| invalid(var, v, "expected a whole number of seconds, 0 or more"))
}

fn names(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(|n| n.trim().trim_start_matches('/').to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

fn non_empty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn label_key(var: &str, value: Option<&str>, default: &str) -> Result<String, ConfigError> {
    match value.map(str::trim) {
        None | Some("") => Ok(default.to_string()),
        Some(v) if v.contains(char::is_whitespace) || v.contains('=') => Err(invalid(
            var,
            v,
            "expected a label key without spaces or '='",
        )),
        Some(v) => Ok(v.to_string()),
    }
}

fn log_level(value: Option<&str>) -> Result<LevelFilter, ConfigError> {
    let Some(v) = non_empty(value) else {
        return Ok(LevelFilter::Info);
    };
    // Python level names are accepted too: the seed's operators set WARNING or CRITICAL.
    match v.to_ascii_lowercase().as_str() {
        "trace" => Ok(LevelFilter::Trace),
        "debug" => Ok(LevelFilter::Debug),
        "info" => Ok(LevelFilter::Info),
        "warn" | "warning" => Ok(LevelFilter::Warn),
        "error" | "critical" => Ok(LevelFilter::Error),
        "off" => Ok(LevelFilter::Off),
        _ => Err(invalid(
            "GUERITE_LOG_LEVEL",
            &v,
            "expected error, warn, info, debug, trace or off",
        )),
    }
}

fn notifications(value: Option<&str>) -> Result<BTreeSet<Event>, ConfigError> {
    let Some(v) = value else {
        return Ok(BTreeSet::from([Event::Update]));
    };
    let mut events = BTreeSet::new();
    for word in v.split(',').map(|w| w.trim().to_ascii_lowercase()) {
        if word.is_empty() {
            continue;
        }
        let event = word.parse::<Event>().map_err(|()| {
            ConfigError(format!(
                "GUERITE_NOTIFICATIONS={v:?}: unknown event {word:?}; accepted: {EVENT_NAMES}"
            ))
        })?;
        events.insert(event);
    }
    Ok(events)
}

fn docker_endpoint(g: &Global) -> Result<DockerEndpoint, ConfigError> {
    let raw = non_empty(g.docker_host.as_deref()).unwrap_or_else(|| DEFAULT_DOCKER_HOST.into());
    // The seed documents `unix://var/run/docker.sock` (two slashes); read it as the absolute path.
    let host = match raw.strip_prefix("unix://") {
        Some(path) if !path.starts_with('/') => format!("unix:///{path}"),
        _ => raw.clone(),
    };
    let scheme_ok = ["unix://", "tcp://", "http://", "https://"]
        .iter()
        .any(|s| host.starts_with(s));
    if !scheme_ok {
        return Err(invalid(
            "DOCKER_HOST",
            &raw,
            "expected unix:///path/to/docker.sock or tcp://host:port",
        ));
    }
    let tls = opt_bool("DOCKER_TLS_VERIFY", g.docker_tls_verify.as_deref(), false)?
        || host.starts_with("https://");
    let tls_cert_path = if tls {
        if host.starts_with("unix://") {
            return Err(ConfigError(format!(
                "DOCKER_TLS_VERIFY is on but DOCKER_HOST={raw:?} is a unix socket; TLS needs tcp://host:port"
            )));
        }
        let dir = match non_empty(g.docker_cert_path.as_deref()) {
            Some(d) => PathBuf::from(d),
            None => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".docker"))
                .ok_or_else(|| {
                    ConfigError(
                        "DOCKER_TLS_VERIFY is on but neither DOCKER_CERT_PATH nor HOME is set"
                            .into(),
                    )
                })?,
        };
        Some(dir)
    } else {
        None
    };
    Ok(DockerEndpoint {
        host,
        tls_cert_path,
    })
}

impl Config {
    pub fn from_cli(g: &Global) -> Result<Config, ConfigError> {
        let tz = match non_empty(g.tz.as_deref()) {
            None => Tz::UTC,
            Some(z) => z.parse::<Tz>().map_err(|_| {
                invalid(
                    "GUERITE_TZ",
                    &z,
                    "expected an IANA time zone such as UTC or Europe/Paris",
                )
            })?,
        };
        let prune = match non_empty(g.prune_cron.as_deref()) {
            None => None,
            Some(expr) => {
                Some(Schedule::parse(&expr).map_err(|e| invalid("GUERITE_PRUNE_CRON", &expr, &e))?)
            }
        };
        let pushover = match (
            non_empty(g.pushover_token.as_deref()),
            non_empty(g.pushover_user.as_deref()),
        ) {
            (Some(token), Some(user)) => Some(Pushover {
                token,
                user,
                api: non_empty(g.pushover_api.as_deref())
                    .unwrap_or_else(|| DEFAULT_PUSHOVER_API.into()),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError(
                    "GUERITE_PUSHOVER_TOKEN is set but GUERITE_PUSHOVER_USER is not; Pushover needs both".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError(
                    "GUERITE_PUSHOVER_USER is set but GUERITE_PUSHOVER_TOKEN is not; Pushover needs both".into(),
                ));
            }
        };
        let webhook = non_empty(g.webhook_url.as_deref());
        if let Some(url) = &webhook
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            // The URL may carry a secret: name the variable, not the value.
            return Err(ConfigError(
                "GUERITE_WEBHOOK_URL is not valid: expected an http:// or https:// URL".into(),
            ));
        }
        let labels = LabelKeys {
            update: label_key(
                "GUERITE_UPDATE_LABEL",
                g.update_label.as_deref(),
                "guerite.update",
            )?,
            restart: label_key(
                "GUERITE_RESTART_LABEL",
                g.restart_label.as_deref(),
                "guerite.restart",
            )?,
            recreate: label_key(
                "GUERITE_RECREATE_LABEL",
                g.recreate_label.as_deref(),
                "guerite.recreate",
            )?,
            health: label_key(
                "GUERITE_HEALTH_CHECK_LABEL",
                g.health_check_label.as_deref(),
                "guerite.health_check",
            )?,
        };
        Ok(Config {
            docker: docker_endpoint(g)?,
            labels,
            defaults: Modifiers {
                monitor_only: opt_bool("GUERITE_MONITOR_ONLY", g.monitor_only.as_deref(), false)?,
                no_pull: opt_bool("GUERITE_NO_PULL", g.no_pull.as_deref(), false)?,
                no_restart: opt_bool("GUERITE_NO_RESTART", g.no_restart.as_deref(), false)?,
            },
            scope: non_empty(g.scope.as_deref()),
            include: names(g.include_containers.as_deref()),
            exclude: names(g.exclude_containers.as_deref()),
            tz,
            max_catchup: seconds(
                "GUERITE_MAX_CATCHUP_SECONDS",
                g.max_catchup_seconds.as_deref(),
                3600,
            )?,
            prune,
            health_backoff: seconds(
                "GUERITE_HEALTH_CHECK_BACKOFF_SECONDS",
                g.health_check_backoff_seconds.as_deref(),
                300,
            )?,
            health_timeout: seconds(
                "GUERITE_HEALTH_CHECK_TIMEOUT_SECONDS",
                g.health_check_timeout_seconds.as_deref(),
                60,
            )?,
            settle: seconds("GUERITE_SETTLE_SECONDS", g.settle_seconds.as_deref(), 10)?,
            stop_timeout: seconds(
                "GUERITE_STOP_TIMEOUT_SECONDS",
                g.stop_timeout_seconds.as_deref(),
                10,
            )?,
            rollback_grace: seconds(
                "GUERITE_ROLLBACK_GRACE_SECONDS",
                g.rollback_grace_seconds.as_deref(),
                3600,
            )?,
            lock_stale: seconds(
                "GUERITE_LOCK_STALE_SECONDS",
                g.lock_stale_seconds.as_deref(),
                21600,
            )?,
            pull_fallback: opt_bool("GUERITE_PULL_FALLBACK", g.pull_fallback.as_deref(), true)?,
            state_file: PathBuf::from(
                non_empty(g.state_file.as_deref()).unwrap_or_else(|| DEFAULT_STATE_FILE.into()),
            ),
            metrics_file: non_empty(g.metrics_file.as_deref()).map(PathBuf::from),
            log_level: log_level(g.log_level.as_deref())?,
            notifications: notifications(g.notifications.as_deref())?,
            pushover,
            webhook,
        })
    }
}

/// The log level alone, read before the rest so that a config error can be logged at all.
pub fn log_level_or_default(g: &Global) -> LevelFilter {
    log_level(g.log_level.as_deref()).unwrap_or(LevelFilter::Info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(set: impl FnOnce(&mut Global)) -> Global {
        let mut g = Global::default();
        set(&mut g);
        g
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let c = Config::from_cli(&Global::default()).unwrap();
        assert_eq!(c.docker.host, DEFAULT_DOCKER_HOST);
        assert_eq!(c.docker.tls_cert_path, None);
        assert_eq!(c.labels.update, "guerite.update");
        assert_eq!(c.labels.health, "guerite.health_check");
        assert_eq!(c.tz, Tz::UTC);
        assert_eq!(c.state_file, PathBuf::from(DEFAULT_STATE_FILE));
        assert_eq!(c.health_backoff, Duration::from_secs(300));
        assert_eq!(c.health_timeout, Duration::from_secs(60));
        assert_eq!(c.settle, Duration::from_secs(10));
        assert_eq!(c.max_catchup, Duration::from_secs(3600));
        assert_eq!(c.rollback_grace, Duration::from_secs(3600));
        assert_eq!(c.lock_stale, Duration::from_secs(21600));
        assert!(c.pull_fallback);
        assert_eq!(c.notifications, BTreeSet::from([Event::Update]));
        assert_eq!(c.log_level, LevelFilter::Info);
        assert!(c.prune.is_none() && c.pushover.is_none() && c.webhook.is_none());
        assert_eq!(c.defaults, Modifiers::default());
    }

    #[test]
    fn rejected_values_name_the_variable_and_the_value() {
        let cases: Vec<(&str, Global, &str)> = vec![
            (
                "boolean typo",
                global(|g| g.no_pull = Some("flase".into())),
                "GUERITE_NO_PULL=\"flase\"",
            ),
            (
                "unknown event",
                global(|g| g.notifications = Some("update,restrat".into())),
                "unknown event \"restrat\"; accepted: update, restart",
            ),
            (
                "unknown zone",
                global(|g| g.tz = Some("Mars/Olympus".into())),
                "GUERITE_TZ=\"Mars/Olympus\"",
            ),
            (
                "bad prune cron",
                global(|g| g.prune_cron = Some("0 4 * *".into())),
                "GUERITE_PRUNE_CRON=\"0 4 * *\"",
            ),
            (
                "negative duration",
                global(|g| g.settle_seconds = Some("-5".into())),
                "GUERITE_SETTLE_SECONDS=\"-5\" is not valid: expected a whole number of seconds",
            ),
            (
                "fractional duration",
                global(|g| g.max_catchup_seconds = Some("1.5".into())),
                "GUERITE_MAX_CATCHUP_SECONDS",
            ),
            (
                "log level",
                global(|g| g.log_level = Some("loud".into())),
                "GUERITE_LOG_LEVEL=\"loud\"",
            ),
            (
                "docker scheme",
                global(|g| g.docker_host = Some("ssh://box".into())),
                "DOCKER_HOST=\"ssh://box\"",
            ),
            (
                "tls on a socket",
                global(|g| g.docker_tls_verify = Some("1".into())),
                "DOCKER_TLS_VERIFY is on but DOCKER_HOST",
            ),
            (
                "half pushover",
                global(|g| g.pushover_token = Some("t".into())),
                "GUERITE_PUSHOVER_TOKEN is set but GUERITE_PUSHOVER_USER is not",
            ),
            (
                "label with space",
                global(|g| g.update_label = Some("a b".into())),
                "GUERITE_UPDATE_LABEL",
            ),
        ];
        for (name, g, expected) in cases {
            let err = Config::from_cli(&g).expect_err(name).to_string();
            assert!(err.contains(expected), "{name}: {err:?} lacks {expected:?}");
            assert!(!err.contains('\n'), "{name}: one line, got {err:?}");
        }
    }

    #[test]
    fn webhook_errors_do_not_echo_the_secret_url() {
        let err = Config::from_cli(&global(|g| {
            g.webhook_url = Some("ftp://u:secret@h/x".into())
        }))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("GUERITE_WEBHOOK_URL") && !err.contains("secret"),
            "{err}"
        );
    }

    #[test]
    fn accepted_spellings() {
        let c = Config::from_cli(&global(|g| {
            g.docker_host = Some("unix://var/run/docker.sock".into());
            g.monitor_only = Some("YES".into());
            g.notifications = Some(" Update , health_check,prune ".into());
            g.tz = Some("Europe/Paris".into());
            g.log_level = Some("WARNING".into());
            g.include_containers = Some("web, /db,,".into());
            g.prune_cron = Some("@daily".into());
        }))
        .unwrap();
        assert_eq!(c.docker.host, "unix:///var/run/docker.sock");
        assert!(c.defaults.monitor_only);
        assert_eq!(
            c.notifications,
            BTreeSet::from([Event::Update, Event::Health, Event::Prune])
        );
        assert_eq!(c.tz, chrono_tz::Europe::Paris);
        assert_eq!(c.log_level, LevelFilter::Warn);
        assert_eq!(c.include, vec!["web".to_string(), "db".to_string()]);
        assert!(c.prune.is_some());
    }

    #[test]
    fn tls_uses_the_cert_path() {
        let c = Config::from_cli(&global(|g| {
            g.docker_host = Some("tcp://10.0.0.1:2376".into());
            g.docker_tls_verify = Some("1".into());
            g.docker_cert_path = Some("/certs".into());
        }))
        .unwrap();
        assert_eq!(c.docker.tls_cert_path, Some(PathBuf::from("/certs")));
        // The seed's SSH-tunnel example sets DOCKER_TLS_VERIFY=0 and means "off".
        let c = Config::from_cli(&global(|g| {
            g.docker_host = Some("tcp://localhost:2376".into());
            g.docker_tls_verify = Some("0".into());
        }))
        .unwrap();
        assert_eq!(c.docker.tls_cert_path, None);
    }
}
