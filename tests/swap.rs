//! The name-preserving swap on the real engine: recreate, rollback, and a SIGKILL at every
//! phase followed by a plain run.

mod common;

use common::Bed;

#[test]
fn forced_recreate_keeps_the_name_and_the_data() {
    let bed = Bed::new();
    let web = bed.with_data("web", &[("recreate", "0 0 1 1 *")], &[]);
    let old_id = bed.inspect(&web, "{{.Id}}");
    let run = bed
        .guerite()
        .args(["run", "--force", "recreate", "--only", &web])
        .env("GUERITE_SETTLE_SECONDS", "1")
        .output()
        .unwrap();
    let run = common::Run::from(run);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!("recreated        {web}")),
        "{run:?}"
    );
    assert_ne!(bed.inspect(&web, "{{.Id}}"), old_id, "a new container");
    bed.assert_intact(&web, "after recreate");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bed.state_file()).unwrap()).unwrap();
    assert!(state.get("journal").is_none(), "journal cleared: {state}");
}

#[test]
fn a_replacement_that_never_gets_healthy_is_rolled_back() {
    let bed = Bed::new();
    let web = bed.with_data(
        "web",
        &[("recreate", "* * * * *")],
        &[
            "--health-cmd",
            "false",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
        ],
    );
    let old_id = bed.inspect(&web, "{{.Id}}");
    let run = bed
        .guerite()
        .args(["run", "--force", "recreate", "--only", &web])
        .env("GUERITE_HEALTH_CHECK_TIMEOUT_SECONDS", "20")
        .output()
        .unwrap();
    let run = common::Run::from(run);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("unhealthy") && run.stdout.contains("rolled back"),
        "{run:?}"
    );
    assert_eq!(
        bed.inspect(&web, "{{.Id}}"),
        old_id,
        "the old container is back"
    );
    bed.assert_intact(&web, "after rollback");

    // The failure backs the next scheduled attempt off.
    bed.wait_for_minute_boundary();
    let next = bed.run(&["run"]);
    assert!(next.stdout.contains("backing off"), "{next:?}");
    assert_eq!(bed.inspect(&web, "{{.Id}}"), old_id);
}

#[cfg(feature = "test-hooks")]
/// Starts a forced update to a newly pushed image, frozen at `point`, kills it with SIGKILL
/// there, then runs plainly.
fn crash_at(bed: Bed, point: &str, replaced: bool) {
    let reference = bed.reference("app", "1");
    let version = |n: u32| {
        let lines = format!(
            "ENV VERSION={n}\nCMD [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 3600 & wait\"]"
        );
        bed.build_push(&reference, &lines, None);
    };
    version(1);
    let volume = bed.volume("data");
    let web = bed.container_of(
        "web",
        &reference,
        &[("update", "0 0 1 1 *")],
        &["-v", &format!("{volume}:/data")],
        &[],
    );
    bed.docker(&["exec", &web, "sh", "-c", "echo kept > /data/proof"]);
    let old_id = bed.inspect(&web, "{{.Id}}");
    version(2);
    let mut cmd = bed.guerite();
    cmd.args(["run", "--force", "update", "--only", &web])
        .env("GUERITE_SETTLE_SECONDS", "1");
    common::Frozen::at(cmd, point).kill();
    let check = bed.run(&["check", &web]);
    assert!(
        check.stdout.contains("journal: update started"),
        "{point}: check shows the swap: {check:?}"
    );

    let run = bed
        .guerite()
        .arg("run")
        .env("GUERITE_SETTLE_SECONDS", "1")
        .output()
        .unwrap();
    let run = common::Run::from(run);
    assert_eq!(run.code, 0, "{point}: {run:?}");
    bed.assert_intact(&web, point);
    let id = bed.inspect(&web, "{{.Id}}");
    assert_eq!(id != old_id, replaced, "{point}: replaced? {run:?}");
    let env = bed.inspect(&web, "{{json .Config.Env}}");
    assert!(
        env.contains(if replaced { "VERSION=2" } else { "VERSION=1" }),
        "{point}: {env}"
    );
    if !replaced {
        // The crash was not the image's fault: the digest stays eligible.
        let check = bed.run(&["check", &web]);
        assert!(!check.stdout.contains("quarantined"), "{point}: {check:?}");
    }
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bed.state_file()).unwrap()).unwrap();
    assert!(
        state.get("journal").is_none(),
        "{point}: journal cleared: {state}"
    );
}

