//! The validated, typed configuration. `Config::from_cli` is pure: every raw value from a flag
//! or its variable is checked here, and a bad one is reported naming the variable, the value
//! and what is accepted, before anything touches Docker or the state file.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;
use log::LevelFilter;

use crate::action::ActionKind;
use crate::cli::Global;
use crate::plan::labels::{self, LabelKeys, Modifiers};
use crate::plan::schedule::Schedule;

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

fn invalid(var: &str, value: impl AsRef<OsStr>, accepted: &str) -> ConfigError {
    ConfigError(format!("{var}={} is not valid: {accepted}", echo(value)))
}

/// How much of a value an error repeats: a 10,000-character value is not echoed whole.
const ECHO_CHARS: usize = 64;

/// A value as an error shows it: quoted, with control characters, quotes and bytes that are
/// not UTF-8 escaped, so that nothing reaches the terminal raw; cut after `ECHO_CHARS`
/// characters, marked by `…` after the closing quote.
pub fn echo(value: impl AsRef<OsStr>) -> String {
    let mut out = String::from("\"");
    let mut shown = 0;
    for chunk in value.as_ref().as_encoded_bytes().utf8_chunks() {
        let invalid = chunk.invalid().iter().map(|b| format!("\\x{b:02X}"));
        let valid = chunk.valid().chars().map(|c| match c {
            '\'' => c.to_string(),
            c => c.escape_debug().to_string(),
        });
        for piece in valid.chain(invalid) {
            if shown == ECHO_CHARS {
                out.push_str("\"…");
                return out;
            }
            out.push_str(&piece);
            shown += 1;
        }
    }
    out.push('"');
    out
}

/// The value of a variable or flag as text, or an error naming it; clap is told to leave
/// values raw so that this message, not its own nameless one, is what the operator sees.
pub fn text<'a>(var: &str, value: &'a Option<OsString>) -> Result<Option<&'a str>, ConfigError> {
    match value {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .ok_or_else(|| invalid(var, v, "expected UTF-8 text")),
    }
}

/// The longest path Linux opens (PATH_MAX, with its NUL).
const MAX_PATH_BYTES: usize = 4095;

/// Paths need not be UTF-8 (only trimmed when they are text), but they are printed in many
/// messages: no control characters, and no longer than the kernel would open anyway.
fn path(var: &str, value: &Option<OsString>) -> Result<Option<PathBuf>, ConfigError> {
    let Some(v) = value.as_ref() else {
        return Ok(None);
    };
    let v: &OsStr = match v.to_str() {
        Some(s) if s.trim().is_empty() => return Ok(None),
        Some(s) => OsStr::new(s.trim()),
        None => v,
    };
    let bytes = v.as_encoded_bytes();
    if bytes.iter().any(|b| b.is_ascii_control()) {
        return Err(invalid(
            var,
            v,
            "expected a path without control characters",
        ));
    }
    if bytes.len() > MAX_PATH_BYTES {
        return Err(invalid(
            var,
            v,
            &format!("expected a path of at most {MAX_PATH_BYTES} bytes"),
        ));
    }
    Ok(Some(PathBuf::from(v)))
}

/// Error texts from other parsers may quote parts of the value: tamed like a value.
fn tame(message: &str) -> String {
    const MAX: usize = 200;
    let mut out: String = message
        .chars()
        .take(MAX)
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    if message.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

/// A boolean variable: [`labels::parse_bool`]'s words, with the variable named on a typo.
pub fn parse_bool(var: &str, value: &str) -> Result<bool, ConfigError> {
    labels::parse_bool(value).ok_or_else(|| invalid(var, value, labels::BOOL_WORDS))
}

pub fn opt_bool(var: &str, value: Option<&str>, default: bool) -> Result<bool, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v.trim().is_empty() => Ok(default),
        Some(v) => parse_bool(var, v),
    }
}

/// A boolean variable or flag.
pub fn flag(var: &str, value: &Option<OsString>, default: bool) -> Result<bool, ConfigError> {
    opt_bool(var, text(var, value)?, default)
}

/// The largest value of every `*_SECONDS` variable: 365 days. Far beyond any sensible
/// timeout or period, and small enough that no deadline computed from it can overflow (nor
/// Docker's 32-bit stop timeout).
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;

