//! `DOCKER_TLS_VERIFY=1` against the real engine, through a TLS front (tests/tls_front.py) on
//! 127.0.0.1 that requires a client certificate and forwards to the engine's unix socket. The
//! certificates are made here with openssl, in the test's own directory. Only `ca.pem` may be
//! trusted: the system's trust store is pointed (for the child only) at a bundle holding another
//! CA, whose server certificate must be refused.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{Bed, Run, bed_var};

/// Runs `openssl <command>` (split at spaces; every argument here is free of them) in `dir`;
/// panics with its output when it fails.
fn openssl(dir: &Path, command: &str) {
    let args: Vec<&str> = command.split_whitespace().collect();
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(&args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EXTENSIONS: &str = "\
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
[wrong_name]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:engine.example,IP:10.0.0.1
[client]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
";

/// Two CAs and what they sign, in `<bed dir>/pki`.
struct Pki {
    dir: PathBuf,
    serial: std::cell::Cell<u32>,
}

#[derive(Clone, Copy)]
enum Key {
    /// PKCS#8 `PRIVATE KEY`, P-256.
    EcPkcs8,
    /// SEC1 `EC PRIVATE KEY`, P-256.
    EcSec1,
    /// PKCS#8 `PRIVATE KEY`, RSA 2048.
    RsaPkcs8,
    /// PKCS#1 `RSA PRIVATE KEY`.
    RsaPkcs1,
    /// PKCS#8 `PRIVATE KEY`, Ed25519.
    Ed25519,
}

impl Pki {
    fn new(bed: &Bed) -> Pki {
        let dir = bed.dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ext.cnf"), EXTENSIONS).unwrap();
        let pki = Pki {
            dir,
            serial: std::cell::Cell::new(1),
        };
        for ca in ["ca1", "ca2"] {
            pki.key(&format!("{ca}.key"), Key::EcPkcs8);
            openssl(
                &pki.dir,
                &format!(
                    "req -x509 -new -key {ca}.key -subj /CN=guerite-test-{ca} -days 2 \
                     -config ext.cnf -extensions ca -out {ca}.pem"
                ),
            );
        }
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn key(&self, name: &str, kind: Key) {
        let algorithm = match kind {
            Key::EcPkcs8 | Key::EcSec1 => "EC -pkeyopt ec_paramgen_curve:P-256",
            Key::RsaPkcs8 | Key::RsaPkcs1 => "RSA -pkeyopt rsa_keygen_bits:2048",
            Key::Ed25519 => "ED25519",
        };
        openssl(
            &self.dir,
            &format!("genpkey -algorithm {algorithm} -out {name}"),
        );
        // Rewritten in the older encodings: `ec` writes SEC1, `rsa -traditional` PKCS#1.
        let rewrite = match kind {
            Key::EcSec1 => Some("ec"),
            Key::RsaPkcs1 => Some("rsa -traditional"),
            _ => None,
        };
        if let Some(tool) = rewrite {
            std::fs::rename(self.path(name), self.path(&format!("{name}.pkcs8"))).unwrap();
            openssl(&self.dir, &format!("{tool} -in {name}.pkcs8 -out {name}"));
        }
    }

    /// A key and a signing request: `<name>.key`, `<name>.csr`.
    fn request(&self, name: &str, kind: Key) {
        self.key(&format!("{name}.key"), kind);
        openssl(
            &self.dir,
            &format!("req -new -key {name}.key -subj /CN={name} -config ext.cnf -out {name}.csr"),
        );
    }

    /// A key of `kind` and a certificate signed by `ca` with the `extensions` section:
    /// `<name>.key`, `<name>.pem`.
    fn issue(&self, name: &str, ca: &str, extensions: &str, kind: Key) {
        self.request(name, kind);
        let serial = self.serial.get() + 1;
        self.serial.set(serial);
        openssl(
            &self.dir,
            &format!(
                "x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -set_serial {serial} \
                 -days 2 -extfile ext.cnf -extensions {extensions} -out {name}.pem"
            ),
        );
    }

    /// A server certificate from ca1 that was valid in 2020 only. OpenSSL 3.0's `x509 -req`
    /// cannot backdate (no `-not_before`), `openssl ca` can.
    fn issue_expired(&self, name: &str) {
        self.request(name, Key::EcPkcs8);
        let db = self.dir.join("ca-db");
        std::fs::create_dir_all(&db).unwrap();
        std::fs::write(db.join("index.txt"), "").unwrap();
        std::fs::write(db.join("serial"), "1000\n").unwrap();
        let config = format!(
            "[ca]\ndefault_ca = ca1\n[ca1]\ndatabase = {db}/index.txt\nnew_certs_dir = {db}\n\
             serial = {db}/serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n\
             [any]\ncommonName = supplied\n{EXTENSIONS}",
            db = db.display()
        );
        std::fs::write(self.dir.join("ca.cnf"), config).unwrap();
        openssl(
            &self.dir,
            &format!(
                "ca -batch -notext -config ca.cnf -cert ca1.pem -keyfile ca1.key -in {name}.csr \
                 -startdate 20200101000000Z -enddate 20201231000000Z -extensions server \
                 -out {name}.pem"
            ),
        );
    }

    /// A DOCKER_CERT_PATH: ca1 as ca.pem, and the client certificate and key `client`.
    fn cert_dir(&self, name: &str, client: &str) -> PathBuf {
        self.cert_dir_of(name, &format!("{client}.pem"), &format!("{client}.key"))
    }

    fn cert_dir_of(&self, name: &str, cert: &str, key: &str) -> PathBuf {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(self.path("ca1.pem"), dir.join("ca.pem")).unwrap();
        std::fs::copy(self.path(cert), dir.join("cert.pem")).unwrap();
        std::fs::copy(self.path(key), dir.join("key.pem")).unwrap();
        dir
    }

    /// The child's "system" trust store: only ca2, which the engine must not be trusted by.
    fn system_bundle(&self) -> PathBuf {
        self.path("ca2.pem")
    }
}

/// The TLS front, serving `<server>.pem` and requiring a client certificate from ca1; killed
/// (by its pid) when dropped.
struct Front {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Front {
    fn start(pki: &Pki, server: &str) -> Front {
        Front::start_with(pki, server, &[])
    }

    /// With `--tls12`: a front that offers TLS 1.2 at most.
    fn start_with(pki: &Pki, server: &str, options: &[&str]) -> Front {
        let upstream = bed_var("DOCKER_HOST");
        let socket = upstream
            .strip_prefix("unix://")
            .expect("the bed's engine is on a unix socket");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls_front.py");
        let log = pki.path(&format!("front-{server}.log"));
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--cert")
            .arg(pki.path(&format!("{server}.pem")))
            .arg("--key")
            .arg(pki.path(&format!("{server}.key")))
            .arg("--client-ca")
            .arg(pki.path("ca1.pem"))
            .arg("--upstream")
            .arg(socket)
            .args(options)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = match line.trim().parse() {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                panic!("tls_front.py printed {line:?}, not its port");
            }
        };
        Front { child, port, log }
    }

    fn host(&self, name: &str) -> String {
        format!("tcp://{name}:{}", self.port)
    }

    /// How many sessions the front saw resumed.
    fn resumed(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("tls_front: resumed session")
            .count()
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// guerite over TLS to `host` with the client files of `cert_dir`, trusting ca2 system-wide.
fn tls_run(bed: &Bed, pki: &Pki, host: &str, cert_dir: &Path, args: &[&str]) -> Run {
    let out = bed
        .guerite()
        .env("DOCKER_HOST", host)
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", cert_dir)
        .env("SSL_CERT_FILE", pki.system_bundle())
        .env_remove("SSL_CERT_DIR")
        .args(args)
        .output()
        .expect("guerite runs");
    Run::from(out)
}

/// Exit 2 and exactly one line, the error, whose message is `want`.
fn assert_one_error(run: &Run, want: &str) {
    assert_eq!(run.code, 2, "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {run:?}");
    let message = lines[0].split_once(" ERROR ").map(|(_, m)| m);
    assert_eq!(message, Some(want), "{run:?}");
}

fn listed_names(run: &Run) -> Vec<String> {
    let views: serde_json::Value = serde_json::from_str(&run.stdout).expect("check --json");
    views
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|v| v["name"].as_str().map(String::from))
        .collect()
}

#[test]
fn client_keys_of_every_kind_reach_the_engine_through_tls() {
    let bed = Bed::new();
    let web = bed.container("web", &[("restart", "0 3 * * *")], &[]);
    let pki = Pki::new(&bed);
    pki.issue("server", "ca1", "server", Key::EcPkcs8);
    let front = Front::start(&pki, "server");
    for (name, kind) in [
        ("ec-pkcs8", Key::EcPkcs8),
        ("ec-sec1", Key::EcSec1),
        ("rsa-pkcs8", Key::RsaPkcs8),
        ("rsa-pkcs1", Key::RsaPkcs1),
        ("ed25519", Key::Ed25519),
    ] {
        pki.issue(name, "ca1", "client", kind);
        let dir = pki.cert_dir(&format!("dir-{name}"), name);
        // By address and by name: the certificate carries both.
        for host in [front.host("127.0.0.1"), front.host("localhost")] {
            let run = tls_run(&bed, &pki, &host, &dir, &["check", "--json"]);
            assert_eq!(run.code, 0, "{name} to {host}: {run:?}");
            assert_eq!(listed_names(&run), vec![web.clone()], "{name}: {run:?}");
        }
    }

    // A run makes many requests, each on its own connection (the later ones resume the TLS
    // session): a forced restart inspects, restarts and saves.
    let dir = pki.cert_dir("dir-run", "ec-pkcs8");
    let before = bed.started_at(&web);
    let run = tls_run(
        &bed,
        &pki,
        &front.host("127.0.0.1"),
        &dir,
        &["run", "--force", "restart", "--only", &web],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_ne!(
        bed.started_at(&web),
        before,
        "restarted through TLS: {run:?}"
    );
    assert!(
        front.resumed() > 0,
        "later connections resumed the TLS session"
    );
    drop(front);
}

#[test]
fn engine_certificates_that_are_not_trusted_name_their_cause() {
    let bed = Bed::new();
    let pki = Pki::new(&bed);
    pki.issue("client", "ca1", "client", Key::EcPkcs8);
    let dir = pki.cert_dir("dir", "client");
    let ca = dir.join("ca.pem");

    // Signed by ca2, which the system (SSL_CERT_FILE) trusts: only ca.pem counts.
    pki.issue("server-ca2", "ca2", "server", Key::EcPkcs8);
    let front = Front::start(&pki, "server-ca2");
    let host = front.host("127.0.0.1");
    let run = tls_run(&bed, &pki, &host, &dir, &["run"]);
    assert_one_error(
        &run,
        &format!(
            "TLS to {host} failed: the engine's certificate is not signed by the CA in {}",
            ca.display()
        ),
    );
    drop(front);

    pki.issue("server-name", "ca1", "wrong_name", Key::EcPkcs8);
    let front = Front::start(&pki, "server-name");
    let host = front.host("127.0.0.1");
    let run = tls_run(&bed, &pki, &host, &dir, &["check"]);
    assert_one_error(
        &run,
        &format!(
            "TLS to {host} failed: the engine's certificate is for other names \
             (engine.example, 10.0.0.1), not 127.0.0.1"
        ),
    );
    drop(front);

    pki.issue_expired("server-expired");
    let front = Front::start(&pki, "server-expired");
    let host = front.host("localhost");
    let run = tls_run(&bed, &pki, &host, &dir, &["run"]);
    assert_one_error(
        &run,
        &format!(
            "TLS to {host} failed: the engine's certificate expired on 2020-12-31 00:00:00 UTC"
        ),
    );
    drop(front);

    // A port that answers in plain HTTP, as dockerd's 2375 would.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let plain = std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let host = format!("tcp://127.0.0.1:{port}");
    let run = tls_run(&bed, &pki, &host, &dir, &["run"]);
    assert_one_error(
        &run,
        &format!(
            "TLS to {host} failed: the engine did not answer in TLS (is this a port without \
             TLS? then unset DOCKER_TLS_VERIFY)"
        ),
    );
    plain.join().unwrap();
}

#[test]
fn a_client_certificate_the_engine_refuses_names_it() {
    let bed = Bed::new();
    let pki = Pki::new(&bed);
    pki.issue("server", "ca1", "server", Key::EcPkcs8);
    pki.issue("client", "ca1", "client", Key::EcPkcs8);
    let good = pki.cert_dir("good", "client");
    // ca.pem (ca1) verifies the engine, but the engine wants a client certificate from ca1.
    pki.issue("client-ca2", "ca2", "client", Key::EcPkcs8);
    let refused = pki.cert_dir("refused", "client-ca2");
    // TLS 1.3 (what dockerd speaks): the engine refuses after our side of the handshake is
    // done, in its answer to the first request. TLS 1.2: within the handshake.
    for options in [&[][..], &["--tls12"][..]] {
        let front = Front::start_with(&pki, "server", options);
        let host = front.host("127.0.0.1");
        let run = tls_run(&bed, &pki, &host, &good, &["check", "--json"]);
        assert_eq!(run.code, 0, "{options:?}: {run:?}");
        let run = tls_run(&bed, &pki, &host, &refused, &["check", "--json"]);
        assert_one_error(
            &run,
            &format!(
                "TLS to {host} failed: the engine refused our client certificate {} \
                 (TLS alert unknown_ca: it does not trust the CA that signed it)",
                refused.join("cert.pem").display()
            ),
        );
        drop(front);
    }
}

#[test]
fn client_files_that_do_not_load_exit_2_before_connecting() {
    let bed = Bed::new();
    let pki = Pki::new(&bed);
    pki.issue("ec", "ca1", "client", Key::EcPkcs8);
    pki.issue("rsa", "ca1", "client", Key::RsaPkcs1);
    // Nothing may connect: a listener that would see it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let host = format!("tcp://127.0.0.1:{}", listener.local_addr().unwrap().port());

    let missing_key = pki.cert_dir("missing-key", "ec");
    std::fs::remove_file(missing_key.join("key.pem")).unwrap();
    let mismatch = pki.cert_dir_of("mismatch", "rsa.pem", "ec.key");
    let bad_ca = pki.cert_dir("bad-ca", "ec");
    std::fs::write(bad_ca.join("ca.pem"), "not a certificate\n").unwrap();
    let broken_cert = pki.cert_dir("broken-cert", "ec");
    std::fs::write(
        broken_cert.join("cert.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n",
    )
    .unwrap();

    let cases = [
        (
            &missing_key,
            format!(
                "cannot read the client key {}: No such file or directory (os error 2) \
                 (DOCKER_CERT_PATH names the directory of ca.pem, cert.pem and key.pem)",
                missing_key.join("key.pem").display()
            ),
        ),
        (
            &mismatch,
            format!(
                "the client key {} does not belong to the certificate in {}",
                mismatch.join("key.pem").display(),
                mismatch.join("cert.pem").display()
            ),
        ),
        (
            &bad_ca,
            format!(
                "the engine's CA certificate {} holds no PEM certificate \
                 (-----BEGIN CERTIFICATE-----)",
                bad_ca.join("ca.pem").display()
            ),
        ),
        (
            &broken_cert,
            format!(
                "the client certificate {} is not a readable PEM file: it has no line \
                 -----END CERTIFICATE-----",
                broken_cert.join("cert.pem").display()
            ),
        ),
    ];
    for (dir, want) in &cases {
        let run = tls_run(&bed, &pki, &host, dir, &["run"]);
        assert_one_error(&run, want);
    }
    assert!(
        listener.accept().is_err(),
        "no connection before the files loaded"
    );
}

#[test]
fn an_endpoint_that_never_answers_the_handshake_times_out() {
    let bed = Bed::new();
    let pki = Pki::new(&bed);
    pki.issue("client", "ca1", "client", Key::EcPkcs8);
    let dir = pki.cert_dir("dir", "client");
    // The kernel completes the TCP connection; nobody ever answers the ClientHello.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let host = format!("tcp://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let started = std::time::Instant::now();
    let run = tls_run(&bed, &pki, &host, &dir, &["check"]);
    assert_one_error(
        &run,
        &format!(
            "cannot reach the Docker engine at {host}: the Docker engine did not answer in time. \
             Is dockerd running, and may this user use it? Set DOCKER_HOST to choose another \
             endpoint."
        ),
    );
    // The connect timeout (10 s), not the per-call one (60 s).
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
    drop(listener);
}
