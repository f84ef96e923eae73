//! The state directory and its files under hostile conditions: links planted where guerite
//! opens or writes, a umask of 000, a directory others can write, state files too large or not
//! JSON at all. Each test works in its own directory under target/it and touches no container.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Bed, Run};

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

fn state_dir(bed: &Bed) -> PathBuf {
    bed.state_file().parent().unwrap().to_path_buf()
}

/// The state directory as an operator would make it by hand: private, and only it.
fn make_state_dir(bed: &Bed) -> PathBuf {
    let dir = state_dir(bed);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// A file outside the state directory that a planted link points at; it must come out as it
/// went in.
struct Victim {
    path: PathBuf,
    text: &'static str,
}

impl Victim {
    fn new(bed: &Bed, text: &'static str) -> Victim {
        let path = bed.dir.join("victim");
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        Victim { path, text }
    }

    fn assert_untouched(&self, run: &Run) {
        assert_eq!(
            fs::read_to_string(&self.path).unwrap(),
            self.text,
            "{run:?}"
        );
        assert_eq!(mode(&self.path), 0o644, "{run:?}");
    }
}

/// The message of each stderr line at `level`, without the timestamp.
fn logged(run: &Run, level: &str) -> Vec<String> {
    run.stderr
        .lines()
        .filter_map(|l| {
            let (time, rest) = l.split_once(' ')?;
            assert_eq!(time.len(), "2026-01-01T00:00:00Z".len(), "{l:?}");
            let (lvl, msg) = rest.split_once(' ')?;
            (lvl == level).then(|| msg.trim_start().to_string())
        })
        .collect()
}

/// A run that could not run: exit 2 and exactly one line on stderr, an error; its message.
fn refusal(run: &Run) -> String {
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "one line: {run:?}");
    let errors = logged(run, "ERROR");
    assert_eq!(errors.len(), 1, "{run:?}");
    assert_eq!(run.stdout, "", "{run:?}");
    errors[0].clone()
}

/// Files in the state directory, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The guerite binary with this test's environment, started by `sh` after `prelude` (a umask,
/// a ulimit) so that the setting applies to guerite alone.
fn through_sh(bed: &Bed, prelude: &str, args: &[&str]) -> Run {
    let direct = bed.guerite();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("{prelude}; exec \"$0\" \"$@\""))
        .arg(direct.get_program())
        .args(args);
    for (k, v) in direct.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    Run::from(cmd.output().expect("sh runs"))
}

