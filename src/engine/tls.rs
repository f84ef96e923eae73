//! TLS to a remote engine (`DOCKER_TLS_VERIFY=1`) as Docker's CLI does it: the engine's
//! certificate must chain to a certificate in `ca.pem` and to nothing else, and guerite presents
//! `cert.pem` with `key.pem`. bollard's own TLS client adds the system's roots to `ca.pem`, so
//! any certificate that a public CA issued for the engine's name would pass; hence this client.
//!
//! The only file that names rustls. It builds the connector and, when a request fails, finds
//! the TLS cause in the error and says it in words; docker.rs wraps both into bollard.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::DateTime;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::{AlertDescription, CertificateError, ClientConfig, InconsistentKeys, RootCertStore};

/// The three files of `DOCKER_CERT_PATH`, named as Docker names them.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientFiles {
    pub fn in_dir(dir: &Path) -> ClientFiles {
        ClientFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}

/// A client file that cannot be used: one line naming the file.
#[derive(Debug)]
pub struct LoadError(String);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for LoadError {}

/// A failed TLS session with the engine, its cause in words: "TLS to <endpoint> failed: …".
#[derive(Debug)]
pub struct Failure {
    endpoint: String,
    cause: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS to {} failed: {}", self.endpoint, self.cause)
    }
}

impl StdError for Failure {}

/// What a failure message needs to name: the endpoint as the operator wrote it and the files.
#[derive(Debug, Clone)]
pub struct Explainer {
    endpoint: String,
    files: ClientFiles,
}

/// Loads the client files (before anything connects) and builds an HTTPS-only connector whose
/// only roots are the certificates of `ca.pem`.
pub fn connector(
    endpoint: &str,
    files: &ClientFiles,
) -> Result<(HttpsConnector<HttpConnector>, Explainer), LoadError> {
    let config = client_config(files)?;
    let mut http = HttpConnector::new();
    // The connector sees https:// URIs; the TLS layer above it is what makes them https.
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let explainer = Explainer {
        endpoint: endpoint.to_string(),
        files: files.clone(),
    };
    Ok((https, explainer))
}

