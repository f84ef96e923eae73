//! The test bed as the integration tests see it: the real engine and registries that
//! `contrib/testbed.sh` made, a per-test label namespace and state directory, and the built
//! binary. Every container a test creates carries `guerite-test=<id>` and is removed when the
//! test's `Bed` is dropped; nothing else is ever touched.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `target/testbed/env`, written by contrib/testbed.sh; variables already set win.
fn testbed_env() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/testbed/env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run contrib/testbed.sh first (contrib/test.sh does)",
                path.display()
            )
        });
        let mut vars: HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches(['"', '\'']).to_string()))
            .collect();
        for (k, v) in vars.iter_mut() {
            if let Ok(set) = std::env::var(k) {
                *v = set;
            }
        }
        vars
    })
}

pub fn bed_var(name: &str) -> String {
    testbed_env()
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} is not in target/testbed/env"))
}

pub fn base_image() -> String {
    bed_var("GUERITE_TEST_BASE_IMAGE")
}

pub struct Bed {
    pub id: String,
    pub docker_host: String,
    pub dir: PathBuf,
}

impl Bed {
    pub fn new() -> Bed {
        Bed::on(bed_var("DOCKER_HOST"))
    }

    pub fn on(docker_host: String) -> Bed {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let id = format!(
            "t{}x{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            nanos % 10000
        );
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/it")
            .join(&id);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Bed {
            id,
            docker_host,
            dir,
        }
    }

    /// This test's label key for an action, e.g. `t123x0x42.restart`.
    pub fn label(&self, action: &str) -> String {
        format!("{}.{action}", self.id)
    }

