//! The update check: asks each registry for the digest its tag points to now, with one HEAD of
//! `/v2/<repo>/manifests/<tag>` per distinct reference. HEAD is free where GET and pull are
//! counted (Docker Hub's pull limit), and it never moves bytes we would throw away.
//!
//! The API, for the update step:
//! - `check(refs, opts) -> BTreeMap<canonical reference, Answer>`: one answer per distinct
//!   reference (`ImageRef::canonical`); pinned references are answered `Pinned` without a
//!   request.
//! - `is_insecure(registry, list)`: whether the engine's insecure-registry list (CIDRs and
//!   `host[:port]` names) puts a registry on plain HTTP.
//! - The caller compares `Answer::Digest` with the local image through
//!   `reference::matches_local`; equal is up to date, different is a pull. `NoDigest` and
//!   `Failed` mean the registry could not tell: pull unless `GUERITE_PULL_FALLBACK=false`.
//!   `AuthRequired` and `RateLimited` mean a pull would be refused too; `Pinned` is never
//!   updated.
//!
//! How a batch goes, per registry (registries are asked in parallel):
//! - the first reference is asked alone, so the registry's authentication challenge is learned
//!   once; the others then authenticate up-front, in at most `per_registry` threads. A batch
//!   costs one HEAD per reference plus one challenged HEAD per registry that wants auth;
//!   bearer tokens are fetched once per repository;
//! - a 429, rejected credentials, or a registry that cannot be reached end that registry's
//!   checks for this run: every reference not yet asked gets the same answer without a request
//!   (requests already in flight finish). Asking again would only deepen a rate limit or lock
//!   an account.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use log::debug;
use serde::Deserialize;
use ureq::Agent;
use ureq::http::Response;

use crate::update::credentials::{self, Credentials, DockerConfig};
use crate::update::reference::{ImageRef, is_digest};

#[cfg(test)]
mod bed_tests;

/// Every manifest and index type: a registry only answers with the digest of what it would
/// serve for the listed types, and the engine pulls indexes, so the index digest is the one
/// `RepoDigests` holds.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.oci.image.manifest.v1+json";

/// Token answers are a few kilobytes; anything bigger is not a token service.
const TOKEN_BODY_LIMIT: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `sha256:…` the tag points to now.
    Digest(String),
    /// The registry answered, without a `Docker-Content-Digest` header.
    NoDigest,
    /// HTTP 429; nothing more is asked of that registry in this run.
    RateLimited { retry_after: Option<Duration> },
    /// No credentials, rejected ones, credentials that cannot be read, or a token realm that
    /// would take them in clear; one line. No pull follows: it would fare the same.
    AuthRequired(String),
    /// Anything else (not found, unreachable, timeout), one line naming the object.
    Failed(String),
    /// The reference names a digest: it means that one image forever, nothing to ask.
    Pinned,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Digest(d) => write!(f, "{d}"),
            Answer::NoDigest => f.write_str("the registry answered without a digest"),
            Answer::RateLimited {
                retry_after: Some(d),
            } => write!(
                f,
                "rate limited by the registry; retry after {} s",
                d.as_secs()
            ),
            Answer::RateLimited { retry_after: None } => {
                f.write_str("rate limited by the registry")
            }
            Answer::AuthRequired(m) | Answer::Failed(m) => f.write_str(m),
            Answer::Pinned => f.write_str("pinned to a digest; not updatable"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The engine's insecure registries (`RegistryConfig.InsecureRegistryCIDRs` and the names
    /// of its insecure index configs): those are asked over plain HTTP.
    pub insecure: Vec<String>,
    /// For each request, connection to last byte.
    pub timeout: Duration,
    /// Requests in flight at once per registry.
    pub per_registry: usize,
    /// The Docker config directory; `None` is `$DOCKER_CONFIG` or `~/.docker`.
    pub docker_config: Option<PathBuf>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            insecure: Vec::new(),
            timeout: Duration::from_secs(10),
            per_registry: 4,
            docker_config: None,
        }
    }
}

