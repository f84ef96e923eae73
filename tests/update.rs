//! Image updates on both engines of the matrix, against the loopback registries.

mod common;

use std::path::Path;

use common::{Bed, Run, bed_var};

/// Waits for nothing: the runs here are forced, so no minute boundary is involved.
fn update(bed: &Bed, name: &str, env: &[(&str, &str)]) -> Run {
    let mut cmd = bed.guerite();
    cmd.args(["run", "--force", "update", "--only", name])
        .env("GUERITE_SETTLE_SECONDS", "2")
        .env("GUERITE_HEALTH_CHECK_TIMEOUT_SECONDS", "20");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run::from(cmd.output().unwrap())
}

const STOPS_PROMPTLY: &str = r#"CMD ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]"#;

fn image_version(bed: &Bed, reference: &str, version: u32, extra: &str) -> String {
    bed.build_push(
        reference,
        &format!("ENV VERSION={version} SHARED=image{version}\nLABEL version={version}\n{STOPS_PROMPTLY}\n{extra}"),
        None,
    )
}

/// Lines of a registry access log after `offset`, for one repository.
fn log_since(path: &str, offset: u64, repo: &str) -> Vec<String> {
    let text = std::fs::read(path).unwrap();
    let text = String::from_utf8_lossy(&text[offset as usize..]).into_owned();
    text.lines()
        .filter(|l| l.contains(&format!("/v2/{repo}/manifests/")) && l.contains("HTTP/1.1\""))
        .map(String::from)
        .collect()
}

fn new_image_defaults_take_effect_and_operator_settings_stay(bed: Bed) {
    let reference = bed.reference("app", "1");
    image_version(&bed, &reference, 1, "");
    let volume = bed.volume("data");
    let name = bed.container_of(
        "app",
        &reference,
        &[("update", "0 4 * * *"), ("operator.label", "mine")],
        &[
            "-e",
            "SHARED=operator",
            "-e",
            "OWN=1",
            "-v",
            &format!("{volume}:/data"),
        ],
        &[],
    );
    bed.docker(&["exec", &name, "sh", "-c", "echo kept > /data/proof"]);
    let old_id = bed.inspect(&name, "{{.Id}}");

    let first = update(&bed, &name, &[]);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(first.stdout.contains("up to date"), "{first:?}");
    assert_eq!(
        bed.inspect(&name, "{{.Id}}"),
        old_id,
        "nothing changed, nothing replaced"
    );

    image_version(
        &bed,
        &reference,
        2,
        r#"CMD ["sh", "-c", "trap 'exit 0' TERM; echo v2; sleep 3600 & wait"]"#,
    );
    let run = update(&bed, &name, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!("updated          {name}")),
        "{run:?}"
    );
    assert_ne!(bed.inspect(&name, "{{.Id}}"), old_id);
    assert_eq!(bed.names(), vec![name.clone()], "no leftovers");
    assert_eq!(bed.inspect(&name, "{{.State.Running}}"), "true");
    let env = bed.inspect(&name, "{{json .Config.Env}}");
    assert!(env.contains("\"VERSION=2\""), "the new image's ENV: {env}");
    assert!(
        env.contains("\"SHARED=operator\"") && env.contains("\"OWN=1\""),
        "the operator's env: {env}"
    );
    assert_eq!(
        bed.inspect(&name, "{{index .Config.Labels \"version\"}}"),
        "2",
        "the new image's LABEL"
    );
    assert_eq!(
        bed.inspect(&name, "{{index .Config.Labels \"operator.label\"}}"),
        "mine"
    );
    assert!(
        bed.inspect(&name, "{{json .Config.Cmd}}")
            .contains("echo v2"),
        "the new image's CMD"
    );
    assert_eq!(
        bed.inspect(&name, "{{.Config.Image}}"),
        reference,
        "the operator's reference"
    );
    assert_eq!(bed.docker(&["exec", &name, "cat", "/data/proof"]), "kept");
}

