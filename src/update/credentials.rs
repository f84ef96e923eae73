//! Registry credentials, found where the Docker client keeps them: `config.json` in the Docker
//! config directory (`auths`, `credHelpers`, `credsStore`), and credential helpers run as
//! `docker-credential-<name> get`. The same credentials serve the registry check and the engine's
//! pull. Secrets never reach a log line or an error message.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::update::reference::{DOCKER_HUB, DOCKER_HUB_CREDENTIAL_KEY};

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// An OAuth refresh token (`docker login` through a browser); exchanged for access tokens.
    pub identity_token: Option<String>,
    server_address: String,
}

impl Credentials {
    fn new(
        registry: &str,
        username: String,
        password: String,
        identity_token: Option<String>,
    ) -> Self {
        Credentials {
            username,
            password,
            identity_token: identity_token.filter(|t| !t.is_empty()),
            server_address: server_address(registry),
        }
    }

    /// What the engine expects as `serveraddress` in `X-Registry-Auth`: Hub's historical
    /// `https://index.docker.io/v1/`, otherwise the registry's `host[:port]`.
    pub fn server_address(&self) -> &str {
        &self.server_address
    }

    /// `Authorization` value for a registry that asks for basic auth; `None` when there is only
    /// an identity token, which registries accept at their token endpoint alone.
    pub fn basic_authorization(&self) -> Option<String> {
        if self.username.is_empty() && self.password.is_empty() {
            return None;
        }
        Some(format!(
            "Basic {}",
            base64_encode(format!("{}:{}", self.username, self.password).as_bytes())
        ))
    }
}

// Written by hand so that `{:?}` in a log line can never print a secret.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field(
                "identity_token",
                &self.identity_token.as_ref().map(|_| "<redacted>"),
            )
            .field("server_address", &self.server_address)
            .finish()
    }
}

fn server_address(registry: &str) -> String {
    if registry == DOCKER_HUB {
        DOCKER_HUB_CREDENTIAL_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// `$DOCKER_CONFIG`, else `~/.docker`, as the Docker client decides.
pub fn default_dir() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")),
    }
}

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// A loaded Docker config; helpers are only run when a registry's credentials are looked up.
#[derive(Debug)]
pub struct DockerConfig {
    path: PathBuf,
    file: ConfigFile,
}

