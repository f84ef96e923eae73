//! `guerite run` against the real engine: scheduled restarts, dry runs, bad input, the lock.

mod common;

use std::time::{Duration, Instant};

use common::Bed;

#[test]
fn scheduled_restart_happens_in_place_once_per_fire_time() {
    let bed = Bed::new();
    let web = bed.container("web", &[("restart", "* * * * *")], &[]);
    let id = bed.inspect(&web, "{{.Id}}");
    let started = bed.started_at(&web);

    // Before a minute boundary has passed since creation, nothing is due.
    let early = bed.run(&["run"]);
    if bed.started_at(&web) == started {
        assert_eq!(early.code, 0, "{early:?}");
    }
    bed.wait_for_minute_boundary();
    let first = bed.run(&["run"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(
        first.stdout.contains(&format!("restarted        {web}")),
        "{first:?}"
    );
    let restarted = bed.started_at(&web);
    assert_ne!(restarted, started, "StartedAt moves on a restart");
    assert_eq!(bed.inspect(&web, "{{.Id}}"), id, "in place: same container");
    assert_eq!(bed.inspect(&web, "{{.State.Running}}"), "true");

    let again = bed.run(&["run"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(
        bed.started_at(&web),
        restarted,
        "not again in the same minute: {again:?}"
    );
    assert!(again.stdout.contains("nothing due"), "{again:?}");

    let state = std::fs::read_to_string(bed.state_file()).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(
        state["containers"][&web]["results"]["restart"]["ok"], true,
        "{state}"
    );
}

#[test]
fn restart_honours_the_containers_own_stop_timeout() {
    let bed = Bed::new();
    // `sleep` as PID 1 ignores SIGTERM: only the kill after the stop timeout ends it.
    let name = bed.container_of(
        "stubborn",
        &common::base_image(),
        &[("restart", "0 0 1 1 *")],
        &["--stop-timeout", "1"],
        &["sleep", "3600"],
    );
    let before = bed.started_at(&name);
    let t = Instant::now();
    let run = bed.run(&["run", "--force", "restart", "--only", &name]);
    let took = t.elapsed();
    assert_eq!(run.code, 0, "{run:?}");
    assert_ne!(bed.started_at(&name), before, "{run:?}");
    // GUERITE_STOP_TIMEOUT_SECONDS defaults to 10; the container's own 1 s must win.
    assert!(took < Duration::from_secs(7), "took {took:?}: {run:?}");
}

#[test]
fn dry_run_changes_nothing_and_writes_no_state() {
    let bed = Bed::new();
    let web = bed.container("web", &[("restart", "* * * * *")], &[]);
    bed.wait_for_minute_boundary();
    let started = bed.started_at(&web);
    let run = bed.run(&["run", "--dry-run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!("would restart    {web}")),
        "{run:?}"
    );
    assert_eq!(bed.started_at(&web), started, "a dry run restarts nothing");
    let state_dir = bed.state_file().parent().unwrap().to_path_buf();
    assert!(
        !state_dir.exists(),
        "a dry run writes no state, not even the lock: {:?}",
        std::fs::read_dir(&state_dir).map(|d| d.count())
    );

    // GUERITE_DRY_RUN does the same as the flag.
    let run = bed
        .guerite()
        .arg("run")
        .env("GUERITE_DRY_RUN", "true")
        .output()
        .unwrap();
    assert!(run.status.success());
    assert!(!state_dir.exists());
}

#[test]
fn bad_cron_label_stops_only_its_own_container() {
    let bed = Bed::new();
    let bad = bed.container("bad", &[("restart", "* * * *")], &[]);
    let good = bed.container("good", &[("restart", "* * * * *")], &[]);
    bed.wait_for_minute_boundary();
    let (bad_started, good_started) = (bed.started_at(&bad), bed.started_at(&good));
    let run = bed.run(&["run"]);
    assert_eq!(
        run.code, 1,
        "a label error is a failure of the run: {run:?}"
    );
    assert_ne!(
        bed.started_at(&good),
        good_started,
        "the other container is restarted: {run:?}"
    );
    assert_eq!(bed.started_at(&bad), bad_started);
    let label = format!("{}=\"* * * *\"", bed.label("restart"));
    assert!(
        run.stdout
            .contains(&format!("error            {bad}: label {label}")),
        "{run:?}"
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains(&bad) && l.contains(&label)),
        "{run:?}"
    );

    let check = bed.run(&["check", &bad]);
    assert_eq!(check.code, 1, "{check:?}");
    assert!(
        check.stdout.contains(&format!("error: label {label}")),
        "{check:?}"
    );
}

#[test]
fn corrupt_state_file_is_moved_aside() {
    let bed = Bed::new();
    bed.container("web", &[("restart", "0 0 1 1 *")], &[]);
    let state = bed.state_file();
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    std::fs::write(&state, "{\"version\": 1, \"containers\": {").unwrap();
    let run = bed.run(&["run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("did not parse"), "{run:?}");
    let aside: Vec<_> = std::fs::read_dir(state.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let fresh: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(fresh["version"], 1);
    assert!(fresh["last_run"].is_string());
}

#[test]
fn newer_state_version_is_refused() {
    let bed = Bed::new();
    let state = bed.state_file();
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    std::fs::write(&state, r#"{"version": 99, "containers": {}}"#).unwrap();
    let run = bed.run(&["run"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("version 99"), "{run:?}");
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        r#"{"version": 99, "containers": {}}"#
    );
}

#[test]
fn unreachable_docker_host_exits_2_naming_it() {
    let bed = Bed::new();
    for host in [
        "unix:///nonexistent/guerite/docker.sock",
        "tcp://127.0.0.1:1",
    ] {
        let run = Bed::on(host.to_string()).run(&["run"]);
        assert_eq!(run.code, 2, "{host}: {run:?}");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {run:?}");
        assert!(
            lines[0].contains(host) && lines[0].contains("cannot reach the Docker engine"),
            "{run:?}"
        );
        assert!(!run.stderr.contains("panicked"), "{run:?}");
    }
    drop(bed);
}

#[test]
fn bad_configuration_exits_2_before_anything_happens() {
    let bed = Bed::new();
    let cases = [
        (
            "GUERITE_NO_PULL",
            "flase",
            "GUERITE_NO_PULL=\"flase\" is not valid",
        ),
        (
            "GUERITE_NOTIFICATIONS",
            "update,reboot",
            "unknown event \"reboot\"",
        ),
        ("GUERITE_TZ", "Mars/Base", "GUERITE_TZ=\"Mars/Base\""),
        ("GUERITE_PRUNE_CRON", "0 4 * * * *", "GUERITE_PRUNE_CRON"),
        (
            "GUERITE_SETTLE_SECONDS",
            "-1",
            "GUERITE_SETTLE_SECONDS=\"-1\"",
        ),
    ];
    for (var, value, expected) in cases {
        let out = bed.guerite().arg("run").env(var, value).output().unwrap();
        let run = common::Run::from(out);
        assert_eq!(run.code, 2, "{var}: {run:?}");
        assert!(run.stderr.contains(expected), "{var}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{var}: {run:?}");
        assert!(
            !bed.state_file().parent().unwrap().exists(),
            "{var}: nothing written"
        );
    }
}

#[test]
fn overlapping_runs_never_both_act() {
    let bed = Bed::new();
    // Takes the whole 3 s stop timeout to restart, so the two runs surely overlap.
    let name = bed.container_of(
        "slow",
        &common::base_image(),
        &[("restart", "* * * * *")],
        &["--stop-timeout", "3"],
        &["sleep", "3600"],
    );
    bed.wait_for_minute_boundary();
    let t0 = chrono_now();
    let first = bed.guerite().arg("run").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let second = bed.run(&["run"]);
    let first = common::Run::from(first.wait_with_output().unwrap());
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(second.code, 0, "an overlapping run exits 0: {second:?}");
    assert!(second.stderr.contains("holds the lock"), "{second:?}");
    assert!(
        second.stderr.contains("pid "),
        "names the holder: {second:?}"
    );
    let events = bed.docker(&[
        "events",
        "--since",
        &t0,
        "--until",
        &chrono_now(),
        "--filter",
        &format!("container={name}"),
        "--filter",
        "event=restart",
        "--format",
        "{{.Action}}",
    ]);
    assert_eq!(
        events.lines().count(),
        1,
        "restarted exactly once: {events:?}"
    );
}

#[test]
fn a_lock_held_too_long_is_an_error() {
    let bed = Bed::new();
    let state = bed.state_file();
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    let lock = state.with_file_name("state.json.lock");
    std::fs::write(&lock, "4242 2020-01-01T00:00:00+00:00\n").unwrap();
    // flock(1) takes the same kind of lock guerite does.
    let mut holder = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let run = bed.run(&["run"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("pid 4242") && run.stderr.contains("is it stuck"),
        "{run:?}"
    );
}

#[test]
fn only_names_an_unknown_container() {
    let bed = Bed::new();
    let web = bed.container("web", &[("restart", "0 0 1 1 *")], &[]);
    let started = bed.started_at(&web);
    let missing = bed.name("missing");
    let run = bed.run(&["run", "--only", &missing, "--force", "restart"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "error            {missing}: no labelled container"
        )),
        "{run:?}"
    );
    assert_eq!(bed.started_at(&web), started, "--only keeps the others out");
}

#[test]
fn json_report_lists_the_actions() {
    let bed = Bed::new();
    let web = bed.container(
        "web",
        &[("restart", "0 0 1 1 *"), ("update", "0 4 * * *")],
        &[],
    );
    let run = bed.run(&["run", "--json", "--force", "restart", "--only", &web]);
    assert_eq!(run.code, 0, "{run:?}");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    assert_eq!(report["items"][0]["container"], web.as_str());
    assert_eq!(report["items"][0]["action"], "restart");
    assert_eq!(report["items"][0]["outcome"], "done");
    assert_eq!(report["items"][0]["trigger"]["by"], "forced");
    assert_eq!(report["monitored"], 1);
}

fn chrono_now() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        .to_string()
}

#[test]
fn selection_keeps_swarm_excluded_and_other_scopes_out() {
    let bed = Bed::new();
    let plain = bed.container("plain", &[("restart", "0 0 1 1 *")], &[]);
    let swarm = bed.container(
        "swarm",
        &[
            ("restart", "0 0 1 1 *"),
            ("com.docker.swarm.service.id", "x1"),
        ],
        &[],
    );
    let excluded = bed.container("excluded", &[("restart", "0 0 1 1 *")], &[]);
    let scoped = bed.container(
        "scoped",
        &[("restart", "0 0 1 1 *"), ("guerite.scope", "blue")],
        &[],
    );
    let names = [&plain, &swarm, &excluded, &scoped];
    let before: Vec<String> = names.iter().map(|n| bed.started_at(n)).collect();
    let forced = || {
        let out = bed
            .guerite()
            .args(["run", "--force", "restart"])
            .env("GUERITE_EXCLUDE_CONTAINERS", &excluded)
            .output()
            .unwrap();
        common::Run::from(out)
    };
    let run = forced();
    assert_eq!(run.code, 0, "{run:?}");
    let after: Vec<String> = names.iter().map(|n| bed.started_at(n)).collect();
    assert_ne!(
        after[0], before[0],
        "the plain container is restarted: {run:?}"
    );
    assert_eq!(
        after[1..],
        before[1..],
        "swarm, excluded and scoped are not: {run:?}"
    );
    assert!(
        run.stdout.contains("1 container monitored")
            || run.stdout.contains("2 containers monitored"),
        "{run:?}"
    );
    let warned = |r: &common::Run| {
        r.stderr
            .lines()
            .filter(|l| l.contains(&swarm) && l.contains("swarm"))
            .count()
    };
    assert_eq!(warned(&run), 1, "warned once: {run:?}");
    let again = forced();
    assert_eq!(warned(&again), 0, "not every run: {again:?}");

    // The guerite of scope blue sees only the scoped container.
    let blue = bed
        .guerite()
        .args(["run", "--force", "restart"])
        .env("GUERITE_SCOPE", "blue")
        .output()
        .unwrap();
    let blue = common::Run::from(blue);
    assert_eq!(blue.code, 0, "{blue:?}");
    assert_ne!(bed.started_at(&scoped), before[3], "{blue:?}");
}
