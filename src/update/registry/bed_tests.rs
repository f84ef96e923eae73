//! The check against the test bed's real registries (`contrib/testbed.sh`: distribution v2, one
//! open, one behind htpasswd basic auth), with what each registry was asked counted in its
//! access log. They sit inside the binary because `tests/` cannot reach a binary crate's
//! private API. Without the bed they fail, saying how to make it.
//!
//! Each test pushes its own image under its own repository prefix and counts only the log lines
//! under that prefix, so the tests run in parallel with each other and with anything else.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU32;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::*;
use crate::update::reference::matches_local;

mod bearer;

fn bed() -> &'static HashMap<String, String> {
    static ENV: OnceLock<HashMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/testbed/env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; the registry tests need the test bed: run contrib/testbed.sh \
                 (contrib/test.sh does), or link target/testbed to a checkout that has one",
                path.display()
            )
        });
        // As tests/common: a variable already set wins, e.g. DOCKER_HOST for another engine.
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| {
                let v = std::env::var(k).unwrap_or_else(|_| v.trim_matches(['"', '\'']).into());
                (k.to_string(), v)
            })
            .collect()
    })
}

fn var(name: &str) -> String {
    bed()
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} is not in target/testbed/env"))
}

/// One test's corner: a unique repository prefix, a scratch directory (Docker configs), and
/// the image it built, removed with all its tags when dropped.
struct Scratch {
    prefix: String,
    dir: PathBuf,
    image: Option<String>,
}

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let prefix = format!(
            "regtest-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            nanos % 100_000
        );
        let dir = std::env::temp_dir().join(format!("guerite-{prefix}"));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch {
            prefix,
            dir,
            image: None,
        }
    }

    /// An empty Docker config directory: no credentials at all.
    fn config(&self, name: &str, json: Option<&str>) -> PathBuf {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(json) = json {
            std::fs::write(dir.join("config.json"), json).unwrap();
        }
        dir
    }

    /// An image of this test only (the bed's base plus a label), so that its digest is new.
    fn build(&mut self, version: &str) -> String {
        let tag = format!("{}-img:{version}", self.prefix);
        let dockerfile = format!(
            "FROM {}\nLABEL guerite.regtest={} guerite.version={version}\n",
            var("GUERITE_TEST_BASE_IMAGE"),
            self.prefix
        );
        docker(None, &["build", "-q", "-t", &tag, "-"], Some(&dockerfile));
        let id = docker(None, &["inspect", "-f", "{{.Id}}", &tag], None);
        if version == "1" {
            self.image = Some(id);
        }
        tag
    }

    /// Pushes `image` as `<registry>/<prefix>/<path>` and returns the digest push printed.
    fn push(&self, config: Option<&Path>, image: &str, registry: &str, path: &str) -> String {
        let name = format!("{registry}/{}/{path}", self.prefix);
        docker(None, &["tag", image, &name], None);
        let out = docker(config, &["push", &name], None);
        let digest = out
            .split_whitespace()
            .skip_while(|w| *w != "digest:")
            .nth(1)
            .unwrap_or_else(|| panic!("no digest in the output of docker push {name}:\n{out}"));
        digest.to_string()
    }

    fn reference(&self, registry: &str, path: &str) -> ImageRef {
        ImageRef::parse(&format!("{registry}/{}/{path}", self.prefix)).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Only images this test built; `-f` takes their registry tags along.
        let _ = Command::new("docker")
            .env("DOCKER_HOST", var("DOCKER_HOST"))
            .args(["image", "ls", "-q", "--filter"])
            .arg(format!("label=guerite.regtest={}", self.prefix))
            .output()
            .map(|out| {
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(String::from)
                    .collect();
                if !ids.is_empty() {
                    let _ = Command::new("docker")
                        .env("DOCKER_HOST", var("DOCKER_HOST"))
                        .args(["rmi", "-f"])
                        .args(&ids)
                        .output();
                }
            });
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn docker(config: Option<&Path>, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_HOST", var("DOCKER_HOST"));
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("docker runs");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A registry's access log from a byte offset on.
struct Log {
    path: PathBuf,
    from: u64,
}

impl Log {
    fn mark(var_name: &str) -> Log {
        let path = PathBuf::from(var(var_name));
        let from = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .len();
        Log { path, from }
    }

    /// `(method, path, status)` of the access-log lines under `/v2/<prefix>/` since the mark.
    /// The registry writes a line once the response has gone out, so the test waits for at
    /// least `expect` of them, then a little longer for any it did not expect.
    fn requests(&self, prefix: &str, expect: usize) -> Vec<(String, String, u16)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = self.read(prefix);
            if seen.len() >= expect || Instant::now() > deadline {
                std::thread::sleep(Duration::from_millis(300));
                return self.read(prefix);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn read(&self, prefix: &str) -> Vec<(String, String, u16)> {
        let mut file = std::fs::File::open(&self.path).unwrap();
        file.seek(SeekFrom::Start(self.from)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        let wanted = format!("/v2/{prefix}/");
        text.lines()
            .filter_map(|line| {
                // `… "HEAD /v2/x/manifests/1 HTTP/1.1" 200 …`; the structured "response
                // completed" lines have no quoted request line and are skipped.
                let (_, rest) = line.split_once('"')?;
                let (request, rest) = rest.split_once('"')?;
                let mut words = request.split_whitespace();
                let (method, path) = (words.next()?, words.next()?);
                let status = rest.split_whitespace().next()?.parse().ok()?;
                path.starts_with(&wanted)
                    .then(|| (method.to_string(), path.to_string(), status))
            })
            .collect()
    }
}

fn count(requests: &[(String, String, u16)], method: &str, status: Option<u16>) -> usize {
    requests
        .iter()
        .filter(|(m, p, s)| {
            m == method && p.contains("/manifests/") && status.is_none_or(|want| *s == want)
        })
        .count()
}

fn options(config: PathBuf) -> CheckOptions {
    CheckOptions {
        insecure: vec!["127.0.0.0/8".into()],
        timeout: Duration::from_secs(10),
        per_registry: 4,
        docker_config: Some(config),
    }
}

fn digest_of(answers: &BTreeMap<String, Answer>, r: &ImageRef) -> String {
    match answers.get(&r.canonical()) {
        Some(Answer::Digest(d)) => d.clone(),
        other => panic!("{r}: {other:?}"),
    }
}

fn repo_digests(image: &str) -> Vec<String> {
    serde_json::from_str(&docker(
        None,
        &["inspect", "-f", "{{json .RepoDigests}}", image],
        None,
    ))
    .unwrap()
}

#[test]
fn one_head_per_distinct_reference_and_no_manifest_get() {
    let registry = var("GUERITE_TEST_REGISTRY");
    let mut s = Scratch::new();
    let v1 = s.build("1");
    let v2 = s.build("2");
    let pushed_app1 = s.push(None, &v1, &registry, "app:1");
    let pushed_other = s.push(None, &v1, &registry, "other:1");
    // "A new version": another image under a tag the local image no longer matches.
    let pushed_app2 = s.push(None, &v2, &registry, "app:2");
    let app1 = s.reference(&registry, "app:1");
    let app2 = s.reference(&registry, "app:2");
    let other = s.reference(&registry, "other:1");
    let missing = s.reference(&registry, "app:missing");
    let refs = vec![
        app1.clone(),
        app2.clone(),
        app1.clone(),
        other.clone(),
        missing.clone(),
        other.clone(),
        app1.clone(),
    ];
    let config = s.config("none", None);

    let log = Log::mark("GUERITE_TEST_REGISTRY_LOG");
    let answers = check(&refs, &options(config));
    let requests = log.requests(&s.prefix, 4);

    assert_eq!(answers.len(), 4, "{answers:?}");
    assert_eq!(digest_of(&answers, &app1), pushed_app1);
    assert_eq!(digest_of(&answers, &other), pushed_other);
    assert_eq!(digest_of(&answers, &app2), pushed_app2);
    assert_ne!(pushed_app1, pushed_app2);
    match &answers[&missing.canonical()] {
        Answer::Failed(says) => assert!(says.contains("not found"), "{says}"),
        a => panic!("{missing}: {a:?}"),
    }
    // The comparison the update step makes, against what the engine recorded for v1.
    let local = repo_digests(&v1);
    assert!(
        matches_local(&digest_of(&answers, &app1), &local, &app1),
        "{local:?}"
    );
    assert!(
        !matches_local(&digest_of(&answers, &app2), &local, &app2),
        "{local:?}"
    );

    assert_eq!(count(&requests, "HEAD", None), 4, "{requests:#?}");
    assert_eq!(count(&requests, "GET", None), 0, "{requests:#?}");
    assert_eq!(
        requests.len(),
        4,
        "nothing but manifest HEADs: {requests:#?}"
    );
}

#[test]
fn basic_auth_with_the_config_docker_login_wrote() {
    let registry = var("GUERITE_TEST_AUTH_REGISTRY");
    let mut s = Scratch::new();
    let v1 = s.build("1");
    let login = s.config("login", None);
    docker(
        Some(&login),
        &[
            "login",
            "-u",
            &var("GUERITE_TEST_AUTH_USER"),
            "--password-stdin",
            &registry,
        ],
        Some(&var("GUERITE_TEST_AUTH_PASSWORD")),
    );
    let pushed_app = s.push(Some(&login), &v1, &registry, "app:1");
    let pushed_other = s.push(Some(&login), &v1, &registry, "other:1");
    let app = s.reference(&registry, "app:1");
    let other = s.reference(&registry, "other:1");
    let refs = [app.clone(), other.clone(), app.clone()];

    // What `docker login` wrote: `auths.<registry>.auth`, base64 of user:password.
    let log = Log::mark("GUERITE_TEST_AUTH_REGISTRY_LOG");
    let answers = check(&refs, &options(login));
    let requests = log.requests(&s.prefix, 3);
    assert_eq!(digest_of(&answers, &app), pushed_app);
    assert_eq!(digest_of(&answers, &other), pushed_other);
    // The challenge is met once; after it, every request carries the password.
    assert_eq!(count(&requests, "HEAD", Some(401)), 1, "{requests:#?}");
    assert_eq!(count(&requests, "HEAD", Some(200)), 2, "{requests:#?}");
    assert_eq!(requests.len(), 3, "{requests:#?}");

    // The other spelling of an `auths` entry.
    let plain = s.config(
        "plain",
        Some(&format!(
            r#"{{"auths": {{"http://{registry}": {{"username": "{}", "password": "{}"}}}}}}"#,
            var("GUERITE_TEST_AUTH_USER"),
            var("GUERITE_TEST_AUTH_PASSWORD")
        )),
    );
    let answers = check(&refs, &options(plain));
    assert_eq!(digest_of(&answers, &app), pushed_app);
    assert_eq!(digest_of(&answers, &other), pushed_other);
}

#[test]
fn a_wrong_password_is_rejected_in_one_line_and_tried_once() {
    let registry = var("GUERITE_TEST_AUTH_REGISTRY");
    let s = Scratch::new();
    let wrong = s.config(
        "wrong",
        // guerite:not-the-password
        Some(&format!(
            r#"{{"auths": {{"{registry}": {{"auth": "Z3Vlcml0ZTpub3QtdGhlLXBhc3N3b3Jk"}}}}}}"#
        )),
    );
    let refs: Vec<ImageRef> = ["app:1", "app:2", "other:1", "more:1", "yet:1", "last:1"]
        .iter()
        .map(|p| s.reference(&registry, p))
        .collect();
    let log = Log::mark("GUERITE_TEST_AUTH_REGISTRY_LOG");
    let answers = check(&refs, &options(wrong));
    let requests = log.requests(&s.prefix, 2);
    assert_eq!(answers.len(), refs.len());
    for (key, answer) in &answers {
        assert_eq!(
            answer,
            &Answer::AuthRequired(format!("credentials for {registry} rejected")),
            "{key}"
        );
    }
    // One anonymous HEAD to learn the challenge, one with the password; then no more, so that
    // a wrong password cannot lock the account.
    assert_eq!(count(&requests, "HEAD", Some(401)), 2, "{requests:#?}");
    assert_eq!(requests.len(), 2, "{requests:#?}");
}

#[test]
fn no_credentials_means_authentication_required() {
    let registry = var("GUERITE_TEST_AUTH_REGISTRY");
    let s = Scratch::new();
    let none = s.config("none", None);
    let refs: Vec<ImageRef> = ["app:1", "other:1", "third:1"]
        .iter()
        .map(|p| s.reference(&registry, p))
        .collect();
    let log = Log::mark("GUERITE_TEST_AUTH_REGISTRY_LOG");
    let answers = check(&refs, &options(none.clone()));
    let requests = log.requests(&s.prefix, 1);
    let want = format!(
        "authentication required by {registry}; {} has no credentials for it",
        none.join("config.json").display()
    );
    for (key, answer) in &answers {
        assert_eq!(answer, &Answer::AuthRequired(want.clone()), "{key}");
    }
    assert_eq!(count(&requests, "HEAD", Some(401)), 1, "{requests:#?}");
    assert_eq!(requests.len(), 1, "{requests:#?}");
}

#[test]
fn a_registry_not_listed_insecure_is_asked_over_https() {
    let registry = var("GUERITE_TEST_REGISTRY");
    let s = Scratch::new();
    let r = s.reference(&registry, "app:1");
    let mut opts = options(s.config("none", None));
    opts.insecure = vec!["10.0.0.0/8".into()];
    let answers = check(std::slice::from_ref(&r), &opts);
    match &answers[&r.canonical()] {
        Answer::Failed(says) => {
            assert!(
                says.starts_with(&format!("{registry} cannot be reached")),
                "{says}"
            )
        }
        a => panic!("{a:?}"),
    }
}