pub fn check(refs: &[ImageRef], opts: &CheckOptions) -> BTreeMap<String, Answer> {
    let mut answers = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut by_registry: BTreeMap<&str, Vec<&ImageRef>> = BTreeMap::new();
    for r in refs {
        let key = r.canonical();
        if !seen.insert(key.clone()) {
            continue;
        }
        if r.is_pinned() {
            answers.insert(key, Answer::Pinned);
            continue;
        }
        by_registry.entry(r.registry.as_str()).or_default().push(r);
    }
    let agent = agent(opts.timeout);
    let config_dir = opts.docker_config.clone().or_else(credentials::default_dir);
    let config = OnceLock::new();
    std::thread::scope(|s| {
        let running: Vec<_> = by_registry
            .iter()
            .map(|(name, refs)| {
                let registry = Registry {
                    name,
                    base: format!(
                        "{}://{}",
                        if is_insecure(name, &opts.insecure) {
                            "http"
                        } else {
                            "https"
                        },
                        refs[0].api_host()
                    ),
                    agent: &agent,
                    timeout: opts.timeout,
                    config_dir: config_dir.as_deref(),
                    config: &config,
                    credentials: OnceLock::new(),
                    challenge: Mutex::new(None),
                    tokens: Mutex::new(HashMap::new()),
                };
                let handle =
                    s.spawn(move || ask_each(refs, opts.per_registry, |r| registry.ask(r)));
                (refs, handle)
            })
            .collect();
        for (refs, handle) in running {
            let got = handle.join().unwrap_or_else(|_| {
                refs.iter()
                    .map(|r| Answer::Failed(format!("the check of {r} panicked")))
                    .collect()
            });
            answers.extend(refs.iter().map(|r| r.canonical()).zip(got));
        }
    });
    answers
}

fn agent(timeout: Duration) -> Agent {
    Agent::config_builder()
        // 401 and 429 are answers to read, not errors.
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .user_agent(concat!("guerite/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// An answer, and whether it also stands for every reference of the registry not yet asked.
#[derive(Debug, Clone, PartialEq)]
struct Reply {
    answer: Answer,
    ends_registry: bool,
}

impl Reply {
    fn one(answer: Answer) -> Reply {
        Reply {
            answer,
            ends_registry: false,
        }
    }

    fn last(answer: Answer) -> Reply {
        Reply {
            answer,
            ends_registry: true,
        }
    }
}

/// Asks about `items` of one registry, in order: the first alone, then at most `limit` at
/// once; once a verdict ends the registry, the rest get its answer without being asked.
fn ask_each<T: Sync>(items: &[T], limit: usize, ask: impl Fn(&T) -> Reply + Sync) -> Vec<Answer> {
    let Some(first) = items.first() else {
        return Vec::new();
    };
    let first = ask(first);
    let stop = Mutex::new(first.ends_registry.then(|| first.answer.clone()));
    let slots = Mutex::new(vec![None; items.len()]);
    slots.lock().unwrap_or_else(PoisonError::into_inner)[0] = Some(first.answer);
    let next = AtomicUsize::new(1);
    let workers = limit.max(1).min(items.len() - 1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    let stopped = stop.lock().unwrap_or_else(PoisonError::into_inner).clone();
                    let answer = match stopped {
                        Some(answer) => answer,
                        None => {
                            let v = ask(item);
                            if v.ends_registry {
                                stop.lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .get_or_insert_with(|| v.answer.clone());
                            }
                            v.answer
                        }
                    };
                    slots.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(answer);
                }
            });
        }
    });
    slots
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Answer::Failed("not asked".into())))
        .collect()
}

/// One registry's share of a batch: what it taught us so far (its challenge, tokens) and the
/// credentials, looked up the first time the registry asks for them.
struct Registry<'a> {
    name: &'a str,
    /// `https://host[:port]`, or `http://` for an insecure registry.
    base: String,
    agent: &'a Agent,
    timeout: Duration,
    config_dir: Option<&'a Path>,
    /// Shared by all registries of the batch: the file is read once, and only if needed.
    config: &'a OnceLock<Result<Option<DockerConfig>, String>>,
    credentials: OnceLock<Result<Option<Credentials>, String>>,
    challenge: Mutex<Option<Challenge>>,
    /// Bearer tokens by scope; a token for one repository serves all its tags.
    tokens: Mutex<HashMap<String, String>>,
}

