//! What to create in place of a container so that it keeps everything the operator configured
//! and takes everything else from the new image (design.md §7). Pure: the inspect of the old
//! container and of both images in, the create body out; `docker.rs` does the calls.
//!
//! The engine merges the image's config into a container at create time and inspect shows the
//! merged result, so a value equal to the old image's is taken to be the image's and left out,
//! letting the new image's default apply. An operator value that happens to equal the image's is
//! indistinguishable from it and follows the image from then on.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use bollard::models::{
    ContainerConfig, ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HealthConfig,
    HostConfig, ImageConfig, ImageInspect, Mount, MountType, NetworkingConfig,
};

/// From this version a container can be created on several networks at once and each endpoint
/// carries its own MAC address; below it only `Config.MacAddress` sets one.
const MULTI_NETWORK_API: (u32, u32) = (1, 44);

/// Compose records the image ID it created the container from; keep that truthful.
const COMPOSE_IMAGE_LABEL: &str = "com.docker.compose.image";

#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The config for `POST /containers/create`.
    pub body: ContainerCreateBody,
    /// `os/arch[/variant]` of the old image, so a multi-platform tag cannot switch architecture.
    pub platform: Option<String>,
    /// Networks to connect after create and before start (API < 1.44 accepts only one network
    /// at create), in name order.
    pub connect: Vec<(String, EndpointSettings)>,
}

/// The successor of `old`, to be created from `new_image`. `names_by_id` maps container IDs to
/// names, so that `container:<id>` modes follow the name to whichever container carries it.
pub fn spec(
    old: &ContainerInspectResponse,
    old_image: &ImageInspect,
    new_image: &ImageInspect,
    api: (u32, u32),
    names_by_id: &HashMap<String, String>,
) -> Result<Spec, String> {
    let name = old
        .name
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches('/');
    let id = old.id.as_deref().unwrap_or_default();
    let config = old
        .config
        .as_ref()
        .ok_or_else(|| format!("container {name}: its inspect has no Config"))?;
    let image_config = old_image.config.clone().unwrap_or_default();
    let mut host_config = old
        .host_config
        .clone()
        .ok_or_else(|| format!("container {name}: its inspect has no HostConfig"))?;
    let mode = NetMode::of(host_config.network_mode.as_deref());

    let mut body = config_without_image(config, &image_config, &host_config);
    body.image = Some(
        image_reference(config, old_image, new_image).ok_or_else(|| {
            format!("container {name}: its inspect names no image to recreate it from")
        })?,
    );
    if body.hostname.as_deref() == Some(short_id(id)) {
        // Docker's default hostname is the container's short ID; the new one gets its own.
        // (In host mode the default is the host's name, which an operator may also choose:
        // indistinguishable, so kept.)
        body.hostname = None;
    }
    if matches!(mode, NetMode::Container(_)) {
        // The namespace owner's hostname and ports apply; Docker rejects them here.
        body.hostname = None;
        body.domainname = None;
        body.exposed_ports = None;
    }
    if let (Some(labels), Some(new_id)) = (body.labels.as_mut(), new_image.id.as_ref())
        && labels.contains_key(COMPOSE_IMAGE_LABEL)
    {
        labels.insert(COMPOSE_IMAGE_LABEL.to_string(), new_id.clone());
    }

    resolve_container_modes(&mut host_config, names_by_id);
    host_config.mounts = reattach_anonymous_volumes(old, &host_config);
    // Docker fills these with its own defaults at create; copying them would pin the old
    // engine's list. Only an explicit empty list (`systempaths=unconfined`) is the operator's.
    host_config.masked_paths = host_config.masked_paths.filter(Vec::is_empty);
    host_config.readonly_paths = host_config.readonly_paths.filter(Vec::is_empty);

    let (at_create, connect) =
        endpoints(old, &mode, api).map_err(|e| format!("container {name}: {e}"))?;
    body.host_config = Some(host_config);
    body.networking_config = (!at_create.is_empty()).then_some(NetworkingConfig {
        endpoints_config: Some(at_create),
    });
    Ok(Spec {
        body,
        platform: platform(old_image),
        connect,
    })
}

