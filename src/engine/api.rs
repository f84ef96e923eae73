//! The engine as the rest of guerite uses it: the `Engine` trait and the answers and errors its
//! calls share, all in guerite's own terms. The bollard client (docker.rs) implements it, and a
//! recording fake (fake.rs) does in unit tests, so the swap, its rollback, recovery and the
//! executor are written against this trait and can be tested without a real engine.
//!
//! The futures need not be `Send`: guerite runs one current-thread runtime and never spawns.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Result;

use crate::engine::{Container, Details, ImageInfo};

/// Registry credentials for a pull, in the engine's terms.
#[derive(Debug, Clone, Default)]
pub struct PullAuth {
    pub username: Option<String>,
    pub password: Option<String>,
    pub identity_token: Option<String>,
    pub server: String,
}

/// Why a call about one container failed: gone means someone else removed it mid-run.
#[derive(Debug)]
pub enum CallError {
    /// 404: for calls about one container, someone else removed it; the daemon's message
    /// says which object was missing.
    Gone(String),
    /// The engine answered with another error status: it has finished with the request.
    Refused(String),
    /// No answer (a timeout, a broken connection): the engine may still be carrying it out.
    Other(anyhow::Error),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Gone(m) | CallError::Refused(m) => f.write_str(m),
            CallError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

/// What creating a container under a name came to, when the name may be taken.
#[derive(Debug, PartialEq)]
pub enum Created {
    Id(String),
    /// 409: another container has the name.
    NameTaken,
}

/// Every call guerite makes to an engine. A container argument (`id`) may be its id or its
/// name, as the engine resolves both.
pub trait Engine {
    /// The create body of a replacement: `replacement` prepares it, `create` uses it. Opaque to
    /// the swap, which only carries it from one call to the other.
    type Spec;

    /// The API version negotiated when connecting, e.g. "1.45".
    fn api_version(&self) -> String;

    /// Every container, running or not, with its labels: one call.
    async fn list(&self) -> Result<Vec<Container>>;

    async fn details(&self, id: &str) -> Result<Details, CallError>;

    /// The container with exactly this name, if any.
    async fn find(&self, name: &str) -> Result<Option<Container>, CallError>;

    /// The container named `base` and the leftovers of its swaps (`-guerite-old-`/`-new-`).
    async fn family(&self, base: &str) -> Result<Vec<Container>, CallError>;

    /// Creates a claim (see swap/claim.rs): a container that is never started, from an image
    /// that is on the host, with no network and nothing of its own to run.
    async fn create_claim(
        &self,
        name: &str,
        image_id: &str,
        labels: HashMap<String, String>,
    ) -> Result<Created, CallError>;

    /// Removes a claim with the anonymous volumes its image may have given it.
    async fn remove_claim(&self, id: &str) -> Result<(), CallError>;

    async fn image(&self, reference: &str) -> Result<ImageInfo, CallError>;

    /// The create body for a replacement of `id` running `new_image`. `names` maps container
    /// ids to names, so that `container:<id>` network modes follow the name.
    async fn replacement(
        &self,
        id: &str,
        new_image: &str,
        names: &HashMap<String, String>,
    ) -> Result<Self::Spec, CallError>;

    /// Creates the container of `spec` under `name`, connected to all its networks; returns
    /// the new id.
    async fn create(&self, name: &str, spec: &Self::Spec) -> Result<String, CallError>;

    async fn rename(&self, id: &str, name: &str) -> Result<(), CallError>;

    async fn start(&self, id: &str) -> Result<(), CallError>;

    /// Stops with the container's own signal, killing it after `timeout`; a container already
    /// stopped is not an error.
    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), CallError>;

    /// Removes a container, never its volumes.
    async fn remove(&self, id: &str) -> Result<(), CallError>;

    /// Pulls `reference` through the engine, with registry credentials when there are any.
    async fn pull(&self, reference: &str, auth: Option<PullAuth>) -> Result<(), CallError>;

    /// Registries the engine talks plain HTTP to: CIDRs and `host[:port]` names.
    async fn insecure_registries(&self) -> Result<Vec<String>>;

    /// Removes an image only if nothing uses it; `Ok(false)` when something does.
    async fn remove_image_if_unused(&self, id: &str) -> Result<bool, CallError>;

    /// Stop (with the container's own signal) and start again, in place.
    async fn restart(&self, id: &str, stop_timeout: Duration) -> Result<(), CallError>;
}