    pub fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.id)
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state/state.json")
    }

    /// The guerite binary with this test's labels, state and engine, and nothing inherited
    /// from the developer's environment.
    pub fn guerite(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_guerite"));
        for (k, _) in std::env::vars() {
            if k.starts_with("GUERITE_") || k.starts_with("DOCKER_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("DOCKER_HOST", &self.docker_host)
            .env("GUERITE_STATE_FILE", self.state_file())
            .env("GUERITE_UPDATE_LABEL", self.label("update"))
            .env("GUERITE_RESTART_LABEL", self.label("restart"))
            .env("GUERITE_RECREATE_LABEL", self.label("recreate"))
            .env("GUERITE_HEALTH_CHECK_LABEL", self.label("health"))
            .env("GUERITE_LOG_LEVEL", "info");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.guerite().args(args).output().expect("guerite runs"))
    }

    pub fn docker(&self, args: &[&str]) -> String {
        let out = Command::new("docker")
            .env("DOCKER_HOST", &self.docker_host)
            .args(args)
            .output()
            .expect("docker runs");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Starts a container of this test: `labels` are (action, cron) pairs under this test's
    /// keys, or full `key=value` strings. It stops promptly on SIGTERM.
    pub fn container(&self, short: &str, labels: &[(&str, &str)], extra: &[&str]) -> String {
        let cmd = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"];
        self.container_of(short, &base_image(), labels, extra, &cmd)
    }

    /// Like `container`, from `image`, with `cmd` (empty: the image's own).
    pub fn container_of(
        &self,
        short: &str,
        image: &str,
        labels: &[(&str, &str)],
        extra: &[&str],
        cmd: &[&str],
    ) -> String {
        let name = self.name(short);
        let test_label = format!("guerite-test={}", self.id);
        let mut args: Vec<String> = ["run", "-d", "--name", &name, "--label", &test_label]
            .map(String::from)
            .to_vec();
        if !extra.contains(&"--network") {
            args.extend(["--network", "none"].map(String::from));
        }
        for (k, v) in labels {
            let key = if k.contains('.') {
                k.to_string()
            } else {
                self.label(k)
            };
            args.push("--label".into());
            args.push(format!("{key}={v}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(image.to_string());
        args.extend(cmd.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.docker(&refs);
        name
    }

    /// The newer engine of the matrix (Docker 26.1, API 1.45), beside the machine's own.
    pub fn newer_engine() -> Bed {
        Bed::on(bed_var("GUERITE_TEST_DOCKER_HOST_NEW"))
    }

    /// `<registry>/<test id>/<repo>:<tag>` in the plain loopback registry.
    pub fn reference(&self, repo: &str, tag: &str) -> String {
        format!(
            "{}/{}/{repo}:{tag}",
            bed_var("GUERITE_TEST_REGISTRY"),
            self.id
        )
    }

    /// Builds `FROM <base image>` plus `lines` as `reference` on this test's engine, labelled
    /// for cleanup, and pushes it (to the registry the reference names, logged in with
    /// `config` when given). Returns the reference.
    pub fn build_push(&self, reference: &str, lines: &str, config: Option<&Path>) -> String {
        let dir = self
            .dir
            .join(format!("build-{}", reference.replace(['/', ':'], "_")));
        std::fs::create_dir_all(&dir).unwrap();
        let dockerfile = format!(
            "FROM {}\nLABEL guerite-test={}\n{lines}\n",
            base_image(),
            self.id
        );
        std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
        self.docker(&["build", "-q", "-t", reference, dir.to_str().unwrap()]);
        let mut push = Command::new("docker");
        push.env("DOCKER_HOST", &self.docker_host);
        if let Some(c) = config {
            push.arg("--config").arg(c);
        }
        let out = push.args(["push", reference]).output().unwrap();
        assert!(
            out.status.success(),
            "push {reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        reference.to_string()
    }

    /// A container with a named volume holding a proof file, that stops promptly.
    pub fn with_data(&self, short: &str, labels: &[(&str, &str)], extra: &[&str]) -> String {
        let volume = self.volume(&format!("{short}-data"));
        let mount = format!("{volume}:/data");
        let mut args = vec!["-v", mount.as_str()];
        args.extend_from_slice(extra);
        let name = self.container(short, labels, &args);
        self.docker(&["exec", &name, "sh", "-c", "echo kept > /data/proof"]);
        name
    }

    /// The rule after any swap, crash or rollback: exactly one container of this test (no
    /// leftover, no claim), under the name, running, with its data.
    pub fn assert_intact(&self, name: &str, why: &str) {
        assert_eq!(
            self.names(),
            vec![name.to_string()],
            "{why}: exactly one container, no leftovers"
        );
        assert_eq!(
            self.inspect(name, "{{.State.Running}}"),
            "true",
            "{why}: running"
        );
        assert_eq!(
            self.docker(&["exec", name, "cat", "/data/proof"]),
            "kept",
            "{why}: data kept"
        );
    }

    /// A named volume of this test, removed with the bed.
    pub fn volume(&self, short: &str) -> String {
        let name = self.name(short);
        self.docker(&[
            "volume",
            "create",
            "--label",
            &format!("guerite-test={}", self.id),
            &name,
        ]);
        name
    }

    /// Names of this test's containers, sorted: those with its label, and any other whose
    /// name starts with its id (a claim guerite left behind, for one).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = [
            format!("label=guerite-test={}", self.id),
            format!("name=^/{}-", self.id),
        ]
        .iter()
        .flat_map(|filter| {
            self.docker(&["ps", "-a", "--filter", filter, "--format", "{{.Names}}"])
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
        names.sort();
        names.dedup();
        names
    }

    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.docker(&["inspect", "-f", format, name])
    }

    pub fn started_at(&self, name: &str) -> String {
        self.inspect(name, "{{.State.StartedAt}}")
    }

    /// Waits until a whole minute boundary has passed since every container of this test was
    /// created, so that `* * * * *` has fired after their creation.
    pub fn wait_for_minute_boundary(&self) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let into_minute = now.as_secs() % 60;
        std::thread::sleep(Duration::from_secs(61 - into_minute));
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        // This test's containers carry its label; the claims guerite makes for them carry
        // their names (which all start with the test's id) but not always the label.
        let ids: Vec<std::io::Result<Output>> = [
            format!("label=guerite-test={}", self.id),
            format!("name=^/{}-", self.id),
        ]
        .iter()
        .map(|filter| {
            Command::new("docker")
                .env("DOCKER_HOST", &self.docker_host)
                .args(["ps", "-aq", "--filter", filter])
                .output()
        })
        .collect();
        {
            let mut ids: Vec<String> = ids
                .iter()
                .flatten()
                .flat_map(|out| {
                    String::from_utf8_lossy(&out.stdout)
                        .into_owned()
                        .split_whitespace()
                        .map(String::from)
                        .collect::<Vec<_>>()
                })
                .collect();
            ids.sort();
            ids.dedup();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .env("DOCKER_HOST", &self.docker_host)
                    .args(["rm", "-f", "-v"])
                    .args(&ids)
                    .output();
            }
        }
        // Images this test built, pulled or left dangling: they all carry its label.
        if let Ok(out) = Command::new("docker")
            .env("DOCKER_HOST", &self.docker_host)
            .args([
                "images",
                "-aq",
                "--filter",
                &format!("label=guerite-test={}", self.id),
            ])
            .output()
        {
            let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(String::from)
                .collect();
            ids.sort();
            ids.dedup();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .env("DOCKER_HOST", &self.docker_host)
                    .args(["rmi", "-f"])
                    .args(&ids)
                    .output();
            }
        }
        if let Ok(out) = Command::new("docker")
            .env("DOCKER_HOST", &self.docker_host)
            .args([
                "volume",
                "ls",
                "-q",
                "--filter",
                &format!("label=guerite-test={}", self.id),
            ])
            .output()
        {
            for v in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker")
                    .env("DOCKER_HOST", &self.docker_host)
                    .args(["volume", "rm", v])
                    .output();
            }
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A guerite run stopped at a crash point (the `test-hooks` feature), with its stderr.
pub struct Frozen {
    pub child: std::process::Child,
    lines: std::thread::JoinHandle<Vec<String>>,
}

impl Frozen {
    /// Starts `cmd` with `GUERITE_TEST_CRASH_AT=point` and returns once it is there. Its stderr
    /// keeps being read, so that a run that goes on never blocks on a full pipe.
    pub fn at(mut cmd: Command, point: &str) -> Frozen {
        use std::io::{BufRead, BufReader};
        let mut child = cmd
            .env("GUERITE_TEST_CRASH_AT", point)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("guerite starts");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let marker = format!("guerite-crash-point {point}");
        let lines = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for line in stderr.lines().map_while(Result::ok) {
                if line.contains(&marker) {
                    let _ = tx.send(());
                }
                seen.push(line);
            }
            seen
        });
        if rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{point}: never reached: {:?}", lines.join().unwrap());
        }
        Frozen { child, lines }
    }

    /// SIGKILL: no destructor, no cleanup, like a power cut for the process.
    pub fn kill(mut self) -> Vec<String> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.lines.join().unwrap()
    }

    /// Lets a run frozen with `GUERITE_TEST_RESUME_FILE=file` go on, and waits for its end.
    pub fn resume(mut self, file: &Path) -> Run {
        std::fs::write(file, b"go").unwrap();
        let status = self.child.wait().unwrap();
        let mut stdout = String::new();
        use std::io::Read;
        if let Some(mut out) = self.child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        Run {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr: self.lines.join().unwrap().join("\n"),
        }
    }
}
