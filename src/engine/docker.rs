//! The Docker engine, through bollard: the `Engine` of api.rs. The only file that sees bollard's
//! types besides the inspect-to-create mapping (recreate.rs): every answer is mapped into the
//! terms of `engine/mod.rs` here.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bollard::models::{
    ContainerSummary, ContainerSummaryStateEnum, HealthStatusEnum, NetworkConnectRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions,
    RemoveContainerOptions, RemoveImageOptions, RenameContainerOptions, RestartContainerOptions,
    StartContainerOptions, StopContainerOptions,
};
use chrono::{DateTime, Utc};
use hyper_util::rt::TokioExecutor;

use bollard::auth::DockerCredentials;

use crate::config::DockerEndpoint;
use crate::engine::api::{CallError, Created, Engine, PullAuth};
use crate::engine::recreate::{self, Spec};
use crate::engine::tls::{self, ClientFiles};
use crate::engine::{Container, Details, Health, ImageInfo, RunState};

/// Bounds every ordinary call, so that a stuck daemon cannot hang a cron run forever.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting and the version handshake fail fast: an unreachable host is a config problem.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Docker {
    client: bollard::Docker,
    endpoint: String,
}

impl From<bollard::errors::Error> for CallError {
    fn from(e: bollard::errors::Error) -> Self {
        match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message,
            } => CallError::Gone(message),
            answered @ bollard::errors::Error::DockerResponseServerError { .. } => {
                CallError::Refused(describe(&answered))
            }
            other => CallError::Other(anyhow!(describe(&other))),
        }
    }
}

/// bollard's messages carry the daemon's text; keep that and drop the Rust type names.
fn describe(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        bollard::errors::Error::RequestTimeoutError => {
            "the Docker engine did not answer in time".into()
        }
        bollard::errors::Error::HyperLegacyError { err } => {
            // "client error (Connect)" alone does not say what failed; its causes do.
            let mut text = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !text.contains(&cause_text) {
                    text = format!("{text}: {cause_text}");
                }
                source = cause.source();
            }
            text
        }
        other => match tls_failure(other) {
            Some(failure) => failure.to_string(),
            None => other.to_string(),
        },
    }
}

impl Docker {
    /// Connects and negotiates the API version: one `/version` call.
    pub async fn connect(endpoint: &DockerEndpoint) -> Result<Docker> {
        let host = endpoint.host.as_str();
        let version = bollard::API_DEFAULT_VERSION;
        let secs = CONNECT_TIMEOUT.as_secs();
        let client = match &endpoint.tls_cert_path {
            Some(dir) => tls_client(host, &ClientFiles::in_dir(dir), secs, version)?,
            None if host.starts_with("unix://") => {
                bollard::Docker::connect_with_unix(host, secs, version)
                    .map_err(|e| unreachable(host, &e))?
            }
            None => bollard::Docker::connect_with_http(host, secs, version)
                .map_err(|e| unreachable(host, &e))?,
        };
        let client = client
            .negotiate_version()
            .await
            .map_err(|e| unreachable(host, &e))?;
        Ok(Docker {
            client: client.with_timeout(CALL_TIMEOUT),
            endpoint: host.to_string(),
        })
    }

    async fn list_matching(&self, pattern: &str) -> Result<Vec<Container>, CallError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "name".to_string(),
                vec![pattern.to_string()],
            )])),
            ..Default::default()
        };
        let found = self.client.list_containers(Some(options)).await?;
        Ok(found.into_iter().filter_map(container).collect())
    }
}

impl Engine for Docker {
    type Spec = Spec;

    fn api_version(&self) -> String {
        let v = self.client.client_version();
        format!("{}.{}", v.major_version, v.minor_version)
    }

    /// Every container, running or not, with its labels: one call.
    async fn list(&self) -> Result<Vec<Container>> {
        let options = ListContainersOptions {
            all: true,
            ..Default::default()
        };
        let summaries = self
            .client
            .list_containers(Some(options))
            .await
            .map_err(|e| anyhow!(describe(&e)))
            .with_context(|| format!("cannot list containers on {}", self.endpoint))?;
        Ok(summaries.into_iter().filter_map(container).collect())
    }

