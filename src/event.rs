//! What happened in a run, as data: one event per action, skip, failure, rollback and
//! recovery. The text report and `--json` render these (and notifications and metrics will),
//! so no stage ever reads another's sentences. A leaf beside `action.rs`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::action::ActionKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Done,
    WouldDo,
    /// An update check found the running image current.
    UpToDate,
    /// monitor_only: a newer image exists and was not pulled.
    Available,
    Failed,
    Skipped,
    Missed,
    Error,
}

/// Why an action was taken: a schedule's fire time, or `--force`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "by", rename_all = "lowercase")]
pub enum Trigger {
    Schedule { fire: DateTime<Utc> },
    Forced,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Empty for what concerns the run rather than one container (saving the state).
    pub container: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionKind>,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// The sentence the text report shows after the container's name; may be empty.
    pub detail: String,
    /// The image reference the container runs, for an update, recreate or health replacement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The image ID the container ran before a replacement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_image: Option<String>,
    /// The image ID it runs after, or the one a failed update tried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_image: Option<String>,
    /// The registry digest an update found (`sha256:…`), when the registry told it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// What went wrong, for a failure or an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the action took, in milliseconds, for an action that was attempted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

impl Event {
    /// An event with only the essentials; a failure or error carries `detail` as its `error`.
    pub fn new(container: impl Into<String>, outcome: Outcome, detail: impl Into<String>) -> Event {
        let detail = detail.into();
        let error = matches!(outcome, Outcome::Failed | Outcome::Error).then(|| detail.clone());
        Event {
            container: container.into(),
            action: None,
            outcome,
            trigger: None,
            detail,
            image: None,
            old_image: None,
            new_image: None,
            digest: None,
            error,
            duration_ms: None,
        }
    }

    pub fn action(mut self, action: Option<ActionKind>, trigger: Option<Trigger>) -> Event {
        self.action = action;
        self.trigger = trigger;
        self
    }
}

/// An image ID or digest as the report shows it: 12 hex digits, without `sha256:`.
pub fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_their_error_and_json_omits_what_is_unknown() {
        let failed = Event::new("web", Outcome::Failed, "the new container exited")
            .action(Some(ActionKind::Update), Some(Trigger::Forced));
        assert_eq!(failed.error.as_deref(), Some("the new container exited"));
        assert_eq!(
            serde_json::to_value(&failed).unwrap(),
            serde_json::json!({
                "container": "web", "action": "update", "outcome": "failed",
                "trigger": {"by": "forced"}, "detail": "the new container exited",
                "error": "the new container exited",
            })
        );
        let done = Event::new("web", Outcome::Done, "");
        assert_eq!(done.error, None);
        assert_eq!(short("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short("abc"), "abc");
    }
}