impl Registry<'_> {
    fn ask(&self, r: &ImageRef) -> Reply {
        self.try_ask(r).unwrap_or_else(|v| v)
    }

    /// `Err` carries a verdict reached before the manifest could be asked about.
    fn try_ask(&self, r: &ImageRef) -> Result<Reply, Reply> {
        let Some(tag) = r.tag.as_deref() else {
            return Ok(Reply::one(Answer::Failed(format!("{r} names no tag"))));
        };
        let url = format!("{}/v2/{}/manifests/{tag}", self.base, r.repository);
        let known = self
            .challenge
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let (challenge, response) = match known {
            Some(c) => {
                let authorization = self.authorization(&c, r)?;
                (c, self.head(&url, Some(&authorization))?)
            }
            None => {
                let response = self.head(&url, None)?;
                if response.status() != 401 {
                    return Ok(self.classify(r, &response));
                }
                let c = pick(&challenges(&response)).ok_or_else(|| {
                    Reply::one(Answer::Failed(format!(
                        "{} answered 401 for {r} without a challenge guerite understands",
                        self.name
                    )))
                })?;
                *self
                    .challenge
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(c.clone());
                let authorization = self.authorization(&c, r)?;
                (c, self.head(&url, Some(&authorization))?)
            }
        };
        if response.status() == 401 {
            return self.refused(r, &challenge);
        }
        Ok(self.classify(r, &response))
    }

    fn head(&self, url: &str, authorization: Option<&str>) -> Result<Response<ureq::Body>, Reply> {
        let mut request = self.agent.head(url).header("Accept", MANIFEST_TYPES);
        if let Some(a) = authorization {
            request = request.header("Authorization", a);
        }
        let response = request.call().map_err(|e| {
            Reply::last(Answer::Failed(format!(
                "{} cannot be reached: {e}",
                self.name
            )))
        })?;
        debug!("HEAD {url}: {}", response.status());
        Ok(response)
    }

    fn classify(&self, r: &ImageRef, response: &Response<ureq::Body>) -> Reply {
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
        match response.status().as_u16() {
            200..=299 => match header("docker-content-digest").map(str::trim) {
                Some(d) if is_digest(d) => Reply::one(Answer::Digest(d.to_string())),
                Some(d) => Reply::one(Answer::Failed(format!(
                    "{} answered a malformed digest {d:?} for {r}",
                    self.name
                ))),
                None => Reply::one(Answer::NoDigest),
            },
            404 => Reply::one(Answer::Failed(format!("{r} not found on {}", self.name))),
            403 => Reply::one(Answer::AuthRequired(format!(
                "{} refused access to {r}",
                self.name
            ))),
            429 => Reply::last(Answer::RateLimited {
                retry_after: header("retry-after").and_then(|v| parse_retry_after(v, Utc::now())),
            }),
            status => Reply::one(Answer::Failed(format!(
                "{} answered HTTP {status} for {r}",
                self.name
            ))),
        }
    }

    /// A 401 to a request that carried what the challenge asked for.
    fn refused(&self, r: &ImageRef, challenge: &Challenge) -> Result<Reply, Reply> {
        let credentials = self.credentials()?;
        Ok(match (challenge.scheme.as_str(), credentials) {
            // The same password goes with every request: all of them would fail alike.
            ("basic", _) => Reply::last(Answer::AuthRequired(format!(
                "credentials for {} rejected",
                self.name
            ))),
            (_, Some(_)) => Reply::one(Answer::AuthRequired(format!(
                "the credentials for {} do not allow pulling {r}",
                self.name
            ))),
            (_, None) => Reply::one(Answer::AuthRequired(self.no_credentials())),
        })
    }

    fn no_credentials(&self) -> String {
        match self.config_dir {
            Some(dir) => format!(
                "authentication required by {}; {} has no credentials for it",
                self.name,
                dir.join("config.json").display()
            ),
            None => format!(
                "authentication required by {}; no Docker config to read credentials from",
                self.name
            ),
        }
    }

    /// The `Authorization` value that answers `challenge` for `r`.
    fn authorization(&self, challenge: &Challenge, r: &ImageRef) -> Result<String, Reply> {
        match challenge.scheme.as_str() {
            "basic" => match self.credentials()? {
                Some(c) => c.basic_authorization().ok_or_else(|| {
                    Reply::last(Answer::AuthRequired(format!(
                        "{} wants a password; its credentials hold only an identity token",
                        self.name
                    )))
                }),
                None => Err(Reply::last(Answer::AuthRequired(self.no_credentials()))),
            },
            "bearer" => Ok(format!("Bearer {}", self.token(challenge, r)?)),
            other => Err(Reply::last(Answer::Failed(format!(
                "{} asks for {other} authentication, which guerite does not support",
                self.name
            )))),
        }
    }

    /// A pull token for `r`'s repository from the challenge's realm: anonymous, with basic
    /// credentials, or by exchanging an identity token (OAuth refresh token).
    fn token(&self, challenge: &Challenge, r: &ImageRef) -> Result<String, Reply> {
        let scope = format!("repository:{}:pull", r.repository);
        if let Some(t) = self
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&scope)
        {
            return Ok(t.clone());
        }
        let realm = challenge.param("realm").ok_or_else(|| {
            Reply::last(Answer::Failed(format!(
                "{} sent a bearer challenge without a realm",
                self.name
            )))
        })?;
        // Not `Failed`: its pull fallback would hand the same credentials to the engine, which
        // would send them to the same realm.
        downgrade(self.name, &self.base, realm)
            .map_err(|e| Reply::last(Answer::AuthRequired(e)))?;
        let service = challenge.param("service");
        let credentials = self.credentials()?;
        let sent = match credentials.and_then(|c| c.identity_token.as_deref()) {
            Some(refresh) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("client_id", "guerite"),
                    ("refresh_token", refresh),
                    ("scope", &scope),
                ];
                form.extend(service.map(|s| ("service", s)));
                self.agent.post(realm).send_form(form)
            }
            None => {
                let mut request = self.agent.get(realm).query("scope", &scope);
                if let Some(s) = service {
                    request = request.query("service", s);
                }
                if let Some(b) = credentials.and_then(Credentials::basic_authorization) {
                    request = request.header("Authorization", b);
                }
                request.call()
            }
        };
        let mut response = sent.map_err(|e| {
            Reply::last(Answer::Failed(format!(
                "the token service of {} cannot be reached: {e}",
                self.name
            )))
        })?;
        debug!("token for {scope} from {realm}: {}", response.status());
        match response.status().as_u16() {
            200..=299 => {}
            401 | 403 if credentials.is_some() => {
                return Err(Reply::last(Answer::AuthRequired(format!(
                    "credentials for {} rejected",
                    self.name
                ))));
            }
            401 | 403 => return Err(Reply::last(Answer::AuthRequired(self.no_credentials()))),
            429 => {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, Utc::now()));
                return Err(Reply::last(Answer::RateLimited { retry_after }));
            }
            status => {
                return Err(Reply::one(Answer::Failed(format!(
                    "the token service of {} answered HTTP {status} for {r}",
                    self.name
                ))));
            }
        }
        let token = response
            .body_mut()
            .with_config()
            .limit(TOKEN_BODY_LIMIT)
            .read_to_string()
            .ok()
            .and_then(|body| parse_token(&body))
            .ok_or_else(|| {
                Reply::one(Answer::Failed(format!(
                    "the token service of {} answered without a token",
                    self.name
                )))
            })?;
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(scope, token.clone());
        Ok(token)
    }

    fn credentials(&self) -> Result<Option<&Credentials>, Reply> {
        let found = self.credentials.get_or_init(|| {
            let config = self.config.get_or_init(|| match self.config_dir {
                Some(dir) => DockerConfig::load(dir)
                    .map(Some)
                    .map_err(|e| format!("{e:#}")),
                None => Ok(None),
            });
            match config {
                Ok(Some(c)) => c
                    .lookup(self.name, self.timeout)
                    .map_err(|e| format!("{e:#}")),
                Ok(None) => Ok(None),
                Err(e) => Err(e.clone()),
            }
        });
        match found {
            Ok(c) => Ok(c.as_ref()),
            Err(e) => Err(Reply::last(Answer::AuthRequired(format!(
                "no credentials for {}: {e}",
                self.name
            )))),
        }
    }
}

