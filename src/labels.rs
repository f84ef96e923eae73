//! A container's labels, read into its settings. Pure: one bad label is returned as an error
//! naming the container's label and value, and the caller decides that only this container
//! stops.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::action::ActionKind;
use crate::config::{LabelKeys, Modifiers, parse_bool};
use crate::schedule::Schedule;

pub const MONITOR_ONLY: &str = "guerite.monitor_only";
pub const NO_PULL: &str = "guerite.no_pull";
pub const NO_RESTART: &str = "guerite.no_restart";
pub const DEPENDS_ON: &str = "guerite.depends_on";
pub const SCOPE: &str = "guerite.scope";

#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The schedules present, in precedence order (update, recreate, health, restart); shared
    /// with every container whose label has the same value (see [`Schedules`]).
    pub schedules: Vec<(ActionKind, Arc<Schedule>)>,
    pub modifiers: Modifiers,
    pub depends_on: Vec<String>,
}

impl Settings {
    pub fn schedule(&self, kind: ActionKind) -> Option<&Schedule> {
        self.schedules
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| &**s)
    }
}

/// The schedules parsed so far, by label value, so that containers whose labels say the same
/// share one parsed schedule. croner's takes about 5 KB (a bitmap of 5,000 years): one copy per
/// container was most of the memory of a run over thousands of containers.
#[derive(Default)]
pub struct Schedules(HashMap<String, Result<Arc<Schedule>, String>>);

impl Schedules {
    fn parse(&mut self, value: &str) -> Result<Arc<Schedule>, String> {
        if let Some(known) = self.0.get(value) {
            return known.clone();
        }
        let parsed = Schedule::parse(value).map(Arc::new);
        self.0.insert(value.to_string(), parsed.clone());
        parsed
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
    schedules: &mut Schedules,
) -> Result<Settings, Vec<LabelError>> {
    let mut errors = Vec::new();
    let mut settings = Settings {
        modifiers: defaults,
        ..Settings::default()
    };
    for kind in ActionKind::ALL {
        let key = keys.key(kind);
        if let Some(value) = labels.get(key) {
            match schedules.parse(value) {
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
            match parse_bool(key, value) {
                Ok(b) => *slot = b,
                Err(_) => errors.push(LabelError {
                    label: key.to_string(),
                    value: value.clone(),
                    message: "expected true or false (also 1/0, yes/no, on/off)".into(),
                }),
            }
        }
    }
    if let Some(value) = labels.get(DEPENDS_ON) {
        settings.depends_on = value
            .split(',')
            .map(|n| n.trim().trim_start_matches('/').to_string())
            .filter(|n| !n.is_empty())
            .collect();
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
            &mut Schedules::default(),
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
            &mut Schedules::default(),
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
            &mut Schedules::default(),
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

    #[test]
    fn one_parsed_schedule_per_label_value() {
        let mut schedules = Schedules::default();
        let mut parse_one = |pairs: &[(&str, &str)]| {
            parse(
                &labels(pairs),
                &keys(),
                Modifiers::default(),
                &mut schedules,
            )
        };
        let a = parse_one(&[("t.restart", "0 3 * * *")]).unwrap();
        let b = parse_one(&[("t.update", "0 3 * * *"), ("t.restart", "0 4 * * *")]).unwrap();
        assert!(Arc::ptr_eq(&a.schedules[0].1, &b.schedules[0].1));
        assert!(!Arc::ptr_eq(&a.schedules[0].1, &b.schedules[1].1));
        assert_eq!(b.schedules[1].1.expr(), "0 4 * * *");
        // A bad value is remembered as bad, with its message, for every container.
        for _ in 0..2 {
            let errors = parse_one(&[("t.health", "61 * * * *")]).unwrap_err();
            assert_eq!(errors[0].message, "minute value 61 is out of range 0-59");
        }
    }
}
