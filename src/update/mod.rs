//! Update detection: which due updates have a newer image, asked of the registry with one HEAD
//! per distinct reference before anything is pulled. `decide` is pure; `check_all` and `pull`
//! are the edges.

pub mod credentials;
pub mod reference;
pub mod registry;

use std::collections::HashMap;
use std::time::Duration;

use log::warn;

use crate::action::ActionKind;
use crate::engine::api::{CallError, Engine, PullAuth};
use crate::engine::{Details, ImageInfo};
use crate::plan::labels::Modifiers;
use crate::plan::{Decision, Plan};
use crate::update::reference::{ImageRef, matches_local};
use credentials::DockerConfig;
use registry::{Answer, CheckOptions};

const CREDENTIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// What is known of one container's update before anything is pulled.
#[derive(Debug, Clone)]
pub struct Checked {
    pub details: Details,
    pub local: Option<ImageInfo>,
    pub reference: Result<ImageRef, String>,
    pub answer: Option<Answer>,
}

/// The next step for one due update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    UpToDate,
    /// Pull the reference; the digest is the registry's, when it gave one.
    Pull {
        digest: Option<String>,
    },
    /// No pulling allowed: replace the container if the local image of the reference is newer.
    UseLocal,
    /// monitor_only: say so, never pull.
    Available {
        digest: String,
    },
    /// This digest was rolled back before: not tried again until the registry serves another.
    Quarantined {
        digest: String,
    },
    Skip(String),
    Fail(String),
}

pub fn decide(
    c: &Checked,
    modifiers: Modifiers,
    quarantined: Option<&str>,
    pull_fallback: bool,
) -> Next {
    let reference = match &c.reference {
        Ok(r) => r,
        Err(why) => return Next::Skip(why.clone()),
    };
    if reference.is_pinned() {
        return Next::Skip(Answer::Pinned.to_string());
    }
    if modifiers.no_pull && !modifiers.monitor_only {
        return Next::UseLocal;
    }
    let repo_digests = c
        .local
        .as_ref()
        .map(|i| i.repo_digests.as_slice())
        .unwrap_or_default();
    match &c.answer {
        Some(Answer::Digest(d)) if matches_local(d, repo_digests, reference) => Next::UpToDate,
        Some(Answer::Digest(d)) if quarantined == Some(d.as_str()) => {
            Next::Quarantined { digest: d.clone() }
        }
        Some(Answer::Digest(d)) if modifiers.monitor_only => Next::Available { digest: d.clone() },
        Some(Answer::Digest(d)) => Next::Pull {
            digest: Some(d.clone()),
        },
        Some(Answer::Pinned) => Next::Skip(Answer::Pinned.to_string()),
        Some(a @ Answer::RateLimited { .. }) => Next::Skip(a.to_string()),
        // A pull would be refused for the same reason: say it once, clearly.
        Some(Answer::AuthRequired(why)) => Next::Fail(why.clone()),
        Some(other) if modifiers.monitor_only => Next::Fail(format!(
            "cannot tell whether an update is available: {other}"
        )),
        Some(other) if pull_fallback => {
            warn!("{}: {other}; pulling to find out", reference);
            Next::Pull { digest: None }
        }
        Some(other) => Next::Fail(format!(
            "{other} (GUERITE_PULL_FALLBACK=false: not pulling)"
        )),
        None => Next::Fail("the registry was not asked".into()),
    }
}

/// Why a container's reference cannot be updated, if it cannot.
fn reference_of(d: &Details) -> Result<ImageRef, String> {
    let bare = d.image.strip_prefix("sha256:").unwrap_or(&d.image);
    let image_id = d.image_id.strip_prefix("sha256:").unwrap_or(&d.image_id);
    if bare.len() >= 12 && image_id.starts_with(bare) {
        return Err(
            "created from an image ID, not a reference: there is no newer version to look for"
                .into(),
        );
    }
    ImageRef::parse(&d.image).map_err(|e| format!("{e:#}"))
}

/// What the engine knows of one container's image and reference; `None` if it is gone.
pub async fn inspect(docker: &impl Engine, id: &str) -> Option<Checked> {
    let details = docker.details(id).await.ok()?;
    let local = docker.image(&details.image_id).await.ok();
    let reference = reference_of(&details);
    Some(Checked {
        details,
        local,
        reference,
        answer: None,
    })
}

/// Asks the registries about every checked reference, each distinct reference once.
pub async fn ask(docker: &impl Engine, checked: &mut [&mut Checked]) {
    let refs: Vec<ImageRef> = checked
        .iter()
        .filter_map(|c| c.reference.as_ref().ok())
        .filter(|r| !r.is_pinned())
        .cloned()
        .collect();
    if refs.is_empty() {
        return;
    }
    let insecure = docker.insecure_registries().await.unwrap_or_else(|e| {
        warn!("{e:#}; treating only loopback registries as plain HTTP");
        vec!["127.0.0.0/8".into()]
    });
    let options = CheckOptions {
        insecure,
        ..CheckOptions::default()
    };
    // ureq blocks; nothing else runs on this thread meanwhile, so a blocking call is fine.
    let answers = registry::check(&refs, &options);
    for c in checked.iter_mut() {
        if let Ok(r) = &c.reference {
            c.answer = answers.get(&r.canonical()).cloned();
        }
    }
}

