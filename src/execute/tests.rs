//! The executor on the recording fake engine (engine/fake.rs): the call sequence of each action
//! (update with its pull, recreate, health, restart), dependents in `container:` network mode
//! recreated after their target is replaced, actions superseded in a run, and containers
//! skipped because someone else removed, renamed or claimed them. The swap's own branches are
//! pinned in swap/tests/.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::TimeDelta;

use super::*;
use crate::engine::fake::{Ctr, Fake, Fault, Life, Op, Rule};
use crate::plan::{self, Input, Request};
use crate::swap::tests::{APP, Bed, REMOTE, V1, V2, expand, foreign_claim, life, said, up_to_stop};
use crate::update::registry::Answer;

/// Plans against what the fake lists now and executes; the list call is not recorded.
async fn execute(
    bed: &Bed,
    state: &mut State,
    request: Request,
    checks: &HashMap<String, Checked>,
    dry_run: bool,
) -> Vec<Event> {
    let containers = bed.fake.list().await.unwrap();
    bed.calls();
    let plan = plan::plan(&Input {
        config: &bed.config,
        state,
        containers: &containers,
        now: bed.now,
        request: &request,
        self_id: None,
        busy: &BTreeMap::new(),
    });
    let executor: Executor<'_, Fake> = Executor {
        docker: &bed.fake,
        me: &bed.me,
        config: &bed.config,
        state_file: (!dry_run).then_some(bed.state_file()),
        now: bed.now,
        containers: &containers,
        checks,
    };
    executor.run(&plan, state).await
}

fn force(kind: ActionKind, name: &str) -> Request {
    Request {
        only: vec![name.into()],
        force: Some(kind),
    }
}

/// `guerite run --force <kind> --only web`.
async fn forced(bed: &Bed, state: &mut State, kind: ActionKind) -> Vec<Event> {
    execute(bed, state, force(kind, "web"), &HashMap::new(), false).await
}

/// A run of the schedules.
async fn scheduled(bed: &Bed, state: &mut State) -> Vec<Event> {
    execute(bed, state, Request::default(), &HashMap::new(), false).await
}

/// `forced` for an update, with the registry's answers.
async fn forced_update(
    bed: &Bed,
    state: &mut State,
    checks: &HashMap<String, Checked>,
) -> Vec<Event> {
    execute(bed, state, force(ActionKind::Update, "web"), checks, false).await
}

/// A state whose last run was a minute ago, so that `* * * * *` is due now.
fn a_minute_after(bed: &Bed) -> State {
    State {
        last_run: Some(bed.now - TimeDelta::seconds(60)),
        ..bed.state()
    }
}

/// The swap of the first container, `web`, by `image`, once its claim is taken: everything
/// from the second look to the claim's release.
fn swap_of_web(image: &str, polls: usize) -> Vec<String> {
    let mut calls = up_to_stop(image);
    calls.extend(expand(&[
        "rename 00000003 web",
        "start 00000003",
        &format!("details 00000003 ×{polls}"),
        "remove 00000001",
    ]));
    calls
}

/// The registry's answer for `web`, as `update::check_all` leaves it: the engine's view
/// inspected through the fake (calls not recorded), the registry's digest set by the test.
async fn checked(bed: &Bed, answer: Answer) -> HashMap<String, Checked> {
    let mut c = update::inspect(&bed.fake, "web").await.unwrap();
    bed.calls();
    c.answer = Some(answer);
    HashMap::from([("web".to_string(), c)])
}

#[tokio::test(start_paused = true)]
async fn update_pulls_then_swaps_and_tries_to_remove_the_old_image() {
    let bed = Bed::new();
    bed.fake.with(|w| {
        w.images[0].repo_digests = vec![format!("registry.test/app@sha256:{}", "1".repeat(64))];
        let v2 = w.images.iter().find(|i| i.id == V2).unwrap().clone();
        w.registry.insert(APP.into(), v2);
    });
    bed.run("web", V1);
    let checks = checked(&bed, Answer::Digest(REMOTE.into())).await;
    let mut state = bed.state();
    let items = forced_update(&bed, &mut state, &checks).await;
    assert_eq!(said(&items), ["web update Done: v1 -> v2"]);
    let mut want = expand(&["pull registry.test/app:1", "image registry.test/app:1"]);
    want.extend(swap_of_web(V2, 22));
    want.extend(expand(&[
        "remove_claim 00000002",
        "details 00000003",
        "remove_image_if_unused sha256:v1",
    ]));
    assert_eq!(bed.calls(), want);
    assert_eq!(bed.fake.containers(), ["web 00000003 running"]);
    let result = &state.container("web").unwrap().results[&ActionKind::Update];
    assert_eq!(
        (result.at, result.ok, result.message.as_str()),
        (bed.now, true, "update done")
    );
    assert_eq!(state, bed.saved());
}

