//! Fidelity of the swap (design.md §7): a container created with every option a compose file
//! can express is updated to a new image, and `docker inspect` before and after may differ only
//! in IDs, timestamps, the image and what the new image changed. On both engines of the matrix.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, UdpSocket};
use std::process::Command;
use std::sync::Mutex;

use serde_json::{Map, Value};

use common::{Bed, Run};

/// Waits for nothing: the run is forced, so no minute boundary is involved.
fn update(bed: &Bed, name: &str) -> Run {
    let mut cmd = bed.guerite();
    cmd.args(["run", "--force", "update", "--only", name])
        .env("GUERITE_SETTLE_SECONDS", "2")
        .env("GUERITE_HEALTH_CHECK_TIMEOUT_SECONDS", "20");
    Run::from(cmd.output().unwrap())
}

/// Version `version` of the test image. Its healthcheck fails within two seconds, so a
/// container that lost the operator's healthcheck override would be rolled back; its CMD is
/// masked by the operator's entrypoint and command, which must stay.
fn image_version(bed: &Bed, reference: &str, version: u32) -> String {
    bed.build_push(
        reference,
        &format!(
            "ENV VERSION={version} SHARED=image{version}\n\
             LABEL version={version} com.example.keep=same\n\
             VOLUME /data\n\
             EXPOSE 8080 9090/udp\n\
             HEALTHCHECK --interval=2s --timeout=2s --retries=1 CMD false\n\
             CMD [\"sh\", \"-c\", \"echo image {version}; trap 'exit 0' TERM; sleep 3600 & wait\"]"
        ),
        None,
    );
    bed.docker(&["image", "inspect", "-f", "{{.Id}}", reference])
}

/// The container's command, as an operator's override of entrypoint and command: it stops
/// promptly on the stop signal chosen below (SIGINT, forwarded by the init process).
const ENTRYPOINT: &str = "sh";
const COMMAND: [&str; 2] = ["-c", "trap 'exit 0' TERM INT; sleep 3600 & wait"];

/// What one test made that the bed's own cleanup does not reach: its networks, its anonymous
/// volumes (they carry no test label, and once re-attached by name `rm -v` keeps them) and its
/// images. Removed on drop, after this test's containers, even when the test fails.
struct Leftovers<'a> {
    bed: &'a Bed,
    networks: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Leftovers<'_> {
    fn drop(&mut self) {
        let docker = |args: &[&str]| {
            Command::new("docker")
                .env("DOCKER_HOST", &self.bed.docker_host)
                .args(args)
                .output()
        };
        let label = format!("label=guerite-test={}", self.bed.id);
        if let Ok(out) = docker(&["ps", "-aq", "--filter", &label]) {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(String::from)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f", "-v"];
                args.extend(ids.iter().map(String::as_str));
                let _ = docker(&args);
            }
        }
        for n in &self.networks {
            let _ = docker(&["network", "rm", n]);
        }
        for v in &self.volumes {
            let _ = docker(&["volume", "rm", v]);
        }
        // The three versions of this test's image (build_push labels them with the test id).
        if let Ok(out) = docker(&["images", "-q", "--filter", &label]) {
            let ids: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(String::from)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["rmi", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = docker(&args);
            }
        }
    }
}

