//! Image references as Docker normalises them: `nginx` is `docker.io/library/nginx:latest`. Pure;
//! the registry check and the comparison with the local image's `RepoDigests` both start here.

use std::fmt;

use anyhow::{Result, bail};

pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API actually answers; `docker.io` itself only redirects.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The key Docker has always stored Hub credentials under, and the server address the engine
/// expects in `X-Registry-Auth` for Hub.
pub const DOCKER_HUB_CREDENTIAL_KEY: &str = "https://index.docker.io/v1/";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`, `localhost`, `[::1]:5000`.
    pub registry: String,
    /// The path inside the registry, `library/` added for Hub's official images.
    pub repository: String,
    /// `None` only when the reference is pinned by digest and names no tag.
    pub tag: Option<String>,
    /// `sha256:<hex>` when pinned.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses what an operator can put in `docker run`, the way Docker reads it. A bare image
    /// ID is refused: it names one image forever, so there is nothing to update it to.
    pub fn parse(text: &str) -> Result<ImageRef> {
        let s = text.trim();
        if s.is_empty() {
            bail!("empty image reference");
        }
        if is_image_id(s) {
            bail!("{s} is an image ID, not a reference; it cannot be updated");
        }
        let (name, digest) = match s.split_once('@') {
            Some((name, digest)) => {
                if !is_digest(digest) {
                    bail!("image reference {s:?}: {digest:?} is not a valid digest");
                }
                (name, Some(digest.to_string()))
            }
            None => (s, None),
        };
        // A tag's colon comes after the last slash; an earlier one is a registry's port.
        let (name, tag) = match name.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t)),
            _ => (name, None),
        };
        if let Some(t) = tag
            && !is_tag(t)
        {
            bail!("image reference {s:?}: {t:?} is not a valid tag");
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if is_registry(first) => (first, rest),
            _ => (DOCKER_HUB, name),
        };
        let registry = match registry {
            "index.docker.io" => DOCKER_HUB,
            r => r,
        };
        if !is_repository(path) {
            bail!(
                "image reference {s:?}: {path:?} is not a valid repository name (lowercase letters, digits and . _ - separators)"
            );
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(ImageRef {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// Pinned references name one manifest forever: there is nothing to check.
    pub fn is_pinned(&self) -> bool {
        self.digest.is_some()
    }

    /// The fully spelled-out reference, the same for every way of writing it; the dedup key.
    pub fn canonical(&self) -> String {
        let mut out = format!("{}/{}", self.registry, self.repository);
        if let Some(t) = &self.tag {
            out.push(':');
            out.push_str(t);
        }
        if let Some(d) = &self.digest {
            out.push('@');
            out.push_str(d);
        }
        out
    }

    /// `host[:port]` that answers the registry API for this reference.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    fn same_repository(&self, other: &ImageRef) -> bool {
        self.registry == other.registry && self.repository == other.repository
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// Whether the registry's digest is one the local image was pulled or pushed as. RepoDigests
/// hold one `name@digest` per repository the image came from, in Docker's short spelling
/// (`nginx@sha256:…`), so they are compared by repository, not as strings.
pub fn matches_local(answer_digest: &str, repo_digests: &[String], image: &ImageRef) -> bool {
    repo_digests.iter().any(|entry| {
        ImageRef::parse(entry).is_ok_and(|local| {
            local.same_repository(image) && local.digest.as_deref() == Some(answer_digest)
        })
    })
}

/// `sha256:<64 hex>` or 64 hex alone: Docker's image IDs.
fn is_image_id(s: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn is_digest(s: &str) -> bool {
    let Some((algorithm, hex)) = s.split_once(':') else {
        return false;
    };
    let hex_ok =
        |len| hex.len() == len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match algorithm {
        "sha256" => hex_ok(64),
        "sha512" => hex_ok(128),
        _ => false,
    }
}

fn is_tag(t: &str) -> bool {
    let mut bytes = t.bytes();
    t.len() <= 128
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Docker's rule: the first component names a registry when it could not be a repository
/// component (a dot, a port, uppercase) or is `localhost`.
fn is_registry(first: &str) -> bool {
    first == "localhost"
        || first.contains(['.', ':'])
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

fn is_repository(path: &str) -> bool {
    path.len() <= 255 && !path.is_empty() && path.split('/').all(is_component)
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
fn is_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalises_like_docker() {
        let d = D;
        // (reference, registry, repository, tag, digest)
        type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);
        let cases: &[Case] = &[
            ("nginx", "docker.io", "library/nginx", Some("latest"), None),
            (
                "nginx:1.27",
                "docker.io",
                "library/nginx",
                Some("1.27"),
                None,
            ),
            ("user/app:1", "docker.io", "user/app", Some("1"), None),
            (
                "docker.io/nginx",
                "docker.io",
                "library/nginx",
                Some("latest"),
                None,
            ),
            (
                "index.docker.io/user/app",
                "docker.io",
                "user/app",
                Some("latest"),
                None,
            ),
            ("ghcr.io/o/a:tag", "ghcr.io", "o/a", Some("tag"), None),
            (
                "127.0.0.1:5000/a/b:tag",
                "127.0.0.1:5000",
                "a/b",
                Some("tag"),
                None,
            ),
            (
                "127.0.0.1:5000/a/b",
                "127.0.0.1:5000",
                "a/b",
                Some("latest"),
                None,
            ),
            ("localhost/x", "localhost", "x", Some("latest"), None),
            ("localhost:5000/x:2", "localhost:5000", "x", Some("2"), None),
            ("[::1]:5000/x:2", "[::1]:5000", "x", Some("2"), None),
            (
                "a/b/c/d:v1.0-rc_1",
                "docker.io",
                "a/b/c/d",
                Some("v1.0-rc_1"),
                None,
            ),
            (
                "my_org/my-app__x",
                "docker.io",
                "my_org/my-app__x",
                Some("latest"),
                None,
            ),
            (
                "repo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "docker.io",
                "library/repo",
                None,
                Some(d),
            ),
            (
                "ghcr.io/o/a:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "ghcr.io",
                "o/a",
                Some("1"),
                Some(d),
            ),
        ];
        for (text, registry, repository, tag, digest) in cases {
            let r = ImageRef::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(r.registry, *registry, "{text}");
            assert_eq!(r.repository, *repository, "{text}");
            assert_eq!(r.tag.as_deref(), *tag, "{text}");
            assert_eq!(r.digest.as_deref(), *digest, "{text}");
            assert_eq!(r.is_pinned(), digest.is_some(), "{text}");
        }
    }

    #[test]
    fn canonical_is_the_same_for_every_spelling() {
        for (a, b) in [
            ("nginx", "docker.io/library/nginx:latest"),
            ("library/nginx:latest", "index.docker.io/library/nginx"),
            ("127.0.0.1:5000/a/b", "127.0.0.1:5000/a/b:latest"),
        ] {
            assert_eq!(
                ImageRef::parse(a).unwrap().canonical(),
                ImageRef::parse(b).unwrap().canonical()
            );
        }
        assert_eq!(
            ImageRef::parse("nginx").unwrap().canonical(),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(
            ImageRef::parse(&format!("a/b:1@{D}")).unwrap().canonical(),
            format!("docker.io/a/b:1@{D}")
        );
        assert_ne!(
            ImageRef::parse("nginx").unwrap().canonical(),
            ImageRef::parse("nginx:1").unwrap().canonical()
        );
    }

    #[test]
    fn api_host_for_hub_is_its_registry_endpoint() {
        assert_eq!(
            ImageRef::parse("nginx").unwrap().api_host(),
            "registry-1.docker.io"
        );
        assert_eq!(
            ImageRef::parse("127.0.0.1:5000/a").unwrap().api_host(),
            "127.0.0.1:5000"
        );
    }

    #[test]
    fn refuses_ids_and_malformed_references() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        for (text, says) in [
            (format!("sha256:{id}"), "is an image ID"),
            (id.to_string(), "is an image ID"),
            (String::new(), "empty"),
            ("Nginx".into(), "not a valid repository"),
            ("user/App".into(), "not a valid repository"),
            ("a//b".into(), "not a valid repository"),
            ("a/-b".into(), "not a valid repository"),
            ("a/b.".into(), "not a valid repository"),
            ("a/b:".into(), "not a valid tag"),
            ("a/b:-x".into(), "not a valid tag"),
            ("a/b:x y".into(), "not a valid tag"),
            ("ghcr.io/".into(), "not a valid repository"),
            ("a@sha256:abc".into(), "not a valid digest"),
            ("a@md5:0123".into(), "not a valid digest"),
        ] {
            let e = ImageRef::parse(&text).expect_err(&text).to_string();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn repo_digests_match_by_repository() {
        let other = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let hub = ImageRef::parse("nginx:1.27").unwrap();
        let local = ImageRef::parse("127.0.0.1:5000/a/b:1").unwrap();
        let cases: &[(&str, &[&str], &ImageRef, bool)] = &[
            (
                D,
                &["nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"],
                &hub,
                true,
            ),
            (
                D,
                &[
                    "docker.io/library/nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                ],
                &hub,
                true,
            ),
            (
                other,
                &["nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"],
                &hub,
                false,
            ),
            // Same digest, but recorded for another repository: the image came from elsewhere.
            (
                D,
                &[
                    "other/nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                ],
                &hub,
                false,
            ),
            (
                D,
                &[
                    "127.0.0.1:5000/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                ],
                &local,
                true,
            ),
            (
                D,
                &[
                    "127.0.0.1:5001/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                ],
                &local,
                false,
            ),
            (
                D,
                &[
                    "127.0.0.1:5000/a/c@sha256:1111111111111111111111111111111111111111111111111111111111111111",
                    "127.0.0.1:5000/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                ],
                &local,
                true,
            ),
            (D, &[], &local, false),
            (D, &["garbage"], &local, false),
        ];
        for (i, (digest, repo_digests, image, want)) in cases.iter().enumerate() {
            let repo_digests: Vec<String> = repo_digests.iter().map(|s| s.to_string()).collect();
            assert_eq!(
                matches_local(digest, &repo_digests, image),
                *want,
                "case {i}"
            );
        }
    }
}
