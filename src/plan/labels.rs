//! A container's labels, read into its settings. Pure: one bad label is returned as an error
//! naming the container's label and value, and the caller decides that only this container
//! stops.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::action::ActionKind;
use crate::plan::schedule::Schedule;

pub const MONITOR_ONLY: &str = "guerite.monitor_only";
pub const NO_PULL: &str = "guerite.no_pull";
pub const NO_RESTART: &str = "guerite.no_restart";
pub const DEPENDS_ON: &str = "guerite.depends_on";
pub const SCOPE: &str = "guerite.scope";

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

/// `guerite.depends_on`: container names, comma-separated, with or without Docker's `/`.
pub fn parse_depends_on(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|n| n.trim().trim_start_matches('/').to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// What a boolean label or variable accepts, said when it is something else.
pub const BOOL_WORDS: &str = "expected true or false (also 1/0, yes/no, on/off)";

/// Strict booleans: a typo such as `flase` is `None`, never silently false.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The schedules present, in precedence order (update, recreate, health, restart).
    pub schedules: Vec<(ActionKind, Schedule)>,
    pub modifiers: Modifiers,
    pub depends_on: Vec<String>,
}

impl Settings {
    pub fn schedule(&self, kind: ActionKind) -> Option<&Schedule> {
        self.schedules
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelError {
    pub label: String,
    pub value: String,
    pub message: String,
}

impl std::fmt::Display for LabelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "label {}={:?}: {}", self.label, self.value, self.message)
    }
}

/// Monitored means: carries at least one of the schedule labels.
pub fn is_monitored(labels: &BTreeMap<String, String>, keys: &LabelKeys) -> bool {
    ActionKind::ALL
        .iter()
        .any(|k| labels.contains_key(keys.key(*k)))
}

pub fn parse(
    labels: &BTreeMap<String, String>,
    keys: &LabelKeys,
    defaults: Modifiers,
) -> Result<Settings, Vec<LabelError>> {
    let mut errors = Vec::new();
    let mut settings = Settings {
        modifiers: defaults,
        ..Settings::default()
    };
    for kind in ActionKind::ALL {
        let key = keys.key(kind);
        if let Some(value) = labels.get(key) {
            match Schedule::parse(value) {
                Ok(s) => settings.schedules.push((kind, s)),
                Err(message) => errors.push(LabelError {
                    label: key.to_string(),
                    value: value.clone(),
                    message,
                }),
            }
        }
    }
    let flags: [(&str, &mut bool); 3] = [
        (MONITOR_ONLY, &mut settings.modifiers.monitor_only),
        (NO_PULL, &mut settings.modifiers.no_pull),
        (NO_RESTART, &mut settings.modifiers.no_restart),
    ];
    for (key, slot) in flags {
        if let Some(value) = labels.get(key) {
            match parse_bool(value) {
                Some(b) => *slot = b,
                None => errors.push(LabelError {
                    label: key.to_string(),
                    value: value.clone(),
                    message: BOOL_WORDS.into(),
                }),
            }
        }
    }
    if let Some(value) = labels.get(DEPENDS_ON) {
        settings.depends_on = parse_depends_on(value);
    }
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> LabelKeys {
        LabelKeys {
            update: "t.update".into(),
            restart: "t.restart".into(),
            recreate: "t.recreate".into(),
            health: "t.health".into(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn monitored_only_with_a_schedule_label() {
        let cases = [
            (vec![("t.restart", "* * * * *")], true),
            (vec![("t.health", "bad")], true),
            (vec![(MONITOR_ONLY, "true")], false),
            (vec![("guerite.update", "* * * * *")], false),
            (vec![], false),
        ];
        for (pairs, expected) in cases {
            assert_eq!(
                is_monitored(&labels(&pairs), &keys()),
                expected,
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn settings_in_precedence_order_with_modifiers() {
        let s = parse(
            &labels(&[
                ("t.restart", "0 3 * * *"),
                ("t.update", "@daily"),
                ("t.health", "*/5 * * * *"),
                (NO_PULL, "yes"),
                (DEPENDS_ON, "db, /cache,"),
            ]),
            &keys(),
            Modifiers {
                monitor_only: true,
                ..Modifiers::default()
            },
        )
        .unwrap();
        let kinds: Vec<_> = s.schedules.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [ActionKind::Update, ActionKind::Health, ActionKind::Restart]
        );
        assert!(s.modifiers.no_pull && s.modifiers.monitor_only && !s.modifiers.no_restart);
        assert_eq!(s.depends_on, ["db", "cache"]);
        assert_eq!(s.schedule(ActionKind::Restart).unwrap().expr(), "0 3 * * *");
    }

    #[test]
    fn label_overrides_the_global_default() {
        let s = parse(
            &labels(&[("t.update", "@daily"), (MONITOR_ONLY, "false")]),
            &keys(),
            Modifiers {
                monitor_only: true,
                ..Modifiers::default()
            },
        )
        .unwrap();
        assert!(!s.modifiers.monitor_only);
    }

    #[test]
    fn every_bad_label_is_reported_by_name() {
        let errors = parse(
            &labels(&[
                ("t.restart", "61 * * * *"),
                ("t.update", "@daily"),
                (NO_RESTART, "flase"),
            ]),
            &keys(),
            Modifiers::default(),
        )
        .unwrap_err();
        let named: Vec<_> = errors.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(named, ["t.restart", NO_RESTART]);
        let line = errors[1].to_string();
        assert!(
            line.starts_with("label guerite.no_restart=\"flase\": expected true or false"),
            "{line}"
        );
    }
}