fn seconds(var: &str, value: &Option<OsString>, default: u64) -> Result<Duration, ConfigError> {
    let Some(v) = text(var, value)?.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(Duration::from_secs(default));
    };
    match v.parse::<u64>() {
        Ok(n) if n <= MAX_SECONDS => Ok(Duration::from_secs(n)),
        // A number too large for u64 is as much over the bound as one that fits.
        _ if v.bytes().all(|b| b.is_ascii_digit()) => Err(invalid(
            var,
            v,
            &format!("expected at most {MAX_SECONDS} seconds (365 days)"),
        )),
        _ => Err(invalid(
            var,
            v,
            &format!("expected a whole number of seconds from 0 to {MAX_SECONDS}"),
        )),
    }
}

/// Docker's container-name grammar: nothing else can name a container, and a name that
/// passes it is safe to print. The length cap is guerite's: the name is repeated in the report.
fn is_container_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

const MAX_NAME: usize = 255;

const NAME_GRAMMAR: &str = "expected a container name: a letter or digit, then letters, \
                            digits, '_', '.' or '-', at most 255 characters";

/// The `--only` names (repeated, or comma-separated in GUERITE_ONLY), each a container name.
pub fn only(values: &[OsString]) -> Result<Vec<String>, ConfigError> {
    let mut names = Vec::new();
    for value in values {
        let v = value
            .to_str()
            .ok_or_else(|| invalid("GUERITE_ONLY", value, "expected UTF-8 text"))?;
        let n = v.trim().trim_start_matches('/');
        if n.is_empty() {
            continue;
        }
        if !is_container_name(n) {
            return Err(invalid("GUERITE_ONLY", v, NAME_GRAMMAR));
        }
        names.push(n.to_string());
    }
    Ok(names)
}

/// The container `check` diagnoses.
pub fn check_name(value: &Option<OsString>) -> Result<Option<String>, ConfigError> {
    let Some(v) = text("NAME", value)? else {
        return Ok(None);
    };
    let n = v.trim().trim_start_matches('/');
    if !is_container_name(n) {
        return Err(invalid("NAME", v, NAME_GRAMMAR));
    }
    Ok(Some(n.to_string()))
}

/// `--force`: the action to do now.
pub fn force(value: &Option<OsString>) -> Result<Option<ActionKind>, ConfigError> {
    match non_empty(text("GUERITE_FORCE", value)?) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            invalid(
                "GUERITE_FORCE",
                &v,
                "expected update, restart, recreate or health",
            )
        }),
    }
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
        Some(v) if v.contains(|c: char| c.is_whitespace() || c.is_control() || c == '=') => {
            Err(invalid(
                var,
                v,
                "expected a label key without spaces, control characters or '='",
            ))
        }
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
                "GUERITE_NOTIFICATIONS={}: unknown event {}; accepted: {EVENT_NAMES}",
                echo(v),
                echo(&word)
            ))
        })?;
        events.insert(event);
    }
    Ok(events)
}

/// A socket path is at most 107 bytes and a host name 253: far more is not an endpoint.
const MAX_DOCKER_HOST: usize = 512;