fn client_config(files: &ClientFiles) -> Result<ClientConfig, LoadError> {
    let roots = roots(&files.ca)?;
    let chain = certificates(&files.cert, "the client certificate")?;
    let key = private_key(&files.key)?;
    // ring explicitly: relying on the process-wide default provider would panic if another
    // dependency ever enabled a second one.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| {
            LoadError(format!(
                "the client key {} is not an RSA, ECDSA or Ed25519 key guerite can use: {e}",
                files.key.display()
            ))
        })?;
    // Said here, naming both files, rather than as the engine's "bad certificate" later.
    match rustls::sign::CertifiedKey::new(chain.clone(), signing_key).keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(LoadError(format!(
                "the client key {} does not belong to the certificate in {}",
                files.key.display(),
                files.cert.display()
            )));
        }
        Err(e) => {
            return Err(LoadError(format!(
                "the client certificate {} cannot be used: {e}",
                files.cert.display()
            )));
        }
    }
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            LoadError(format!(
                "the client certificate {} and key {} cannot be used: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::NotFound {
            " (DOCKER_CERT_PATH names the directory of ca.pem, cert.pem and key.pem)"
        } else {
            ""
        };
        LoadError(format!("cannot read {what} {}: {e}{hint}", path.display()))
    })
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let bytes = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            LoadError(format!(
                "{what} {} is not a readable PEM file: {}",
                path.display(),
                pem_error(&e)
            ))
        })?;
    if certs.is_empty() {
        return Err(LoadError(format!(
            "{what} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The roots: exactly the certificates of ca.pem, as `docker --tlsverify` trusts them.
fn roots(path: &Path) -> Result<RootCertStore, LoadError> {
    let what = "the engine's CA certificate";
    let mut store = RootCertStore::empty();
    for (i, cert) in certificates(path, what)?.into_iter().enumerate() {
        store.add(cert).map_err(|e| {
            LoadError(format!(
                "{what} {} cannot be used (certificate {} in the file): {e}",
                path.display(),
                i + 1
            ))
        })?;
    }
    Ok(store)
}

/// The first private key of key.pem, in any encoding Docker reads: PKCS#1 (`RSA PRIVATE KEY`),
/// SEC1 (`EC PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`).
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, LoadError> {
    let what = "the client key";
    let bytes = read(path, what)?;
    // pki-types skips PEM sections it does not know and cannot read the headers of a legacy
    // encrypted key, so an encrypted key is recognised by its marker lines, to say why it fails.
    let encrypted = bytes
        .split(|b| *b == b'\n')
        .map(|l| l.trim_ascii())
        .any(|l| l == b"-----BEGIN ENCRYPTED PRIVATE KEY-----" || l == b"Proc-Type: 4,ENCRYPTED");
    if encrypted {
        return Err(LoadError(format!(
            "{what} {} is encrypted; guerite, like docker, needs it without a passphrase",
            path.display()
        )));
    }
    match PrivateKeyDer::pem_slice_iter(&bytes).next() {
        Some(Ok(key)) => Ok(key),
        Some(Err(e)) => Err(LoadError(format!(
            "{what} {} is not a readable PEM file: {}",
            path.display(),
            pem_error(&e)
        ))),
        None => Err(LoadError(format!(
            "{what} {} holds no PEM private key (RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY)",
            path.display()
        ))),
    }
}

fn pem_error(e: &pem::Error) -> String {
    match e {
        // The marker is the section's label ("CERTIFICATE").
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "it has no line -----END {}-----",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "its line {:?} is not a PEM begin line",
            String::from_utf8_lossy(line).trim()
        ),
        pem::Error::Base64Decode(e) => format!("bad base64: {e}"),
        pem::Error::Io(e) => e.to_string(),
        other => format!("{other:?}"),
    }
}

impl Explainer {
    /// The TLS cause of a failed request, if TLS is what failed: the first `rustls::Error` in
    /// the error's chain (the handshake's own, or the alert the engine sent), in words.
    pub fn explain(&self, e: &(dyn StdError + 'static)) -> Option<Failure> {
        let tls = find_rustls_error(e)?;
        Some(Failure {
            endpoint: self.endpoint.clone(),
            cause: self.cause(tls),
        })
    }

    fn cause(&self, e: &rustls::Error) -> String {
        let ca = self.files.ca.display();
        let cert = self.files.cert.display();
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => {
                    format!("the engine's certificate is not signed by the CA in {ca}")
                }
                CertificateError::BadSignature => format!(
                    "the engine's certificate names the CA in {ca} as its issuer but is not \
                     signed by its key"
                ),
                CertificateError::NotValidForNameContext {
                    expected,
                    presented,
                } => {
                    let expected = expected.to_str();
                    if presented.is_empty() {
                        format!(
                            "the engine's certificate names no host (no subjectAltName), \
                             not {expected}"
                        )
                    } else {
                        let names: Vec<&str> = presented.iter().map(|n| general_name(n)).collect();
                        format!(
                            "the engine's certificate is for other names ({}), not {expected}",
                            names.join(", ")
                        )
                    }
                }
                CertificateError::NotValidForName => {
                    "the engine's certificate is for other names than the one in DOCKER_HOST".into()
                }
                CertificateError::ExpiredContext { not_after, .. } => {
                    format!("the engine's certificate expired on {}", date(not_after))
                }
                CertificateError::Expired => "the engine's certificate has expired".into(),
                CertificateError::NotValidYetContext { not_before, .. } => format!(
                    "the engine's certificate is not valid before {} (is this host's clock right?)",
                    date(not_before)
                ),
                CertificateError::NotValidYet => {
                    "the engine's certificate is not valid yet (is this host's clock right?)".into()
                }
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => {
                    format!("the engine's certificate is not for a TLS server ({c})")
                }
                other => format!("the engine's certificate is not acceptable: {other}"),
            },
            rustls::Error::AlertReceived(alert) => {
                let (name, meaning) = alert_words(*alert);
                match alert {
                    AlertDescription::BadCertificate
                    | AlertDescription::UnsupportedCertificate
                    | AlertDescription::CertificateRevoked
                    | AlertDescription::CertificateExpired
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::UnknownCA
                    | AlertDescription::AccessDenied
                    | AlertDescription::CertificateRequired => format!(
                        "the engine refused our client certificate {cert} (TLS alert {name}: \
                         {meaning})"
                    ),
                    _ => format!(
                        "the engine ended the session with the TLS alert {name} ({meaning})"
                    ),
                }
            }
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                "the engine did not answer in TLS (is this a port without TLS? then unset \
                 DOCKER_TLS_VERIFY)"
                    .into()
            }
            rustls::Error::PeerIncompatible(p) => {
                format!("the engine and guerite have no TLS version or algorithm in common ({p:?})")
            }
            rustls::Error::NoCertificatesPresented => "the engine presented no certificate".into(),
            other => other.to_string(),
        }
    }
}

/// Walks the chain of causes. `io::Error::source` skips the error it wraps (it returns the
/// wrapped error's source), and hyper-rustls wraps tokio-rustls' `io::Error` in another one, so
/// each `io::Error` is opened with `get_ref` instead.
fn find_rustls_error<'a>(mut e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    loop {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let inner = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn StdError + 'static));
        e = inner.or_else(|| e.source())?;
    }
}

/// rustls-webpki renders each presented name as `DnsName("host")` or `IpAddress(1.2.3.4)`;
/// only a `String` reaches us, so the wrapper is taken off for the message.
fn general_name(rendered: &str) -> &str {
    for prefix in ["DnsName(\"", "IpAddress("] {
        if let Some(inner) = rendered.strip_prefix(prefix) {
            return inner.trim_end_matches(')').trim_end_matches('"');
        }
    }
    rendered
}