fn parse_token(body: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct TokenAnswer {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
    }
    let answer: TokenAnswer = serde_json::from_str(body).ok()?;
    answer
        .token
        .filter(|t| !t.is_empty())
        .or(answer.access_token.filter(|t| !t.is_empty()))
}

/// One challenge of a `WWW-Authenticate` header; scheme and parameter names lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    params: Vec<(String, String)>,
}

impl Challenge {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn challenges(response: &Response<ureq::Body>) -> Vec<Challenge> {
    response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

/// Bearer when offered (it is how tokens scoped to one repository are had), else basic.
fn pick(offered: &[Challenge]) -> Option<Challenge> {
    ["bearer", "basic"]
        .iter()
        .find_map(|s| offered.iter().find(|c| c.scheme == *s))
        .or(offered.first())
        .cloned()
}

/// RFC 7235 challenges: `Scheme k=v, k="quoted, \"escaped\""`, possibly several in one
/// header, separated by commas like the parameters: a name not followed by `=` starts the next.
fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if rest.is_empty() {
            return out;
        }
        let end = rest
            .find(|c: char| c == ',' || c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let name = rest[..end].to_ascii_lowercase();
        rest = rest[end..].trim_start();
        let Some(after) = rest.strip_prefix('=') else {
            out.push(Challenge {
                scheme: name,
                params: Vec::new(),
            });
            continue;
        };
        let (value, after) = parse_value(after.trim_start());
        rest = after;
        match out.last_mut() {
            Some(c) => c.params.push((name, value)),
            // A parameter before any scheme: not a challenge; drop it.
            None => continue,
        }
    }
}

/// A quoted string (backslash escapes the next character) or a token up to `,`/space.
fn parse_value(s: &str) -> (String, &str) {
    let Some(quoted) = s.strip_prefix('"') else {
        let end = s
            .find(|c: char| c == ',' || c.is_whitespace())
            .unwrap_or(s.len());
        return (s[..end].to_string(), &s[end..]);
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            '"' => return (value, &quoted[i + 1..]),
            c => value.push(c),
        }
    }
    // Unterminated: take what there is rather than nothing.
    (value, "")
}