    async fn details(&self, id: &str) -> Result<Details, CallError> {
        let r = self
            .client
            .inspect_container(id, None::<InspectContainerOptions>)
            .await?;
        let config = r.config.unwrap_or_default();
        let state = r.state.unwrap_or_default();
        Ok(Details {
            id: r.id.unwrap_or_default(),
            name: r
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            image: config.image.clone().unwrap_or_default(),
            image_id: r.image.unwrap_or_default(),
            running: state.running.unwrap_or(false),
            restarting: state.restarting.unwrap_or(false),
            restart_count: r.restart_count.unwrap_or(0),
            stop_timeout: config.stop_timeout,
            has_healthcheck: config
                .healthcheck
                .and_then(|h| h.test)
                .is_some_and(|t| t.first().is_some_and(|w| w != "NONE")),
            health: state.health.and_then(|h| h.status).and_then(|s| match s {
                HealthStatusEnum::STARTING => Some(Health::Starting),
                HealthStatusEnum::HEALTHY => Some(Health::Healthy),
                HealthStatusEnum::UNHEALTHY => Some(Health::Unhealthy),
                _ => None,
            }),
            started_at: state.started_at.as_deref().and_then(parse_time),
            network_mode: r.host_config.and_then(|h| h.network_mode),
            labels: config.labels.unwrap_or_default().into_iter().collect(),
        })
    }

    /// The container with exactly this name, if any: one filtered list call.
    async fn find(&self, name: &str) -> Result<Option<Container>, CallError> {
        let found = self.list_matching(&format!("^/{}$", escape(name))).await?;
        Ok(found.into_iter().find(|c| c.name == name))
    }

    /// The container named `base` and the leftovers of its swaps: one filtered list call.
    async fn family(&self, base: &str) -> Result<Vec<Container>, CallError> {
        self.list_matching(&format!(
            "^/{}(-guerite-(old|new)-[0-9A-Za-z]+)?$",
            escape(base)
        ))
        .await
    }

