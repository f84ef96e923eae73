//! The bearer-token flow against a real registry: Debian's distribution v2, started by each
//! test with token auth, reading (read-only) the storage of the bed's open registry so that
//! images pushed there can be asked about here. The token service is the test's own: a small
//! HTTP listener that checks credentials and signs JWTs with a throw-away key through
//! `openssl`, as Docker Hub's auth.docker.io would. The registry verifies every token for real
//! (issuer, audience, signature chained to the certificate it trusts, granted actions).
//!
//! The same token service can refuse with 429, the one way found to exercise rate limiting over
//! a real connection: distribution itself never answers 429.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::*;
use crate::update::credentials::{base64_decode, base64_encode};

const SERVICE: &str = "guerite-test";
const ISSUER: &str = "guerite-test-issuer";
const REFRESH_TOKEN: &str = "guerite-refresh";

#[derive(Debug, Clone)]
struct TokenRequest {
    method: String,
    params: BTreeMap<String, String>,
    basic_user: Option<String>,
}

/// The token service: grants pull on any repository to `guerite`/`s3cret` or the refresh
/// token, on `*/public` to anyone, nothing otherwise; answers 429 for `*/limited`.
struct Issuer {
    url: String,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Keys {
    key: PathBuf,
    /// The DER certificate, base64: the JWT's `x5c`.
    x5c: String,
}

impl Issuer {
    fn start(dir: &Path) -> (Issuer, PathBuf) {
        let key = dir.join("issuer.key");
        let cert = dir.join("issuer.crt");
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .arg("-subj")
            .arg(format!("/CN={ISSUER}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pem = std::fs::read_to_string(&cert).unwrap();
        let x5c: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let keys = Keys { key, x5c };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => serve(stream, &keys, &requests),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        Err(e) => panic!("token service: {e}"),
                    }
                }
            })
        };
        let issuer = Issuer {
            url,
            requests,
            stop,
            thread: Some(thread),
        };
        (issuer, cert)
    }

    fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, keys: &Keys, requests: &Mutex<Vec<TokenRequest>>) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("").to_string();
    let target = words.next().unwrap_or("").to_string();
    let (mut length, mut authorization) = (0, None);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap(),
            "authorization" => authorization = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut params = form(query);
    params.extend(form(&String::from_utf8_lossy(&body)));
    let basic = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(base64_decode)
        .and_then(|b| String::from_utf8(b).ok());
    let request = TokenRequest {
        method: method.clone(),
        params: params.clone(),
        basic_user: basic
            .as_deref()
            .and_then(|b| b.split_once(':'))
            .map(|(u, _)| u.to_string()),
    };
    requests.lock().unwrap().push(request);

    let repository = params
        .get("scope")
        .and_then(|s| s.strip_prefix("repository:"))
        .and_then(|s| s.strip_suffix(":pull"))
        .unwrap_or("")
        .to_string();
    let user = match (method.as_str(), basic.as_deref()) {
        ("POST", _) => (params.get("grant_type").map(String::as_str) == Some("refresh_token")
            && params.get("refresh_token").map(String::as_str) == Some(REFRESH_TOKEN))
        .then_some(Some("guerite"))
        .ok_or(()),
        (_, Some(b))
            if b == format!(
                "{}:{}",
                var("GUERITE_TEST_AUTH_USER"),
                var("GUERITE_TEST_AUTH_PASSWORD")
            ) =>
        {
            Ok(Some("guerite"))
        }
        (_, Some(_)) => Err(()),
        (_, None) => Ok(None),
    };
    let (status, extra, body) = if repository.ends_with("/limited") {
        (
            "429 Too Many Requests",
            "Retry-After: 30\r\n",
            "{}".to_string(),
        )
    } else {
        match user {
            Err(()) => (
                "401 Unauthorized",
                "",
                r#"{"details":"incorrect username or password"}"#.to_string(),
            ),
            Ok(user) => {
                let granted = user.is_some() || repository.ends_with("/public");
                let jwt = jwt(
                    keys,
                    user.unwrap_or(""),
                    granted.then_some(repository.as_str()),
                );
                let field = if method == "POST" {
                    "access_token"
                } else {
                    "token"
                };
                (
                    "200 OK",
                    "",
                    format!(r#"{{"{field}":"{jwt}","expires_in":300}}"#),
                )
            }
        }
    };
    let mut stream = &stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
}