fn nothing_changed_costs_one_head_per_reference_and_no_pull(bed: Bed) {
    let log = bed_var("GUERITE_TEST_REGISTRY_LOG");
    let (a, b) = (bed.reference("a", "1"), bed.reference("b", "1"));
    image_version(&bed, &a, 1, "");
    image_version(&bed, &b, 1, "");
    for (short, reference) in [("a1", &a), ("a2", &a), ("a3", &a), ("b1", &b)] {
        bed.container_of(short, reference, &[("update", "0 4 * * *")], &[], &[]);
    }
    let offset = std::fs::metadata(&log).unwrap().len();
    let since = bed.docker(&["version", "-f", "{{.Server.Version}}"]);
    let _ = since;
    let t0 = now();
    let run = Run::from(
        bed.guerite()
            .args(["run", "--force", "update"])
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.matches("up to date").count(), 4, "{run:?}");
    // The registry writes its access line after answering.
    std::thread::sleep(std::time::Duration::from_millis(500));
    for reference in [&a, &b] {
        let repo = reference
            .split_once('/')
            .unwrap()
            .1
            .rsplit_once(':')
            .unwrap()
            .0;
        let lines = log_since(&log, offset, repo);
        let heads = lines.iter().filter(|l| l.contains("\"HEAD ")).count();
        let gets = lines.iter().filter(|l| l.contains("\"GET ")).count();
        assert_eq!((heads, gets), (1, 0), "{repo}: one HEAD, no GET: {lines:?}");
    }
    let pulls = pulls_since(&bed, &t0);
    let ours: Vec<&str> = pulls.lines().filter(|l| l.contains(&bed.id)).collect();
    assert!(ours.is_empty(), "no pull: {ours:?}");
}

fn rollback_quarantines_the_digest_until_a_newer_one(bed: Bed, failing: &str) {
    let reference = bed.reference("app", "1");
    image_version(&bed, &reference, 1, "");
    let volume = bed.volume("data");
    let name = bed.container_of(
        "app",
        &reference,
        &[("update", "0 4 * * *")],
        &["-v", &format!("{volume}:/data")],
        &[],
    );
    bed.docker(&["exec", &name, "sh", "-c", "echo kept > /data/proof"]);
    let old_id = bed.inspect(&name, "{{.Id}}");
    let old_image = bed.inspect(&name, "{{.Image}}");

    image_version(&bed, &reference, 2, failing);
    let run = update(&bed, &name, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("rolled back"), "{run:?}");
    assert_eq!(bed.inspect(&name, "{{.Id}}"), old_id, "same container back");
    assert_eq!(bed.inspect(&name, "{{.Image}}"), old_image, "old image");
    assert_eq!(bed.inspect(&name, "{{.State.Running}}"), "true");
    assert_eq!(bed.names(), vec![name.clone()], "no leftovers");
    assert_eq!(bed.docker(&["exec", &name, "cat", "/data/proof"]), "kept");

    let check = bed.run(&["check", &name]);
    assert!(
        check.stdout.contains("update available: yes")
            && check.stdout.contains("quarantined: sha256:"),
        "{check:?}"
    );
    assert!(
        check.stdout.contains("backoff: 1 failed replacement"),
        "{check:?}"
    );

    let t0 = now();
    let again = update(&bed, &name, &[]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("was rolled back before"), "{again:?}");
    let pulls = pulls_since(&bed, &t0);
    assert!(
        !pulls.contains(&bed.id),
        "the same digest is not pulled again: {pulls}"
    );

    image_version(&bed, &reference, 3, "");
    let third = update(&bed, &name, &[]);
    assert_eq!(third.code, 0, "a newer digest is tried: {third:?}");
    assert!(
        bed.inspect(&name, "{{json .Config.Env}}")
            .contains("VERSION=3"),
        "{third:?}"
    );
}