fn date(t: &UnixTime) -> String {
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{} (Unix time)", t.as_secs()))
}

/// RFC 8446 §6.2 names, and what each means when the engine sends it to a client.
fn alert_words(alert: AlertDescription) -> (String, &'static str) {
    use AlertDescription as A;
    let (name, meaning) = match alert {
        A::BadCertificate => ("bad_certificate", "it could not verify it"),
        A::UnsupportedCertificate => ("unsupported_certificate", "it does not accept its type"),
        A::CertificateRevoked => ("certificate_revoked", "it is revoked"),
        A::CertificateExpired => ("certificate_expired", "it has expired or is not valid yet"),
        A::CertificateUnknown => ("certificate_unknown", "it would not accept it"),
        A::UnknownCA => ("unknown_ca", "it does not trust the CA that signed it"),
        A::AccessDenied => ("access_denied", "it does not let that certificate in"),
        A::CertificateRequired => ("certificate_required", "it received none"),
        A::HandshakeFailure => (
            "handshake_failure",
            "it would not agree to the parameters guerite offered",
        ),
        A::ProtocolVersion => ("protocol_version", "it does not speak TLS 1.2 or 1.3"),
        A::InsufficientSecurity => ("insufficient_security", "it wants stronger ciphers"),
        A::DecryptError => (
            "decrypt_error",
            "a signature or key exchange did not verify",
        ),
        A::InternalError => ("internal_error", "an error on the engine's side"),
        A::UnrecognisedName => ("unrecognised_name", "it does not serve the name asked for"),
        other => return (format!("{other:?}"), "no further detail"),
    };
    (name.to_string(), meaning)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use std::time::Duration;

    fn explainer() -> Explainer {
        Explainer {
            endpoint: "tcp://127.0.0.1:2376".into(),
            files: ClientFiles::in_dir(Path::new("/certs")),
        }
    }

    #[test]
    fn each_cause_in_words() {
        let at = |s| UnixTime::since_unix_epoch(Duration::from_secs(s));
        let cases: Vec<(rustls::Error, &str)> = vec![
            (
                CertificateError::UnknownIssuer.into(),
                "the engine's certificate is not signed by the CA in /certs/ca.pem",
            ),
            (
                CertificateError::NotValidForNameContext {
                    expected: ServerName::try_from("127.0.0.1").unwrap(),
                    presented: vec![
                        "DnsName(\"engine.example\")".into(),
                        "IpAddress(10.0.0.1)".into(),
                    ],
                }
                .into(),
                "the engine's certificate is for other names (engine.example, 10.0.0.1), not 127.0.0.1",
            ),
            (
                CertificateError::NotValidForNameContext {
                    expected: ServerName::try_from("localhost").unwrap(),
                    presented: vec![],
                }
                .into(),
                "the engine's certificate names no host (no subjectAltName), not localhost",
            ),
            (
                CertificateError::ExpiredContext {
                    time: at(1_700_000_000),
                    not_after: at(1_609_372_800),
                }
                .into(),
                "the engine's certificate expired on 2020-12-31 00:00:00 UTC",
            ),
            (
                CertificateError::NotValidYetContext {
                    time: at(1_609_372_800),
                    not_before: at(1_700_000_000),
                }
                .into(),
                "the engine's certificate is not valid before 2023-11-14 22:13:20 UTC (is this host's clock right?)",
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::UnknownCA),
                "the engine refused our client certificate /certs/cert.pem (TLS alert unknown_ca: it does not trust the CA that signed it)",
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
                "the engine refused our client certificate /certs/cert.pem (TLS alert certificate_required: it received none)",
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::ProtocolVersion),
                "the engine ended the session with the TLS alert protocol_version (it does not speak TLS 1.2 or 1.3)",
            ),
            (
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
                "the engine did not answer in TLS (is this a port without TLS? then unset DOCKER_TLS_VERIFY)",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(explainer().cause(&error), want, "{error:?}");
        }
    }

    /// The shape of a real handshake failure: hyper-util's error over hyper-rustls' io::Error
    /// over tokio-rustls' io::Error over the rustls error.
    #[test]
    fn the_cause_is_found_inside_nested_io_errors() {
        #[derive(Debug)]
        struct Outer(io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let tls = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let e = Outer(io::Error::other(tls));
        let failure = explainer().explain(&e).expect("a TLS failure");
        assert_eq!(
            failure.to_string(),
            "TLS to tcp://127.0.0.1:2376 failed: the engine's certificate is not signed by the CA in /certs/ca.pem"
        );
        let refused = Outer(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
        assert!(explainer().explain(&refused).is_none());
    }
}