/// Every crash point on the machine's engine (API 1.41) and on the newer one (API 1.45).
macro_rules! crash_tests {
    ($($name:ident: $point:literal => $replaced:literal,)*) => {
        #[cfg(feature = "test-hooks")]
        mod engine_20 { use super::*; $(#[test] fn $name() { crash_at(Bed::new(), $point, $replaced) })* }
        #[cfg(feature = "test-hooks")]
        mod engine_26 { use super::*; $(#[test] fn $name() { crash_at(Bed::newer_engine(), $point, $replaced) })* }
    };
}

crash_tests! {
    crash_before_rename_old: "before:rename_old" => false,
    crash_after_rename_old: "after:rename_old" => false,
    crash_before_create_new: "before:create_new" => false,
    crash_after_create_new: "after:create_new" => false,
    crash_before_stop_old: "before:stop_old" => false,
    crash_after_stop_old: "after:stop_old" => false,
    crash_before_start_new: "before:start_new" => false,
    crash_after_start_new: "after:start_new" => false,
    crash_before_verify: "before:verify" => false,
    crash_after_verify: "after:verify" => false,
    crash_before_commit: "before:commit" => true,
    crash_after_commit: "after:commit" => true,
}

#[test]
fn leftovers_of_the_python_original_are_restored() {
    let bed = Bed::new();
    // What the original leaves when it dies between its rename and its final rename.
    let web = bed.name("web");
    let volume = bed.volume("web-data");
    let old = bed.container(
        "web-guerite-old-1a2b3c",
        &[("restart", "0 0 1 1 *")],
        &["-v", &format!("{volume}:/data")],
    );
    bed.docker(&["exec", &old, "sh", "-c", "echo kept > /data/proof"]);
    bed.docker(&["stop", "-t", "1", &old]);
    bed.container("web-guerite-new-1a2b3c", &[("restart", "0 0 1 1 *")], &[]);
    let run = bed.run(&["run"]);
    assert_eq!(run.code, 0, "{run:?}");
    bed.assert_intact(&web, "python leftovers");
}

#[test]
fn an_unhealthy_container_is_replaced_once_per_backoff() {
    let bed = Bed::new();
    // Healthy until /sick exists; the root file system is not a volume, so a replacement starts healthy.
    let web = bed.with_data(
        "web",
        &[("health", "* * * * *")],
        &[
            "--health-cmd",
            "test ! -f /sick",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
        ],
    );
    let wait_for = |status: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while bed.inspect(&web, "{{.State.Health.Status}}") != status {
            assert!(
                std::time::Instant::now() < deadline,
                "never became {status}"
            );
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    };
    wait_for("healthy");
    let old_id = bed.inspect(&web, "{{.Id}}");
    let healthy = bed.run(&["run", "--force", "health", "--only", &web]);
    assert_eq!(healthy.code, 0, "{healthy:?}");
    assert_eq!(
        bed.inspect(&web, "{{.Id}}"),
        old_id,
        "a healthy container is left alone: {healthy:?}"
    );

    bed.docker(&["exec", &web, "touch", "/sick"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while bed.inspect(&web, "{{.State.Health.Status}}") != "unhealthy" {
        assert!(
            std::time::Instant::now() < deadline,
            "never became unhealthy"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let run = bed.run(&["run", "--force", "health", "--only", &web]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!("replaced         {web}")),
        "{run:?}"
    );
    assert_ne!(bed.inspect(&web, "{{.Id}}"), old_id);
    bed.assert_intact(&web, "after the health replacement");

    // Sick again at once: the next scheduled check waits for the backoff.
    let new_id = bed.inspect(&web, "{{.Id}}");
    bed.docker(&["exec", &web, "touch", "/sick"]);
    bed.wait_for_minute_boundary();
    let next = bed.run(&["run"]);
    assert!(next.stdout.contains("backing off"), "{next:?}");
    assert_eq!(bed.inspect(&web, "{{.Id}}"), new_id);
}

/// Killed while undoing a failed swap: the next run finishes the rollback, and the failure
/// is counted once (it was recorded before the undo began).
#[cfg(feature = "test-hooks")]
#[test]
fn a_kill_during_a_rollback_is_finished_and_counted_once() {
    let bed = Bed::new();
    let web = bed.with_data(
        "web",
        &[("recreate", "0 0 1 1 *")],
        &[
            "--health-cmd",
            "false",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
        ],
    );
    let old_id = bed.inspect(&web, "{{.Id}}");
    let mut cmd = bed.guerite();
    cmd.args(["run", "--force", "recreate", "--only", &web])
        .env("GUERITE_HEALTH_CHECK_TIMEOUT_SECONDS", "20");
    common::Frozen::at(cmd, "before:undo").kill();
    let run = bed.run(&["run", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        report["items"][0]["detail"],
        "finished rolling back the failed recreate: the old container is back",
        "{report}"
    );
    bed.assert_intact(&web, "rollback finished");
    assert_eq!(bed.inspect(&web, "{{.Id}}"), old_id);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bed.state_file()).unwrap()).unwrap();
    assert_eq!(state["containers"][&web]["failures"], 1, "{state}");
    assert!(state.get("journal").is_none(), "{state}");
}

/// An old container left beside a working one, with no journal entry and no claim (an older
/// crash whose state was lost): kept aside, recorded in the state with when it was first seen
/// (prune's grace counts from then), and said once.
#[test]
fn an_old_leftover_without_a_record_is_recorded_and_said_once() {
    let bed = Bed::new();
    let web = bed.container("web", &[("restart", "0 0 1 1 *")], &[]);
    let old = bed.container("web-guerite-old-1a2b3c4d", &[("restart", "0 0 1 1 *")], &[]);
    bed.docker(&["stop", "-t", "1", &old]);
    let first = bed.run(&["run", "--json"]);
    assert_eq!(first.code, 0, "{first:?}");
    let report: serde_json::Value = serde_json::from_str(&first.stdout).unwrap();
    let items: Vec<(&str, &str)> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["container"].as_str().unwrap(),
                i["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(items, [(web.as_str(), "skipped")], "{report}");
    assert_eq!(
        report["items"][0]["detail"],
        format!(
            "{old} is an old container left by a swap that has no journal entry; it is kept \
             aside, stopped, for GUERITE_ROLLBACK_GRACE_SECONDS"
        )
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bed.state_file()).unwrap()).unwrap();
    assert!(state["leftovers"][&old].is_string(), "{state}");
    let second = bed.run(&["run", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&second.stdout).unwrap();
    assert_eq!(
        report["items"],
        serde_json::json!([]),
        "said once: {report}"
    );
    assert_eq!(bed.names(), vec![web.clone(), old.clone()], "both kept");
    assert_eq!(bed.inspect(&web, "{{.State.Running}}"), "true");
}