/// Two free /24s in 10.213.0.0/16 for this test's networks, created. Both engines share the
/// host's routing table, so a subnet is taken only if no route covers it (any engine's bridge,
/// any other test's) and the engine accepts it; the lock keeps this process's two engines from
/// choosing the same one at once.
fn networks(bed: &Bed, leftovers: &mut Leftovers) -> [(String, u8); 2] {
    static CHOOSING: Mutex<()> = Mutex::new(());
    let _lock = CHOOSING.lock().unwrap_or_else(|e| e.into_inner());
    let routes = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-4", "route", "show", "table", "all"])
            .output()
            .expect("ip route")
            .stdout,
    )
    .into_owned();
    let start = bed
        .id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) as usize;
    let mut made = Vec::new();
    for i in 0..250 {
        let third = ((start + i) % 250 + 2) as u8;
        let subnet = format!("10.213.{third}.0/24");
        if routes.contains(&format!("10.213.{third}.")) {
            continue;
        }
        let name = bed.name(&format!("net{}", made.len()));
        let out = Command::new("docker")
            .env("DOCKER_HOST", &bed.docker_host)
            .args([
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                &subnet,
                "--label",
                &format!("guerite-test={}", bed.id),
                &name,
            ])
            .output()
            .unwrap();
        if out.status.success() {
            leftovers.networks.push(name.clone());
            made.push((name, third));
            if made.len() == 2 {
                return [made[0].clone(), made[1].clone()];
            }
        }
    }
    panic!("no free /24 in 10.213.0.0/16 on {}", bed.docker_host);
}

fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

fn inspect(bed: &Bed, name: &str) -> Value {
    let text = bed.docker(&["inspect", name]);
    let mut all: Vec<Value> = serde_json::from_str(&text).expect("inspect is JSON");
    assert_eq!(all.len(), 1, "{text}");
    all.remove(0)
}

fn string(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Docker's name for an anonymous volume: 64 hex digits.
fn is_generated(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// (destination, volume name) of the container's anonymous volumes.
fn anonymous_volumes(v: &Value) -> BTreeSet<(String, String)> {
    v["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["Type"] == "volume" && is_generated(m["Name"].as_str().unwrap_or("")))
        .map(|m| (string(m, "/Destination"), string(m, "/Name")))
        .collect()
}

/// Takes the runtime-only and ID-bearing fields out of one inspect, each for a reason given
/// beside it; what is left must be equal before and after.
fn normalise(mut v: Value) -> Value {
    let short = string(&v, "/Id")[..12].to_string();
    let top = v.as_object_mut().expect("inspect is an object");
    for key in [
        // The new container's identity and life: compared on their own in the test.
        "Id",
        "Created",
        "State",
        "Image",
        // Files under the container's own directory, named by its ID.
        "ResolvConfPath",
        "HostnamePath",
        "HostsPath",
        "LogPath",
        // Exec instances run in the old container (the test wrote its data through them).
        "ExecIDs",
    ] {
        top.remove(key);
    }
    // The layer directories are the container's own read-write layer, named by the engine.
    if let Some(g) = top.get_mut("GraphDriver").and_then(Value::as_object_mut) {
        g.remove("Data");
    }
    if let Some(mounts) = top.get_mut("Mounts").and_then(Value::as_array_mut) {
        // The engine lists mounts in map order.
        mounts.sort_by_key(|m| string(m, "/Destination"));
        for m in mounts.iter_mut() {
            // A re-attached anonymous volume is a HostConfig.Mounts entry now, which inspect
            // shows with the SELinux relabel mode `z` where a `-v`/VOLUME one shows none; no
            // effect without SELinux, and the same volume either way.
            if m["Type"] == "volume"
                && is_generated(m["Name"].as_str().unwrap_or(""))
                && matches!(m["Mode"].as_str(), Some("" | "z"))
                && let Some(m) = m.as_object_mut()
            {
                m.remove("Mode");
            }
        }
    }
    if let Some(net) = top
        .get_mut("NetworkSettings")
        .and_then(Value::as_object_mut)
    {
        // The network namespace and its file: the new container's own.
        net.remove("SandboxID");
        net.remove("SandboxKey");
        for (_, e) in net
            .get_mut("Networks")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flatten()
        {
            let e = e.as_object_mut().expect("endpoint is an object");
            // The endpoint is the new container's.
            e.remove("EndpointID");
            let static_ip = e
                .get("IPAMConfig")
                .and_then(|i| i.get("IPv4Address"))
                .and_then(Value::as_str)
                .is_some_and(|ip| !ip.is_empty());
            if !static_ip {
                // Handed out by the network's IPAM at start; the MAC is derived from it. A
                // static address (and its MAC) must stay.
                e.remove("IPAddress");
                e.remove("MacAddress");
            }
            // 20.10 adds the short ID to every user-network endpoint's aliases, 26.1 to its
            // DNS names; each container's own.
            for key in ["Aliases", "DNSNames"] {
                if let Some(list) = e.get_mut(key).and_then(Value::as_array_mut) {
                    list.retain(|a| a.as_str() != Some(short.as_str()));
                    list.sort_by_key(|a| a.as_str().unwrap_or_default().to_string());
                }
            }
        }
    }
    v
}

/// Anonymous volumes re-attached by name (design §7), as (target, volume): left to the engine,
/// the new container would get fresh, empty ones. A source-less `--mount type=volume` entry
/// gains its volume's name in `expected`; a `-v /path` or image VOLUME one is a new
/// `HostConfig.Mounts` entry in `after`, taken out of it here.
fn reattached(
    expected: &mut Value,
    after: &mut Value,
    anonymous: &BTreeSet<(String, String)>,
) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut named_in_place = Vec::new();
    if let Some(mounts) = expected
        .pointer_mut("/HostConfig/Mounts")
        .and_then(Value::as_array_mut)
    {
        for m in mounts.iter_mut().filter(|m| m["Type"] == "volume") {
            let target = string(m, "/Target");
            let volume = anonymous.iter().find(|(dst, _)| *dst == target);
            if let (Some((dst, volume)), "") = (volume, string(m, "/Source").as_str()) {
                m["Source"] = volume.clone().into();
                named_in_place.push(dst.clone());
                found.push((dst.clone(), volume.clone()));
            }
        }
    }
    if let Some(mounts) = after
        .pointer_mut("/HostConfig/Mounts")
        .and_then(Value::as_array_mut)
    {
        mounts.retain(|m| {
            let pair = (string(m, "/Target"), string(m, "/Source"));
            let added = m["Type"] == "volume"
                && anonymous.contains(&pair)
                && !named_in_place.contains(&pair.0);
            if added {
                found.push(pair);
            }
            !added
        });
        if mounts.is_empty() {
            // As inspect shows a container that has none.
            after["HostConfig"]
                .as_object_mut()
                .expect("HostConfig is an object")
                .remove("Mounts");
        }
    }
    found.sort();
    found
}

/// Leaves of a JSON tree by path (`/Config/Env/2`).
fn flatten(v: &Value, path: String, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) => {
            if m.is_empty() {
                out.insert(path.clone(), Value::Object(Map::new()));
            }
            for (k, x) in m {
                flatten(x, format!("{path}/{k}"), out);
            }
        }
        Value::Array(a) => {
            if a.is_empty() {
                out.insert(path.clone(), Value::Array(Vec::new()));
            }
            for (i, x) in a.iter().enumerate() {
                flatten(x, format!("{path}/{i}"), out);
            }
        }
        leaf => {
            out.insert(path, leaf.clone());
        }
    }
}

