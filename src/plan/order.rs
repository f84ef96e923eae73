//! The order work is done in: a container after the ones it depends on, by the union of
//! `guerite.depends_on`, a `container:<x>` network mode and compose's
//! `com.docker.compose.depends_on`. Pure. A cycle is reported and broken by name order, never
//! looped on.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::engine::Container;

const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_SERVICE: &str = "com.docker.compose.service";
const COMPOSE_DEPENDS_ON: &str = "com.docker.compose.depends_on";

/// Every listed container by name, by id and by compose service, built once per run: looking
/// up a dependency then costs no scan of the list, which at thousands of containers would
/// make ordering quadratic.
pub struct Index<'c> {
    all: &'c [Container],
    /// Name to position in the list.
    names: HashMap<&'c str, usize>,
    /// Id to position, sorted so that an id prefix is a range.
    ids: BTreeMap<&'c str, usize>,
    /// (compose project, compose service) to the names of its containers, in list order.
    services: HashMap<(&'c str, &'c str), Vec<&'c str>>,
}

impl<'c> Index<'c> {
    pub fn new(all: &'c [Container]) -> Index<'c> {
        let mut index = Index {
            all,
            names: HashMap::with_capacity(all.len()),
            ids: BTreeMap::new(),
            services: HashMap::new(),
        };
        for (i, c) in all.iter().enumerate() {
            // The first of equal names wins, as a scan of the list would find it first.
            index.names.entry(c.name.as_str()).or_insert(i);
            index.ids.entry(c.id.as_str()).or_insert(i);
            if let (Some(project), Some(service)) =
                (c.labels.get(COMPOSE_PROJECT), c.labels.get(COMPOSE_SERVICE))
            {
                index
                    .services
                    .entry((project.as_str(), service.as_str()))
                    .or_default()
                    .push(c.name.as_str());
            }
        }
        index
    }

    /// The container a `container:<target>` network mode names: by name, or by an id prefix of
    /// at least 12 digits; the first in list order when several match.
    fn network_target(&self, target: &str) -> Option<&'c Container> {
        let by_name = self.names.get(target).copied();
        let by_id = (target.len() >= 12)
            .then(|| {
                self.ids
                    .range(target..)
                    .take_while(|(id, _)| id.starts_with(target))
                    .map(|(_, i)| *i)
                    .min()
            })
            .flatten();
        let first = match (by_name, by_id) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        self.all.get(first)
    }
}

/// The names of the containers `c` depends on, among the indexed ones: `depends_on` (its
/// parsed `guerite.depends_on`) and what its network mode and compose's labels say.
pub fn dependencies(c: &Container, depends_on: &[String], index: &Index<'_>) -> BTreeSet<String> {
    let mut deps: BTreeSet<String> = depends_on.iter().cloned().collect();
    if let Some(target) = c
        .network_mode
        .as_deref()
        .and_then(|m| m.strip_prefix("container:"))
        && let Some(t) = index.network_target(target)
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
            if let Some(names) = index.services.get(&(project.as_str(), service)) {
                deps.extend(names.iter().map(|n| n.to_string()));
            }
        }
    }
    deps.remove(&c.name);
    deps
}

