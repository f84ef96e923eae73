//! Two guerites on one engine (separate state files, the same labels), a state file someone
//! else wrote, and a journal that was lost: nothing is lost, and never do two guerites act on
//! one container at once.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Bed, Frozen, Run};
use serde_json::Value;

/// The second guerite: same labels and engine, its own state file.
fn other(bed: &Bed) -> (PathBuf, impl Fn() -> Command + '_) {
    let state = bed.dir.join("other/state.json");
    let s = state.clone();
    (state, move || {
        let mut cmd = bed.guerite();
        cmd.env("GUERITE_STATE_FILE", &s)
            .env("GUERITE_SETTLE_SECONDS", "1");
        cmd
    })
}

fn journal(state: &std::path::Path) -> Option<Value> {
    let text = std::fs::read_to_string(state).ok()?;
    let v: Value = serde_json::from_str(&text).unwrap();
    v.get("journal").cloned()
}

/// The report's items about `name`, from `--json`.
fn items<'a>(report: &'a Value, name: &str) -> Vec<&'a Value> {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["container"] == name)
        .collect()
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

fn settle(bed: &Bed) -> Command {
    let mut cmd = bed.guerite();
    cmd.env("GUERITE_SETTLE_SECONDS", "1");
    cmd
}

/// Both guerites force a recreate of the same container at nearly the same time, round after
/// round, and now and then one of them is killed mid-way. Each round, the engine's events prove
/// that every change to the container's family happened while exactly one claim existed, and
/// that no two claims ever overlapped.
fn race(bed: Bed) {
    let web = bed.with_data("web", &[("recreate", "0 0 1 1 *")], &[]);
    let (b_state, b) = other(&bed);
    let watch = Events::watch(&bed);
    let (mut done, mut skipped) = (0, 0);
    let mut seed = bed.id.bytes().fold(0x9E37_79B9_7F4A_7C15_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01B3)
    });
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..12 {
        let spawn = |mut cmd: Command| {
            cmd.args(["run", "--json", "--force", "recreate", "--only", &web])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        // Either may start first, by up to 0.4 s.
        let (first_a, lead) = (next() % 2 == 0, Duration::from_millis(next() % 400));
        let (a, b_child) = if first_a {
            let a = spawn(settle(&bed));
            std::thread::sleep(lead);
            (a, spawn(b()))
        } else {
            let b_child = spawn(b());
            std::thread::sleep(lead);
            (spawn(settle(&bed)), b_child)
        };
        let kill_a = round % 3 == 2;
        if kill_a {
            std::thread::sleep(Duration::from_millis(next() % 2500));
        }
        let mut a = a;
        if kill_a {
            let _ = a.kill();
        }
        let b_run = Run::from(b_child.wait_with_output().unwrap());
        let a_run = Run::from(a.wait_with_output().unwrap());
        let mut outcomes = Vec::new();
        for (who, run) in [("a", &a_run), ("b", &b_run)] {
            if who == "a" && kill_a && run.stdout.is_empty() {
                continue;
            }
            assert_eq!(run.code, 0, "round {round}, {who}: {run:?}");
            let report = json(run);
            let mine = items(&report, &web);
            assert_eq!(mine.len(), 1, "round {round}, {who}: {report}");
            let (outcome, detail) = (
                mine[0]["outcome"].as_str().unwrap(),
                mine[0]["detail"].as_str().unwrap(),
            );
            match outcome {
                "done" => done += 1,
                "skipped" => skipped += 1,
                _ => panic!("round {round}, {who}: {report}"),
            }
            if outcome == "skipped" {
                assert!(
                    detail.starts_with("another guerite is working on it")
                        || detail == "removed by someone else during the run",
                    "round {round}, {who}: {detail}"
                );
            }
            outcomes.push(outcome.to_string());
        }
        // Whatever a kill left, plain runs of both settle it.
        for _ in 0..2 {
            for run in [settle(&bed).arg("run").output(), b().arg("run").output()] {
                let run = Run::from(run.unwrap());
                assert_eq!(run.code, 0, "round {round}: {run:?}");
            }
        }
        eprintln!("round {round}: a first: {first_a}, kill a: {kill_a}, outcomes {outcomes:?}");
        bed.assert_intact(&web, &format!("round {round} ({outcomes:?})"));
        assert_eq!(
            journal(&bed.state_file()),
            None,
            "round {round}: a's journal"
        );
        assert_eq!(journal(&b_state), None, "round {round}: b's journal");
    }
    assert!(
        done >= 8,
        "at least one recreate got done in each round without a kill: {done}"
    );
    assert!(skipped >= 4, "the runs overlapped: {skipped} skipped");
    let events = watch.of(&web);
    let claim = format!("{web}-guerite-claim");
    let mut held = false;
    let mut changes = 0;
    let setup_done = events
        .iter()
        .position(|(action, name, _)| *name == claim && action == "create")
        .expect("claims were made");
    for (action, name, old_name) in &events[setup_done..] {
        if *name == claim && action == "create" {
            assert!(!held, "two claims at once: {events:?}");
            held = true;
        } else if *name == claim && action == "destroy" {
            assert!(held, "a claim went that was not there: {events:?}");
            held = false;
        } else if *name != claim
            && ["create", "rename", "destroy", "start"].contains(&action.as_str())
        {
            changes += 1;
            assert!(
                held,
                "{action} of {name} (was {old_name}) outside any claim: {events:?}"
            );
        }
    }
    // Each swap done renames the old, creates the new, renames and starts it, removes the old.
    assert!(
        changes >= done * 5,
        "the {done} swaps happened: {changes} changes"
    );
}