/// `path: before → after` for every leaf that differs; ∅ where a side has none.
fn diff(before: &Value, after: &Value) -> Vec<String> {
    let (mut b, mut a) = (BTreeMap::new(), BTreeMap::new());
    flatten(before, String::new(), &mut b);
    flatten(after, String::new(), &mut a);
    let paths: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    let show = |v: Option<&Value>| v.map_or("∅".to_string(), Value::to_string);
    paths
        .into_iter()
        .filter(|p| b.get(*p) != a.get(*p))
        .map(|p| format!("{p}: {} → {}", show(b.get(p)), show(a.get(p))))
        .collect()
}

fn every_compose_option_survives_an_update(bed: Bed) {
    let mut leftovers = Leftovers {
        bed: &bed,
        networks: Vec::new(),
        volumes: Vec::new(),
    };
    let reference = bed.reference("full", "1");
    let v1 = image_version(&bed, &reference, 1);
    let [(front, _), (back, back_third)] = networks(&bed, &mut leftovers);
    let static_ip = format!("10.213.{back_third}.20");
    let named = bed.volume("named");
    let bind = bed.dir.join("bind");
    std::fs::create_dir_all(&bind).unwrap();
    let (tcp, udp) = (free_port(false), free_port(true));

    let name = bed.name("full");
    let update_label = format!("{}=0 4 * * *", bed.label("update"));
    let test_label = format!("guerite-test={}", bed.id);
    let compose_image = format!("com.docker.compose.image={v1}");
    let tcp_publish = format!("127.0.0.1:{tcp}:8080");
    let udp_publish = format!("127.0.0.1:{udp}:9090/udp");
    let bind_mount = format!("{}:/bind", bind.display());
    let named_mount = format!("{named}:/named");
    let mut create: Vec<&str> = vec![
        "create",
        "--name",
        &name,
        "--label",
        &update_label,
        "--label",
        &test_label,
        "--label",
        "com.example.team=ops",
        // Compose records the image ID it created from; the swap keeps that true.
        "--label",
        &compose_image,
        // Equal to the image's label: indistinguishable from it, and so it stays equal.
        "--label",
        "com.example.keep=same",
        // Environment: an override of the image's SHARED and one of the operator's own.
        "-e",
        "SHARED=operator",
        "-e",
        "OWN=1",
        "--entrypoint",
        ENTRYPOINT,
        "--user",
        "1000:1000",
        "--group-add",
        "44",
        "--workdir",
        "/work",
        "--hostname",
        "fidelity",
        "--domainname",
        "example.test",
        "--tty",
        "-p",
        &tcp_publish,
        "-p",
        &udp_publish,
        "--expose",
        "7070",
        "-v",
        &bind_mount,
        "-v",
        &named_mount,
        "-v",
        "/anon",
        "--mount",
        "type=volume,dst=/mvol",
        "--read-only",
        "--ipc",
        "shareable",
        "--device",
        "/dev/null:/dev/guerite-null:rw",
        "--oom-score-adj",
        "100",
        "--cpuset-cpus",
        "0",
        "--tmpfs",
        "/scratch:size=1m,mode=1777",
        "--restart",
        "on-failure:3",
        "--cap-add",
        "NET_ADMIN",
        "--cap-drop",
        "MKNOD",
        "--security-opt",
        "no-new-privileges",
        "--ulimit",
        "nofile=1024:2048",
        "--log-driver",
        "json-file",
        "--log-opt",
        "max-size=1m",
        "--log-opt",
        "max-file=2",
        "--add-host",
        "db.example.test:10.0.0.5",
        "--dns",
        "10.0.0.53",
        "--dns-search",
        "example.test",
        "--dns-option",
        "ndots:2",
        "--sysctl",
        "net.core.somaxconn=1024",
        "--shm-size",
        "64m",
        "--init",
        "--memory",
        "64m",
        "--memory-reservation",
        "32m",
        "--cpus",
        "0.5",
        "--cpu-shares",
        "512",
        "--pids-limit",
        "100",
        "--stop-signal",
        "SIGINT",
        "--stop-timeout",
        "7",
        "--health-cmd",
        "true",
        "--health-interval",
        "1s",
        "--health-retries",
        "3",
        "--health-start-period",
        "1s",
        "--network",
        &front,
        "--network-alias",
        "web",
        &reference,
    ];
    create.extend(COMMAND);
    bed.docker(&create);
    // A compose file puts it on both networks; on API 1.41 that is create, then connect.
    bed.docker(&[
        "network",
        "connect",
        "--alias",
        "api",
        "--alias",
        "backend",
        "--ip",
        &static_ip,
        "--link-local-ip",
        "169.254.7.7",
        &back,
        &name,
    ]);
    bed.docker(&["start", &name]);
    for dir in ["bind", "named", "anon", "mvol", "data"] {
        bed.docker(&[
            "exec",
            "-u",
            "0",
            &name,
            "sh",
            "-c",
            &format!("echo {dir}-kept > /{dir}/proof"),
        ]);
    }
    wait_healthy(&bed, &name);
    let before = inspect(&bed, &name);
    let anonymous = anonymous_volumes(&before);
    leftovers
        .volumes
        .extend(anonymous.iter().map(|(_, v)| v.clone()));
    let destinations: Vec<&str> = anonymous.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(destinations, ["/anon", "/data", "/mvol"], "{before:#}");
    assert_eq!(string(&before, "/Image"), v1);

    // The first update names the anonymous volumes; a second one must then change nothing but
    // what its image changed, anonymous volumes included.
    let after = updated(&bed, &name, &reference, &before, 2, &anonymous, true);
    updated(&bed, &name, &reference, &after, 3, &anonymous, false);
    drop(leftovers);
}

