//! What guerite knows of a container, in its own terms. `docker.rs` maps the engine's answers
//! into these; everything else (planner, report, check) reads only these, and talks to the
//! engine through the trait of `api.rs`.

pub mod api;
pub mod docker;
#[cfg(test)]
pub mod fake;
pub mod own_container;
pub mod recreate;
pub mod tls;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One entry of the container list: all the planner needs, from a single list call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    /// The reference the operator ran (`Config.Image`), not the image's first tag.
    pub image: String,
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    pub created: DateTime<Utc>,
    pub state: RunState,
    /// Docker's human status, e.g. "Up 2 hours (healthy)".
    pub status: String,
    pub network_mode: Option<String>,
    /// Mount points of volumes Docker named itself: their data lives only as long as someone
    /// re-attaches them by name.
    pub anonymous_volumes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Created,
    Running,
    Paused,
    Restarting,
    Exited,
    Removing,
    Dead,
    Unknown,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Created => "created",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Restarting => "restarting",
            RunState::Exited => "exited",
            RunState::Removing => "removing",
            RunState::Dead => "dead",
            RunState::Unknown => "unknown",
        }
    }
}

/// The health Docker reports in the list's status text; `None` when there is no healthcheck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

impl Container {
    pub fn health(&self) -> Option<Health> {
        // The list has no health field on older engines; its status text always carries it.
        if self.status.contains("(healthy)") {
            Some(Health::Healthy)
        } else if self.status.contains("(unhealthy)") {
            Some(Health::Unhealthy)
        } else if self.status.contains("(health: starting)") {
            Some(Health::Starting)
        } else {
            None
        }
    }

    /// Created by a swarm service: recreating it by hand would lose service-managed secrets.
    pub fn is_swarm_managed(&self) -> bool {
        self.labels.contains_key("com.docker.swarm.service.id")
            || self.labels.contains_key("com.docker.swarm.task.id")
    }

    pub fn compose_project(&self) -> Option<&str> {
        self.labels
            .get("com.docker.compose.project")
            .map(String::as_str)
    }
}

/// The inspect fields that restarts, swaps and their verification need.
#[derive(Debug, Clone, PartialEq)]
pub struct Details {
    pub id: String,
    pub name: String,
    /// `Config.Image`: the reference the operator ran.
    pub image: String,
    pub image_id: String,
    pub running: bool,
    pub restarting: bool,
    pub restart_count: i64,
    pub stop_timeout: Option<i64>,
    pub has_healthcheck: bool,
    /// `State.Health.Status`, when there is a healthcheck.
    pub health: Option<Health>,
    pub started_at: Option<DateTime<Utc>>,
    pub network_mode: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// What the engine knows of a local image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    pub id: String,
    /// `repo@sha256:…` for every registry the image was pulled from or pushed to.
    pub repo_digests: Vec<String>,
}

#[cfg(test)]
pub fn sample(name: &str, labels: &[(&str, &str)]) -> Container {
    Container {
        id: format!("{:0<64}", name.len()),
        name: name.to_string(),
        image: "example/app:1".into(),
        image_id: "sha256:0".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        created: DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
        state: RunState::Running,
        status: "Up 3 hours".into(),
        network_mode: None,
        anonymous_volumes: Vec::new(),
    }
}
