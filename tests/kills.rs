//! SIGKILL at random instants across a whole swap, on both engines: over a container that
//! takes seconds to stop (the engine carries the stop out after guerite died) and over one that
//! stops at once. After each kill, plain runs recover (some of them killed too); once every stop
//! the killed run sent has ended, exactly one container has the name, it runs, its data is
//! there, and nothing is left: no leftover, no claim, no journal entry.

mod common;

use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Bed;

/// A small xorshift: the tests need spread, not quality. The seed is printed, and
/// `GUERITE_TEST_SEED` replays it.
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> (Rng, u64) {
        let seed = std::env::var("GUERITE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        (
            Rng((seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1),
            seed,
        )
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, d: Duration) -> Duration {
        Duration::from_millis(self.next() % (d.as_millis() as u64).max(1))
    }
}

#[derive(Clone, Copy)]
struct Kind {
    /// The container's stop timeout; PID 1 ignores SIGTERM, so a stop takes all of it.
    stop_timeout: Option<u64>,
    /// Kill instants are drawn from [0, window): a little longer than a whole swap.
    window: Duration,
}

const SLOW: Kind = Kind {
    stop_timeout: Some(4),
    window: Duration::from_millis(7000),
};
const PROMPT: Kind = Kind {
    stop_timeout: None,
    window: Duration::from_millis(2500),
};

const KILLS_PER_KIND: usize = 20;
const WORKERS: usize = 4;

/// One container of one worker, and how many of its kills landed inside a run.
fn worker(bed: Bed, kind: Kind, rng: &mut Rng, kills: &Mutex<usize>, log: &Mutex<Vec<String>>) {
    let volume = bed.volume("data");
    let mount = format!("{volume}:/data");
    let timeout = kind.stop_timeout.map(|t| t.to_string());
    let mut extra = vec!["-v", mount.as_str()];
    if let Some(t) = &timeout {
        extra.extend(["--stop-timeout", t.as_str()]);
    }
    let cmd: &[&str] = if kind.stop_timeout.is_some() {
        &["sleep", "3600"]
    } else {
        &["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
    };
    let web = bed.container_of(
        "web",
        &common::base_image(),
        &[("recreate", "0 0 1 1 *")],
        &extra,
        cmd,
    );
    bed.docker(&["exec", &web, "sh", "-c", "echo kept > /data/proof"]);
    let settle = |cmd: &mut std::process::Command| {
        cmd.env("GUERITE_SETTLE_SECONDS", "1");
    };
    let mut trial = 0;
    while *kills.lock().unwrap() < KILLS_PER_KIND {
        trial += 1;
        assert!(trial < 4 * KILLS_PER_KIND, "too few kills landed in a swap");
        let mut swap = bed.guerite();
        settle(&mut swap);
        let mut child = swap
            .args(["run", "--force", "recreate", "--only", &web])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = rng.below(kind.window);
        std::thread::sleep(delay);
        let landed = child.try_wait().unwrap().is_none();
        let killed_at = Instant::now();
        child.kill().unwrap();
        child.wait().unwrap();
        if landed {
            *kills.lock().unwrap() += 1;
        }
        // Recovery, itself killed now and then.
        let mut recoveries = 0;
        loop {
            recoveries += 1;
            let mut run = bed.guerite();
            settle(&mut run);
            if recoveries < 3 && rng.next().is_multiple_of(4) {
                let mut child = run
                    .arg("run")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                std::thread::sleep(rng.below(Duration::from_millis(3000)));
                child.kill().unwrap();
                child.wait().unwrap();
                continue;
            }
            let out = common::Run::from(run.arg("run").output().unwrap());
            assert_eq!(out.code, 0, "trial {trial} (kill after {delay:?}): {out:?}");
            break;
        }
        // Once the stop the killed run may have sent is over, the rule must hold: the first
        // run after that settles anything still open.
        let stop_over = Duration::from_secs(kind.stop_timeout.unwrap_or(0) + 2);
        if let Some(rest) = stop_over.checked_sub(killed_at.elapsed()) {
            std::thread::sleep(rest);
        }
        let last = common::Run::from({
            let mut run = bed.guerite();
            settle(&mut run);
            run.args(["run", "--json"]).output().unwrap()
        });
        let what = format!("trial {trial}, kill after {delay:?} (landed: {landed})");
        assert_eq!(last.code, 0, "{what}: {last:?}");
        assert_eq!(
            bed.names(),
            vec![web.clone()],
            "{what}: one container, nothing left"
        );
        assert_eq!(
            bed.inspect(&web, "{{.State.Running}}"),
            "true",
            "{what}: running after the stop ended"
        );
        assert_eq!(
            bed.docker(&["exec", &web, "cat", "/data/proof"]),
            "kept",
            "{what}: data kept"
        );
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(bed.state_file()).unwrap()).unwrap();
        assert!(
            state.get("journal").is_none(),
            "{what}: journal empty: {state}"
        );
        log.lock().unwrap().push(format!("{}: {what}", bed.id));
    }
}

fn matrix(engine: fn() -> Bed, kind: Kind, salt: u64) {
    let kills = Mutex::new(0);
    let log = Mutex::new(Vec::new());
    let (_, seed) = Rng::seeded(salt);
    eprintln!("kill matrix seed {seed} (GUERITE_TEST_SEED replays it)");
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            let (kills, log) = (&kills, &log);
            s.spawn(move || {
                let (mut rng, _) = Rng::seeded(salt + w as u64);
                worker(engine(), kind, &mut rng, kills, log)
            });
        }
    });
    let kills = *kills.lock().unwrap();
    assert!(kills >= KILLS_PER_KIND, "{kills} kills landed");
    eprintln!(
        "{kills} kills landed in a swap; trials:\n{}",
        log.lock().unwrap().join("\n")
    );
}

#[test]
fn random_kills_slow_stop_engine_20() {
    matrix(Bed::new, SLOW, 1);
}

#[test]
fn random_kills_slow_stop_engine_26() {
    matrix(Bed::newer_engine, SLOW, 2);
}

#[test]
fn random_kills_prompt_stop_engine_20() {
    matrix(Bed::new, PROMPT, 3);
}

#[test]
fn random_kills_prompt_stop_engine_26() {
    matrix(Bed::newer_engine, PROMPT, 4);
}

/// An in-place restart killed at a random instant: the engine finishes the restart it was
/// sent, and the next run clears the claim the killed run left.
fn restart_kills(bed: Bed, salt: u64) {
    let (mut rng, seed) = Rng::seeded(salt);
    eprintln!("restart kills seed {seed}");
    let web = bed.container_of(
        "web",
        &common::base_image(),
        &[("restart", "0 0 1 1 *")],
        &["--stop-timeout", "2"],
        &["sleep", "3600"],
    );
    for trial in 0..6 {
        let mut child = bed
            .guerite()
            .args(["run", "--force", "restart", "--only", &web])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = rng.below(Duration::from_millis(3000));
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        std::thread::sleep(Duration::from_secs(4));
        let run = bed.run(&["run"]);
        assert_eq!(run.code, 0, "trial {trial}, kill after {delay:?}: {run:?}");
        assert_eq!(
            bed.names(),
            vec![web.clone()],
            "trial {trial}: no claim left"
        );
        assert_eq!(
            bed.inspect(&web, "{{.State.Running}}"),
            "true",
            "trial {trial}, kill after {delay:?}: running"
        );
    }
}

#[test]
fn random_kills_of_a_restart_engine_20() {
    restart_kills(Bed::new(), 5);
}

#[test]
fn random_kills_of_a_restart_engine_26() {
    restart_kills(Bed::newer_engine(), 6);
}