    /// Creates a claim (see claim.rs): a container that is never started, from an image that is
    /// on the host (the claimed container's own), with no network and nothing of its own to run.
    async fn create_claim(
        &self,
        name: &str,
        image_id: &str,
        labels: HashMap<String, String>,
    ) -> Result<Created, CallError> {
        let body = bollard::models::ContainerCreateBody {
            image: Some(image_id.to_string()),
            entrypoint: Some(vec!["/guerite-claim".to_string()]),
            cmd: Some(Vec::new()),
            labels: Some(labels),
            network_disabled: Some(true),
            host_config: Some(bollard::models::HostConfig {
                network_mode: Some("none".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            platform: String::new(),
        };
        match self.client.create_container(Some(options), body).await {
            Ok(created) => Ok(Created::Id(created.id)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(Created::NameTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a claim with the anonymous volumes its image may have given it.
    async fn remove_claim(&self, id: &str) -> Result<(), CallError> {
        self.client
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    link: false,
                }),
            )
            .await?;
        Ok(())
    }

    async fn image(&self, reference: &str) -> Result<ImageInfo, CallError> {
        let i = self.client.inspect_image(reference).await?;
        Ok(ImageInfo {
            id: i.id.unwrap_or_default(),
            repo_digests: i.repo_digests.unwrap_or_default(),
        })
    }

    /// The create body for a replacement of `id` running `new_image`: see recreate.rs.
    async fn replacement(
        &self,
        id: &str,
        new_image: &str,
        names: &HashMap<String, String>,
    ) -> Result<Spec, CallError> {
        let old = self
            .client
            .inspect_container(id, None::<InspectContainerOptions>)
            .await?;
        let old_image = self
            .client
            .inspect_image(old.image.as_deref().unwrap_or_default())
            .await?;
        let new_image = self.client.inspect_image(new_image).await?;
        let v = self.client.client_version();
        recreate::spec(
            &old,
            &old_image,
            &new_image,
            (v.major_version as u32, v.minor_version as u32),
            names,
        )
        .map_err(|e| CallError::Other(anyhow!(e)))
    }

    /// Creates the container of `spec` under `name` and connects the networks an older engine
    /// does not take at create; returns the new id.
    async fn create(&self, name: &str, spec: &Spec) -> Result<String, CallError> {
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            platform: spec.platform.clone().unwrap_or_default(),
        };
        let created = self
            .client
            .create_container(Some(options), spec.body.clone())
            .await?;
        for (network, endpoint) in &spec.connect {
            self.client
                .connect_network(
                    network,
                    NetworkConnectRequest {
                        container: created.id.clone(),
                        endpoint_config: Some(endpoint.clone()),
                    },
                )
                .await?;
        }
        Ok(created.id)
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), CallError> {
        self.client
            .rename_container(
                id,
                RenameContainerOptions {
                    name: name.to_string(),
                },
            )
            .await?;
        Ok(())
    }

    async fn start(&self, id: &str) -> Result<(), CallError> {
        self.client
            .start_container(id, None::<StartContainerOptions>)
            .await?;
        Ok(())
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), CallError> {
        let t = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        let client = self
            .client
            .clone()
            .with_timeout(timeout.saturating_add(CALL_TIMEOUT));
        match client
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(t),
                    signal: None,
                }),
            )
            .await
        {
            // 304: already stopped.
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a container, never its volumes.
    async fn remove(&self, id: &str) -> Result<(), CallError> {
        self.client
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: false,
                    link: false,
                }),
            )
            .await?;
        Ok(())
    }

    /// Pulls `reference` through the engine (so that it lands where containers can use it),
    /// with registry credentials when there are any. Unbounded in time: a large pull is slow.
    async fn pull(&self, reference: &str, auth: Option<PullAuth>) -> Result<(), CallError> {
        use futures_util::StreamExt;
        let options = CreateImageOptions {
            from_image: Some(reference.to_string()),
            ..Default::default()
        };
        let credentials = auth.map(|a| DockerCredentials {
            username: a.username,
            password: a.password,
            identitytoken: a.identity_token,
            serveraddress: Some(a.server),
            ..Default::default()
        });
        let client = self.client.clone().with_timeout(Duration::from_secs(3600));
        let mut stream = client.create_image(Some(options), None, credentials);
        while let Some(step) = stream.next().await {
            step?;
        }
        Ok(())
    }

    /// Registries the engine talks plain HTTP to: CIDRs and `host[:port]` names.
    async fn insecure_registries(&self) -> Result<Vec<String>> {
        let info = self
            .client
            .info()
            .await
            .map_err(|e| anyhow!(describe(&e)))
            .with_context(|| {
                format!(
                    "cannot read the engine's registry settings on {}",
                    self.endpoint
                )
            })?;
        let config = info.registry_config.unwrap_or_default();
        let mut insecure = config.insecure_registry_cidrs.unwrap_or_default();
        insecure.extend(
            config
                .index_configs
                .unwrap_or_default()
                .into_values()
                .filter(|i| i.secure == Some(false))
                .filter_map(|i| i.name),
        );
        Ok(insecure)
    }

    /// Removes an image only if nothing uses it: the engine refuses (409) otherwise, which is
    /// the answer wanted, not an error.
    async fn remove_image_if_unused(&self, id: &str) -> Result<bool, CallError> {
        match self
            .client
            .remove_image(id, None::<RemoveImageOptions>, None)
            .await
        {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Stop (with the container's own signal) and start again, in place.
    async fn restart(&self, id: &str, stop_timeout: Duration) -> Result<(), CallError> {
        let t = i32::try_from(stop_timeout.as_secs()).unwrap_or(i32::MAX);
        // The daemon waits up to `t` before killing; the call itself must outlive that.
        let client = self
            .client
            .clone()
            .with_timeout(stop_timeout.saturating_add(CALL_TIMEOUT));
        client
            .restart_container(
                id,
                Some(RestartContainerOptions {
                    t: Some(t),
                    signal: None,
                }),
            )
            .await?;
        Ok(())
    }
}

/// A bollard client over our own TLS (engine_tls.rs: only ca.pem is trusted). The client files
/// are loaded here, before anything connects. The timeouts stay bollard's: it bounds every
/// request future, this transport's included.
fn tls_client(
    host: &str,
    files: &ClientFiles,
    secs: u64,
    version: &bollard::ClientVersion,
) -> Result<bollard::Docker> {
    let (connector, explainer) = tls::connector(host, files).map_err(|e| anyhow!(e))?;
    let mut builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
    // As bollard's own clients: a fresh connection per request, never a pooled one the engine
    // may have closed meanwhile.
    builder.pool_max_idle_per_host(0);
    let client = builder.build(connector);
    let transport = move |request: bollard::BollardRequest| {
        let response = client.request(request);
        let explainer = explainer.clone();
        async move {
            response.await.map_err(|e| match explainer.explain(&e) {
                // Carried as an io::Error that `describe` and `unreachable` recognise.
                Some(failure) => bollard::errors::Error::IOError {
                    err: std::io::Error::other(failure),
                },
                None => e.into(),
            })
        }
    };
    // bollard puts this scheme and address in every request URI; the connector adds TLS.
    let address = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("https://"))
        .unwrap_or(host);
    bollard::Docker::connect_with_custom_transport(
        transport,
        Some(format!("https://{address}")),
        secs,
        version,
    )
    .map_err(|e| unreachable(host, &e))
}

/// The TLS failure a request error carries, if any (see `tls_client`).
fn tls_failure(e: &bollard::errors::Error) -> Option<&tls::Failure> {
    match e {
        bollard::errors::Error::IOError { err } => err.get_ref()?.downcast_ref(),
        _ => None,
    }
}

fn unreachable(host: &str, e: &bollard::errors::Error) -> anyhow::Error {
    // A TLS failure names its cause; "Is dockerd running" would send the operator the wrong
    // way, since something did answer.
    if let Some(failure) = tls_failure(e) {
        return anyhow!("{failure}");
    }
    anyhow!(
        "cannot reach the Docker engine at {host}: {}. Is dockerd running, and may this user use it? \
         Set DOCKER_HOST to choose another endpoint.",
        describe(e)
    )
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        // Docker writes 0001-01-01T00:00:00Z for "never".
        .filter(|t| t.timestamp() > 0)
}

fn container(s: ContainerSummary) -> Option<Container> {
    let id = s.id?;
    // The list gives "/name"; a container always has exactly one name since links went away.
    let name = s
        .names
        .unwrap_or_default()
        .into_iter()
        .map(|n| n.trim_start_matches('/').to_string())
        .find(|n| !n.contains('/'))?;
    Some(Container {
        id,
        name,
        image: s.image.unwrap_or_default(),
        image_id: s.image_id.unwrap_or_default(),
        labels: s
            .labels
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        created: DateTime::from_timestamp(s.created.unwrap_or(0), 0).unwrap_or_default(),
        state: match s.state {
            Some(ContainerSummaryStateEnum::CREATED) => RunState::Created,
            Some(ContainerSummaryStateEnum::RUNNING) => RunState::Running,
            Some(ContainerSummaryStateEnum::PAUSED) => RunState::Paused,
            Some(ContainerSummaryStateEnum::RESTARTING) => RunState::Restarting,
            Some(ContainerSummaryStateEnum::EXITED) => RunState::Exited,
            Some(ContainerSummaryStateEnum::REMOVING) => RunState::Removing,
            Some(ContainerSummaryStateEnum::DEAD) => RunState::Dead,
            _ => RunState::Unknown,
        },
        status: s.status.unwrap_or_default(),
        network_mode: s.host_config.and_then(|h| h.network_mode),
        anonymous_volumes: s
            .mounts
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.typ.as_deref() == Some("volume"))
            .filter(|m| m.name.as_deref().is_some_and(is_generated_name))
            .filter_map(|m| m.destination)
            .collect(),
    })
}

/// The engine's name filter is a regular expression; container names hold only
/// `[a-zA-Z0-9_.-]`, of which only `.` means something there.
fn escape(name: &str) -> String {
    name.replace('.', "\\.")
}

/// Docker names an anonymous volume with 64 hex digits.
fn is_generated_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}