/// `application/x-www-form-urlencoded` pairs, as ureq writes both queries and forms.
fn form(text: &str) -> BTreeMap<String, String> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && let Some(v) = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    text.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn base64url(bytes: &[u8]) -> String {
    base64_encode(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// A JWT the registry accepts: RS256, the signing certificate in `x5c`, pull on `repository`
/// (or no access at all, as Docker Hub grants anonymous callers on private repositories).
fn jwt(keys: &Keys, subject: &str, repository: Option<&str>) -> String {
    static JTI: AtomicU32 = AtomicU32::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [keys.x5c]});
    let access: Vec<serde_json::Value> = repository
        .map(|r| serde_json::json!({"type": "repository", "name": r, "actions": ["pull"]}))
        .into_iter()
        .collect();
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": subject, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("guerite-{}", JTI.fetch_add(1, Ordering::SeqCst)),
        "access": access,
    });
    let signed = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&keys.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signed.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst failed");
    format!("{signed}.{}", base64url(&out.stdout))
}

/// A distribution registry with token auth over the open registry's storage, stopped (by its
/// own handle) when dropped.
struct TokenRegistry {
    address: String,
    log: PathBuf,
    child: Child,
    issuer: Issuer,
}

impl TokenRegistry {
    fn start(s: &Scratch) -> TokenRegistry {
        let (issuer, cert) = Issuer::start(&s.dir);
        let plain_log = PathBuf::from(var("GUERITE_TEST_REGISTRY_LOG"));
        let storage = plain_log.with_file_name("registry-plain/data");
        assert!(
            storage.is_dir(),
            "{}: the open registry's storage, expected beside its log",
            storage.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = s.dir.join("registry-token.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log: {{level: info, formatter: text, accesslog: {{disabled: false}}}}\n\
                 storage:\n  filesystem: {{rootdirectory: {}}}\n  \
                   maintenance: {{uploadpurging: {{enabled: false}}, readonly: {{enabled: true}}}}\n\
                 http: {{addr: {address}, secret: guerite-token-test}}\n\
                 auth:\n  token: {{realm: \"{}\", service: {SERVICE}, issuer: {ISSUER}, rootcertbundle: {}}}\n",
                storage.display(),
                issuer.url,
                cert.display()
            ),
        )
        .unwrap();
        let log = s.dir.join("registry-token.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("docker-registry runs");
        let registry = TokenRegistry {
            address,
            log,
            child,
            issuer,
        };
        let probe = agent(Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let url = format!("http://{}/v2/", registry.address);
            if probe.get(&url).call().is_ok_and(|r| r.status() == 401) {
                return registry;
            }
            assert!(
                Instant::now() < deadline,
                "the token registry did not start; its log: {}",
                std::fs::read_to_string(&registry.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> Log {
        Log {
            path: self.log.clone(),
            from: 0,
        }
    }
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes v1 as `app:1`, `other:1`, `public:1` and v2 as `app:2` to the open registry, whose
/// storage the token registry reads; returns their digests by path.
fn pushed(s: &mut Scratch) -> BTreeMap<&'static str, String> {
    let open = var("GUERITE_TEST_REGISTRY");
    let v1 = s.build("1");
    let v2 = s.build("2");
    let mut out = BTreeMap::new();
    for (path, image) in [
        ("app:1", &v1),
        ("other:1", &v1),
        ("public:1", &v1),
        ("app:2", &v2),
    ] {
        out.insert(path, s.push(None, image, &open, path));
    }
    out
}

fn scopes(requests: &[TokenRequest]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r.params.get("scope").cloned().unwrap_or_default())
        .collect()
}

#[test]
fn bearer_tokens_with_basic_credentials_one_per_repository() {
    let mut s = Scratch::new();
    let digests = pushed(&mut s);
    let registry = TokenRegistry::start(&s);
    let at = &registry.address;
    let config = s.config(
        "login",
        Some(&format!(
            r#"{{"auths": {{"{at}": {{"auth": "{}"}}}}}}"#,
            base64_encode(
                format!(
                    "{}:{}",
                    var("GUERITE_TEST_AUTH_USER"),
                    var("GUERITE_TEST_AUTH_PASSWORD")
                )
                .as_bytes()
            )
        )),
    );
    let refs: Vec<ImageRef> = ["app:1", "app:2", "other:1", "app:1"]
        .iter()
        .map(|p| s.reference(at, p))
        .collect();
    let answers = check(&refs, &options(config));
    for path in ["app:1", "app:2", "other:1"] {
        assert_eq!(
            digest_of(&answers, &s.reference(at, path)),
            digests[path],
            "{path}"
        );
    }

    let tokens = registry.issuer.requests();
    let mut asked = scopes(&tokens);
    asked.sort();
    assert_eq!(
        asked,
        vec![
            format!("repository:{}/app:pull", s.prefix),
            format!("repository:{}/other:pull", s.prefix)
        ],
        "one token per repository: {tokens:#?}"
    );
    for t in &tokens {
        assert_eq!(t.method, "GET");
        assert_eq!(t.params.get("service").map(String::as_str), Some(SERVICE));
        assert_eq!(t.basic_user.as_deref(), Some("guerite"));
    }
    let requests = registry.log().requests(&s.prefix, 4);
    assert_eq!(count(&requests, "HEAD", Some(401)), 1, "{requests:#?}");
    assert_eq!(count(&requests, "HEAD", Some(200)), 3, "{requests:#?}");
    assert_eq!(requests.len(), 4, "{requests:#?}");
}

#[test]
fn bearer_with_a_wrong_password_is_rejected_once() {
    let s = Scratch::new();
    let registry = TokenRegistry::start(&s);
    let at = &registry.address;
    let config = s.config(
        "wrong",
        Some(&format!(
            r#"{{"auths": {{"{at}": {{"username": "guerite", "password": "nope"}}}}}}"#
        )),
    );
    let refs: Vec<ImageRef> = ["app:1", "other:1", "third:1"]
        .iter()
        .map(|p| s.reference(at, p))
        .collect();
    let answers = check(&refs, &options(config));
    for answer in answers.values() {
        assert_eq!(
            answer,
            &Answer::AuthRequired(format!("credentials for {at} rejected"))
        );
    }
    assert_eq!(registry.issuer.requests().len(), 1);
    let requests = registry.log().requests(&s.prefix, 1);
    assert_eq!(count(&requests, "HEAD", Some(401)), 1, "{requests:#?}");
    assert_eq!(requests.len(), 1, "{requests:#?}");
}

#[test]
fn bearer_anonymous_reads_public_repositories_only() {
    let mut s = Scratch::new();
    let digests = pushed(&mut s);
    let registry = TokenRegistry::start(&s);
    let at = &registry.address;
    let none = s.config("none", None);
    let public = s.reference(at, "public:1");
    let private = s.reference(at, "app:1");
    let answers = check(&[public.clone(), private.clone()], &options(none.clone()));
    assert_eq!(digest_of(&answers, &public), digests["public:1"]);
    assert_eq!(
        answers[&private.canonical()],
        Answer::AuthRequired(format!(
            "authentication required by {at}; {} has no credentials for it",
            none.join("config.json").display()
        ))
    );
    assert!(
        registry
            .issuer
            .requests()
            .iter()
            .all(|t| t.basic_user.is_none())
    );
}

#[test]
fn bearer_with_an_identity_token() {
    let mut s = Scratch::new();
    let digests = pushed(&mut s);
    let registry = TokenRegistry::start(&s);
    let at = &registry.address;
    let config = s.config(
        "oauth",
        Some(&format!(
            r#"{{"auths": {{"{at}": {{"identitytoken": "{REFRESH_TOKEN}"}}}}}}"#
        )),
    );
    let app = s.reference(at, "app:1");
    let answers = check(std::slice::from_ref(&app), &options(config));
    assert_eq!(digest_of(&answers, &app), digests["app:1"]);
    let tokens = registry.issuer.requests();
    assert_eq!(tokens.len(), 1, "{tokens:#?}");
    assert_eq!(tokens[0].method, "POST");
    assert_eq!(
        tokens[0].params.get("grant_type").map(String::as_str),
        Some("refresh_token")
    );
    assert_eq!(
        tokens[0].params.get("service").map(String::as_str),
        Some(SERVICE)
    );
}

#[test]
fn a_429_ends_the_registry_for_the_run() {
    let mut s = Scratch::new();
    let digests = pushed(&mut s);
    let registry = TokenRegistry::start(&s);
    let at = &registry.address;
    let config = s.config(
        "login",
        Some(&format!(
            r#"{{"auths": {{"{at}": {{"username": "guerite", "password": "{}"}}}}}}"#,
            var("GUERITE_TEST_AUTH_PASSWORD")
        )),
    );
    let refs: Vec<ImageRef> = ["app:1", "limited:1", "other:1", "public:1"]
        .iter()
        .map(|p| s.reference(at, p))
        .collect();
    let mut opts = options(config);
    // One at a time, so which references were asked is certain.
    opts.per_registry = 1;
    let answers = check(&refs, &opts);
    let limited = Answer::RateLimited {
        retry_after: Some(Duration::from_secs(30)),
    };
    assert_eq!(digest_of(&answers, &refs[0]), digests["app:1"]);
    for r in &refs[1..] {
        assert_eq!(answers[&r.canonical()], limited, "{r}");
    }
    assert_eq!(
        scopes(&registry.issuer.requests()),
        vec![
            format!("repository:{}/app:pull", s.prefix),
            format!("repository:{}/limited:pull", s.prefix)
        ]
    );
    let requests = registry.log().requests(&s.prefix, 2);
    assert_eq!(count(&requests, "HEAD", None), 2, "{requests:#?}");
}