/// `Retry-After`: seconds, or an HTTP date; a date in the past means now.
fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// Whether the engine would talk plain HTTP to `registry` (`host[:port]`): its name is listed
/// as is, or it is an IP address (or `localhost`) inside a listed CIDR. Names are not resolved,
/// so a CIDR only covers registries written as addresses or `localhost`.
pub fn is_insecure(registry: &str, list: &[String]) -> bool {
    let host = host_of(registry);
    let addresses: Vec<IpAddr> = if host.eq_ignore_ascii_case("localhost") {
        vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
    } else {
        host.parse().into_iter().collect()
    };
    list.iter().any(|entry| {
        let entry = entry.trim();
        let entry = entry
            .strip_prefix("http://")
            .or_else(|| entry.strip_prefix("https://"))
            .unwrap_or(entry);
        match parse_cidr(entry) {
            Some((net, bits)) => addresses.iter().any(|a| in_cidr(*a, net, bits)),
            None => entry.trim_end_matches('/').eq_ignore_ascii_case(registry),
        }
    })
}

/// The host of `host[:port]`, without the brackets of an IPv6 address.
fn host_of(registry: &str) -> &str {
    if let Some(inner) = registry.strip_prefix('[') {
        return inner.split(']').next().unwrap_or(inner);
    }
    match registry.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    }
}

fn parse_cidr(entry: &str) -> Option<(IpAddr, u8)> {
    let (net, bits) = entry.split_once('/')?;
    Some((net.parse().ok()?, bits.parse().ok()?))
}

