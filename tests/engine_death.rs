//! A private engine killed at each phase of a swap and restarted, on both engine versions.
//!
//! The swap is frozen at a crash point (the `test-hooks` feature), the engine's dockerd is
//! killed with SIGKILL there (its containerd stays, as on a host whose containerd is a service
//! of its own), and the frozen run goes on against the dead engine: it must end within a bounded
//! time with a failure, and never report a rollback that did not happen. Then the engine comes
//! back (without live restore it stops the containers that were running when it died) and plain
//! runs must bring the name to the rule: exactly one container, no leftover and no claim, running,
//! its volume's data there, the journal empty; and it is the verified new container when
//! verification had passed, the old one otherwise. The engine is contrib/private-engine.sh's: its
//! own containerd, data root, exec root, socket and bridge, so the shared engines never die and
//! the host's docker0 is never touched (checked at the end).
#![cfg(feature = "test-hooks")]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Bed;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/private-engine.sh")
}

fn host_has_docker0() -> bool {
    Command::new("ip")
        .args(["link", "show", "docker0"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// One private engine, stopped (and everything it made removed) when dropped, whatever the
/// test did.
struct Engine {
    dir: PathBuf,
    host: String,
    version: &'static str,
    stopped: bool,
}

impl Engine {
    fn start(version: &'static str) -> Engine {
        // Short: the engine's unix sockets live under it (108 bytes at most).
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pe");
        stop_abandoned(&root, version);
        let dir = root.join(format!("e{version}-{}", std::process::id()));
        let mut engine = Engine {
            dir,
            host: String::new(),
            version,
            stopped: false,
        };
        // A leftover of an earlier test process with the same pid.
        engine.script(&["stop"]);
        let out = engine.script(&["start", version]);
        assert!(out.status.success(), "start: {}", text(&out));
        engine.host = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(engine.host.starts_with("unix://"), "start: {}", text(&out));
        engine.load_base_image();
        engine
    }

    fn script(&self, args: &[&str]) -> Output {
        let (cmd, rest) = args.split_first().unwrap();
        Command::new(script())
            .arg(cmd)
            .arg(&self.dir)
            .args(rest)
            .output()
            .expect("contrib/private-engine.sh runs")
    }

    /// `docker save` of the base image on the shared engine into `docker load` on this one.
    fn load_base_image(&self) {
        let mut save = Command::new("docker")
            .env("DOCKER_HOST", common::bed_var("DOCKER_HOST"))
            .args(["save", &common::base_image()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let load = Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .args(["load", "-q"])
            .stdin(save.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(save.wait().unwrap().success(), "docker save failed");
        assert!(load.status.success(), "docker load: {}", text(&load));
    }

    fn kill(&self) {
        let out = self.script(&["kill"]);
        assert!(out.status.success(), "kill: {}", text(&out));
    }

    fn restart(&self) {
        let out = self.script(&["restart"]);
        assert!(out.status.success(), "restart: {}", text(&out));
    }

    /// The end of the engine's logs, for a failing test.
    fn logs(&self) -> String {
        let tail = |f: &str| {
            let text = std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- {0}/dockerd.log\n{1}\n--- {0}/ctd/containerd.log\n{2}",
            self.dir.display(),
            tail("dockerd.log"),
            tail("ctd/containerd.log")
        )
    }

    fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            let out = self.script(&["stop"]);
            assert!(out.status.success(), "stop: {}", text(&out));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if std::thread::panicking() {
            eprintln!("engine {}:\n{}", self.version, self.logs());
        }
        let out = self.script(&["stop"]);
        if !out.status.success() {
            eprintln!("private engine stop failed: {}", text(&out));
        }
    }
}

/// Engines of this version left by test processes that were killed before their guard ran
/// (`e<version>-<pid>` whose pid is gone) are stopped, so that their daemons and bridges do
/// not pile up.
fn stop_abandoned(root: &Path, version: &str) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&format!("e{version}-")) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = Command::new(script())
                .arg("stop")
                .arg(entry.path())
                .output();
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What the engine and the state file show, for an assertion's message.
fn scene(bed: &Bed) -> String {
    let ps = Command::new("docker")
        .env("DOCKER_HOST", &bed.docker_host)
        .args(["ps", "-a", "--format", "{{.ID}} {{.Names}} {{.Status}}"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let state = std::fs::read_to_string(bed.state_file()).unwrap_or_default();
    format!("--- docker ps -a\n{ps}--- state file\n{state}")
}

fn journal_of(bed: &Bed) -> serde_json::Value {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bed.state_file()).unwrap()).unwrap();
    state.get("journal").cloned().unwrap_or_default()
}

/// The report's line about `name`, without the name.
fn about(run: &common::Run, name: &str) -> String {
    run.stdout
        .lines()
        .filter(|l| l.contains(name))
        .map(|l| {
            l.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .replacen(&format!(" {name}"), "", 1)
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

struct Point {
    point: &'static str,
    /// The new container passed verification before the engine died: it must keep the name.
    replaced: bool,
    /// The new container fails verification (to reach the undo).
    unhealthy: bool,
}

const POINTS: &[Point] = &[
    Point {
        point: "before:stop_old",
        replaced: false,
        unhealthy: false,
    },
    Point {
        point: "after:stop_old",
        replaced: false,
        unhealthy: false,
    },
    Point {
        point: "before:start_new",
        replaced: false,
        unhealthy: false,
    },
    Point {
        point: "after:start_new",
        replaced: false,
        unhealthy: false,
    },
    // The engine dies before verification starts, so the run verifies against a dead engine.
    Point {
        point: "before:verify",
        replaced: false,
        unhealthy: false,
    },
    // Verified: the run goes on to commit against the dead engine.
    Point {
        point: "after:verify",
        replaced: true,
        unhealthy: false,
    },
    Point {
        point: "before:commit",
        replaced: true,
        unhealthy: false,
    },
    Point {
        point: "after:commit",
        replaced: true,
        unhealthy: false,
    },
    // Verification failed (unhealthy): the engine dies as the undo begins.
    Point {
        point: "before:undo",
        replaced: false,
        unhealthy: true,
    },
];

/// Bounded: the run waits at most this long at the crash point, and must end this soon once it
/// goes on against the dead engine.
const REACH: Duration = Duration::from_secs(60);
const END: Duration = Duration::from_secs(30);

/// One crash point on `engine`: a fresh container, volume and state file. Returns what happened.
fn phase(engine: &Engine, p: &Point) -> String {
    let point = p.point;
    let bed = Bed::on(engine.host.clone());
    let volume = bed.volume("data");
    let mount = format!("{volume}:/data");
    let mut extra = vec!["-v", mount.as_str()];
    if p.unhealthy {
        extra.extend([
            "--health-cmd",
            "false",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
        ]);
    }
    let web = bed.container("web", &[("recreate", "0 0 1 1 *")], &extra);
    bed.docker(&["exec", &web, "sh", "-c", "echo kept > /data/proof"]);
    let old_id = bed.inspect(&web, "{{.Id}}");
    let resume = bed.dir.join("resume");

    let started = Instant::now();
    let mut child = bed
        .guerite()
        .args(["run", "--force", "recreate", "--only", &web])
        .env("GUERITE_TEST_CRASH_AT", point)
        .env("GUERITE_TEST_RESUME_FILE", &resume)
        .env("GUERITE_SETTLE_SECONDS", "1")
        .env("GUERITE_HEALTH_CHECK_TIMEOUT_SECONDS", "20")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both pipes are drained in threads, so that the run never blocks on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let (lines_tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut seen = Vec::new();
    let reached = loop {
        let left = REACH.saturating_sub(started.elapsed());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let hit = line.contains(&format!("guerite-crash-point {point}"));
                seen.push(line);
                if hit {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    if !reached {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{point}: never reached in {REACH:?}: {seen:#?}\n{}",
            scene(&bed)
        );
    }
    let reach_time = started.elapsed();

    engine.kill();
    std::fs::write(&resume, "").unwrap();
    let resumed = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if resumed.elapsed() > END {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{point}: the run did not end {END:?} after the engine died: {seen:#?}\n{}",
                scene(&bed)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let end_time = resumed.elapsed();
    let interrupted = common::Run {
        code: status.code().unwrap_or(-1),
        stdout: out_thread.join().unwrap(),
        stderr: err_thread.join().unwrap(),
    };
    assert!(
        matches!(interrupted.code, 1 | 2),
        "{point}: the run against the dead engine must fail: {interrupted:?}"
    );
    let all = format!("{}{}", interrupted.stdout, interrupted.stderr);
    assert!(
        !all.contains("rolled back to the old container"),
        "{point}: no rollback happened on a dead engine: {interrupted:?}"
    );
    let journal_after_death = journal_of(&bed);
    assert!(
        journal_after_death.get(&web).is_some(),
        "{point}: the unfinished swap keeps its journal entry: {interrupted:?}\n{}",
        scene(&bed)
    );

    let had_docker0 = host_has_docker0();
    let restarted = Instant::now();
    engine.restart();
    let restart_time = restarted.elapsed();
    assert!(
        !had_docker0 || host_has_docker0(),
        "{point}: the host's docker0 is gone since the engine restarted"
    );
    let after_restart = scene(&bed);
    let recovering = Instant::now();
    let recovery = common::Run::from(
        bed.guerite()
            .arg("run")
            .env("GUERITE_SETTLE_SECONDS", "1")
            .output()
            .unwrap(),
    );
    let why = |what: &str| {
        format!(
            "{point}: {what}\ninterrupted run: {interrupted:?}\nafter the restart:\n{after_restart}\
             recovery: {recovery:?}\nnow:\n{}",
            scene(&bed)
        )
    };
    let recovery_time = recovering.elapsed();
    assert_eq!(recovery.code, 0, "{}", why("the recovery run succeeds"));
    assert_eq!(
        bed.names(),
        vec![web.clone()],
        "{}",
        why("exactly one container, no leftover, no claim")
    );
    assert_eq!(
        bed.inspect(&web, "{{.State.Running}}"),
        "true",
        "{}",
        why("running")
    );
    assert_eq!(
        bed.docker(&["exec", &web, "cat", "/data/proof"]),
        "kept",
        "{}",
        why("the volume's data is there")
    );
    let replaced = bed.inspect(&web, "{{.Id}}") != old_id;
    assert_eq!(
        replaced,
        p.replaced,
        "{}",
        why(if p.replaced {
            "verified: the new container keeps the name"
        } else {
            "unverified: the old container is back"
        })
    );
    assert!(
        journal_of(&bed).is_null(),
        "{}",
        why("the journal is empty")
    );
    // A second plain run has nothing left to do.
    let again = bed.run(&["run"]);
    assert_eq!(again.code, 0, "{}", why(&format!("second run: {again:?}")));
    assert_eq!(
        bed.names(),
        vec![web.clone()],
        "{}",
        why("still one container")
    );

    format!(
        "engine {} {point}: reached in {:.1}s; after the kill the run ended in {:.2}s with exit {}: \
         {}; journal phase {}; restart {:.1}s; recovery exit {} in {:.1}s: {} ({})",
        engine.version,
        reach_time.as_secs_f64(),
        end_time.as_secs_f64(),
        interrupted.code,
        about(&interrupted, &web),
        journal_after_death[&web]["phase"],
        restart_time.as_secs_f64(),
        recovery.code,
        recovery_time.as_secs_f64(),
        about(&recovery, &web),
        if replaced {
            "new container"
        } else {
            "old container"
        },
    )
}

fn every_phase(version: &'static str) {
    // The host's own engine made docker0 (unless it runs without a default bridge).
    let docker0 = host_has_docker0();
    if !docker0 {
        eprintln!("engine {version}: the host has no docker0 to check");
    }
    let started = Instant::now();
    let mut engine = Engine::start(version);
    eprintln!(
        "engine {version}: started, base image loaded, in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    for p in POINTS {
        eprintln!("{}", phase(&engine, p));
    }
    engine.stop();
    eprintln!(
        "engine {version}: {} phases in {:.1}s",
        POINTS.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        !docker0 || host_has_docker0(),
        "the host's docker0 is gone after the private engine {version}"
    );
}

#[test]
fn a_private_engine_killed_at_each_phase_and_restarted_engine_20() {
    every_phase("20");
}

#[test]
fn a_private_engine_killed_at_each_phase_and_restarted_engine_26() {
    every_phase("26");
}