/// The engine's container events as they happen: its history for `--since` keeps only the
/// last 256, too few on a busy engine, so the stream is read live.
struct Events {
    child: std::process::Child,
    lines: std::thread::JoinHandle<Vec<String>>,
}

impl Events {
    fn watch(bed: &Bed) -> Events {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new("docker")
            .env("DOCKER_HOST", &bed.docker_host)
            .args([
                "events",
                "--filter",
                "type=container",
                "--format",
                "{{json .}}",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let lines = std::thread::spawn(move || out.lines().map_while(Result::ok).collect());
        // Let the subscription reach the engine before anything happens.
        std::thread::sleep(Duration::from_millis(500));
        Events { child, lines }
    }

    /// create/rename/destroy/start... of the container, its leftovers and its claim, in order.
    fn of(mut self, web: &str) -> Vec<(String, String, String)> {
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.lines
            .join()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|e| {
                let action = e["Action"].as_str()?.split(':').next()?.to_string();
                let name = e["Actor"]["Attributes"]["name"].as_str()?.to_string();
                let old = e["Actor"]["Attributes"]["oldName"]
                    .as_str()
                    .unwrap_or("")
                    .trim_start_matches('/')
                    .to_string();
                (name.starts_with(web)).then_some((action, name, old))
            })
            .collect()
    }
}

#[test]
fn two_guerites_race_on_engine_20() {
    race(Bed::new());
}

#[test]
fn two_guerites_race_on_engine_26() {
    race(Bed::newer_engine());
}

/// While one guerite is in the middle of a swap, another leaves the container and its
/// leftovers alone, says who is at work, and `check` says so too.
#[test]
fn a_swap_in_progress_is_left_to_its_guerite() {
    let bed = Bed::new();
    let web = bed.with_data("web", &[("recreate", "0 0 1 1 *")], &[]);
    // Both state files as a guerite before claims wrote them: no instance of their own yet.
    let (b_state, b) = other(&bed);
    for state in [bed.state_file(), b_state.clone()] {
        std::fs::create_dir_all(state.parent().unwrap()).unwrap();
        std::fs::write(&state, r#"{"version": 1}"#).unwrap();
    }
    let resume = bed.dir.join("resume");
    let mut a = settle(&bed);
    a.env("GUERITE_TEST_RESUME_FILE", &resume)
        .args(["run", "--force", "recreate", "--only", &web]);
    let frozen = Frozen::at(a, "after:stop_old");
    let before = bed.names();
    assert_eq!(
        before.len(),
        3,
        "old and new aside, and the claim: {before:?}"
    );

    let run = Run::from(
        b().args(["run", "--json", "--force", "recreate", "--only", &web])
            .output()
            .unwrap(),
    );
    // The name is free mid-swap: the other guerite sees no container of that name to act on,
    // and must not take the leftovers for an old crash's.
    assert_eq!(bed.names(), before, "nothing touched: {run:?}");
    let report = json(&run);
    let line = |report: &Value| {
        items(report, &web)
            .into_iter()
            .find(|i| i["outcome"] == "skipped" || i["outcome"] == "error")
            .cloned()
    };
    assert!(
        line(&report).is_none()
            || line(&report).unwrap()["detail"]
                .as_str()
                .unwrap()
                .starts_with("another guerite"),
        "{report}"
    );
    let check = Run::from(b().args(["check", "--json", &web]).output().unwrap());
    let check: Value =
        serde_json::from_str(&check.stdout).unwrap_or_else(|e| panic!("{e}: {check:?}"));
    let claimed = check["claimed"].as_str().unwrap();
    assert!(
        claimed.starts_with("another guerite is working on it (recreate since ")
            && claimed.contains(&format!("state {}", bed.state_file().display())),
        "{claimed}"
    );

    let a = frozen.resume(&resume);
    assert_eq!(a.code, 0, "{a:?}");
    bed.assert_intact(&web, "after the first guerite's swap");
    let run = Run::from(b().arg("run").output().unwrap());
    assert_eq!(run.code, 0, "{run:?}");
    bed.assert_intact(&web, "the other guerite then");
    assert_eq!(journal(&b_state), None);
}

/// The guerite that held the claim was killed mid-swap and never comes back: another one
/// sees its process is gone and undoes the swap from the claim, with no journal of its own.
/// The first one, when it does come back, finds its swap settled.
#[test]
fn a_dead_guerites_swap_is_taken_over() {
    let bed = Bed::new();
    let web = bed.with_data("web", &[("recreate", "0 0 1 1 *")], &[]);
    let old_id = bed.inspect(&web, "{{.Id}}");
    let mut a = settle(&bed);
    a.args(["run", "--force", "recreate", "--only", &web]);
    Frozen::at(a, "after:start_new").kill();
    let (_, b) = other(&bed);
    let run = Run::from(b().args(["run", "--json"]).output().unwrap());
    assert_eq!(run.code, 0, "{run:?}");
    let report = json(&run);
    let done: Vec<&str> = items(&report, &web)
        .iter()
        .map(|i| i["detail"].as_str().unwrap())
        .collect();
    assert_eq!(
        done,
        [
            "undid the recreate whose journal entry was lost (from its claim): the old container is back"
        ],
        "{report}"
    );
    bed.assert_intact(&web, "taken over");
    assert_eq!(bed.inspect(&web, "{{.Id}}"), old_id, "the old one is back");
    let run = Run::from(settle(&bed).args(["run", "--json"]).output().unwrap());
    assert_eq!(run.code, 0, "{run:?}");
    bed.assert_intact(&web, "the first guerite back");
    assert_eq!(journal(&bed.state_file()), None);
}

/// A claim whose holder cannot be proved gone (here: a guerite in another pid namespace, as in
/// a container) is respected until its deadline, then taken over.
#[test]
fn a_claim_from_another_pid_namespace_is_respected_until_it_expires() {
    let bed = Bed::new();
    let web = bed.with_data("web", &[("recreate", "0 0 1 1 *")], &[]);
    // The bed's guerite, started in a pid namespace of its own.
    let template = bed.guerite();
    let mut a = Command::new("unshare");
    a.args(["--pid", "--fork", "--kill-child", "--"])
        .arg(template.get_program())
        .args(["run", "--force", "recreate", "--only", &web]);
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => a.env(k, v),
            None => a.env_remove(k),
        };
    }
    a.env("GUERITE_SETTLE_SECONDS", "1")
        .env("GUERITE_STOP_TIMEOUT_SECONDS", "1")
        .env("GUERITE_HEALTH_CHECK_TIMEOUT_SECONDS", "1")
        .env("GUERITE_TEST_CLAIM_MARGIN_SECONDS", "6");
    let started = Instant::now();
    Frozen::at(a, "after:stop_old").kill();
    let (_, b) = other(&bed);
    let early = Run::from(b().args(["run", "--json"]).output().unwrap());
    assert_eq!(early.code, 0, "{early:?}");
    assert_eq!(
        bed.names().len(),
        3,
        "left alone before the deadline: {early:?}"
    );
    // The deadline: stop timeout 1 s + verification 1 s + margin 6 s after the claim.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()));
    let late = Run::from(b().args(["run", "--json"]).output().unwrap());
    assert_eq!(late.code, 0, "{late:?}");
    bed.assert_intact(&web, "taken over after the deadline");
}