fn dependents_in_its_network_namespace_work_afterwards(bed: Bed) {
    let reference = bed.reference("app", "1");
    image_version(&bed, &reference, 1, "");
    let app = bed.container_of("app", &reference, &[("update", "0 4 * * *")], &[], &[]);
    let side = bed.container("side", &[], &["--network", &format!("container:{app}")]);
    image_version(&bed, &reference, 2, "");
    let run = update(&bed, &app, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!("recreated        {side}")),
        "{run:?}"
    );
    assert_eq!(bed.inspect(&side, "{{.State.Running}}"), "true", "{run:?}");
    let app_id = bed.inspect(&app, "{{.Id}}");
    let mode = bed.inspect(&side, "{{.HostConfig.NetworkMode}}");
    assert!(
        mode == format!("container:{app_id}") || mode == format!("container:{app}"),
        "follows the new container: {mode}"
    );
    assert_eq!(bed.names().len(), 2, "no leftovers: {:?}", bed.names());
}

/// A Docker config with a login for the auth registry.
fn login(bed: &Bed, password: &str) -> std::path::PathBuf {
    let dir = bed.dir.join(format!("docker-config-{password}"));
    std::fs::create_dir_all(&dir).unwrap();
    let auth = format!("{}:{password}", bed_var("GUERITE_TEST_AUTH_USER"));
    let encoded = base64(auth.as_bytes());
    let config = format!(
        r#"{{"auths": {{"{}": {{"auth": "{encoded}"}}}}}}"#,
        bed_var("GUERITE_TEST_AUTH_REGISTRY")
    );
    std::fs::write(dir.join("config.json"), config).unwrap();
    dir
}

fn credentials_from_the_docker_config(bed: Bed) {
    let good = login(&bed, &bed_var("GUERITE_TEST_AUTH_PASSWORD"));
    let bad = login(&bed, "wrong");
    let private = format!(
        "{}/{}/private:1",
        bed_var("GUERITE_TEST_AUTH_REGISTRY"),
        bed.id
    );
    let write = |version: u32| {
        bed.build_push(
            &private,
            &format!("ENV VERSION={version}\n{STOPS_PROMPTLY}"),
            Some(&good),
        );
    };
    write(1);
    let app = bed.container_of("private", &private, &[("update", "0 4 * * *")], &[], &[]);
    let public = bed.reference("public", "1");
    image_version(&bed, &public, 1, "");
    let other = bed.container_of("public", &public, &[("update", "0 4 * * *")], &[], &[]);
    write(2);
    bed.docker(&["rmi", &private]);

    let with = |config: &Path| {
        let mut cmd = bed.guerite();
        cmd.args(["run", "--force", "update"])
            .env("DOCKER_CONFIG", config)
            .env("GUERITE_SETTLE_SECONDS", "2");
        Run::from(cmd.output().unwrap())
    };
    let denied = with(&bad);
    assert_eq!(denied.code, 1, "{denied:?}");
    let line = denied
        .stdout
        .lines()
        .find(|l| l.contains(&app))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("update failed") && line.contains("rejected"),
        "{denied:?}"
    );
    assert!(
        !denied.stdout.contains("s3cret") && !denied.stderr.contains("s3cret"),
        "no secret in the output"
    );
    assert!(
        denied.stdout.contains(&format!("up to date       {other}")),
        "the other container proceeds: {denied:?}"
    );

    let ok = with(&good);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(
        ok.stdout.contains(&format!("updated          {app}")),
        "{ok:?}"
    );
    assert!(
        bed.inspect(&app, "{{json .Config.Env}}")
            .contains("VERSION=2")
    );
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The engine's pull events since `t0` (what was pulled, one per line).
fn pulls_since(bed: &Bed, t0: &str) -> String {
    bed.docker(&[
        "events",
        "--since",
        t0,
        "--until",
        &now(),
        "--filter",
        "type=image",
        "--filter",
        "event=pull",
        "--format",
        "{{.Actor.ID}}",
    ])
}