/// Inspects every container with a due update and asks the registries about their references.
pub async fn check_all(docker: &impl Engine, plan: &Plan<'_>) -> HashMap<String, Checked> {
    let mut checked = HashMap::new();
    for planned in &plan.containers {
        let due = planned
            .verdicts
            .iter()
            .any(|v| v.kind == Some(ActionKind::Update) && matches!(v.decision, Decision::Act(_)));
        if due && let Some(c) = inspect(docker, &planned.container.id).await {
            checked.insert(planned.container.name.clone(), c);
        }
    }
    let mut all: Vec<&mut Checked> = checked.values_mut().collect();
    ask(docker, &mut all).await;
    checked
}

/// Pulls the reference with the Docker config's credentials for its registry and returns
/// the image it now names.
pub async fn pull(
    docker: &impl Engine,
    reference: &ImageRef,
    text: &str,
) -> Result<ImageInfo, String> {
    let auth = match credentials::default_dir() {
        Some(dir) => DockerConfig::load(&dir)
            .and_then(|c| c.lookup(&reference.registry, CREDENTIAL_TIMEOUT))
            .map_err(|e| format!("{e:#}"))?,
        None => None,
    };
    let auth = auth.map(|a| PullAuth {
        username: Some(a.username.clone()).filter(|u| !u.is_empty()),
        password: Some(a.password.clone()).filter(|p| !p.is_empty()),
        identity_token: a.identity_token.clone(),
        server: a.server_address().to_string(),
    });
    let failed = |e: CallError| format!("pull {text}: {e}");
    docker.pull(text, auth).await.map_err(failed)?;
    docker.image(text).await.map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const REMOTE: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn checked(image: &str, answer: Option<Answer>) -> Checked {
        let image_id = format!("sha256:{}", "a".repeat(64));
        let details = Details {
            id: "c".repeat(64),
            name: "web".into(),
            image: image.into(),
            image_id: image_id.clone(),
            running: true,
            restarting: false,
            restart_count: 0,
            stop_timeout: None,
            has_healthcheck: false,
            health: None,
            started_at: None,
            network_mode: None,
            labels: Default::default(),
        };
        Checked {
            reference: reference_of(&details),
            details,
            local: Some(ImageInfo {
                id: image_id,
                repo_digests: vec![format!("127.0.0.1:5000/app@{LOCAL}")],
            }),
            answer,
        }
    }

    #[test]
    fn decisions() {
        let app = "127.0.0.1:5000/app:1";
        let plain = Modifiers::default();
        let monitor = Modifiers {
            monitor_only: true,
            ..Modifiers::default()
        };
        let no_pull = Modifiers {
            no_pull: true,
            ..Modifiers::default()
        };
        let digest = |d: &str| Some(Answer::Digest(d.into()));
        type Case = (
            &'static str,
            Checked,
            Modifiers,
            Option<&'static str>,
            bool,
            Next,
        );
        let cases: Vec<Case> = vec![
            (
                "same digest: nothing pulled",
                checked(app, digest(LOCAL)),
                plain,
                None,
                true,
                Next::UpToDate,
            ),
            (
                "new digest: pull",
                checked(app, digest(REMOTE)),
                plain,
                None,
                true,
                Next::Pull {
                    digest: Some(REMOTE.into()),
                },
            ),
            (
                "quarantined digest",
                checked(app, digest(REMOTE)),
                plain,
                Some(REMOTE),
                true,
                Next::Quarantined {
                    digest: REMOTE.into(),
                },
            ),
            (
                "an older quarantine does not block a newer digest",
                checked(app, digest(REMOTE)),
                plain,
                Some(LOCAL),
                true,
                Next::Pull {
                    digest: Some(REMOTE.into()),
                },
            ),
            (
                "monitor only",
                checked(app, digest(REMOTE)),
                monitor,
                None,
                true,
                Next::Available {
                    digest: REMOTE.into(),
                },
            ),
            (
                "monitor only, up to date",
                checked(app, digest(LOCAL)),
                monitor,
                None,
                true,
                Next::UpToDate,
            ),
            (
                "no pull uses the local image",
                checked(app, digest(REMOTE)),
                no_pull,
                None,
                true,
                Next::UseLocal,
            ),
            (
                "no digest: fall back to a pull",
                checked(app, Some(Answer::NoDigest)),
                plain,
                None,
                true,
                Next::Pull { digest: None },
            ),
            (
                "no fallback",
                checked(app, Some(Answer::Failed("down".into()))),
                plain,
                None,
                false,
                Next::Fail("down (GUERITE_PULL_FALLBACK=false: not pulling)".into()),
            ),
            (
                "auth error is not retried by a pull",
                checked(app, Some(Answer::AuthRequired("rejected".into()))),
                plain,
                None,
                true,
                Next::Fail("rejected".into()),
            ),
            (
                "rate limited",
                checked(
                    app,
                    Some(Answer::RateLimited {
                        retry_after: Some(Duration::from_secs(30)),
                    }),
                ),
                plain,
                None,
                true,
                Next::Skip("rate limited by the registry; retry after 30 s".into()),
            ),
            (
                "pinned",
                checked(&format!("127.0.0.1:5000/app@{REMOTE}"), None),
                plain,
                None,
                true,
                Next::Skip("pinned to a digest; not updatable".into()),
            ),
        ];
        for (name, c, m, q, fallback, expected) in cases {
            assert_eq!(decide(&c, m, q, fallback), expected, "{name}");
        }
    }

    #[test]
    fn an_image_id_is_not_a_reference() {
        let c = checked(&"a".repeat(12), None);
        assert!(
            matches!(decide(&c, Modifiers::default(), None, true), Next::Skip(why) if why.contains("image ID"))
        );
    }
}
