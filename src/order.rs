//! The order work is done in: a container after the ones it depends on, by the union of
//! `guerite.depends_on`, a `container:<x>` network mode and compose's
//! `com.docker.compose.depends_on`. Pure. A cycle is reported and broken by name order, never
//! looped on.

use std::collections::{BTreeMap, BTreeSet};

use crate::engine::Container;
use crate::labels::DEPENDS_ON;

const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_SERVICE: &str = "com.docker.compose.service";
const COMPOSE_DEPENDS_ON: &str = "com.docker.compose.depends_on";

/// The names of the containers `c` depends on, among `all`.
pub fn dependencies(c: &Container, all: &[&Container]) -> BTreeSet<String> {
    let mut deps = BTreeSet::new();
    if let Some(list) = c.labels.get(DEPENDS_ON) {
        deps.extend(
            list.split(',')
                .map(|n| n.trim().trim_start_matches('/'))
                .filter(|n| !n.is_empty())
                .map(String::from),
        );
    }
    if let Some(target) = c
        .network_mode
        .as_deref()
        .and_then(|m| m.strip_prefix("container:"))
        && let Some(t) = all
            .iter()
            .find(|o| o.name == target || (target.len() >= 12 && o.id.starts_with(target)))
    {
        deps.insert(t.name.clone());
    }
    // Compose writes `service:condition:restart` entries naming services of the same project.
    if let (Some(project), Some(list)) = (
        c.labels.get(COMPOSE_PROJECT),
        c.labels.get(COMPOSE_DEPENDS_ON),
    ) {
        for service in list
            .split(',')
            .filter_map(|e| e.split(':').next())
            .map(str::trim)
        {
            deps.extend(
                all.iter()
                    .filter(|o| o.labels.get(COMPOSE_PROJECT) == Some(project))
                    .filter(|o| o.labels.get(COMPOSE_SERVICE).map(String::as_str) == Some(service))
                    .map(|o| o.name.clone()),
            );
        }
    }
    deps.remove(&c.name);
    deps
}

/// Names in dependency order (dependencies first, otherwise by name), and the cycles found.
pub fn order(
    names: &[String],
    deps: &BTreeMap<String, BTreeSet<String>>,
) -> (Vec<String>, Vec<Vec<String>>) {
    let known: BTreeSet<&String> = names.iter().collect();
    // Only dependencies among the containers being ordered constrain the order.
    let mut waiting: BTreeMap<&String, BTreeSet<&String>> = names
        .iter()
        .map(|n| {
            let d = deps
                .get(n)
                .map(|d| d.iter().filter(|x| known.contains(x)).collect())
                .unwrap_or_default();
            (n, d)
        })
        .collect();
    let mut done = Vec::new();
    let mut cycles = Vec::new();
    while !waiting.is_empty() {
        let ready: Vec<&String> = waiting
            .iter()
            .filter(|(_, d)| d.is_empty())
            .map(|(n, _)| *n)
            .collect();
        let next: Vec<&String> = if ready.is_empty() {
            // Everything left waits on something left: a cycle. Report the one through the
            // first name and start from that name.
            let first = *waiting.keys().next().expect("not empty");
            cycles.push(cycle_through(first, &waiting));
            vec![first]
        } else {
            ready
        };
        for n in next {
            waiting.remove(n);
            for d in waiting.values_mut() {
                d.remove(n);
            }
            done.push(n.clone());
        }
    }
    (done, cycles)
}

fn cycle_through(start: &String, waiting: &BTreeMap<&String, BTreeSet<&String>>) -> Vec<String> {
    let mut path = vec![start.clone()];
    let mut at = start;
    while let Some(next) = waiting.get(at).and_then(|d| d.iter().next()) {
        if let Some(i) = path.iter().position(|p| p == *next) {
            let mut cycle = path[i..].to_vec();
            cycle.push((*next).clone());
            return cycle;
        }
        path.push((*next).clone());
        at = next;
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sample;

    fn deps(pairs: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        pairs
            .iter()
            .map(|(n, d)| (n.to_string(), d.iter().map(|x| x.to_string()).collect()))
            .collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn dependencies_first_then_by_name() {
        type Case = (
            &'static str,
            Vec<String>,
            BTreeMap<String, BTreeSet<String>>,
            Vec<String>,
            Vec<Vec<String>>,
        );
        let cases: Vec<Case> = vec![
            (
                "no dependencies: by name",
                names(&["c", "a", "b"]),
                deps(&[]),
                names(&["a", "b", "c"]),
                vec![],
            ),
            (
                "a chain",
                names(&["app", "db", "web"]),
                deps(&[("web", &["app"]), ("app", &["db"])]),
                names(&["db", "app", "web"]),
                vec![],
            ),
            (
                "a dependency outside the run does not hold anything up",
                names(&["web"]),
                deps(&[("web", &["elsewhere"])]),
                names(&["web"]),
                vec![],
            ),
            (
                "a cycle is reported and broken by name",
                names(&["a", "b", "c"]),
                deps(&[("a", &["b"]), ("b", &["a"]), ("c", &["a"])]),
                names(&["a", "b", "c"]),
                vec![names(&["a", "b", "a"])],
            ),
        ];
        for (name, list, d, expected, cycles) in cases {
            assert_eq!(order(&list, &d), (expected, cycles), "{name}");
        }
    }

    #[test]
    fn the_three_sources_of_dependencies() {
        let db = sample(
            "db",
            &[
                ("com.docker.compose.project", "p"),
                ("com.docker.compose.service", "database"),
            ],
        );
        let mut vpn = sample("vpn", &[]);
        vpn.id = format!("{:f<64}", "abc");
        let mut web = sample(
            "web",
            &[
                ("guerite.depends_on", "cache, /queue"),
                ("com.docker.compose.project", "p"),
                (
                    "com.docker.compose.depends_on",
                    "database:service_started:false",
                ),
            ],
        );
        web.network_mode = Some(format!("container:{}", &vpn.id[..12]));
        let all = [&db, &vpn, &web];
        assert_eq!(
            dependencies(&web, &all).into_iter().collect::<Vec<_>>(),
            ["cache", "db", "queue", "vpn"]
        );
        assert!(dependencies(&db, &all).is_empty());
    }
}