/// Pushes `version` of the image, runs the update, and checks that the container `before`
/// was replaced by one whose inspect differs only as the normaliser and the new image allow.
/// Returns the new inspect.
fn updated(
    bed: &Bed,
    name: &str,
    reference: &str,
    before: &Value,
    version: u32,
    anonymous: &BTreeSet<(String, String)>,
    first: bool,
) -> Value {
    let new_image = image_version(bed, reference, version);
    assert_ne!(string(before, "/Image"), new_image);
    let run = update(bed, name);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!("updated          {name}")),
        "{run:?}"
    );
    let after = inspect(bed, name);

    // Identity and life, which the normaliser leaves out.
    assert_ne!(
        string(&after, "/Id"),
        string(before, "/Id"),
        "a new container"
    );
    assert_eq!(string(&after, "/Image"), new_image, "on the new image");
    assert_eq!(after["State"]["Running"], true, "{:#}", after["State"]);
    assert_eq!(string(&after, "/State/Health/Status"), "healthy");
    assert_eq!(
        bed.names(),
        vec![name.to_string()],
        "no -guerite-old-/-guerite-new- container left"
    );

    // What the new image changed: its ENV VERSION and LABEL version, and so the image ID that
    // compose's label records (its CMD is masked by the operator's entrypoint and command,
    // which stay).
    let mut expected = normalise(before.clone());
    let old_version = format!("VERSION={}", version - 1);
    for e in expected["Config"]["Env"].as_array_mut().unwrap() {
        if *e == old_version {
            *e = format!("VERSION={version}").into();
        }
    }
    expected["Config"]["Labels"]["version"] = version.to_string().into();
    expected["Config"]["Labels"]["com.docker.compose.image"] = new_image.into();
    let mut got = after.clone();
    // And what the first swap changes on purpose: anonymous volumes are named.
    if first {
        let found = reattached(&mut expected, &mut got, anonymous);
        let want: Vec<(String, String)> = anonymous.iter().cloned().collect();
        assert_eq!(found, want, "{:#}", after["HostConfig"]["Mounts"]);
    }
    assert_eq!(&anonymous_volumes(&after), anonymous, "the same volumes");
    let differences = diff(&expected, &normalise(got));
    assert!(
        differences.is_empty(),
        "update to version {version}: docker inspect differs beyond IDs, timestamps, image \
         and the new image's changes (path: before → after):\n  {}",
        differences.join("\n  ")
    );

    for dir in ["bind", "named", "anon", "mvol", "data"] {
        assert_eq!(
            bed.docker(&["exec", name, "cat", &format!("/{dir}/proof")]),
            format!("{dir}-kept"),
            "/{dir} kept its data"
        );
    }
    after
}

fn wait_healthy(bed: &Bed, name: &str) {
    for _ in 0..40 {
        if bed.inspect(name, "{{.State.Health.Status}}") == "healthy" {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("{name} did not become healthy");
}

/// Each scenario on the machine's engine (API 1.41) and on the newer one (API 1.45).
macro_rules! on_both_engines {
    ($($name:ident => $body:expr;)*) => {
        mod engine_20 { use super::*; $(#[test] fn $name() { ($body)(Bed::new()) })* }
        mod engine_26 { use super::*; $(#[test] fn $name() { ($body)(Bed::newer_engine()) })* }
    };
}

on_both_engines! {
    every_compose_option => every_compose_option_survives_an_update;
}
