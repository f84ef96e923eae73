//! The run report: what happened to each container, rendered as text or JSON. Pure rendering;
//! `run.rs` prints it.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::action::ActionKind;
use crate::event::{Event, Outcome, Trigger};
use crate::plan::Reason;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub at: DateTime<Utc>,
    #[serde(serialize_with = "tz_name")]
    pub tz: Tz,
    pub dry_run: bool,
    pub engine: String,
    pub api_version: String,
    pub monitored: usize,
    pub items: Vec<Event>,
}

fn tz_name<S: serde::Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}

impl Report {
    pub fn failed(&self) -> bool {
        self.items
            .iter()
            .any(|i| matches!(i.outcome, Outcome::Failed | Outcome::Error))
    }

    pub fn render_text(&self) -> String {
        let acted = self
            .items
            .iter()
            .filter(|i| matches!(i.outcome, Outcome::Done | Outcome::WouldDo))
            .count();
        let mut out = format!(
            "guerite {}at {}: {} monitored, {}\n",
            if self.dry_run { "dry run " } else { "" },
            local(self.at, self.tz, "%Y-%m-%d %H:%M:%S %Z"),
            plural(self.monitored, "container"),
            match (acted, self.dry_run) {
                (0, _) if self.items.is_empty() => "nothing due".to_string(),
                (0, _) => "no action".to_string(),
                (n, true) => format!("{} planned", plural(n, "action")),
                (n, false) => format!("{} done", plural(n, "action")),
            }
        );
        for item in &self.items {
            let verb = verb(item);
            let when = match item.trigger {
                Some(Trigger::Schedule { fire }) => {
                    format!(" (scheduled {})", local(fire, self.tz, "%Y-%m-%d %H:%M %Z"))
                }
                Some(Trigger::Forced) => " (forced)".to_string(),
                None => String::new(),
            };
            let detail = if item.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", item.detail)
            };
            out.push_str(&format!("  {verb:<16} {}{when}{detail}\n", item.container));
        }
        out
    }
}

fn verb(item: &Event) -> String {
    let action = item.action.map(ActionKind::as_str).unwrap_or("");
    match (item.outcome, item.action) {
        (Outcome::Done, Some(ActionKind::Update)) => "updated".into(),
        (Outcome::Done, Some(ActionKind::Restart)) => "restarted".into(),
        (Outcome::Done, Some(ActionKind::Recreate)) => "recreated".into(),
        (Outcome::Done, Some(ActionKind::Health)) => "replaced".into(),
        (Outcome::Done, None) => "recovered".into(),
        (Outcome::UpToDate, _) => "up to date".into(),
        (Outcome::Available, _) => "update available".into(),
        (Outcome::WouldDo, None) => "would recover".into(),
        (Outcome::Failed, None) => "failed".into(),
        (Outcome::WouldDo, _) => format!("would {action}"),
        (Outcome::Failed, _) => format!("{action} failed"),
        (Outcome::Skipped, Some(_)) => format!("{action} skipped"),
        (Outcome::Missed, _) => format!("{action} missed"),
        (Outcome::Error, _) => "error".into(),
        (_, _) => "skipped".into(),
    }
}

pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

pub fn local(t: DateTime<Utc>, tz: Tz, format: &str) -> String {
    t.with_timezone(&tz).format(format).to_string()
}

/// One phrase per skip reason, shared by the run report, the log and `check`.
pub fn reason_text(reason: &Reason, tz: Tz) -> String {
    match reason {
        Reason::NotDue { next: Some(t) } => {
            format!("not due; next {}", local(*t, tz, "%Y-%m-%d %H:%M %Z"))
        }
        Reason::NotDue { next: None } => "not due; the schedule never fires again".into(),
        Reason::Missed { fire } => format!(
            "the {} fire time is older than GUERITE_MAX_CATCHUP_SECONDS; not acted on",
            local(*fire, tz, "%Y-%m-%d %H:%M %Z")
        ),
        Reason::NotRunning { state } => format!("container is {}, not running", state.as_str()),
        Reason::BackingOff { until } => format!(
            "backing off after a recent replacement or failure, until {}",
            local(*until, tz, "%Y-%m-%d %H:%M %Z")
        ),
        Reason::NoHealthcheck => "the container has no healthcheck; health label ignored".into(),
        Reason::HealthStarting => "healthcheck still starting".into(),
        Reason::Healthy => "container is healthy".into(),
        Reason::SwarmManaged => {
            "managed by a swarm service; recreating it would lose service secrets and configs"
                .into()
        }
        Reason::SelfContainer => "guerite runs in this container; it never replaces itself".into(),
        Reason::OutOfScope { scope: Some(s) } => {
            format!("belongs to scope {s:?}, not this guerite's")
        }
        Reason::OutOfScope { scope: None } => {
            "has no guerite.scope label, and GUERITE_SCOPE is set".into()
        }
        Reason::Excluded => "listed in GUERITE_EXCLUDE_CONTAINERS".into(),
        Reason::NotIncluded => "not listed in GUERITE_INCLUDE_CONTAINERS".into(),
        Reason::LabelError => "a label is invalid".into(),
        Reason::Busy { why } => why.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_report_lines() {
        let at = DateTime::parse_from_rfc3339("2026-11-21T12:01:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let fire = DateTime::parse_from_rfc3339("2026-11-21T12:01:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let report = Report {
            at,
            tz: chrono_tz::Europe::Paris,
            dry_run: false,
            engine: "unix:///var/run/docker.sock".into(),
            api_version: "1.41".into(),
            monitored: 2,
            items: vec![
                Event::new("web", Outcome::Done, "")
                    .action(Some(ActionKind::Restart), Some(Trigger::Schedule { fire })),
                Event::new("db", Outcome::Error, "label guerite.restart=\"x\": bad"),
            ],
        };
        assert_eq!(
            report.render_text(),
            "guerite at 2026-11-21 13:01:05 CET: 2 containers monitored, 1 action done\n\
             \x20 restarted        web (scheduled 2026-11-21 13:01 CET)\n\
             \x20 error            db: label guerite.restart=\"x\": bad\n"
        );
        assert!(report.failed());
    }
}
