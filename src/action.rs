//! The vocabulary every stage shares: the actions guerite takes. A leaf: it depends on
//! nothing in the crate, so that the stores, the planner and the effect layer can all name an
//! action without importing each other.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// In precedence order: when one of these replaces or restarts a container, the ones after it
/// are not done to that container in the same run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Update,
    Recreate,
    Health,
    Restart,
}

impl ActionKind {
    pub const ALL: [ActionKind; 4] = [
        ActionKind::Update,
        ActionKind::Recreate,
        ActionKind::Health,
        ActionKind::Restart,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Update => "update",
            ActionKind::Recreate => "recreate",
            ActionKind::Health => "health",
            ActionKind::Restart => "restart",
        }
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ActionKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "update" => Ok(ActionKind::Update),
            "restart" => Ok(ActionKind::Restart),
            "recreate" => Ok(ActionKind::Recreate),
            "health" | "health_check" => Ok(ActionKind::Health),
            _ => Err(format!(
                "unknown action {s:?}; accepted: update, restart, recreate, health"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn force_parses_the_documented_names() {
        assert_eq!("health_check".parse::<ActionKind>(), Ok(ActionKind::Health));
        assert_eq!("UPDATE".parse::<ActionKind>(), Ok(ActionKind::Update));
        assert!(
            "reboot"
                .parse::<ActionKind>()
                .unwrap_err()
                .contains("accepted: update, restart")
        );
    }
}