/// The container's Config with what came from the old image taken out.
fn config_without_image(
    c: &ContainerConfig,
    image: &ImageConfig,
    host_config: &HostConfig,
) -> ContainerCreateBody {
    let entrypoint_overridden = !same_list(&c.entrypoint, &image.entrypoint);
    let published: Vec<&String> = host_config
        .port_bindings
        .iter()
        .flat_map(|p| p.keys())
        .collect();
    ContainerCreateBody {
        hostname: c.hostname.clone().filter(|h| !h.is_empty()),
        domainname: c.domainname.clone().filter(|d| !d.is_empty()),
        user: unless_same(&c.user, &image.user),
        attach_stdin: c.attach_stdin,
        attach_stdout: c.attach_stdout,
        attach_stderr: c.attach_stderr,
        // A published port stays exposed even if the new image stops declaring it.
        exposed_ports: minus(&c.exposed_ports, &image.exposed_ports, |p| {
            published.contains(&p)
        })
        .map(sorted),
        tty: c.tty,
        open_stdin: c.open_stdin,
        stdin_once: c.stdin_once,
        env: minus(&c.env, &image.env, |_| false),
        // Docker drops the image's Cmd when the entrypoint is overridden, so a Cmd beside an
        // overridden entrypoint is the operator's even when it equals the image's.
        cmd: if entrypoint_overridden || !same_list(&c.cmd, &image.cmd) {
            c.cmd.clone()
        } else {
            None
        },
        entrypoint: if entrypoint_overridden {
            c.entrypoint.clone()
        } else {
            None
        },
        healthcheck: healthcheck_without_image(c.healthcheck.as_ref(), image.healthcheck.as_ref()),
        args_escaped: c.args_escaped.filter(|a| Some(*a) != image.args_escaped),
        image: None,
        volumes: minus(&c.volumes, &image.volumes, |_| false).map(sorted),
        working_dir: unless_same(&c.working_dir, &image.working_dir),
        network_disabled: c.network_disabled,
        on_build: (!same_list(&c.on_build, &image.on_build))
            .then(|| c.on_build.clone())
            .flatten(),
        labels: {
            let from_image = image.labels.clone().unwrap_or_default();
            let left: HashMap<String, String> = c
                .labels
                .iter()
                .flatten()
                .filter(|(k, v)| from_image.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            (!left.is_empty()).then_some(left)
        },
        stop_signal: unless_same(&c.stop_signal, &image.stop_signal),
        // Images carry no stop timeout: it is always the operator's.
        stop_timeout: c.stop_timeout,
        shell: (!same_list(&c.shell, &image.shell))
            .then(|| c.shell.clone())
            .flatten(),
        host_config: None,
        networking_config: None,
    }
}

/// The operator's reference (the tag), so the new container shows the name it was run by; an
/// image pinned by the old ID moves to the new ID, or it would come back on the old image.
fn image_reference(
    c: &ContainerConfig,
    old_image: &ImageInspect,
    new_image: &ImageInspect,
) -> Option<String> {
    let reference = c.image.as_deref().filter(|r| !r.is_empty())?;
    let old_id = old_image.id.as_deref().unwrap_or_default();
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    let by_old_id = hex.len() >= 12
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && old_id.trim_start_matches("sha256:").starts_with(hex);
    match (by_old_id, new_image.id.as_ref()) {
        (true, Some(new_id)) => Some(new_id.clone()),
        _ => Some(reference.to_string()),
    }
}

/// Inspect shows the healthcheck merged with the image's field by field (a zero field takes the
/// image's), so each field equal to the old image's is cleared and the new image's fills it.
fn healthcheck_without_image(
    c: Option<&HealthConfig>,
    image: Option<&HealthConfig>,
) -> Option<HealthConfig> {
    let c = c?;
    let image = image.cloned().unwrap_or_default();
    let num =
        |mine: Option<i64>, theirs: Option<i64>| mine.filter(|m| *m != 0 && Some(*m) != theirs);
    let h = HealthConfig {
        test: (!same_list(&c.test, &image.test))
            .then(|| c.test.clone())
            .flatten(),
        interval: num(c.interval, image.interval),
        timeout: num(c.timeout, image.timeout),
        retries: num(c.retries, image.retries),
        start_period: num(c.start_period, image.start_period),
        start_interval: num(c.start_interval, image.start_interval),
    };
    (h != HealthConfig::default()).then_some(h)
}

/// Where this container's network comes from, per `HostConfig.NetworkMode`.
#[derive(Debug, Clone, PartialEq)]
enum NetMode {
    /// A network (name or ID) that gets an endpoint; `default` is the bridge.
    Network(String),
    /// host, none: no endpoints of its own to rebuild.
    Shared,
    /// Another container's namespace.
    Container(String),
}

impl NetMode {
    fn of(mode: Option<&str>) -> NetMode {
        match mode.unwrap_or_default() {
            "" | "default" => NetMode::Network("bridge".into()),
            "host" | "none" => NetMode::Shared,
            m => match m.strip_prefix("container:") {
                Some(target) => NetMode::Container(target.to_string()),
                None => NetMode::Network(m.to_string()),
            },
        }
    }
}

type Endpoints = HashMap<String, EndpointSettings>;

/// The endpoints to create with, and those to connect before start.
fn endpoints(
    old: &ContainerInspectResponse,
    mode: &NetMode,
    api: (u32, u32),
) -> Result<(Endpoints, Vec<(String, EndpointSettings)>), String> {
    let NetMode::Network(primary) = mode else {
        return Ok((HashMap::new(), Vec::new()));
    };
    let id = old.id.as_deref().unwrap_or_default();
    let hostname = old
        .config
        .as_ref()
        .and_then(|c| c.hostname.as_deref())
        .unwrap_or_default();
    let mut networks: Vec<(&String, &EndpointSettings)> = old
        .network_settings
        .iter()
        .flat_map(|s| s.networks.iter().flatten())
        .collect();
    networks.sort_by(|a, b| a.0.cmp(b.0));
    // NetworkMode may name the network by ID; the inspect keys endpoints by name.
    let primary_name = networks
        .iter()
        .map(|(n, e)| (*n, e.network_id.as_deref().unwrap_or_default()))
        .find(|(n, nid)| {
            *n == primary || (primary.len() >= 12 && nid.starts_with(primary.as_str()))
        })
        .map(|(n, _)| n.clone());
    let multi = api >= MULTI_NETWORK_API;
    let mut at_create = HashMap::new();
    let mut connect = Vec::new();
    for (net, e) in networks {
        let is_primary = primary_name.as_deref() == Some(net.as_str());
        let mac = user_mac(e);
        if let (Some(mac), false, true) = (&mac, multi, is_primary) {
            return Err(format!(
                "its MAC address {mac} on network {net} can be set only through \
                 Config.MacAddress on Docker API {}.{}, which guerite's Docker client cannot \
                 send; recreate it by hand or use an engine with API 1.44 or later",
                api.0, api.1
            ));
        }
        let endpoint = EndpointSettings {
            ipam_config: e.ipam_config.clone(),
            links: e.links.clone(),
            // Endpoint MACs are honoured only from 1.44; below it a secondary network's MAC is
            // always the driver's.
            mac_address: mac.filter(|_| multi),
            aliases: aliases(e, id, hostname),
            driver_opts: e.driver_opts.clone(),
            gw_priority: e.gw_priority.filter(|p| *p != 0),
            ..Default::default()
        };
        if multi || is_primary {
            at_create.insert(net.clone(), endpoint);
        } else {
            connect.push((net.clone(), endpoint));
        }
    }
    Ok((at_create, connect))
}

/// The operator's aliases. 20.10 adds the short ID and the hostname to every user-network
/// endpoint's aliases by itself (26.1 lists them, and the name, in DNSNames instead) and adds
/// the new ones again; an operator alias equal to the hostname is lost from the list but still
/// resolves, being the hostname.
fn aliases(e: &EndpointSettings, id: &str, hostname: &str) -> Option<Vec<String>> {
    e.aliases.as_ref().map(|aliases| {
        aliases
            .iter()
            .filter(|a| a.as_str() != short_id(id) && a.as_str() != hostname)
            .cloned()
            .collect()
    })
}

/// A MAC the operator chose. The chosen MAC is also in the inspect's `Config.MacAddress`, but
/// bollard's model has no such field, so it is told from the endpoint's operational MAC: the
/// engines (20.10 and 26.1; the bridge, macvlan and overlay drivers) derive an unchosen one from
/// the IPv4 address as 02:42:a:b:c:d, anything else was asked for, and a MAC with no address yet
/// (created, never started) is the one asked for. Limit: a stopped container shows no MAC at all,
/// so a MAC chosen for it is not seen and the new container gets a derived one.
fn user_mac(e: &EndpointSettings) -> Option<String> {
    let mac = e.mac_address.as_deref().filter(|m| !m.is_empty())?;
    let generated = e
        .ip_address
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        .map(|ip| {
            let [a, b, c, d] = ip.octets();
            format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
        });
    match generated {
        Some(g) if g.eq_ignore_ascii_case(mac) => None,
        _ => Some(mac.to_string()),
    }
}

/// Docker stores `container:<full id>`; the old ID dies with the swap, the name moves on.
fn resolve_container_modes(h: &mut HostConfig, names_by_id: &HashMap<String, String>) {
    let resolve = |mode: &mut Option<String>| {
        if let Some(target) = mode.as_deref().and_then(|m| m.strip_prefix("container:"))
            && let Some(name) = name_of(target, names_by_id)
        {
            *mode = Some(format!("container:{name}"));
        }
    };
    resolve(&mut h.network_mode);
    resolve(&mut h.ipc_mode);
    resolve(&mut h.pid_mode);
    if let Some(from) = h.volumes_from.as_mut() {
        for entry in from.iter_mut() {
            let (target, access) = match entry.split_once(':') {
                Some((t, a)) => (t, Some(a)),
                None => (entry.as_str(), None),
            };
            if let Some(name) = name_of(target, names_by_id) {
                *entry = match access {
                    Some(a) => format!("{name}:{a}"),
                    None => name,
                };
            }
        }
    }
}

/// The name for a full or abbreviated (at least 12 hex) container ID, if it is unambiguous.
fn name_of(target: &str, names_by_id: &HashMap<String, String>) -> Option<String> {
    let clean = |n: &String| n.trim_start_matches('/').to_string();
    if let Some(n) = names_by_id.get(target) {
        return Some(clean(n));
    }
    if target.len() < 12 || !target.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut found = names_by_id.iter().filter(|(id, _)| id.starts_with(target));
    match (found.next(), found.next()) {
        (Some((_, n)), None) => Some(clean(n)),
        _ => None,
    }
}

/// HostConfig.Mounts plus every anonymous volume of this container by name at its destination:
/// left to Docker, the new container would get a fresh, empty volume there. Its anonymous
/// volumes are those it declares (`Config.Volumes`, the image's included) and the source-less
/// volume mounts (what `--mount type=volume,dst=…` records), which get the old volume's name.
/// Volumes seen only through `VolumesFrom` belong to the other container and follow it; a
/// destination the operator bound stays as written.
fn reattach_anonymous_volumes(
    old: &ContainerInspectResponse,
    h: &HostConfig,
) -> Option<Vec<Mount>> {
    let mut mounts = h.mounts.clone().unwrap_or_default();
    let declared: Vec<&String> = old
        .config
        .iter()
        .flat_map(|c| c.volumes.iter().flatten())
        .collect();
    let bound: Vec<&str> = h
        .binds
        .iter()
        .flatten()
        .filter_map(|b| bind_destination(b))
        .collect();
    for m in old.mounts.iter().flatten() {
        let (Some("volume"), Some(volume), Some(dst)) = (
            m.typ.as_deref(),
            m.name.as_deref(),
            m.destination.as_deref(),
        ) else {
            continue;
        };
        if !is_generated_name(volume) {
            continue;
        }
        match mounts.iter_mut().find(|x| x.target.as_deref() == Some(dst)) {
            Some(x)
                if x.typ == Some(MountType::VOLUME)
                    && x.source.as_deref().unwrap_or_default().is_empty() =>
            {
                x.source = Some(volume.to_string());
            }
            Some(_) => {}
            None if !bound.contains(&dst) && declared.iter().any(|d| d.as_str() == dst) => {
                mounts.push(Mount {
                    target: Some(dst.to_string()),
                    source: Some(volume.to_string()),
                    typ: Some(MountType::VOLUME),
                    read_only: (m.rw == Some(false)).then_some(true),
                    ..Default::default()
                });
            }
            None => {}
        }
    }
    (!mounts.is_empty()).then_some(mounts)
}

/// `source:destination[:options]` → destination.
fn bind_destination(bind: &str) -> Option<&str> {
    bind.split(':').nth(1)
}

/// Docker names an anonymous volume with 64 hex digits.
fn is_generated_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

fn platform(image: &ImageInspect) -> Option<String> {
    let part = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    let (os, arch) = (part(&image.os)?, part(&image.architecture)?);
    Some(match part(&image.variant) {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    })
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Unset and empty are the same list to Docker.
fn same_list(a: &Option<Vec<String>>, b: &Option<Vec<String>>) -> bool {
    a.as_deref().unwrap_or_default() == b.as_deref().unwrap_or_default()
}

fn unless_same(mine: &Option<String>, image: &Option<String>) -> Option<String> {
    let mine = mine.as_deref().unwrap_or_default();
    (!mine.is_empty() && mine != image.as_deref().unwrap_or_default()).then(|| mine.to_string())
}

/// bollard reads Docker's `{"path": {}}` sets into lists in hash order; sorted, the same set
/// makes the same body.
fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The entries of `mine` not in `image`, plus those `keep_anyway` insists on; None when nothing
/// is left.
fn minus(
    mine: &Option<Vec<String>>,
    image: &Option<Vec<String>>,
    keep_anyway: impl Fn(&String) -> bool,
) -> Option<Vec<String>> {
    let image = image.as_deref().unwrap_or_default();
    let left: Vec<String> = mine
        .iter()
        .flatten()
        .filter(|x| !image.contains(x) || keep_anyway(x))
        .cloned()
        .collect();
    (!left.is_empty()).then_some(left)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EndpointIpamConfig;
    use serde::Deserialize;

    /// Real inspect answers (trimmed) from Docker 20.10 (API 1.41) and 26.1 (API 1.45): the
    /// containers as created by `docker create` with compose-expressible options, the image they
    /// ran (`old`: ENV, LABEL, VOLUME /data, EXPOSE 8080, WORKDIR, STOPSIGNAL, HEALTHCHECK, CMD)
    /// and its rebuild (`new`: other ENV/LABEL values and CMD), and `grc-full-clone`, what the
    /// engine made of the spec for `grc-full`.
    const FIXTURES: [&str; 2] = [
        include_str!("recreate/fixtures/engine-20.10.json"),
        include_str!("recreate/fixtures/engine-26.1.json"),
    ];

    #[derive(Deserialize)]
    struct Engine {
        engine: String,
        api: (u32, u32),
        names_by_id: HashMap<String, String>,
        images: HashMap<String, ImageInspect>,
        containers: HashMap<String, ContainerInspectResponse>,
    }

    impl Engine {
        fn try_spec(&self, name: &str, api: (u32, u32)) -> Result<Spec, String> {
            spec(
                &self.containers[name],
                &self.images["old"],
                &self.images["new"],
                api,
                &self.names_by_id,
            )
        }

        fn spec(&self, name: &str) -> Spec {
            self.try_spec(name, self.api)
                .unwrap_or_else(|e| panic!("{}: {e}", self.engine))
        }

        fn anonymous_volume(&self, name: &str, dst: &str) -> String {
            self.containers[name]
                .mounts
                .iter()
                .flatten()
                .find(|m| m.destination.as_deref() == Some(dst))
                .and_then(|m| m.name.clone())
                .expect("fixture has the volume")
        }

        fn new_image_id(&self) -> String {
            self.images["new"].id.clone().expect("fixture image id")
        }
    }

    fn engines() -> Vec<Engine> {
        FIXTURES
            .iter()
            .map(|j| serde_json::from_str(j).expect("fixture parses"))
            .collect()
    }

    type List = Option<Vec<String>>;

    fn strings(items: &[&str]) -> List {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn env_drops_the_old_images_entries_and_keeps_overrides() {
        let rows: [(&str, List); 4] = [
            // APP_MODE overrides the image's value, APP_NEW is new; PATH and APP_KEEP=image
            // are the image's.
            ("grc-full", strings(&["APP_MODE=override", "APP_NEW=added"])),
            ("grc-side", strings(&["SIDE=1"])),
            ("grc-plain", None),
            ("grc-ep", None),
        ];
        for e in engines() {
            for (name, want) in &rows {
                assert_eq!(&e.spec(name).body.env, want, "{} {name}", e.engine);
            }
        }
    }

    #[test]
    fn labels_drop_the_old_images_and_compose_points_at_the_new_image() {
        for e in engines() {
            let full: HashMap<String, String> = [
                (COMPOSE_IMAGE_LABEL, e.new_image_id().as_str()),
                ("com.docker.compose.project", "grc"),
                ("com.docker.compose.service", "full"),
                ("com.example.team", "ops"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let rows = [("grc-full", Some(full)), ("grc-plain", None)];
            for (name, want) in rows {
                assert_eq!(e.spec(name).body.labels, want, "{} {name}", e.engine);
            }
        }
    }

    #[test]
    fn image_volumes_and_ports_go_but_published_and_operator_ones_stay() {
        let rows: [(&str, List, List); 5] = [
            // 8080 is the image's but published; 7070 was --expose'd, 9090/udp published.
            (
                "grc-full",
                strings(&["/anon"]),
                strings(&["7070/tcp", "8080/tcp", "9090/udp"]),
            ),
            ("grc-ep", None, strings(&["8080/tcp"])),
            ("grc-plain", None, None),
            ("grc-hostnet", None, None),
            ("grc-side", None, None),
        ];
        for e in engines() {
            for (name, volumes, ports) in &rows {
                let body = e.spec(name).body;
                assert_eq!(&body.volumes, volumes, "{} {name}", e.engine);
                assert_eq!(&body.exposed_ports, ports, "{} {name}", e.engine);
            }
        }
    }

    #[test]
    fn command_follows_the_image_unless_overridden() {
        let rows: [(&str, List, List); 4] = [
            ("grc-full", strings(&["sh", "-c", "exec sleep 3601"]), None),
            ("grc-plain", None, None),
            // With the entrypoint overridden the Cmd is the operator's.
            (
                "grc-ep",
                strings(&["-c", "exec sleep 3602"]),
                strings(&["sh"]),
            ),
            // Entrypoint alone: Docker gave it no Cmd and neither does the new image.
            ("grc-ep2", None, strings(&["cat"])),
        ];
        for e in engines() {
            for (name, cmd, entrypoint) in &rows {
                let body = e.spec(name).body;
                assert_eq!(&body.cmd, cmd, "{} {name}", e.engine);
                assert_eq!(&body.entrypoint, entrypoint, "{} {name}", e.engine);
            }
        }
    }

    #[test]
    fn user_workdir_and_stop_settings_only_when_the_operators() {
        let some = |s: &str| Some(s.to_string());
        let rows = [
            (
                "grc-full",
                some("1000:1000"),
                some("/tmp"),
                some("SIGINT"),
                Some(7),
            ),
            ("grc-plain", None, None, None, None),
        ];
        for e in engines() {
            for (name, user, dir, signal, timeout) in &rows {
                let b = e.spec(name).body;
                let got = (b.user, b.working_dir, b.stop_signal, b.stop_timeout);
                let want = (user.clone(), dir.clone(), signal.clone(), *timeout);
                assert_eq!(got, want, "{} {name}", e.engine);
            }
        }
    }

    #[test]
    fn healthcheck_keeps_only_the_fields_the_operator_set() {
        let s = 1_000_000_000;
        let rows = [
            ("grc-plain", None),
            ("grc-full", None),
            // Its timeout is the image's and is left to the new image.
            (
                "grc-ep",
                Some(HealthConfig {
                    test: strings(&["CMD-SHELL", "test -d /srv"]),
                    interval: Some(3 * s),
                    retries: Some(2),
                    ..Default::default()
                }),
            ),
            (
                "grc-ep2",
                Some(HealthConfig {
                    interval: Some(4 * s),
                    ..Default::default()
                }),
            ),
            (
                "grc-more",
                Some(HealthConfig {
                    test: strings(&["NONE"]),
                    ..Default::default()
                }),
            ),
        ];
        for e in engines() {
            for (name, want) in &rows {
                assert_eq!(&e.spec(name).body.healthcheck, want, "{} {name}", e.engine);
            }
        }
    }

    #[test]
    fn hostname_only_when_chosen_and_not_borrowed() {
        let some = |s: &str| Some(s.to_string());
        let rows = [
            // Docker's default, the short ID.
            ("grc-plain", None, None),
            ("grc-full", some("grc-host"), some("example.test")),
            // container: mode shows the namespace owner's names.
            ("grc-side", None, None),
            // host mode shows the host's name; kept, the same unless the host is renamed.
            ("grc-hostnet", some("vm"), None),
        ];
        for e in engines() {
            for (name, hostname, domainname) in &rows {
                let b = e.spec(name).body;
                assert_eq!(
                    (&b.hostname, &b.domainname),
                    (hostname, domainname),
                    "{} {name}",
                    e.engine
                );
            }
        }
    }

    #[test]
    fn container_modes_follow_the_name() {
        let rows = [
            ("grc-side", "container:grc-full", ""),
            ("grc-pidshare", "none", "container:grc-more"),
        ];
        for e in engines() {
            for (name, network, pid_and_ipc) in rows {
                let h = e.spec(name).body.host_config.expect("host config");
                assert_eq!(
                    h.network_mode.as_deref(),
                    Some(network),
                    "{} {name}",
                    e.engine
                );
                assert_eq!(h.pid_mode.as_deref().unwrap_or_default(), pid_and_ipc);
                if !pid_and_ipc.is_empty() {
                    assert_eq!(h.ipc_mode.as_deref(), Some(pid_and_ipc));
                }
            }
        }
    }

    #[test]
    fn image_is_the_operators_reference_on_the_old_platform() {
        for e in engines() {
            for name in e.containers.keys().filter(|n| *n != "grc-mac") {
                let s = e.spec(name);
                assert_eq!(s.body.image.as_deref(), Some("guerite-rc/app:1"), "{name}");
                assert_eq!(s.platform.as_deref(), Some("linux/amd64"), "{name}");
            }
        }
    }

    #[test]
    fn host_config_is_copied_whole_but_for_mounts_paths_and_modes() {
        for e in engines() {
            for (name, old) in e.containers.iter().filter(|(n, _)| *n != "grc-mac") {
                let want = old.host_config.clone().expect("fixture host config");
                let mut got = e.spec(name).body.host_config.expect("host config");
                // These have their own rules and rows.
                got.mounts = want.mounts.clone();
                got.masked_paths = want.masked_paths.clone();
                got.readonly_paths = want.readonly_paths.clone();
                got.network_mode = want.network_mode.clone();
                got.pid_mode = want.pid_mode.clone();
                got.ipc_mode = want.ipc_mode.clone();
                assert_eq!(got, want, "{} {name}", e.engine);
            }
            let h = e.spec("grc-full").body.host_config.expect("host config");
            assert_eq!(h.binds.as_ref().map(Vec::len), Some(2));
            assert_eq!(h.cap_add, strings(&["CAP_NET_ADMIN"]));
            assert_eq!(h.security_opt, strings(&["no-new-privileges"]));
            assert_eq!(h.init, Some(true));
            assert_eq!(h.nano_cpus, Some(500_000_000));
            assert_eq!(h.shm_size, Some(128 << 20));
        }
    }

    #[test]
    fn masked_paths_only_when_the_operator_unmasked() {
        let rows: [(&str, List); 3] = [
            // The engine's defaults: left to the engine that creates the new one.
            ("grc-full", None),
            // security_opt systempaths=unconfined.
            ("grc-more", Some(Vec::new())),
            // Privileged on 26.1 (20.10 here cannot start privileged containers, so grc-priv
            // there has only uts/userns host): none either way.
            ("grc-priv", None),
        ];
        for e in engines() {
            for (name, want) in &rows {
                let h = e.spec(name).body.host_config.expect("host config");
                assert_eq!(&h.masked_paths, want, "{} {name}", e.engine);
                assert_eq!(&h.readonly_paths, want, "{} {name}", e.engine);
            }
        }
    }

    fn volume(target: &str, source: &str, read_only: bool) -> Mount {
        Mount {
            target: Some(target.into()),
            source: Some(source.into()),
            typ: Some(MountType::VOLUME),
            read_only: read_only.then_some(true),
            ..Default::default()
        }
    }

    #[test]
    fn anonymous_volumes_are_reattached_by_name() {
        for e in engines() {
            let mounts = |name: &str| {
                e.spec(name)
                    .body
                    .host_config
                    .and_then(|h| h.mounts)
                    .unwrap_or_default()
            };
            // -v /anon and the image's /data; the bind and the named volume stay in Binds.
            assert_eq!(
                mounts("grc-full"),
                vec![
                    volume("/anon", &e.anonymous_volume("grc-full", "/anon"), false),
                    volume("/data", &e.anonymous_volume("grc-full", "/data"), false),
                ],
                "{}",
                e.engine
            );
            // --mount type=volume,dst=/mvol gets its name; the image's /data (here grc-full's,
            // read-only through volumes_from) is pinned; /anon is grc-full's alone.
            let tmpfs = Mount {
                target: Some("/mtmp".into()),
                typ: Some(MountType::TMPFS),
                ..Default::default()
            };
            assert_eq!(
                mounts("grc-more"),
                vec![
                    volume("/mvol", &e.anonymous_volume("grc-more", "/mvol"), false),
                    tmpfs,
                    volume("/data", &e.anonymous_volume("grc-full", "/data"), true),
                ],
                "{}",
                e.engine
            );
        }
    }

    fn endpoint(aliases: &[&str], ipv4: Option<&str>) -> EndpointSettings {
        EndpointSettings {
            aliases: strings(aliases),
            ipam_config: ipv4.map(|ip| EndpointIpamConfig {
                ipv4_address: Some(ip.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn at_create(s: &Spec) -> Vec<(String, EndpointSettings)> {
        let mut v: Vec<_> = s
            .body
            .networking_config
            .iter()
            .flat_map(|n| n.endpoints_config.clone().unwrap_or_default())
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn below_1_44_one_network_at_create_and_the_rest_connected() {
        let e = &engines()[0];
        let s = e.spec("grc-full");
        // Aliases lose the short ID and the hostname that 20.10 adds by itself.
        let mut b = endpoint(&["api"], Some("10.231.2.20"));
        b.driver_opts = Some(HashMap::new());
        assert_eq!(
            at_create(&s),
            vec![("grc-a".into(), endpoint(&["web"], Some("10.231.1.10")))]
        );
        assert_eq!(s.connect, vec![("grc-b".to_string(), b)]);
        // The primary is NetworkMode's network, not the first by name.
        let s = e.spec("grc-more");
        assert_eq!(at_create(&s)[0].0, "grc-b");
        let (net, a) = &s.connect[0];
        assert_eq!(net, "grc-a");
        assert_eq!(a.links, strings(&["grc-full:fullalias"]));
        assert_eq!(
            a.driver_opts,
            Some(HashMap::from([("com.example.opt".into(), "1".into())]))
        );
        // The same containers on a newer engine go all at create.
        let s = e.try_spec("grc-full", (1, 45)).expect("spec");
        assert_eq!(at_create(&s).len(), 2);
        assert!(s.connect.is_empty());
    }

    #[test]
    fn from_1_44_all_networks_at_create_with_the_chosen_mac() {
        let e = &engines()[1];
        let s = e.spec("grc-full");
        let mut a = endpoint(&["web"], Some("10.232.1.10"));
        a.mac_address = Some("02:aa:bb:cc:dd:01".into());
        // grc-b's MAC is the one 26.1 derived from its address: left to the engine.
        let mut b = endpoint(&["api"], Some("10.232.2.20"));
        b.driver_opts = Some(HashMap::new());
        assert_eq!(
            at_create(&s),
            vec![("grc-a".into(), a), ("grc-b".into(), b)]
        );
        assert!(s.connect.is_empty());
        let more = at_create(&e.spec("grc-more"));
        assert_eq!(
            more[1]
                .1
                .ipam_config
                .as_ref()
                .and_then(|i| i.link_local_ips.clone()),
            strings(&["169.254.10.10"])
        );
    }

    #[test]
    fn endpoints_carry_no_runtime_state() {
        for e in engines() {
            for name in e.containers.keys().filter(|n| *n != "grc-mac") {
                let s = e.spec(name);
                let id = e.containers[name].id.clone().unwrap_or_default();
                for (net, ep) in at_create(&s).into_iter().chain(s.connect) {
                    let runtime = (
                        &ep.network_id,
                        &ep.endpoint_id,
                        &ep.gateway,
                        &ep.ip_address,
                        &ep.ipv6_gateway,
                        &ep.global_ipv6_address,
                    );
                    assert_eq!(
                        runtime,
                        (&None, &None, &None, &None, &None, &None),
                        "{name} {net}"
                    );
                    assert_eq!((ep.ip_prefix_len, ep.global_ipv6_prefix_len), (None, None));
                    assert_eq!(ep.dns_names, None);
                    assert!(
                        !ep.aliases
                            .iter()
                            .flatten()
                            .any(|a| id.starts_with(a.as_str()))
                    );
                }
            }
        }
    }

    #[test]
    fn no_network_of_its_own_means_no_endpoints() {
        for e in engines() {
            for name in ["grc-hostnet", "grc-side", "grc-pidshare"] {
                let s = e.spec(name);
                assert_eq!(s.body.networking_config, None, "{} {name}", e.engine);
                assert!(s.connect.is_empty());
            }
        }
    }

    #[test]
    fn a_chosen_mac_that_cannot_be_sent_is_refused_naming_the_container() {
        let e = &engines()[0];
        let err = e.try_spec("grc-mac", e.api).expect_err("refused");
        assert!(err.starts_with("container grc-mac: "), "{err}");
        assert!(
            err.contains("02:aa:bb:cc:dd:03") && err.contains("grc-a"),
            "{err}"
        );
        // From 1.44 it goes on the endpoint.
        let s = e.try_spec("grc-mac", (1, 44)).expect("spec");
        assert_eq!(
            at_create(&s)[0].1.mac_address.as_deref(),
            Some("02:aa:bb:cc:dd:03")
        );
    }

    #[test]
    fn a_second_swap_asks_for_the_same_container() {
        // What the engine made of the spec, recreated again from the same new image.
        for e in engines() {
            let first = e.spec("grc-full");
            let again = spec(
                &e.containers["grc-full-clone"],
                &e.images["new"],
                &e.images["new"],
                e.api,
                &e.names_by_id,
            )
            .expect("spec");
            assert_eq!(again, first, "{}", e.engine);
        }
    }

    #[test]
    fn user_mac_rows() {
        let rows = [
            ("02:42:0a:e7:01:0a", "10.231.1.10", None),
            ("02:42:AC:11:00:05", "172.17.0.5", None),
            (
                "02:aa:bb:cc:dd:01",
                "10.232.1.10",
                Some("02:aa:bb:cc:dd:01"),
            ),
            // Derived from another address: chosen.
            (
                "02:42:0a:e7:01:0b",
                "10.231.1.10",
                Some("02:42:0a:e7:01:0b"),
            ),
            // Created, never started: the MAC shown is the one asked for.
            ("02:aa:bb:cc:dd:05", "", Some("02:aa:bb:cc:dd:05")),
            ("", "10.231.1.10", None),
        ];
        for (mac, ip, want) in rows {
            let e = EndpointSettings {
                mac_address: Some(mac.into()),
                ip_address: Some(ip.into()),
                ..Default::default()
            };
            assert_eq!(user_mac(&e).as_deref(), want, "{mac} {ip}");
        }
    }

    #[test]
    fn name_of_rows() {
        let full = "a0d1cdb2c28050fc773830043cd4a0c5d6dd8233ba93f86d8ea45a2364db2761";
        let names = HashMap::from([
            (full.to_string(), "/web".to_string()),
            ("a0d1cdb2c280ffff".repeat(4), "twin".to_string()),
            ("b".repeat(64), "db".to_string()),
        ]);
        let rows = [
            (full, Some("web")),
            ("bbbbbbbbbbbb", Some("db")),
            // Shared by two IDs, too short, not hex, unknown: left as is.
            ("a0d1cdb2c280", None),
            ("bbbb", None),
            ("web", None),
            ("cccccccccccc", None),
        ];
        for (target, want) in rows {
            assert_eq!(name_of(target, &names).as_deref(), want, "{target}");
        }
    }

    #[test]
    fn image_reference_rows() {
        let old = "sha256:8d22ad47b33a7c5fc1419fc44b91d9b5bb7e1b95ef14daaea81b3a18e9bb03bb";
        let new = "sha256:a1f822a6efd65282a7480cfe6268133c3b1c0e31998ef6e3c5af8cdd6c1ef169";
        let rows = [
            ("127.0.0.1:5000/app:1", "127.0.0.1:5000/app:1"),
            ("app@sha256:8d22ad47b33a", "app@sha256:8d22ad47b33a"),
            // Run by the old image's ID: moves to the new one.
            (old, new),
            ("8d22ad47b33a", new),
            ("sha256:8d22ad47b33a7c5f", new),
        ];
        let image = |id: &str| ImageInspect {
            id: Some(id.into()),
            ..Default::default()
        };
        for (reference, want) in rows {
            let c = ContainerConfig {
                image: Some(reference.into()),
                ..Default::default()
            };
            let got = image_reference(&c, &image(old), &image(new));
            assert_eq!(got.as_deref(), Some(want), "{reference}");
        }
        assert_eq!(
            image_reference(&ContainerConfig::default(), &image(old), &image(new)),
            None
        );
    }

    #[test]
    fn net_mode_rows() {
        let rows = [
            (None, NetMode::Network("bridge".into())),
            (Some("default"), NetMode::Network("bridge".into())),
            (Some("grc-a"), NetMode::Network("grc-a".into())),
            (Some("host"), NetMode::Shared),
            (Some("none"), NetMode::Shared),
            (Some("container:abc"), NetMode::Container("abc".into())),
        ];
        for (mode, want) in rows {
            assert_eq!(NetMode::of(mode), want, "{mode:?}");
        }
    }

    #[test]
    fn platform_rows() {
        let rows = [
            (Some("linux"), Some("amd64"), None, Some("linux/amd64")),
            (
                Some("linux"),
                Some("arm64"),
                Some("v8"),
                Some("linux/arm64/v8"),
            ),
            (Some("linux"), Some("arm"), Some(""), Some("linux/arm")),
            (None, Some("amd64"), None, None),
            (Some("linux"), Some(""), None, None),
        ];
        for (os, arch, variant, want) in rows {
            let i = ImageInspect {
                os: os.map(Into::into),
                architecture: arch.map(Into::into),
                variant: variant.map(Into::into),
                ..Default::default()
            };
            assert_eq!(platform(&i).as_deref(), want, "{os:?} {arch:?} {variant:?}");
        }
    }
}