/// A state file someone else wrote names containers that are not the swap's: recovery refuses
/// each entry in one line, touches nothing, and does not act on those names.
#[test]
fn forged_journal_entries_are_refused() {
    let bed = Bed::new();
    let web = bed.with_data("web", &[("restart", "0 0 1 1 *")], &[]);
    let db = bed.container("db", &[("restart", "0 0 1 1 *")], &[]);
    let stranger = bed.container("stranger", &[("note", "x")], &[]);
    let id = |n: &str| bed.inspect(n, "{{.Id}}");
    let entry = |name: &str, phase: &str, old: &str, new: &str| {
        serde_json::json!({
            "name": name, "kind": "update", "phase": phase, "old_id": old,
            "old_was_running": true, "new_id": new, "started": "2026-12-01T00:00:00Z"
        })
    };
    let forged = serde_json::json!({
        "version": 1,
        "journal": {
            // Commit: "remove the old, give the new one the name", naming a stranger as new.
            web.clone(): entry(&web, "commit", &id(&web), &id(&stranger)),
            // Not an id at all.
            db.clone(): entry(&db, "verify", "../../../etc/passwd", &id(&web)),
            // Keyed by one name, naming another.
            format!("{}-x", bed.id): entry(&db, "verify", &id(&db), &id(&stranger)),
        }
    });
    std::fs::create_dir_all(bed.state_file().parent().unwrap()).unwrap();
    std::fs::write(bed.state_file(), forged.to_string()).unwrap();
    let before: Vec<(String, String)> = [&web, &db, &stranger]
        .iter()
        .map(|n| (id(n), bed.started_at(n)))
        .collect();
    let run = Run::from(bed.guerite().args(["run", "--json"]).output().unwrap());
    assert_eq!(run.code, 1, "{run:?}");
    let report = json(&run);
    let refused: Vec<(String, String)> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["outcome"] == "error")
        .map(|i| {
            (
                i["container"].as_str().unwrap().to_string(),
                i["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let state = bed.state_file().display().to_string();
    let refusal = |why: String| {
        format!(
            "journal entry for the interrupted update refused, nothing touched: {why}; check \
             the containers, then remove the entry from {state}"
        )
    };
    assert_eq!(
        refused,
        vec![
            (
                db.clone(),
                refusal("its old_id \"../../../etc/passwd\" is not a container id".into())
            ),
            (
                web.clone(),
                refusal(format!(
                    "container {} is named {stranger}, neither {web} nor {web}-guerite-new-{}",
                    &id(&stranger)[..12],
                    &id(&web)[..8]
                ))
            ),
            (
                format!("{}-x", bed.id),
                refusal(format!("the entry under \"{}-x\" names \"{db}\"", bed.id))
            ),
        ],
        "{report}"
    );
    let after: Vec<(String, String)> = [&web, &db, &stranger]
        .iter()
        .map(|n| (id(n), bed.started_at(n)))
        .collect();
    assert_eq!(after, before, "nothing touched");
    assert_eq!(
        journal(&bed.state_file())
            .unwrap()
            .as_object()
            .unwrap()
            .len(),
        3,
        "left as it was"
    );
    // While its entry is unresolved, a name is not acted on, even when forced.
    let forced = Run::from(
        bed.guerite()
            .args(["run", "--json", "--force", "restart", "--only", &web])
            .output()
            .unwrap(),
    );
    let report = json(&forced);
    let skipped: Vec<&Value> = items(&report, &web)
        .into_iter()
        .filter(|i| i["outcome"] == "skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{report}");
    assert_eq!(bed.started_at(&web), before[0].1, "not restarted");
}

/// A kill late in a swap, then the state file replaced by garbage: the journal is gone, but
/// the claim still says which container was the old one. The next run moves the garbage
/// aside, undoes the swap from the claim and leaves nothing behind.
#[test]
fn a_lost_journal_is_recovered_from_the_claim() {
    let bed = Bed::new();
    let web = bed.with_data("web", &[("recreate", "0 0 1 1 *")], &[]);
    let old_id = bed.inspect(&web, "{{.Id}}");
    let mut a = settle(&bed);
    a.args(["run", "--force", "recreate", "--only", &web]);
    Frozen::at(a, "before:verify").kill();
    std::fs::write(bed.state_file(), b"\x00garbage{").unwrap();
    let run = Run::from(settle(&bed).args(["run", "--json"]).output().unwrap());
    assert_eq!(run.code, 0, "{run:?}");
    let report = json(&run);
    let details: Vec<&str> = items(&report, &web)
        .iter()
        .map(|i| i["detail"].as_str().unwrap())
        .collect();
    assert_eq!(
        details,
        [
            "undid the recreate whose journal entry was lost (from its claim): the old container is back"
        ],
        "{report}"
    );
    bed.assert_intact(&web, "after a lost journal");
    assert_eq!(bed.inspect(&web, "{{.Id}}"), old_id);
    let aside: Vec<_> = std::fs::read_dir(bed.state_file().parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the garbage was moved aside");
}