impl DockerConfig {
    /// Reads `<dir>/config.json`. A missing file means no credentials, as for the Docker client;
    /// one that does not parse is an error, because guessing would pull anonymously.
    pub fn load(dir: &Path) -> Result<DockerConfig> {
        let path = dir.join("config.json");
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => parse_config(&text)
                .with_context(|| format!("{} is not a valid Docker config", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigFile::default(),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        Ok(DockerConfig { path, file })
    }

    /// The credentials for a registry (`docker.io`, `ghcr.io`, `127.0.0.1:5000`): its credential
    /// helper, else the default store, else its `auths` entry. A helper that knows nothing of
    /// the registry falls through to `auths`; a helper that fails is an error.
    pub fn lookup(&self, registry: &str, timeout: Duration) -> Result<Option<Credentials>> {
        self.lookup_with(registry, timeout, &|name| PathBuf::from(name))
    }

    /// `lookup`, with helpers found by `program` (the `PATH` search, in production).
    fn lookup_with(
        &self,
        registry: &str,
        timeout: Duration,
        program: &dyn Fn(&str) -> PathBuf,
    ) -> Result<Option<Credentials>> {
        if let Some(helper) = self.file.helper_for(registry) {
            let program = program(&format!("docker-credential-{helper}"));
            let found = run_helper(&program, registry, timeout).with_context(|| {
                format!(
                    "credential helper docker-credential-{helper} (from {})",
                    self.path.display()
                )
            })?;
            if found.is_some() {
                return Ok(found);
            }
        }
        self.file
            .in_auths(registry)
            .with_context(|| format!("{}", self.path.display()))
    }
}

fn parse_config(text: &str) -> Result<ConfigFile> {
    Ok(serde_json::from_str(text)?)
}

impl ConfigFile {
    fn helper_for(&self, registry: &str) -> Option<&str> {
        self.cred_helpers
            .iter()
            .find(|(key, _)| key_registry(key) == registry)
            .map(|(_, helper)| helper.as_str())
            .or(self.creds_store.as_deref())
            .filter(|h| !h.is_empty())
    }

    fn in_auths(&self, registry: &str) -> Result<Option<Credentials>> {
        // Hub's historical key first, then any other spelling of the same registry.
        let mut candidates: Vec<(&String, &AuthEntry)> = self
            .auths
            .iter()
            .filter(|(key, _)| key_registry(key) == registry)
            .collect();
        candidates.sort_by_key(|(key, _)| key.as_str() != DOCKER_HUB_CREDENTIAL_KEY);
        for (key, entry) in candidates {
            let (username, password) = match entry.auth.as_deref().filter(|a| !a.is_empty()) {
                Some(auth) => base64_decode(auth)
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| {
                        s.split_once(':')
                            .map(|(u, p)| (u.to_string(), p.to_string()))
                    })
                    .with_context(|| {
                        format!("auths[{key:?}].auth is not the base64 of user:password")
                    })?,
                None => (
                    entry.username.clone().unwrap_or_default(),
                    entry.password.clone().unwrap_or_default(),
                ),
            };
            let token = entry.identitytoken.clone().filter(|t| !t.is_empty());
            // `{}` entries are what `docker login` leaves beside a credential store.
            if username.is_empty() && password.is_empty() && token.is_none() {
                continue;
            }
            return Ok(Some(Credentials::new(registry, username, password, token)));
        }
        Ok(None)
    }
}

/// The registry a config key stands for: keys are written as `https://host/v1/`, `host`,
/// `http://host:port`; every name of Docker Hub is `docker.io`.
fn key_registry(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB,
        h => h,
    }
}

