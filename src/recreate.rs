//! PLACEHOLDER until the faithful mapping lands: copies Config and HostConfig as they are.
use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, ImageInspect, NetworkingConfig,
};

pub struct Spec {
    pub body: ContainerCreateBody,
    pub platform: Option<String>,
    pub connect: Vec<(String, EndpointSettings)>,
}

pub fn spec(
    old: &ContainerInspectResponse,
    _old_image: &ImageInspect,
    _new_image: &ImageInspect,
    _api: (u32, u32),
    _names_by_id: &HashMap<String, String>,
) -> Result<Spec, String> {
    let config = old.config.clone().unwrap_or_default();
    let host_config = old.host_config.clone();
    let mode = host_config
        .as_ref()
        .and_then(|h| h.network_mode.clone())
        .unwrap_or_default();
    let mut endpoints = HashMap::new();
    let mut connect = Vec::new();
    for (net, _) in old
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default()
    {
        if net == mode {
            endpoints.insert(net, EndpointSettings::default());
        } else if !mode.starts_with("container:") {
            connect.push((net, EndpointSettings::default()));
        }
    }
    Ok(Spec {
        body: ContainerCreateBody {
            hostname: None,
            domainname: config.domainname,
            user: config.user,
            attach_stdin: config.attach_stdin,
            attach_stdout: config.attach_stdout,
            attach_stderr: config.attach_stderr,
            exposed_ports: config.exposed_ports,
            tty: config.tty,
            open_stdin: config.open_stdin,
            stdin_once: config.stdin_once,
            env: config.env,
            cmd: config.cmd,
            healthcheck: config.healthcheck,
            args_escaped: config.args_escaped,
            image: config.image,
            volumes: config.volumes,
            working_dir: config.working_dir,
            entrypoint: config.entrypoint,
            network_disabled: config.network_disabled,
            on_build: config.on_build,
            labels: config.labels,
            stop_signal: config.stop_signal,
            stop_timeout: config.stop_timeout,
            shell: config.shell,
            host_config,
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(endpoints),
            }),
        },
        platform: None,
        connect,
    })
}