/// Names in dependency order (dependencies first, otherwise by name), and the cycles found.
///
/// In rounds: each round takes, by name, every name whose dependencies are all taken; when
/// none is ready, everything left waits on something left, and the first name left is taken
/// alone, with the cycle its first dependencies lead into reported. Counting what each name
/// still waits for, instead of rescanning what is left every round, makes this linear in names
/// and dependencies (after sorting by name) without cycles; each cycle costs one walk to it.
pub fn order(
    names: &[String],
    deps: &BTreeMap<String, BTreeSet<String>>,
) -> (Vec<String>, Vec<Vec<String>>) {
    // Positions in name order stand for the names: sorting positions sorts names.
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let at: HashMap<&str, usize> = sorted
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    // Only dependencies among the containers being ordered constrain the order. A set iterates
    // by name, so each list is ascending.
    let waits_on: Vec<Vec<usize>> = sorted
        .iter()
        .map(|n| {
            deps.get(*n)
                .map(|d| {
                    d.iter()
                        .filter_map(|x| at.get(x.as_str()).copied())
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let mut dependents = vec![Vec::new(); sorted.len()];
    for (i, d) in waits_on.iter().enumerate() {
        for &j in d {
            dependents[j].push(i);
        }
    }
    let mut graph = Graph {
        left: waits_on.iter().map(Vec::len).collect(),
        waits_on,
        taken: vec![false; sorted.len()],
        first_open: vec![0; sorted.len()],
    };
    let mut done = Vec::with_capacity(sorted.len());
    let mut cycles = Vec::new();
    let mut ready: Vec<usize> = (0..sorted.len()).filter(|&i| graph.left[i] == 0).collect();
    // Every name before it is taken: where to look for the first name left.
    let mut first_left = 0;
    while done.len() < sorted.len() {
        if ready.is_empty() {
            while graph.taken[first_left] {
                first_left += 1;
            }
            let cycle = graph.cycle_through(first_left);
            cycles.push(cycle.into_iter().map(|i| sorted[i].clone()).collect());
            ready.push(first_left);
        }
        let mut next = Vec::new();
        for &n in &ready {
            graph.taken[n] = true;
            done.push(sorted[n].clone());
            for &d in &dependents[n] {
                graph.left[d] -= 1;
                // One taken to break a cycle may still have had dependencies left.
                if graph.left[d] == 0 && !graph.taken[d] {
                    next.push(d);
                }
            }
        }
        next.sort_unstable();
        ready = next;
    }
    (done, cycles)
}

/// The dependencies between the names being ordered, by position in name order.
struct Graph {
    /// What each waits on, ascending.
    waits_on: Vec<Vec<usize>>,
    /// How many of those are not taken yet.
    left: Vec<usize>,
    taken: Vec<bool>,
    /// Where in `waits_on[i]` the first one not taken may be: nothing is ever untaken, so
    /// this only moves forward.
    first_open: Vec<usize>,
}

impl Graph {
    /// The first dependency of `i` by name that is not taken yet.
    fn first_waited_on(&mut self, i: usize) -> Option<usize> {
        let list = &self.waits_on[i];
        let k = &mut self.first_open[i];
        while *k < list.len() && self.taken[list[*k]] {
            *k += 1;
        }
        list.get(*k).copied()
    }

    /// From `start`, always to its first dependency by name, until a name comes again: the
    /// cycle, as a path back to where it closes.
    fn cycle_through(&mut self, start: usize) -> Vec<usize> {
        let mut path = vec![start];
        let mut on_path = HashMap::from([(start, 0)]);
        let mut at = start;
        while let Some(next) = self.first_waited_on(at) {
            if let Some(&i) = on_path.get(&next) {
                let mut cycle = path[i..].to_vec();
                cycle.push(next);
                return cycle;
            }
            on_path.insert(next, path.len());
            path.push(next);
            at = next;
        }
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sample;
    use crate::plan::labels;

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
            (
                "in rounds: whatever is ready goes by name before what it released",
                names(&["z", "b", "c", "a"]),
                deps(&[("b", &["a"])]),
                names(&["a", "c", "z", "b"]),
                vec![],
            ),
            (
                "a diamond: both middles in one round",
                names(&["top", "left", "right", "base"]),
                deps(&[
                    ("top", &["left", "right"]),
                    ("left", &["base"]),
                    ("right", &["base"]),
                ]),
                names(&["base", "left", "right", "top"]),
                vec![],
            ),
            (
                "a container that names itself is a cycle of one",
                names(&["b", "a"]),
                deps(&[("a", &["a"])]),
                names(&["b", "a"]),
                vec![names(&["a", "a"])],
            ),
            (
                "two cycles: each broken at its first name, in turn",
                names(&["d", "c", "b", "a"]),
                deps(&[("a", &["b"]), ("b", &["a"]), ("c", &["d"]), ("d", &["c"])]),
                names(&["a", "b", "c", "d"]),
                vec![names(&["a", "b", "a"]), names(&["c", "d", "c"])],
            ),
            (
                // The first name only leads into the cycle: taking it frees what waits on it,
                // not the cycle, which is met again through its own first name.
                "the walk follows the first dependency by name, into a cycle past the start",
                names(&["a", "b", "c", "d"]),
                deps(&[
                    ("a", &["c", "d"]),
                    ("c", &["b"]),
                    ("b", &["c"]),
                    ("d", &["a"]),
                ]),
                names(&["a", "d", "b", "c"]),
                vec![names(&["c", "b", "c"]), names(&["b", "c", "b"])],
            ),
            (
                "the same name twice is ordered once",
                names(&["b", "a", "b"]),
                deps(&[("a", &["b"])]),
                names(&["b", "a"]),
                vec![],
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
        let all = [db, vpn, web];
        let index = Index::new(&all);
        let (db, web) = (&all[0], &all[2]);
        assert_eq!(
            dependencies(web, &labels::parse_depends_on("cache, /queue"), &index)
                .into_iter()
                .collect::<Vec<_>>(),
            ["cache", "db", "queue", "vpn"]
        );
        assert!(dependencies(db, &[], &index).is_empty());
    }

    #[test]
    fn network_targets_and_compose_services() {
        let with_id = |name: &str, id: &str, labels: &[(&str, &str)]| {
            let mut c = sample(name, labels);
            c.id = format!("{id:0<64}");
            c
        };
        let on = |target: &str| {
            let mut c = sample("app", &[]);
            c.network_mode = Some(format!("container:{target}"));
            c
        };
        let service = |name: &str, project: &str, service: &str| {
            with_id(
                name,
                "e",
                &[
                    ("com.docker.compose.project", project),
                    ("com.docker.compose.service", service),
                ],
            )
        };
        let all = [
            with_id("vpn", "abcdef123456aa", &[]),
            with_id("proxy", "abcdef123456bb", &[]),
            // A name that reads as an id prefix: whichever comes first in the list wins.
            with_id("abcdef1234", "99", &[]),
            service("db-1", "p", "db"),
            service("db-2", "p", "db"),
            service("db-other", "q", "db"),
        ];
        let index = Index::new(&all);
        let compose = sample(
            "app",
            &[
                ("com.docker.compose.project", "p"),
                (
                    "com.docker.compose.depends_on",
                    "db:service_healthy:true,gone:x",
                ),
            ],
        );
        let cases: [(&str, Container, &[&str]); 7] = [
            ("by name", on("proxy"), &["proxy"]),
            ("by the full id", on(&all[1].id), &["proxy"]),
            ("by a 12-digit prefix", on("abcdef123456b"), &["proxy"]),
            (
                "an ambiguous prefix: the first listed",
                on("abcdef123456"),
                &["vpn"],
            ),
            (
                "a prefix shorter than 12 digits is a name",
                on("abcdef1234"),
                &["abcdef1234"],
            ),
            ("nothing by that name or id", on("nothing"), &[]),
            (
                "every container of the service, in the same project only",
                compose,
                &["db-1", "db-2"],
            ),
        ];
        for (name, c, expected) in cases {
            assert_eq!(
                dependencies(&c, &[], &index)
                    .into_iter()
                    .collect::<Vec<_>>(),
                expected,
                "{name}"
            );
        }
    }

    /// The order as it was computed before it was made linear: round after round, rescanning
    /// everything left. Kept to check the counting version against it.
    fn rescanning(
        names: &[String],
        deps: &BTreeMap<String, BTreeSet<String>>,
    ) -> (Vec<String>, Vec<Vec<String>>) {
        let known: BTreeSet<&String> = names.iter().collect();
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
            let next = if ready.is_empty() {
                let first = *waiting.keys().next().unwrap();
                let mut path = vec![first.clone()];
                let mut at = first;
                while let Some(next) = waiting.get(at).and_then(|d| d.iter().next()) {
                    if let Some(i) = path.iter().position(|p| p == *next) {
                        path = path[i..].to_vec();
                        path.push((*next).clone());
                        break;
                    }
                    path.push((*next).clone());
                    at = next;
                }
                cycles.push(path);
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

    #[test]
    fn the_same_order_as_rescanning_on_random_graphs() {
        // A fixed linear congruential sequence: the same graphs on every run.
        let mut seed: u64 = 7;
        let mut next = move |below: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % below
        };
        let mut with_cycles = 0;
        for round in 0..400 {
            let n = 1 + next(30);
            let list: Vec<String> = (0..n).map(|i| format!("c{:02}", next(n + 5) + i)).collect();
            let edges = next(n * 2 + 1);
            let mut d: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for _ in 0..edges {
                let from = list[next(n) as usize].clone();
                // Sometimes a name outside the list, which must not hold anything up.
                let to = format!("c{:02}", next(n + 8));
                d.entry(from).or_default().insert(to);
            }
            let expected = rescanning(&list, &d);
            with_cycles += usize::from(!expected.1.is_empty());
            assert_eq!(order(&list, &d), expected, "round {round}: {list:?} {d:?}");
        }
        // The sequence above makes both kinds; check it still does.
        assert!(
            (50..350).contains(&with_cycles),
            "{with_cycles} of 400 with cycles"
        );
    }

    #[test]
    fn a_long_chain_and_a_wide_fan() {
        let n = 20_000;
        let name = |i: usize| format!("c{i:05}");
        let list: Vec<String> = (0..n).map(name).collect();
        // Each waits on the next: the order is the list backwards.
        let chain: BTreeMap<String, BTreeSet<String>> = (0..n - 1)
            .map(|i| (name(i), BTreeSet::from([name(i + 1)])))
            .collect();
        let (got, cycles) = order(&list, &chain);
        assert_eq!(got, list.iter().rev().cloned().collect::<Vec<_>>());
        assert!(cycles.is_empty());
        // Everything waits on the last: it comes first, then the rest by name.
        let fan: BTreeMap<String, BTreeSet<String>> = (0..n - 1)
            .map(|i| (name(i), BTreeSet::from([name(n - 1)])))
            .collect();
        let (got, _) = order(&list, &fan);
        assert_eq!(got[0], name(n - 1));
        assert_eq!(got[1..], list[..n - 1]);
    }
}