/// Runs `<program> get` with the server address on stdin, as the Docker client does, killing
/// it if it has not answered in `timeout` (a helper waiting for a keyring prompt would hang the
/// run forever).
fn run_helper(program: &Path, registry: &str, timeout: Duration) -> Result<Option<Credentials>> {
    let server = server_address(registry);
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {}", program.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is judged by its exit status, not by this write.
        let _ = stdin.write_all(server.as_bytes());
    }
    let reader = child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        })
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().context("cannot wait for the helper")? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not answer within {} s", timeout.as_secs_f32());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    parse_helper_answer(status.success(), &stdout, registry)
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Helpers print `{"ServerURL","Username","Secret"}`; the user `<token>` marks an identity
/// token. On failure they print a message, never the secret, so it can be quoted.
fn parse_helper_answer(success: bool, stdout: &str, registry: &str) -> Result<Option<Credentials>> {
    if !success {
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        let first = stdout.lines().next().unwrap_or("").trim();
        let first: String = first.chars().take(200).collect();
        if first.is_empty() {
            bail!("failed without a message");
        }
        bail!("failed: {first}");
    }
    let answer: HelperAnswer =
        serde_json::from_str(stdout).context("answered something other than the helper JSON")?;
    Ok(match (answer.username.as_str(), answer.secret) {
        (_, s) if s.is_empty() => None,
        ("<token>", token) => Some(Credentials::new(
            registry,
            String::new(),
            String::new(),
            Some(token),
        )),
        (user, password) => Some(Credentials::new(registry, user.to_string(), password, None)),
    })
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard alphabet; padding optional, since some tools write config entries without it.
pub(crate) fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = BASE64.iter().position(|&b| b == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A lone trailing character carries fewer than 8 bits: not something an encoder writes.
    (bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_known_values() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("guerite:s3cret", "Z3Vlcml0ZTpzM2NyZXQ="),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(base64_decode("Zm8").as_deref(), Some(&b"fo"[..]));
        assert_eq!(base64_decode("Zm9v!"), None);
        assert_eq!(base64_decode("Z"), None);
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)), Some(all));
    }

    #[test]
    fn config_keys_name_registries() {
        for (key, registry) in [
            ("https://index.docker.io/v1/", "docker.io"),
            ("index.docker.io", "docker.io"),
            ("docker.io", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("ghcr.io", "ghcr.io"),
            ("https://ghcr.io", "ghcr.io"),
            ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
        ] {
            assert_eq!(key_registry(key), registry, "{key}");
        }
    }

    fn creds(registry: &str, user: &str, password: &str, token: Option<&str>) -> Credentials {
        Credentials::new(
            registry,
            user.into(),
            password.into(),
            token.map(String::from),
        )
    }

    #[test]
    fn auths_entries_in_every_spelling() {
        let config = parse_config(
            r#"{
              "auths": {
                "https://index.docker.io/v1/": {"auth": "aHViOmh1YnBhc3M="},
                "docker.io": {"auth": "b3RoZXI6b3RoZXI="},
                "127.0.0.1:5000": {"username": "u", "password": "p:with:colons"},
                "https://ghcr.io": {"auth": "Z3Vlcml0ZTpzM2NyZXQ="},
                "quay.io": {"identitytoken": "refresh-me"},
                "empty.example": {},
                "broken.example": {"auth": "bm8tY29sb24="}
              },
              "HttpHeaders": {"User-Agent": "x"}
            }"#,
        )
        .unwrap();
        let cases: &[(&str, Option<Credentials>)] = &[
            (
                "docker.io",
                Some(creds("docker.io", "hub", "hubpass", None)),
            ),
            (
                "127.0.0.1:5000",
                Some(creds("127.0.0.1:5000", "u", "p:with:colons", None)),
            ),
            ("ghcr.io", Some(creds("ghcr.io", "guerite", "s3cret", None))),
            (
                "quay.io",
                Some(creds("quay.io", "", "", Some("refresh-me"))),
            ),
            ("empty.example", None),
            ("nowhere.example", None),
        ];
        for (registry, want) in cases {
            assert_eq!(&config.in_auths(registry).unwrap(), want, "{registry}");
        }
        let e = format!("{:#}", config.in_auths("broken.example").unwrap_err());
        assert!(
            e.contains("broken.example") && e.contains("user:password"),
            "{e}"
        );
    }

    #[test]
    fn helpers_per_registry_then_the_default_store() {
        let config = parse_config(
            r#"{"credHelpers": {"gcr.io": "gcloud", "https://index.docker.io/v1/": "hub"},
                "credsStore": "pass"}"#,
        )
        .unwrap();
        assert_eq!(config.helper_for("gcr.io"), Some("gcloud"));
        assert_eq!(config.helper_for("docker.io"), Some("hub"));
        assert_eq!(config.helper_for("ghcr.io"), Some("pass"));
        let none = parse_config(r#"{"credsStore": ""}"#).unwrap();
        assert_eq!(none.helper_for("ghcr.io"), None);
    }

    #[test]
    fn config_that_does_not_parse_names_the_file() {
        let dir = temp_dir("bad-config");
        std::fs::write(dir.join("config.json"), "{\"auths\": [").unwrap();
        let e = format!("{:#}", DockerConfig::load(&dir).unwrap_err());
        assert!(
            e.contains(&dir.join("config.json").display().to_string()),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn missing_config_means_no_credentials() {
        let dir = temp_dir("no-config");
        let config = DockerConfig::load(&dir).unwrap();
        assert_eq!(
            config.lookup("ghcr.io", Duration::from_secs(1)).unwrap(),
            None
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn helper_answers_parse() {
        let c = parse_helper_answer(
            true,
            r#"{"ServerURL":"ghcr.io","Username":"u","Secret":"p"}"#,
            "ghcr.io",
        )
        .unwrap();
        assert_eq!(c, Some(creds("ghcr.io", "u", "p", None)));
        let c = parse_helper_answer(true, r#"{"Username":"<token>","Secret":"t"}"#, "docker.io")
            .unwrap()
            .unwrap();
        assert_eq!(c.identity_token.as_deref(), Some("t"));
        assert_eq!(c.server_address(), "https://index.docker.io/v1/");
        assert_eq!(c.basic_authorization(), None);
        assert_eq!(
            parse_helper_answer(false, "credentials not found in native keychain\n", "x").unwrap(),
            None
        );
        let e = parse_helper_answer(false, "error getting credentials - no keyring\n", "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no keyring"), "{e}");
        assert!(parse_helper_answer(true, "not json", "x").is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = creds("ghcr.io", "guerite", "s3cret", Some("tok3n"));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("tok3n"),
            "{shown}"
        );
        assert!(shown.contains("guerite"));
        assert_eq!(
            c.basic_authorization().as_deref(),
            Some("Basic Z3Vlcml0ZTpzM2NyZXQ=")
        );
    }

    fn temp_dir(what: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("guerite-credentials-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A real helper process: a shell script speaking the helper protocol.
    fn helper(dir: &Path, name: &str, script: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn helpers_run_as_processes() {
        let dir = temp_dir("helpers");
        let t = Duration::from_secs(5);
        // Echoes the server address it was asked about, to prove stdin carries it.
        let echo = helper(
            &dir,
            "echo",
            r#"[ "$1" = get ] || exit 3; read -r server; printf '{"ServerURL":"%s","Username":"%s","Secret":"pw"}' "$server" "$server""#,
        );
        let hub = run_helper(&echo, "docker.io", t).unwrap().unwrap();
        assert_eq!(hub.username, "https://index.docker.io/v1/");
        let local = run_helper(&echo, "127.0.0.1:5000", t).unwrap().unwrap();
        assert_eq!(local.username, "127.0.0.1:5000");

        let none = helper(
            &dir,
            "none",
            "echo 'credentials not found in native keychain'; exit 1",
        );
        assert_eq!(run_helper(&none, "ghcr.io", t).unwrap(), None);

        let broken = helper(&dir, "broken", "echo 'gpg: decryption failed'; exit 1");
        let e = run_helper(&broken, "ghcr.io", t).unwrap_err().to_string();
        assert!(e.contains("decryption failed"), "{e}");

        let slow = helper(&dir, "slow", "exec sleep 30");
        let started = Instant::now();
        let e = run_helper(&slow, "ghcr.io", Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did not answer"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));

        let e = format!(
            "{:#}",
            run_helper(&dir.join("docker-credential-absent"), "ghcr.io", t).unwrap_err()
        );
        assert!(e.contains("docker-credential-absent"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn lookup_asks_the_helper_then_auths() {
        let dir = temp_dir("lookup-order");
        let t = Duration::from_secs(5);
        helper(
            &dir,
            "store",
            r#"read -r server; case "$server" in
                 ghcr.io) echo '{"Username":"from-helper","Secret":"x"}' ;;
                 *) echo 'credentials not found in native keychain'; exit 1 ;;
               esac"#,
        );
        std::fs::write(
            dir.join("config.json"),
            r#"{"auths": {"ghcr.io": {"auth": "Z3Vlcml0ZTpzM2NyZXQ="},
                          "quay.io": {"auth": "Z3Vlcml0ZTpzM2NyZXQ="}},
                "credsStore": "store"}"#,
        )
        .unwrap();
        let config = DockerConfig::load(&dir).unwrap();
        let in_dir = |name: &str| dir.join(name);
        let user = |registry| {
            config
                .lookup_with(registry, t, &in_dir)
                .unwrap()
                .map(|c| c.username)
        };
        assert_eq!(user("ghcr.io").as_deref(), Some("from-helper"));
        assert_eq!(user("quay.io").as_deref(), Some("guerite"));
        assert_eq!(user("example.org"), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_store_missing_from_path_is_an_error_naming_it() {
        let dir = temp_dir("lookup");
        std::fs::write(
            dir.join("config.json"),
            r#"{"auths": {"ghcr.io": {"auth": "Z3Vlcml0ZTpzM2NyZXQ="}},
                "credsStore": "guerite-test-absent"}"#,
        )
        .unwrap();
        let config = DockerConfig::load(&dir).unwrap();
        let e = format!(
            "{:#}",
            config
                .lookup("ghcr.io", Duration::from_secs(1))
                .unwrap_err()
        );
        assert!(
            e.contains("docker-credential-guerite-test-absent") && e.contains("config.json"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