#[tokio::test(start_paused = true)]
async fn an_update_whose_digest_is_local_makes_no_call() {
    let bed = Bed::new();
    bed.fake
        .with(|w| w.images[0].repo_digests = vec![format!("registry.test/app@{REMOTE}")]);
    bed.run("web", V1);
    let checks = checked(&bed, Answer::Digest(REMOTE.into())).await;
    let mut state = bed.state();
    let items = forced_update(&bed, &mut state, &checks).await;
    assert_eq!(said(&items), ["web update UpToDate: "]);
    assert_eq!(bed.calls(), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_failed_update_quarantines_the_digest_and_the_next_run_does_not_pull_it() {
    let bed = Bed::new();
    bed.fake.with(|w| {
        let mut v2 = w.images.iter().find(|i| i.id == V2).unwrap().clone();
        v2.life = Life::Exits(Duration::from_secs(1));
        w.images.retain(|i| i.id != V2);
        w.registry.insert(APP.into(), v2);
    });
    bed.run("web", V1);
    let checks = checked(&bed, Answer::Digest(REMOTE.into())).await;
    let mut state = bed.state();
    let items = forced_update(&bed, &mut state, &checks).await;
    assert_eq!(
        said(&items),
        ["web update Failed: the new container exited; rolled back to the old container"]
    );
    assert_eq!(bed.fake.containers(), ["web 00000001 running"]);
    assert_eq!(
        state.container("web").unwrap().quarantined.as_deref(),
        Some(REMOTE)
    );
    bed.calls();
    let items = forced_update(&bed, &mut state, &checks).await;
    assert_eq!(
        said(&items),
        ["web update Skipped: 222222222222 was rolled back before; waiting for a newer one"]
    );
    assert_eq!(bed.calls(), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn recreate_inspects_then_swaps_with_the_same_image() {
    let bed = Bed::new();
    bed.run("web", V1);
    let mut state = bed.state();
    let items = forced(&bed, &mut state, ActionKind::Recreate).await;
    assert_eq!(said(&items), ["web recreate Done: "]);
    let mut want = vec!["details 00000001".to_string()];
    want.extend(swap_of_web(V1, 22));
    want.extend(expand(&["remove_claim 00000002", "details 00000003"]));
    assert_eq!(bed.calls(), want);
    assert_eq!(bed.fake.containers(), ["web 00000003 running"]);
}

#[tokio::test(start_paused = true)]
async fn health_replaces_an_unhealthy_container_and_holds_the_next_one_back() {
    let bed = Bed::new();
    life(&bed, V1, Life::Healthy(Duration::from_secs(1)), true);
    bed.run("web", V1);
    bed.fake
        .with(|w| w.container("web").health = Some(Health::Unhealthy));
    let mut state = bed.state();
    let items = forced(&bed, &mut state, ActionKind::Health).await;
    assert_eq!(said(&items), ["web health Done: "]);
    let mut want = vec!["details 00000001".to_string()];
    // Starting at the first look and at 0 and 0.5 s, healthy at 1 s.
    want.extend(swap_of_web(V1, 4));
    want.extend(expand(&["remove_claim 00000002", "details 00000003"]));
    assert_eq!(bed.calls(), want);
    assert_eq!(
        state.container("web").unwrap().health_after,
        Some(bed.now + Duration::from_secs(300))
    );
}

#[tokio::test(start_paused = true)]
async fn health_leaves_a_container_that_is_healthy_when_looked_at() {
    let bed = Bed::new();
    life(&bed, V1, Life::Runs, true);
    bed.run("web", V1);
    // Unhealthy in the list, healthy again by the time it is inspected.
    bed.fake
        .with(|w| w.container("web").health = Some(Health::Unhealthy));
    bed.fake.script(
        Rule::next(Op::Details).before(|w| w.container("web").health = Some(Health::Healthy)),
    );
    let mut state = bed.state();
    let items = forced(&bed, &mut state, ActionKind::Health).await;
    assert_eq!(said(&items), ["web health Skipped: container is healthy"]);
    assert_eq!(bed.calls(), ["details 00000001"]);
}

#[tokio::test(start_paused = true)]
async fn restart_is_in_place_under_the_claim() {
    let bed = Bed::new();
    bed.run("web", V1);
    let mut state = bed.state();
    let items = forced(&bed, &mut state, ActionKind::Restart).await;
    assert_eq!(said(&items), ["web restart Done: "]);
    assert_eq!(
        bed.calls(),
        [
            "details 00000001",
            "create_claim web-guerite-claim sha256:v1",
            "restart 00000001 10s",
            "remove_claim 00000002",
        ]
    );
    assert_eq!(bed.fake.containers(), ["web 00000001 running"]);
}

/// `vpn`, in the network namespace of the container `web` (by its id, as the engine stores it).
fn dependent_of(bed: &Bed, web: &str, labels: &[(&str, &str)]) {
    let image = bed.fake.with(|w| w.images[0].clone());
    let mut vpn = Ctr::running("vpn", &image, labels);
    vpn.network_mode = Some(format!("container:{web}"));
    bed.fake.add(vpn);
}

/// The recreate of `vpn` (00000002) after `web`'s swap made its claim 00000003 and new
/// container 00000004.
fn dependent_recreate() -> Vec<String> {
    expand(&[
        "details 00000002",
        "create_claim vpn-guerite-claim sha256:v1",
        "details 00000002",
        "replacement 00000002 sha256:v1",
        "rename 00000002 vpn-guerite-old-00000002",
        "create vpn-guerite-new-00000002 sha256:v1",
        "stop 00000002 10s",
        "rename 00000006 vpn",
        "start 00000006",
        "details 00000006 ×22",
        "remove 00000002",
        "remove_claim 00000005",
        "details 00000006",
    ])
}

/// `web`'s recreate (claim 00000003, new container 00000004, with `vpn` 00000002 beside it),
/// then `vpn`'s; `committed`: `web`'s claim could be removed, so its old image is looked at.
fn web_then_vpn(committed: bool) -> Vec<String> {
    let web = swap_of_web(V1, 22).into_iter().map(|l| {
        l.replace("00000003", "00000004")
            .replace("00000002", "00000003")
    });
    let mut calls = vec!["details 00000001".to_string()];
    calls.extend(web);
    calls.push("remove_claim 00000003".into());
    if committed {
        calls.push("details 00000004".into());
    }
    calls.extend(dependent_recreate());
    calls
}

#[tokio::test(start_paused = true)]
async fn a_dependent_is_recreated_after_its_target_and_follows_it_by_name() {
    let bed = Bed::new();
    let web = bed.run("web", V1);
    // Not labelled: a dependent needs no label of its own.
    dependent_of(&bed, &web, &[]);
    let mut state = bed.state();
    let items = forced(&bed, &mut state, ActionKind::Recreate).await;
    assert_eq!(
        said(&items),
        [
            "web recreate Done: ",
            "vpn recreate Done: shares the network of web, which was replaced",
        ]
    );
    assert_eq!(bed.calls(), web_then_vpn(true));
    assert_eq!(
        bed.fake.containers(),
        ["vpn 00000006 running", "web 00000004 running"]
    );
    let mode = bed.fake.with(|w| w.container("vpn").network_mode.clone());
    assert_eq!(
        mode.as_deref(),
        Some("container:web"),
        "the name, not the old id"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dependent_follows_a_swap_whose_commit_is_pending() {
    let bed = Bed::new();
    let web = bed.run("web", V1);
    // Not labelled: a dependent needs no label of its own.
    dependent_of(&bed, &web, &[]);
    bed.fake
        .script(Rule::next(Op::RemoveClaim).fail(Fault::Other));
    let mut state = bed.state();
    let items = forced(&bed, &mut state, ActionKind::Recreate).await;
    assert_eq!(
        said(&items),
        [
            "web recreate Failed: the new container passed verification, but the swap is not \
             finished (cannot remove its claim web-guerite-claim: the Docker engine did not \
             answer in time); the next run finishes it",
            "vpn recreate Done: shares the network of web, which was replaced",
        ]
    );
    assert_eq!(bed.calls(), web_then_vpn(false));
    assert!(state.journal.contains_key("web"));
}

#[tokio::test(start_paused = true)]
async fn a_planned_dependent_is_not_acted_on_again() {
    let bed = Bed::new();
    let every_minute = [("guerite.recreate", "* * * * *")];
    let web = bed.run("web", V1);
    bed.fake.with(|w| {
        let labels = &mut w.container(&web).labels;
        labels.insert("guerite.recreate".into(), "* * * * *".into());
    });
    // Planned after web: it depends on it.
    dependent_of(&bed, &web, &every_minute);
    let mut state = a_minute_after(&bed);
    let items = scheduled(&bed, &mut state).await;
    assert_eq!(
        said(&items),
        [
            "web recreate Done: ",
            "vpn recreate Done: shares the network of web, which was replaced",
            "vpn - Skipped: recreated earlier in this run, as a dependent",
        ]
    );
    assert_eq!(bed.calls(), web_then_vpn(true), "vpn once");
    assert_eq!(
        bed.fake.containers(),
        ["vpn 00000006 running", "web 00000004 running"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_second_due_action_is_superseded_by_the_first() {
    let bed = Bed::new();
    let web = bed.run("web", V1);
    bed.fake.with(|w| {
        let labels = &mut w.container(&web).labels;
        labels.insert("guerite.recreate".into(), "* * * * *".into());
        labels.insert("guerite.restart".into(), "* * * * *".into());
    });
    let mut state = a_minute_after(&bed);
    let items = scheduled(&bed, &mut state).await;
    assert_eq!(
        said(&items),
        [
            "web recreate Done: ",
            "web restart Skipped: superseded by the recreate in this run",
        ]
    );
    let mut want = vec!["details 00000001".to_string()];
    want.extend(swap_of_web(V1, 22));
    want.extend(expand(&["remove_claim 00000002", "details 00000003"]));
    assert_eq!(bed.calls(), want, "no restart");
    let handled = &state.container("web").unwrap().handled;
    assert_eq!(
        handled.keys().collect::<Vec<_>>(),
        [&ActionKind::Recreate],
        "the superseded fire is not recorded as handled"
    );
}

#[tokio::test(start_paused = true)]
async fn a_container_renamed_or_removed_before_it_is_inspected_is_skipped() {
    type Change = fn(&mut crate::engine::fake::World);
    let cases: [(Change, &str); 2] = [
        (
            |w| w.container("web").name = "web2".into(),
            "web recreate Skipped: renamed to web2 by someone else during the run",
        ),
        (
            |w| w.remove("web"),
            "web recreate Skipped: removed by someone else during the run",
        ),
    ];
    for (change, want) in cases {
        let bed = Bed::new();
        bed.run("web", V1);
        bed.fake.script(Rule::next(Op::Details).before(change));
        let mut state = bed.state();
        let items = forced(&bed, &mut state, ActionKind::Recreate).await;
        assert_eq!(said(&items), [want]);
        assert_eq!(bed.calls(), ["details 00000001"], "{want}");
        assert_eq!(state.container("web"), None, "no failure recorded: {want}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_container_removed_once_its_claim_is_taken_is_skipped() {
    let bed = Bed::new();
    bed.run("web", V1);
    bed.fake
        .script(Rule::next(Op::CreateClaim).before(|w| w.remove("web")));
    let mut state = bed.state();
    let items = forced(&bed, &mut state, ActionKind::Recreate).await;
    assert_eq!(
        said(&items),
        ["web recreate Skipped: removed by someone else during the run"]
    );
    assert_eq!(
        bed.calls(),
        [
            "details 00000001",
            "create_claim web-guerite-claim sha256:v1",
            "details 00000001",
            "remove_claim 00000002",
        ]
    );
    assert_eq!(bed.fake.containers(), Vec::<String>::new());
    assert_eq!(state.container("web"), None, "no failure recorded");
}

#[tokio::test(start_paused = true)]
async fn a_container_another_guerite_claims_is_skipped() {
    let bed = Bed::new();
    let web = bed.run("web", V1);
    // The other guerite claims it between this run's list and its action.
    let when = Utc::now() + TimeDelta::seconds(600);
    let claim = foreign_claim(&bed, &web, when);
    bed.fake.script(Rule::next(Op::Details).before(move |w| {
        w.add(claim.clone());
    }));
    let mut state = bed.state();
    let items = forced(&bed, &mut state, ActionKind::Recreate).await;
    assert_eq!(
        said(&items),
        [format!(
            "web recreate Skipped: another guerite is working on it (update since 2026-01-01 \
             00:00:00 UTC, by on host test-host, state {}; its claim web-guerite-claim expires \
             {})",
            bed.state_file().display(),
            when.format("%Y-%m-%d %H:%M:%S UTC")
        )]
    );
    assert_eq!(
        bed.calls(),
        [
            "details 00000001",
            "create_claim web-guerite-claim sha256:v1",
            "find web-guerite-claim",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_makes_no_call() {
    let bed = Bed::new();
    bed.run("web", V1);
    let checks = checked(&bed, Answer::Digest(REMOTE.into())).await;
    let mut state = bed.state();
    for (kind, said_) in [
        (
            ActionKind::Update,
            "web update WouldDo: newer image 222222222222; would pull and replace",
        ),
        (ActionKind::Recreate, "web recreate WouldDo: "),
        (ActionKind::Restart, "web restart WouldDo: "),
    ] {
        let items = execute(&bed, &mut state, force(kind, "web"), &checks, true).await;
        assert_eq!(said(&items), [said_]);
        assert_eq!(bed.calls(), Vec::<String>::new(), "{kind}");
    }
    assert!(!bed.state_file().exists(), "nothing written");
}