fn docker_endpoint(g: &Global) -> Result<DockerEndpoint, ConfigError> {
    let raw = non_empty(text("DOCKER_HOST", &g.docker_host)?)
        .unwrap_or_else(|| DEFAULT_DOCKER_HOST.into());
    // The seed documents `unix://var/run/docker.sock` (two slashes); read it as the absolute path.
    let host = match raw.strip_prefix("unix://") {
        Some(path) if !path.starts_with('/') => format!("unix:///{path}"),
        _ => raw.clone(),
    };
    let scheme_ok = ["unix://", "tcp://", "http://", "https://"]
        .iter()
        .any(|s| host.starts_with(s));
    // Printed in every connection error: no control characters, no kilobytes.
    if raw.len() > MAX_DOCKER_HOST || raw.contains(char::is_control) {
        return Err(invalid(
            "DOCKER_HOST",
            &raw,
            &format!(
                "expected an endpoint of at most {MAX_DOCKER_HOST} characters, without control characters"
            ),
        ));
    }
    if !scheme_ok {
        return Err(invalid(
            "DOCKER_HOST",
            &raw,
            "expected unix:///path/to/docker.sock or tcp://host:port",
        ));
    }
    let tls =
        flag("DOCKER_TLS_VERIFY", &g.docker_tls_verify, false)? || host.starts_with("https://");
    let tls_cert_path = if tls {
        if host.starts_with("unix://") {
            return Err(ConfigError(format!(
                "DOCKER_TLS_VERIFY is on but DOCKER_HOST={} is a unix socket; TLS needs tcp://host:port",
                echo(&raw)
            )));
        }
        let dir = match path("DOCKER_CERT_PATH", &g.docker_cert_path)? {
            Some(d) => d,
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
        let tz = match non_empty(text("GUERITE_TZ", &g.tz)?) {
            None => Tz::UTC,
            Some(z) => z.parse::<Tz>().map_err(|_| {
                invalid(
                    "GUERITE_TZ",
                    &z,
                    "expected an IANA time zone such as UTC or Europe/Paris",
                )
            })?,
        };
        let prune = match non_empty(text("GUERITE_PRUNE_CRON", &g.prune_cron)?) {
            None => None,
            Some(expr) => Some(
                Schedule::parse(&expr)
                    .map_err(|e| invalid("GUERITE_PRUNE_CRON", &expr, &tame(&e)))?,
            ),
        };
        let pushover = match (
            non_empty(text("GUERITE_PUSHOVER_TOKEN", &g.pushover_token)?),
            non_empty(text("GUERITE_PUSHOVER_USER", &g.pushover_user)?),
        ) {
            (Some(token), Some(user)) => Some(Pushover {
                token,
                user,
                api: non_empty(text("GUERITE_PUSHOVER_API", &g.pushover_api)?)
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
        let webhook = non_empty(text("GUERITE_WEBHOOK_URL", &g.webhook_url)?);
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
                text("GUERITE_UPDATE_LABEL", &g.update_label)?,
                "guerite.update",
            )?,
            restart: label_key(
                "GUERITE_RESTART_LABEL",
                text("GUERITE_RESTART_LABEL", &g.restart_label)?,
                "guerite.restart",
            )?,
            recreate: label_key(
                "GUERITE_RECREATE_LABEL",
                text("GUERITE_RECREATE_LABEL", &g.recreate_label)?,
                "guerite.recreate",
            )?,
            health: label_key(
                "GUERITE_HEALTH_CHECK_LABEL",
                text("GUERITE_HEALTH_CHECK_LABEL", &g.health_check_label)?,
                "guerite.health_check",
            )?,
        };
        Ok(Config {
            docker: docker_endpoint(g)?,
            labels,
            defaults: Modifiers {
                monitor_only: flag("GUERITE_MONITOR_ONLY", &g.monitor_only, false)?,
                no_pull: flag("GUERITE_NO_PULL", &g.no_pull, false)?,
                no_restart: flag("GUERITE_NO_RESTART", &g.no_restart, false)?,
            },
            scope: non_empty(text("GUERITE_SCOPE", &g.scope)?),
            include: names(text("GUERITE_INCLUDE_CONTAINERS", &g.include_containers)?),
            exclude: names(text("GUERITE_EXCLUDE_CONTAINERS", &g.exclude_containers)?),
            tz,
            max_catchup: seconds("GUERITE_MAX_CATCHUP_SECONDS", &g.max_catchup_seconds, 3600)?,
            prune,
            health_backoff: seconds(
                "GUERITE_HEALTH_CHECK_BACKOFF_SECONDS",
                &g.health_check_backoff_seconds,
                300,
            )?,
            health_timeout: seconds(
                "GUERITE_HEALTH_CHECK_TIMEOUT_SECONDS",
                &g.health_check_timeout_seconds,
                60,
            )?,
            settle: seconds("GUERITE_SETTLE_SECONDS", &g.settle_seconds, 10)?,
            stop_timeout: seconds("GUERITE_STOP_TIMEOUT_SECONDS", &g.stop_timeout_seconds, 10)?,
            rollback_grace: seconds(
                "GUERITE_ROLLBACK_GRACE_SECONDS",
                &g.rollback_grace_seconds,
                3600,
            )?,
            lock_stale: seconds("GUERITE_LOCK_STALE_SECONDS", &g.lock_stale_seconds, 21600)?,
            pull_fallback: flag("GUERITE_PULL_FALLBACK", &g.pull_fallback, true)?,
            state_file: path("GUERITE_STATE_FILE", &g.state_file)?
                .unwrap_or_else(|| DEFAULT_STATE_FILE.into()),
            metrics_file: path("GUERITE_METRICS_FILE", &g.metrics_file)?,
            log_level: log_level(text("GUERITE_LOG_LEVEL", &g.log_level)?)?,
            notifications: notifications(text("GUERITE_NOTIFICATIONS", &g.notifications)?)?,
            pushover,
            webhook,
        })
    }
}

/// The log level alone, read before the rest so that a config error can be logged at all.
pub fn log_level_or_default(g: &Global) -> LevelFilter {
    text("GUERITE_LOG_LEVEL", &g.log_level)
        .and_then(log_level)
        .unwrap_or(LevelFilter::Info)
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

    fn os(bytes: &[u8]) -> OsString {
        use std::os::unix::ffi::OsStringExt;
        OsString::from_vec(bytes.to_vec())
    }

    /// Every variable of `Global`, with a way to set it.
    type Setter = fn(&mut Global, OsString);

    fn every_variable() -> Vec<(&'static str, Setter)> {
        vec![
            ("DOCKER_HOST", |g, v| g.docker_host = Some(v)),
            ("DOCKER_TLS_VERIFY", |g, v| g.docker_tls_verify = Some(v)),
            ("GUERITE_UPDATE_LABEL", |g, v| g.update_label = Some(v)),
            ("GUERITE_RESTART_LABEL", |g, v| g.restart_label = Some(v)),
            ("GUERITE_RECREATE_LABEL", |g, v| g.recreate_label = Some(v)),
            ("GUERITE_HEALTH_CHECK_LABEL", |g, v| {
                g.health_check_label = Some(v)
            }),
            ("GUERITE_SCOPE", |g, v| g.scope = Some(v)),
            ("GUERITE_INCLUDE_CONTAINERS", |g, v| {
                g.include_containers = Some(v)
            }),
            ("GUERITE_EXCLUDE_CONTAINERS", |g, v| {
                g.exclude_containers = Some(v)
            }),
            ("GUERITE_MONITOR_ONLY", |g, v| g.monitor_only = Some(v)),
            ("GUERITE_NO_PULL", |g, v| g.no_pull = Some(v)),
            ("GUERITE_NO_RESTART", |g, v| g.no_restart = Some(v)),
            ("GUERITE_TZ", |g, v| g.tz = Some(v)),
            ("GUERITE_MAX_CATCHUP_SECONDS", |g, v| {
                g.max_catchup_seconds = Some(v)
            }),
            ("GUERITE_PRUNE_CRON", |g, v| g.prune_cron = Some(v)),
            ("GUERITE_HEALTH_CHECK_BACKOFF_SECONDS", |g, v| {
                g.health_check_backoff_seconds = Some(v)
            }),
            ("GUERITE_HEALTH_CHECK_TIMEOUT_SECONDS", |g, v| {
                g.health_check_timeout_seconds = Some(v)
            }),
            ("GUERITE_SETTLE_SECONDS", |g, v| g.settle_seconds = Some(v)),
            ("GUERITE_STOP_TIMEOUT_SECONDS", |g, v| {
                g.stop_timeout_seconds = Some(v)
            }),
            ("GUERITE_ROLLBACK_GRACE_SECONDS", |g, v| {
                g.rollback_grace_seconds = Some(v)
            }),
            ("GUERITE_LOCK_STALE_SECONDS", |g, v| {
                g.lock_stale_seconds = Some(v)
            }),
            ("GUERITE_PULL_FALLBACK", |g, v| g.pull_fallback = Some(v)),
            ("GUERITE_LOG_LEVEL", |g, v| g.log_level = Some(v)),
            ("GUERITE_NOTIFICATIONS", |g, v| g.notifications = Some(v)),
            ("GUERITE_PUSHOVER_TOKEN", |g, v| {
                g.pushover_token = Some(v);
                g.pushover_user = Some("u".into());
            }),
            ("GUERITE_PUSHOVER_USER", |g, v| {
                g.pushover_user = Some(v);
                g.pushover_token = Some("t".into());
            }),
            ("GUERITE_PUSHOVER_API", |g, v| {
                g.pushover_api = Some(v);
                g.pushover_user = Some("u".into());
                g.pushover_token = Some("t".into());
            }),
            ("GUERITE_WEBHOOK_URL", |g, v| g.webhook_url = Some(v)),
        ]
    }

    #[test]
    fn a_value_that_is_not_utf8_is_named() {
        for (var, set) in every_variable() {
            let err = Config::from_cli(&global(|g| set(g, os(b"ab\xffc"))))
                .expect_err(var)
                .to_string();
            assert_eq!(
                err,
                format!("{var}=\"ab\\xFFc\" is not valid: expected UTF-8 text"),
                "{var}"
            );
        }
        // Paths need not be UTF-8.
        let c = Config::from_cli(&global(|g| {
            g.state_file = Some(os(b"/var/lib/gu\xe9rite/state.json"));
            g.docker_cert_path = Some(os(b"/c\xe9rts"));
        }))
        .unwrap();
        assert_eq!(
            c.state_file.as_os_str(),
            os(b"/var/lib/gu\xe9rite/state.json")
        );
        let err = only(&[os(b"web"), os(b"d\xffb")]).unwrap_err().to_string();
        assert_eq!(
            err,
            "GUERITE_ONLY=\"d\\xFFb\" is not valid: expected UTF-8 text"
        );
        assert_eq!(
            check_name(&Some(os(b"\xff"))).unwrap_err().to_string(),
            "NAME=\"\\xFF\" is not valid: expected UTF-8 text"
        );
        assert_eq!(
            force(&Some(os(b"\xff"))).unwrap_err().to_string(),
            "GUERITE_FORCE=\"\\xFF\" is not valid: expected UTF-8 text"
        );
    }

    #[test]
    fn a_long_value_is_never_echoed_whole() {
        let long = "x".repeat(10_000);
        let shown = format!("\"{}\"…", "x".repeat(ECHO_CHARS));
        for (var, set) in every_variable() {
            // Some variables take any text (a scope, a token): those are not errors at all.
            let Err(err) = Config::from_cli(&global(|g| set(g, long.clone().into()))) else {
                continue;
            };
            let err = err.to_string();
            assert!(err.len() < 300, "{var}: {} bytes: {err}", err.len());
            assert!(!err.contains(&"x".repeat(ECHO_CHARS + 1)), "{var}: {err}");
            assert!(err.starts_with(var), "{var}: {err}");
            // Only the webhook's error leaves the value out (it may hold a secret).
            if !err.starts_with(&format!("{var} ")) {
                assert!(err.contains(&shown), "{var}: {err}");
            }
        }
        for var in [
            "GUERITE_STATE_FILE",
            "GUERITE_METRICS_FILE",
            "DOCKER_CERT_PATH",
        ] {
            let path = format!("/{long}");
            let err = Config::from_cli(&global(|g| {
                let v = Some(path.clone().into());
                match var {
                    "GUERITE_STATE_FILE" => g.state_file = v,
                    "GUERITE_METRICS_FILE" => g.metrics_file = v,
                    _ => {
                        g.docker_cert_path = v;
                        g.docker_host = Some("tcp://h:2376".into());
                        g.docker_tls_verify = Some("1".into());
                    }
                }
            }))
            .expect_err(var)
            .to_string();
            assert_eq!(
                err,
                format!(
                    "{var}=\"/{}\"… is not valid: expected a path of at most 4095 bytes",
                    "x".repeat(ECHO_CHARS - 1)
                )
            );
        }
        // A cron parser's message quotes the field: tamed too.
        let err = Config::from_cli(&global(|g| g.prune_cron = Some(format!("@{long}").into())))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 400, "{err}");
    }

    #[test]
    fn echo_escapes_and_truncates() {
        let cases: Vec<(OsString, String)> = vec![
            ("web".into(), "\"web\"".into()),
            ("".into(), "\"\"".into()),
            ("it's \"q\"".into(), "\"it's \\\"q\\\"\"".into()),
            (
                "a\x1b[31mb\n\t\x07".into(),
                "\"a\\u{1b}[31mb\\n\\t\\u{7}\"".into(),
            ),
            (os(b"\xff\xfe ok"), "\"\\xFF\\xFE ok\"".into()),
            ("é".repeat(64).into(), format!("\"{}\"", "é".repeat(64))),
            ("é".repeat(65).into(), format!("\"{}\"…", "é".repeat(64))),
            (
                format!("{}\x1b", "a".repeat(63)).into(),
                format!("\"{}\\u{{1b}}\"", "a".repeat(63)),
            ),
        ];
        for (value, want) in cases {
            assert_eq!(echo(&value), want, "{value:?}");
        }
    }

    #[test]
    fn seconds_have_an_upper_bound() {
        let set = |v: &str| global(|g| g.stop_timeout_seconds = Some(v.into()));
        let c = Config::from_cli(&set("31536000")).unwrap();
        assert_eq!(c.stop_timeout, Duration::from_secs(MAX_SECONDS));
        for v in [
            "31536001",
            "18446744073709551615",
            "99999999999999999999999999",
        ] {
            assert_eq!(
                Config::from_cli(&set(v)).unwrap_err().to_string(),
                format!(
                    "GUERITE_STOP_TIMEOUT_SECONDS=\"{v}\" is not valid: expected at most \
                     31536000 seconds (365 days)"
                )
            );
        }
        assert_eq!(
            Config::from_cli(&set("ten")).unwrap_err().to_string(),
            "GUERITE_STOP_TIMEOUT_SECONDS=\"ten\" is not valid: expected a whole number of \
             seconds from 0 to 31536000"
        );
        for (var, setter) in every_variable() {
            if !var.ends_with("_SECONDS") {
                continue;
            }
            let err = Config::from_cli(&global(|g| setter(g, "31536001".into())))
                .expect_err(var)
                .to_string();
            assert!(
                err.starts_with(&format!(
                    "{var}=\"31536001\" is not valid: expected at most"
                )),
                "{err}"
            );
            assert!(Config::from_cli(&global(|g| setter(g, "31536000".into()))).is_ok());
        }
    }

    #[test]
    fn only_names_follow_the_container_name_grammar() {
        let ok: &[(&[&str], &[&str])] = &[
            (&["web"], &["web"]),
            (&["/web", " db ", "", "a_b.c-1"], &["web", "db", "a_b.c-1"]),
            (&["0day"], &["0day"]),
            (&[&"a".repeat(255)], &[&"a".repeat(255)]),
        ];
        for (given, want) in ok {
            let given: Vec<OsString> = given.iter().map(OsString::from).collect();
            assert_eq!(only(&given).unwrap(), *want, "{given:?}");
        }
        let grammar = "is not valid: expected a container name: a letter or digit, then \
                       letters, digits, '_', '.' or '-', at most 255 characters";
        let bad = [
            ("we\x1b[2Jb", "\"we\\u{1b}[2Jb\""),
            ("_web", "\"_web\""),
            ("web db", "\"web db\""),
            ("we\nb", "\"we\\nb\""),
            ("wéb", "\"wéb\""),
            ("-x", "\"-x\""),
            (&"a".repeat(256), &format!("\"{}\"…", "a".repeat(64))),
        ];
        for (name, shown) in bad {
            assert_eq!(
                only(&[name.into()]).unwrap_err().to_string(),
                format!("GUERITE_ONLY={shown} {grammar}"),
                "{name:?}"
            );
            assert_eq!(
                check_name(&Some(name.into())).unwrap_err().to_string(),
                format!("NAME={shown} {grammar}"),
                "{name:?}"
            );
        }
        assert_eq!(
            check_name(&Some("/web".into())).unwrap(),
            Some("web".into())
        );
        assert_eq!(
            force(&Some(" Restart ".into())).unwrap(),
            Some(ActionKind::Restart)
        );
        assert_eq!(force(&Some("".into())).unwrap(), None);
        assert_eq!(
            force(&Some("reboot".into())).unwrap_err().to_string(),
            "GUERITE_FORCE=\"reboot\" is not valid: expected update, restart, recreate or health"
        );
    }

    #[test]
    fn control_characters_in_paths_labels_and_the_endpoint_are_refused() {
        let cases: Vec<(&str, Global, &str)> = vec![
            (
                "state file",
                global(|g| g.state_file = Some("/var/lib/g\x1b[2J/state.json".into())),
                "GUERITE_STATE_FILE=\"/var/lib/g\\u{1b}[2J/state.json\" is not valid: expected \
                 a path without control characters",
            ),
            (
                "label",
                global(|g| g.restart_label = Some("a\x07b".into())),
                "GUERITE_RESTART_LABEL=\"a\\u{7}b\" is not valid: expected a label key without \
                 spaces, control characters or '='",
            ),
            (
                "endpoint",
                global(|g| g.docker_host = Some("tcp://h\x1b:1".into())),
                "DOCKER_HOST=\"tcp://h\\u{1b}:1\" is not valid: expected an endpoint of at most \
                 512 characters, without control characters",
            ),
        ];
        for (name, g, want) in cases {
            assert_eq!(
                Config::from_cli(&g).unwrap_err().to_string(),
                want,
                "{name}"
            );
        }
    }
}