/// The run's events as data: an update and a rolled-back one name both images, the digest,
/// the error and how long they took.
fn events_name_the_images_and_the_digest(bed: Bed) {
    let reference = bed.reference("app", "1");
    image_version(&bed, &reference, 1, "");
    let name = bed.container_of("app", &reference, &[("update", "0 4 * * *")], &[], &[]);
    let v1 = bed.inspect(&name, "{{.Image}}");
    let event = |env: &[(&str, &str)]| {
        let run = update(&bed, &name, &[&[("GUERITE_JSON", "true")], env].concat());
        let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
        let items = report["items"].as_array().expect("items").clone();
        assert_eq!(items.len(), 1, "{report}");
        items[0].clone()
    };

    image_version(&bed, &reference, 2, EXITS_AT_ONCE);
    let failed = event(&[]);
    assert_eq!(failed["outcome"], "failed", "{failed}");
    assert_eq!(failed["image"], reference.as_str(), "{failed}");
    assert_eq!(failed["old_image"], v1.as_str(), "{failed}");
    let v2 = failed["new_image"]
        .as_str()
        .expect("the image tried")
        .to_string();
    assert!(v2.starts_with("sha256:") && v2 != v1, "{failed}");
    assert!(
        failed["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{failed}"
    );
    let error = failed["error"].as_str().expect("an error");
    assert!(
        !error.is_empty() && failed["detail"].as_str().unwrap().starts_with(error),
        "{failed}"
    );
    assert!(failed["duration_ms"].as_u64().is_some(), "{failed}");

    image_version(&bed, &reference, 3, "");
    let done = event(&[]);
    assert_eq!(done["outcome"], "done", "{done}");
    assert_eq!(done["action"], "update", "{done}");
    assert_eq!(
        done["trigger"],
        serde_json::json!({"by": "forced"}),
        "{done}"
    );
    assert_eq!(done["old_image"], v1.as_str(), "{done}");
    assert_eq!(
        done["new_image"],
        bed.inspect(&name, "{{.Image}}").as_str(),
        "{done}"
    );
    assert!(
        done["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{done}"
    );
    assert_eq!(done.get("error"), None, "{done}");
    // The old image, which nothing uses any more, is removed with the old container.
    let inspect = std::process::Command::new("docker")
        .env("DOCKER_HOST", &bed.docker_host)
        .args(["image", "inspect", &v1])
        .output()
        .unwrap();
    assert!(!inspect.status.success(), "{v1} is still on the host");
}

fn now() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        .to_string()
}

const UNHEALTHY: &str = "HEALTHCHECK --interval=1s --retries=1 CMD false";
const EXITS_AT_ONCE: &str = r#"CMD ["sh", "-c", "exit 3"]"#;

/// Each scenario on the machine's engine (API 1.41) and on the newer one (API 1.45).
macro_rules! on_both_engines {
    ($($name:ident => $body:expr;)*) => {
        mod engine_20 { use super::*; $(#[test] fn $name() { ($body)(Bed::new()) })* }
        mod engine_26 { use super::*; $(#[test] fn $name() { ($body)(Bed::newer_engine()) })* }
    };
}

on_both_engines! {
    new_image_defaults => new_image_defaults_take_effect_and_operator_settings_stay;
    nothing_changed => nothing_changed_costs_one_head_per_reference_and_no_pull;
    rollback_unhealthy => |bed| rollback_quarantines_the_digest_until_a_newer_one(bed, UNHEALTHY);
    rollback_exits_at_once => |bed| rollback_quarantines_the_digest_until_a_newer_one(bed, EXITS_AT_ONCE);
    dependents => dependents_in_its_network_namespace_work_afterwards;
    credentials => credentials_from_the_docker_config;
    events => events_name_the_images_and_the_digest;
}

#[test]
fn monitor_only_reports_and_never_pulls() {
    let bed = Bed::new();
    let reference = bed.reference("app", "1");
    image_version(&bed, &reference, 1, "");
    let name = bed.container_of(
        "app",
        &reference,
        &[("update", "0 4 * * *"), ("guerite.monitor_only", "true")],
        &[],
        &[],
    );
    let old_id = bed.inspect(&name, "{{.Id}}");
    image_version(&bed, &reference, 2, "");
    bed.docker(&["rmi", &reference]);
    let t0 = now();
    let run = update(&bed, &name, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!("update available {name}")),
        "{run:?}"
    );
    assert_eq!(bed.inspect(&name, "{{.Id}}"), old_id);
    let pulls = pulls_since(&bed, &t0);
    assert!(!pulls.contains(&bed.id), "never pulls: {pulls}");
}