/// The one state file moved aside in `dir`.
fn moved_aside(dir: &Path) -> PathBuf {
    let aside: Vec<String> = listing(dir)
        .into_iter()
        .filter(|n| n.starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    dir.join(&aside[0])
}

/// A fresh state, written by this run as a private regular file.
fn assert_fresh_state(bed: &Bed, run: &Run) {
    let state = bed.state_file();
    let meta = fs::symlink_metadata(&state).unwrap();
    assert!(meta.is_file(), "{run:?}");
    assert_eq!(meta.mode() & 0o7777, 0o600, "{run:?}");
    let fresh: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(fresh["version"], 1, "{run:?}");
    assert!(fresh["last_run"].is_string(), "{run:?}");
    assert_eq!(fresh["containers"], serde_json::json!({}), "{run:?}");
}

#[test]
fn a_link_at_the_lock_file_is_refused_and_its_target_untouched() {
    let bed = Bed::new();
    let dir = make_state_dir(&bed);
    let victim = Victim::new(&bed, "precious\n");
    let lock = dir.join("state.json.lock");
    symlink(&victim.path, &lock).unwrap();
    let run = bed.run(&["run"]);
    assert_eq!(
        refusal(&run),
        format!(
            "lock file {} is a symbolic link, which guerite does not follow; remove it",
            lock.display()
        )
    );
    victim.assert_untouched(&run);
    assert_eq!(listing(&dir), ["state.json.lock"], "nothing written");
    assert_eq!(fs::read_link(&lock).unwrap(), victim.path);
}

#[test]
fn a_link_at_the_state_file_is_moved_aside_never_followed() {
    let bed = Bed::new();
    let dir = make_state_dir(&bed);
    // A valid state: only the link makes it unusable.
    let victim = Victim::new(
        &bed,
        "{\"version\": 1, \"last_run\": \"2020-01-01T00:00:00Z\", \"containers\": {}}\n",
    );
    let state = bed.state_file();
    symlink(&victim.path, &state).unwrap();

    let dry = bed.run(&["run", "--dry-run"]);
    assert_eq!(dry.code, 0, "{dry:?}");
    let warned = logged(&dry, "WARN");
    assert_eq!(warned.len(), 1, "{dry:?}");
    let prefix = format!(
        "state file {} is a symbolic link, which guerite does not follow; a real run would move \
         it to {}.corrupt-",
        state.display(),
        state.display()
    );
    assert!(warned[0].starts_with(&prefix), "{dry:?}");
    assert_eq!(fs::read_link(&state).unwrap(), victim.path, "{dry:?}");

    let run = bed.run(&["run"]);
    assert_eq!(run.code, 0, "{run:?}");
    let aside = moved_aside(&dir);
    assert_eq!(
        logged(&run, "WARN"),
        [format!(
            "state file {} is a symbolic link, which guerite does not follow; moved it to {} \
             and starting from a fresh state",
            state.display(),
            aside.display()
        )]
    );
    assert_eq!(
        fs::read_link(&aside).unwrap(),
        victim.path,
        "the link itself was moved"
    );
    victim.assert_untouched(&run);
    assert_fresh_state(&bed, &run);
}

/// guerite used to write `state.json.tmp-<pid>` with a plain create, which follows a link:
/// whoever guessed the pid chose what root truncated.
#[test]
fn links_at_the_old_predictable_temporary_names_are_not_followed() {
    let bed = Bed::new();
    let dir = make_state_dir(&bed);
    let victim = Victim::new(&bed, "precious\n");
    let pid_max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The next pids, as near as can be told: those after a process started just now.
    let last = Command::new("true").spawn().unwrap();
    let base = last.id();
    let _ = { last }.wait();
    let planted: Vec<u32> = (1..=2000)
        .map(|i| {
            let pid = base + i;
            if pid >= pid_max {
                pid - pid_max + 300
            } else {
                pid
            }
        })
        .collect();
    for pid in &planted {
        symlink(&victim.path, dir.join(format!("state.json.tmp-{pid}"))).unwrap();
    }
    let child = bed
        .guerite()
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let run = Run::from(child.wait_with_output().unwrap());
    assert!(
        planted.contains(&pid),
        "the run's pid {pid} was not foreseen (planted {}..)",
        planted[0]
    );
    assert_eq!(run.code, 0, "{run:?}");
    victim.assert_untouched(&run);
    assert_fresh_state(&bed, &run);
    let mut expected: Vec<String> = planted
        .iter()
        .map(|p| format!("state.json.tmp-{p}"))
        .chain(["state.json".into(), "state.json.lock".into()])
        .collect();
    expected.sort();
    assert_eq!(
        listing(&dir),
        expected,
        "no temporary file left, no link replaced"
    );
    assert!(planted.iter().all(|p| {
        fs::read_link(dir.join(format!("state.json.tmp-{p}"))).unwrap() == victim.path
    }));
}

#[test]
fn files_are_private_whatever_the_umask() {
    let bed = Bed::new();
    let dir = state_dir(&bed);
    let run = through_sh(&bed, "umask 000", &["run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(listing(&dir), ["state.json", "state.json.lock"], "{run:?}");
    assert_eq!(mode(&dir), 0o700, "{run:?}");
    assert_eq!(mode(&bed.state_file()), 0o600, "{run:?}");
    assert_eq!(mode(&dir.join("state.json.lock")), 0o600, "{run:?}");

    // A lock file left wider (an older guerite, a hand-made one) is narrowed.
    fs::set_permissions(
        dir.join("state.json.lock"),
        fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let again = through_sh(&bed, "umask 000", &["run"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(mode(&dir.join("state.json.lock")), 0o600, "{again:?}");
    assert_eq!(mode(&bed.state_file()), 0o600, "{again:?}");
}

#[test]
fn a_state_directory_others_can_write_is_refused() {
    let bed = Bed::new();
    let dir = make_state_dir(&bed);
    let state = bed.state_file();
    fs::write(&state, "{\"version\": 1, \"containers\": {}}\n").unwrap();
    let before = fs::read_to_string(&state).unwrap();
    let cases = [
        (0o770, "writable by its group (mode 0770)"),
        (0o777, "writable by others (mode 0777)"),
        (0o1777, "writable by others (mode 1777)"),
        (0o703, "writable by others (mode 0703)"),
    ];
    for (bits, why) in cases {
        fs::set_permissions(&dir, fs::Permissions::from_mode(bits)).unwrap();
        // Dry runs and check refuse it too: what they would show could have been planted.
        for args in [&["run"][..], &["run", "--dry-run"], &["check"]] {
            let run = bed.run(args);
            assert_eq!(
                refusal(&run),
                format!(
                    "state directory {} is {why}; use a directory only this user can write, \
                     e.g. /var/lib/guerite",
                    dir.display()
                ),
                "{args:?}"
            );
        }
        assert_eq!(listing(&dir), ["state.json"], "no lock taken");
        assert_eq!(fs::read_to_string(&state).unwrap(), before);
    }

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        let run = bed.run(&["run"]);
        assert_eq!(
            refusal(&run),
            format!(
                "state directory {} is owned by uid 65534, neither this user (uid 0) nor root; \
                 use a directory only this user can write, e.g. /var/lib/guerite",
                dir.display()
            )
        );
        assert_eq!(listing(&dir), ["state.json"], "no lock taken");
    }
}

#[test]
fn an_oversized_state_file_is_moved_aside_unread() {
    let bed = Bed::new();
    let dir = make_state_dir(&bed);
    let state = bed.state_file();
    // Valid JSON padded to 17 MiB: the size alone decides.
    let mut big = b"{\"version\": 1, \"containers\": {}}".to_vec();
    big.resize(17 << 20, b' ');
    fs::write(&state, &big).unwrap();
    let run = bed.run(&["run"]);
    assert_eq!(run.code, 0, "{run:?}");
    let aside = moved_aside(&dir);
    assert_eq!(
        logged(&run, "WARN"),
        [format!(
            "state file {} is 17825792 bytes, over the 16 MiB cap; moved it to {} and starting \
             from a fresh state",
            state.display(),
            aside.display()
        )]
    );
    assert_eq!(fs::metadata(&aside).unwrap().len(), 17 << 20);
    assert_fresh_state(&bed, &run);

    // 100 MB costs no memory: the run fits in a 32 MiB data limit, which reading the file
    // whole would exceed.
    fs::remove_file(&aside).unwrap();
    let file = fs::File::create(&state).unwrap();
    file.set_len(100_000_000).unwrap();
    drop(file);
    let run = through_sh(&bed, "ulimit -d 32768", &["run"]);
    assert_eq!(run.code, 0, "{run:?}");
    let aside = moved_aside(&dir);
    assert_eq!(
        logged(&run, "WARN"),
        [format!(
            "state file {} is 100000000 bytes, over the 16 MiB cap; moved it to {} and starting \
             from a fresh state",
            state.display(),
            aside.display()
        )]
    );
    assert_fresh_state(&bed, &run);
}

#[test]
fn a_garbage_state_file_is_moved_aside_without_clobbering_an_earlier_one() {
    let bed = Bed::new();
    let dir = make_state_dir(&bed);
    let state = bed.state_file();
    // Not even UTF-8.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i * 7919 % 251) as u8 | 0x80)
        .collect();
    fs::write(&state, &garbage).unwrap();
    let run = bed.run(&["run"]);
    assert_eq!(run.code, 0, "{run:?}");
    let aside = moved_aside(&dir);
    assert_eq!(
        logged(&run, "WARN"),
        [format!(
            "state file {} did not parse; moved it to {} and starting from a fresh state",
            state.display(),
            aside.display()
        )]
    );
    assert_eq!(fs::read(&aside).unwrap(), garbage);
    assert_fresh_state(&bed, &run);

    // Files already have the names of this second and the next few: the next one moved
    // aside gets a name of its own.
    fs::write(&state, b"not json").unwrap();
    let now = chrono::Utc::now();
    let stamps: Vec<String> = (0..5)
        .map(|s| {
            (now + chrono::TimeDelta::seconds(s))
                .format("%Y%m%dT%H%M%SZ")
                .to_string()
        })
        .collect();
    let mut taken = Vec::new();
    for s in &stamps {
        let p = dir.join(format!("state.json.corrupt-{s}"));
        if !p.exists() {
            fs::write(&p, b"earlier").unwrap();
            taken.push(p);
        }
    }
    let run = bed.run(&["run"]);
    assert_eq!(run.code, 0, "{run:?}");
    for p in &taken {
        assert_eq!(fs::read(p).unwrap(), b"earlier", "{run:?}");
    }
    let warned = logged(&run, "WARN");
    assert_eq!(warned.len(), 1, "{run:?}");
    let to = warned[0]
        .strip_prefix(&format!(
            "state file {} did not parse; moved it to ",
            state.display()
        ))
        .and_then(|r| r.strip_suffix(" and starting from a fresh state"))
        .unwrap_or_else(|| panic!("{run:?}"));
    assert!(
        stamps
            .iter()
            .any(|s| Path::new(to) == dir.join(format!("state.json.corrupt-{s}-2"))),
        "{run:?}"
    );
    assert_eq!(fs::read(to).unwrap(), b"not json", "{run:?}");
    assert_eq!(fs::read(&aside).unwrap(), garbage);
}

#[test]
fn a_huge_stop_timeout_is_refused_or_clamped_never_a_panic() {
    let bed = Bed::new();
    let run = Run::from(
        bed.guerite()
            .arg("run")
            .env("GUERITE_STOP_TIMEOUT_SECONDS", "18446744073709551615")
            .output()
            .unwrap(),
    );
    assert_eq!(
        refusal(&run),
        "GUERITE_STOP_TIMEOUT_SECONDS=\"18446744073709551615\" is not valid: expected at most \
         31536000 seconds (365 days)"
    );
    assert!(!state_dir(&bed).exists(), "nothing written");

    // The engine takes any 64-bit stop timeout; the container still restarts promptly.
    let name = bed.container(
        "patient",
        &[("restart", "0 0 1 1 *")],
        &["--stop-timeout", "9223372036854775807"],
    );
    assert_eq!(
        bed.inspect(&name, "{{.Config.StopTimeout}}"),
        "9223372036854775807"
    );
    let before = bed.started_at(&name);
    let run = bed.run(&["run", "--force", "restart", "--only", &name]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_ne!(bed.started_at(&name), before, "{run:?}");
    assert_eq!(bed.inspect(&name, "{{.State.Running}}"), "true");
}

#[test]
fn a_value_that_is_not_utf8_is_named() {
    use std::os::unix::ffi::OsStrExt;
    let bed = Bed::new();
    let bad = std::ffi::OsStr::from_bytes(b"Europe/Par\xefs");
    let by_var = Run::from(
        bed.guerite()
            .arg("run")
            .env("GUERITE_TZ", bad)
            .output()
            .unwrap(),
    );
    assert_eq!(
        refusal(&by_var),
        "GUERITE_TZ=\"Europe/Par\\xEFs\" is not valid: expected UTF-8 text"
    );
    let by_flag = Run::from(
        bed.guerite()
            .args(["run", "--dry-run", "--only"])
            .arg(std::ffi::OsStr::from_bytes(b"w\xffb"))
            .output()
            .unwrap(),
    );
    assert_eq!(
        refusal(&by_flag),
        "GUERITE_ONLY=\"w\\xFFb\" is not valid: expected UTF-8 text"
    );
    assert!(!state_dir(&bed).exists(), "nothing written");
}

#[test]
fn a_10000_character_value_is_not_echoed_whole() {
    let bed = Bed::new();
    let long = "x".repeat(10_000);
    let shown = format!("\"{}\"…", "x".repeat(64));
    let cases = [
        (
            "GUERITE_TZ",
            format!(
                "GUERITE_TZ={shown} is not valid: expected an IANA time zone such as UTC or Europe/Paris"
            ),
        ),
        (
            "GUERITE_SETTLE_SECONDS",
            format!(
                "GUERITE_SETTLE_SECONDS={shown} is not valid: expected a whole number of seconds \
                 from 0 to 31536000"
            ),
        ),
        (
            "GUERITE_STATE_FILE",
            format!(
                "GUERITE_STATE_FILE={shown} is not valid: expected a path of at most 4095 bytes"
            ),
        ),
        (
            "GUERITE_ONLY",
            format!(
                "GUERITE_ONLY={shown} is not valid: expected a container name: a letter or digit, \
                 then letters, digits, '_', '.' or '-', at most 255 characters"
            ),
        ),
    ];
    for (var, want) in cases {
        let run = Run::from(
            bed.guerite()
                .args(["run", "--dry-run"])
                .env(var, &long)
                .output()
                .unwrap(),
        );
        assert_eq!(refusal(&run), want, "{var}");
    }
}

#[test]
fn control_characters_in_only_never_reach_the_terminal() {
    let bed = Bed::new();
    let name = "web\x1b]0;owned\x07\x1b[2J";
    let run = bed.run(&["run", "--only", name]);
    assert_eq!(
        refusal(&run),
        "GUERITE_ONLY=\"web\\u{1b}]0;owned\\u{7}\\u{1b}[2J\" is not valid: expected a container \
         name: a letter or digit, then letters, digits, '_', '.' or '-', at most 255 characters"
    );
    assert!(
        !run.stderr.contains(|c: char| c.is_control() && c != '\n'),
        "{run:?}"
    );
    let check = bed.run(&["check", name]);
    assert_eq!(
        refusal(&check),
        "NAME=\"web\\u{1b}]0;owned\\u{7}\\u{1b}[2J\" is not valid: expected a container name: a \
         letter or digit, then letters, digits, '_', '.' or '-', at most 255 characters"
    );
    assert!(!state_dir(&bed).exists(), "nothing written");
}