fn in_cidr(address: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (address, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// A token request carries the registry's credentials (or yields a token that is as good): a
/// realm on plain HTTP for a registry asked over HTTPS would send them in clear, and is what a
/// tampered challenge looks like. The engine's insecure registries are on HTTP already.
fn downgrade(registry: &str, base: &str, realm: &str) -> Result<(), String> {
    let scheme = |url: &str, s: &str| {
        url.get(..s.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(s))
    };
    if scheme(base, "https://") && !scheme(realm, "https://") {
        return Err(format!(
            "{registry} is asked over HTTPS but its bearer realm {} is not: refused, so that no \
             credentials go in clear",
            crate::config::echo(realm)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    fn ch(scheme: &str, params: &[(&str, &str)]) -> Challenge {
        Challenge {
            scheme: scheme.into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn challenges_parse() {
        let cases: &[(&str, Vec<Challenge>)] = &[
            (
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
                vec![ch(
                    "bearer",
                    &[
                        ("realm", "https://auth.docker.io/token"),
                        ("service", "registry.docker.io"),
                        ("scope", "repository:library/nginx:pull"),
                    ],
                )],
            ),
            // Commas inside quotes, spaces around separators, a case-folded scheme and name.
            (
                r#"BEARER Realm = "https://r.example/t?a=1,b=2" , scope="repository:a/b:pull,push""#,
                vec![ch(
                    "bearer",
                    &[
                        ("realm", "https://r.example/t?a=1,b=2"),
                        ("scope", "repository:a/b:pull,push"),
                    ],
                )],
            ),
            (
                r#"Basic realm="guerite-testbed""#,
                vec![ch("basic", &[("realm", "guerite-testbed")])],
            ),
            (
                r#"Basic realm="say \"hi\", then \\ go", charset=UTF-8"#,
                vec![ch(
                    "basic",
                    &[("realm", r#"say "hi", then \ go"#), ("charset", "UTF-8")],
                )],
            ),
            // Two challenges in one header.
            (
                r#"Basic realm="a", Bearer realm="https://t", service=reg"#,
                vec![
                    ch("basic", &[("realm", "a")]),
                    ch("bearer", &[("realm", "https://t"), ("service", "reg")]),
                ],
            ),
            ("Negotiate", vec![ch("negotiate", &[])]),
            ("", vec![]),
            ("realm=orphan", vec![]),
            (
                r#"Bearer realm="unterminated"#,
                vec![ch("bearer", &[("realm", "unterminated")])],
            ),
        ];
        for (header, want) in cases {
            assert_eq!(&parse_challenges(header), want, "{header}");
        }
    }

    #[test]
    fn bearer_is_preferred_then_basic() {
        let basic = ch("basic", &[]);
        let bearer = ch("bearer", &[]);
        let other = ch("negotiate", &[]);
        assert_eq!(pick(&[basic.clone(), bearer.clone()]), Some(bearer.clone()));
        assert_eq!(pick(&[other.clone(), basic.clone()]), Some(basic));
        assert_eq!(pick(std::slice::from_ref(&other)), Some(other));
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn tokens_come_under_either_name() {
        assert_eq!(
            parse_token(r#"{"token":"a","expires_in":300}"#).as_deref(),
            Some("a")
        );
        assert_eq!(parse_token(r#"{"access_token":"b"}"#).as_deref(), Some("b"));
        assert_eq!(
            parse_token(r#"{"token":"","access_token":"c"}"#).as_deref(),
            Some("c")
        );
        assert_eq!(parse_token(r#"{"error":"x"}"#), None);
        assert_eq!(parse_token("<html>"), None);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cases: &[(&str, Option<u64>)] = &[
            ("120", Some(120)),
            (" 0 ", Some(0)),
            ("Sat, 21 Nov 2026 12:01:30 GMT", Some(90)),
            ("Sat, 21 Nov 2026 11:00:00 GMT", Some(0)),
            ("-5", None),
            ("soon", None),
            ("", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                parse_retry_after(value, now),
                want.map(Duration::from_secs),
                "{value:?}"
            );
        }
    }

    #[test]
    fn insecure_registries_by_cidr_or_name() {
        let list: Vec<String> = [
            "127.0.0.0/8",
            "::1/128",
            "10.1.0.0/16",
            "reg.lan:5000",
            "http://old.lan",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cases: &[(&str, bool)] = &[
            ("127.0.0.1:5000", true),
            ("127.9.9.9", true),
            ("localhost:5000", true),
            ("localhost", true),
            ("LOCALHOST:1", true),
            ("[::1]:5000", true),
            ("10.1.200.3:443", true),
            ("10.2.0.1:5000", false),
            ("reg.lan:5000", true),
            ("REG.lan:5000", true),
            // Docker matches names with their port.
            ("reg.lan", false),
            ("reg.lan:5001", false),
            ("old.lan", true),
            ("docker.io", false),
            ("ghcr.io", false),
            ("128.0.0.1", false),
        ];
        for (registry, want) in cases {
            assert_eq!(is_insecure(registry, &list), *want, "{registry}");
        }
        assert!(!is_insecure("127.0.0.1:5000", &[]));
        assert!(is_insecure("8.8.8.8", &["0.0.0.0/0".to_string()]));
        assert!(!is_insecure("127.0.0.1", &["127.0.0.0/33".to_string()]));
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn digest() -> Reply {
        Reply::one(Answer::Digest(D.into()))
    }

    #[test]
    fn a_registry_ending_verdict_answers_the_rest_without_asking() {
        let limited = Answer::RateLimited {
            retry_after: Some(Duration::from_secs(60)),
        };
        let asked = AtomicUsize::new(0);
        // One at a time, so which items were asked is certain.
        let answers = ask_each(&[0, 1, 2, 3, 4], 1, |i| {
            asked.fetch_add(1, Ordering::SeqCst);
            if *i == 2 {
                Reply::last(limited.clone())
            } else {
                digest()
            }
        });
        assert_eq!(asked.load(Ordering::SeqCst), 3);
        assert_eq!(
            answers,
            vec![
                Answer::Digest(D.into()),
                Answer::Digest(D.into()),
                limited.clone(),
                limited.clone(),
                limited
            ]
        );

        let asked = AtomicUsize::new(0);
        let rejected = Answer::AuthRequired("credentials for r rejected".into());
        let answers = ask_each(&[0, 1, 2, 3, 4, 5, 6], 4, |_| {
            asked.fetch_add(1, Ordering::SeqCst);
            Reply::last(rejected.clone())
        });
        assert_eq!(asked.load(Ordering::SeqCst), 1, "the first is asked alone");
        assert_eq!(answers, vec![rejected; 7]);
    }

    #[test]
    fn concurrency_is_bounded_and_the_first_goes_alone() {
        let in_flight = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let first_done = AtomicBool::new(false);
        let early = AtomicBool::new(false);
        let items: Vec<usize> = (0..16).collect();
        let answers = ask_each(&items, 3, |i| {
            if *i != 0 && !first_done.load(Ordering::SeqCst) {
                early.store(true, Ordering::SeqCst);
            }
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            in_flight.fetch_sub(1, Ordering::SeqCst);
            if *i == 0 {
                first_done.store(true, Ordering::SeqCst);
            }
            Reply::one(Answer::Failed(format!("item {i}")))
        });
        assert!(
            !early.load(Ordering::SeqCst),
            "asked before the first answered"
        );
        let most = most.load(Ordering::SeqCst);
        assert!((2..=3).contains(&most), "{most} in flight");
        // Answers keep the order of the items.
        let want: Vec<Answer> = items
            .iter()
            .map(|i| Answer::Failed(format!("item {i}")))
            .collect();
        assert_eq!(answers, want);
    }

    #[test]
    fn degenerate_batches() {
        assert!(ask_each(&[] as &[u8], 4, |_| digest()).is_empty());
        assert_eq!(ask_each(&[1], 0, |_| digest()).len(), 1);
        assert_eq!(ask_each(&[1, 2, 3], 0, |_| digest()).len(), 3);
    }

    #[test]
    fn a_silent_registry_costs_one_timeout() {
        // The kernel completes connections to a listener that never accepts: requests are
        // sent and never answered.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let registry = listener.local_addr().unwrap().to_string();
        let opts = CheckOptions {
            insecure: vec!["127.0.0.0/8".into()],
            timeout: Duration::from_millis(500),
            per_registry: 4,
            docker_config: Some(std::env::temp_dir().join("guerite-no-docker-config")),
        };
        let refs: Vec<ImageRef> = ["a:1", "b:1", "c:1"]
            .iter()
            .map(|p| ImageRef::parse(&format!("{registry}/{p}")).unwrap())
            .collect();
        let started = Instant::now();
        let answers = check(&refs, &opts);
        let took = started.elapsed();
        assert!(
            (Duration::from_millis(500)..Duration::from_millis(1500)).contains(&took),
            "{took:?}"
        );
        assert_eq!(answers.len(), 3);
        for answer in answers.values() {
            match answer {
                Answer::Failed(says) => assert!(
                    says.starts_with(&format!("{registry} cannot be reached"))
                        && says.contains("timeout"),
                    "{says}"
                ),
                a => panic!("{a:?}"),
            }
        }
        drop(listener);
    }

    #[test]
    fn duplicates_are_asked_once_and_pinned_ones_not_at_all() {
        // Nothing listens on port 9 of loopback: every request that is made fails fast.
        let opts = CheckOptions {
            insecure: vec!["127.0.0.0/8".into()],
            timeout: Duration::from_secs(2),
            per_registry: 4,
            docker_config: Some(std::env::temp_dir().join("guerite-no-docker-config")),
        };
        let refs: Vec<ImageRef> = [
            "127.0.0.1:9/a:1",
            "127.0.0.1:9/a:1",
            "127.0.0.1:9/b",
            "127.0.0.1:9/b:latest",
            &format!("127.0.0.1:9/c@{D}"),
        ]
        .iter()
        .map(|s| ImageRef::parse(s).unwrap())
        .collect();
        let started = Instant::now();
        let answers = check(&refs, &opts);
        assert!(started.elapsed() < Duration::from_secs(5));
        let keys: Vec<&str> = answers.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            vec![
                "127.0.0.1:9/a:1",
                "127.0.0.1:9/b:latest",
                &format!("127.0.0.1:9/c@{D}")
            ]
        );
        for (key, answer) in &answers {
            match answer {
                Answer::Pinned => assert!(key.contains('@'), "{key}"),
                Answer::Failed(says) => {
                    assert!(
                        says.starts_with("127.0.0.1:9 cannot be reached"),
                        "{key}: {says}"
                    )
                }
                a => panic!("{key}: {a:?}"),
            }
        }
    }

    #[test]
    fn a_realm_that_leaves_https_is_refused() {
        let refused = |r: &str, realm: &str| {
            format!(
                "{r} is asked over HTTPS but its bearer realm \"{realm}\" is not: refused, so \
                 that no credentials go in clear"
            )
        };
        let cases = [
            (
                "ghcr.io",
                "https://ghcr.io",
                "https://ghcr.io/token",
                Ok(()),
            ),
            ("r.lan", "https://r.lan:5000", "HTTPS://auth.lan/t", Ok(())),
            (
                "ghcr.io",
                "https://ghcr.io",
                "http://ghcr.io/token",
                Err(refused("ghcr.io", "http://ghcr.io/token")),
            ),
            (
                "r.lan",
                "https://r.lan",
                "HTTP://evil/t",
                Err(refused("r.lan", "HTTP://evil/t")),
            ),
            (
                "r.lan",
                "https://r.lan",
                "ftp://r.lan/t",
                Err(refused("r.lan", "ftp://r.lan/t")),
            ),
            ("r.lan", "https://r.lan", "", Err(refused("r.lan", ""))),
            // An insecure registry is on HTTP already: its realm may be too.
            (
                "127.0.0.1:5000",
                "http://127.0.0.1:5000",
                "http://127.0.0.1:5001/t",
                Ok(()),
            ),
            (
                "127.0.0.1:5000",
                "http://127.0.0.1:5000",
                "https://auth/t",
                Ok(()),
            ),
        ];
        for (registry, base, realm, want) in cases {
            assert_eq!(downgrade(registry, base, realm), want, "{base} {realm}");
        }
    }
}
