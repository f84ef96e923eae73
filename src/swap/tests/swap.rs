//! The swap's call sequences (recreate, update, health-like waits, a stopped container), each
//! failure point with its rollback, the undo and commit that the engine does not let finish,
//! and containers that someone else changes or claims first.

use std::time::Duration;

use super::*;
use crate::action::ActionKind;
use crate::engine::fake::{Fault, Op, Rule, nth_id};
use crate::store::journal::Phase;
use crate::swap::Swapped;

async fn swap(bed: &Bed, state: &mut State, kind: ActionKind, image: &str) -> Swapped {
    let old = bed.details("web").await;
    let digest = (kind == ActionKind::Update).then(|| REMOTE.to_string());
    bed.swapper()
        .swap(state, &old, kind, image, digest, &bed.names())
        .await
}

#[tokio::test(start_paused = true)]
async fn recreate_without_healthcheck_settles_then_commits() {
    let bed = Bed::new();
    bed.run("web", V1);
    let mut state = bed.state();
    let swapped = swap(&bed, &mut state, ActionKind::Recreate, V1).await;
    assert_eq!(swapped, Swapped::Replaced);
    assert_eq!(
        bed.calls(),
        concat(&[
            up_to_stop(V1),
            expand(&[
                "rename 00000003 web",
                "start 00000003",
                // The first look, then one every 500 ms until GUERITE_SETTLE_SECONDS (10 s).
                "details 00000003 ×22",
                "remove 00000001",
                "remove_claim 00000002",
                // Same image: nothing to remove.
                "details 00000003",
            ]),
        ])
    );
    assert_eq!(bed.fake.containers(), ["web 00000003 running"]);
    assert_eq!(state, bed.saved(), "saved as it ends");
    assert!(state.journal.is_empty());
    assert_eq!(state.container("web"), Some(&Default::default()));
}

#[tokio::test(start_paused = true)]
async fn update_with_healthcheck_commits_once_healthy() {
    let bed = Bed::new();
    life(&bed, V2, Life::Healthy(Duration::from_secs(3)), true);
    bed.run("web", V1);
    let mut state = bed.state();
    state.container_mut("web").failures = 2;
    let swapped = swap(&bed, &mut state, ActionKind::Update, V2).await;
    assert_eq!(swapped, Swapped::Replaced);
    assert_eq!(
        bed.calls(),
        concat(&[
            up_to_stop(V2),
            expand(&[
                "rename 00000003 web",
                "start 00000003",
                // Starting at 0, 0.5 … 2.5 s; healthy at 3 s.
                "details 00000003 ×8",
                "remove 00000001",
                // The claim first: it was made from the old image, and a real engine refuses
                // (409) to remove an image a container still uses.
                "remove_claim 00000002",
                "details 00000003",
                "remove_image_if_unused sha256:v1",
            ]),
        ])
    );
    assert_eq!(bed.fake.containers(), ["web 00000003 running"]);
    assert!(
        bed.fake.with(|w| w.images.iter().all(|i| i.id != V1)),
        "the old image is removed"
    );
    assert_eq!(
        state.container("web"),
        Some(&Default::default()),
        "a success clears the failures"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stopped_container_is_replaced_without_stop_start_or_verification() {
    let bed = Bed::new();
    bed.run("web", V1);
    bed.fake.with(|w| w.container("web").running = false);
    let mut state = bed.state();
    let swapped = swap(&bed, &mut state, ActionKind::Recreate, V1).await;
    assert_eq!(swapped, Swapped::Replaced);
    assert_eq!(
        bed.calls(),
        expand(&[
            "create_claim web-guerite-claim sha256:v1",
            "details 00000001",
            "replacement 00000001 sha256:v1",
            "rename 00000001 web-guerite-old-00000001",
            "create web-guerite-new-00000001 sha256:v1",
            "rename 00000003 web",
            "remove 00000001",
            "remove_claim 00000002",
            "details 00000003",
        ])
    );
    assert_eq!(bed.fake.containers(), ["web 00000003 stopped"]);
}

/// The state after a rolled-back swap: one failure, backed off, the digest quarantined only
/// when the image is to blame.
fn assert_failed_once(bed: &Bed, state: &State, quarantined: Option<&str>) {
    assert!(state.journal.is_empty(), "{:?}", state.journal);
    let c = state.container("web").unwrap();
    assert_eq!(
        (c.failures, c.retry_after, c.quarantined.as_deref()),
        (1, Some(bed.now + Duration::from_secs(300)), quarantined)
    );
    assert_eq!(state, &bed.saved(), "saved as it ends");
}

#[tokio::test(start_paused = true)]
async fn create_refused_gives_the_old_container_its_name_back() {
    let bed = Bed::new();
    bed.run("web", V1);
    bed.fake.script(Rule::next(Op::Create).fail(Fault::Refused));
    let mut state = bed.state();
    let swapped = swap(&bed, &mut state, ActionKind::Update, V2).await;
    assert_eq!(
        swapped,
        Swapped::RolledBack(
            "create the new container: create web-guerite-new-00000001 refused by the engine \
             (HTTP 500)"
                .into()
        )
    );
    assert_eq!(
        bed.calls(),
        expand(&[
            "create_claim web-guerite-claim sha256:v1",
            "details 00000001",
            "replacement 00000001 sha256:v2",
            "rename 00000001 web-guerite-old-00000001",
            "create web-guerite-new-00000001 sha256:v2",
            // The undo looks at both (the new one by name: its id was never known) …
            "details 00000001",
            "details web-guerite-new-00000001",
            // … and renames the old one back; it never stopped.
            "rename 00000001 web",
            "remove_claim 00000002",
        ])
    );
    assert_eq!(bed.fake.containers(), ["web 00000001 running"]);
    assert_failed_once(&bed, &state, None);
}

#[tokio::test(start_paused = true)]
async fn renaming_the_new_container_refused_is_rolled_back() {
    let bed = Bed::new();
    bed.run("web", V1);
    bed.fake.script(
        Rule::next(Op::Rename)
            .on("web-guerite-new-00000001")
            .fail(Fault::Refused),
    );
    let mut state = bed.state();
    let swapped = swap(&bed, &mut state, ActionKind::Recreate, V1).await;
    assert_eq!(
        swapped,
        Swapped::RolledBack(
            "rename the new container: rename 00000003 refused by the engine (HTTP 500)".into()
        )
    );
    assert_eq!(
        bed.calls(),
        concat(&[
            up_to_stop(V1),
            vec!["rename 00000003 web".into()],
            expand(UNDO_AFTER_STOP),
        ])
    );
    assert_eq!(bed.fake.containers(), ["web 00000001 running"]);
    assert_failed_once(&bed, &state, None);
}

#[tokio::test(start_paused = true)]
async fn starting_the_new_container_refused_is_rolled_back() {
    let bed = Bed::new();
    bed.run("web", V1);
    bed.fake.script(Rule::next(Op::Start).fail(Fault::Refused));
    let mut state = bed.state();
    let swapped = swap(&bed, &mut state, ActionKind::Update, V2).await;
    assert_eq!(
        swapped,
        Swapped::RolledBack(
            "start the new container: start 00000003 refused by the engine (HTTP 500)".into()
        )
    );
    assert_eq!(
        bed.calls(),
        concat(&[
            up_to_stop(V2),
            expand(&["rename 00000003 web", "start 00000003"]),
            expand(UNDO_AFTER_STOP),
        ])
    );
    assert_eq!(bed.fake.containers(), ["web 00000001 running"]);
    // An engine error says nothing against the image: not quarantined.
    assert_failed_once(&bed, &state, None);
}

#[tokio::test(start_paused = true)]
async fn a_new_container_that_fails_verification_is_rolled_back_and_its_digest_quarantined() {
    #[rustfmt::skip]
    let cases = [
        // Running at the first look and at 0 … 1.5 s, exited at 2 s.
        (Life::Exits(Duration::from_secs(2)), false, 6, "the new container exited"),
        // Starting at the first look and at 0 and 0.5 s, unhealthy at 1 s: no more waiting.
        (Life::Unhealthy(Duration::from_secs(1)), true, 4, "the new container is unhealthy"),
        // Starting for GUERITE_HEALTH_CHECK_TIMEOUT_SECONDS: the first look, then 0 … 60 s.
        (Life::Healthy(Duration::from_secs(120)), true, 122, "the new container was not healthy after 60 s"),
    ];
    for (life_of_v2, healthcheck, looks, why) in cases {
        let bed = Bed::new();
        life(&bed, V2, life_of_v2, healthcheck);
        bed.run("web", V1);
        let mut state = bed.state();
        let swapped = swap(&bed, &mut state, ActionKind::Update, V2).await;
        assert_eq!(swapped, Swapped::RolledBack(why.into()));
        assert_eq!(
            bed.calls(),
            concat(&[
                up_to_stop(V2),
                expand(&[
                    "rename 00000003 web",
                    "start 00000003",
                    &format!("details 00000003 ×{looks}"),
                ]),
                expand(UNDO_AFTER_STOP),
            ]),
            "{why}"
        );
        assert_eq!(bed.fake.containers(), ["web 00000001 running"], "{why}");
        // A verdict against the image: its digest is quarantined.
        assert_failed_once(&bed, &state, Some(REMOTE));
    }
}

#[tokio::test(start_paused = true)]
async fn a_stop_without_answer_is_waited_for_before_the_old_container_is_started() {
    let bed = Bed::new();
    bed.run("web", V1);
    // The engine does not answer the stop, but carries it out 5 s later.
    bed.fake.script(
        Rule::next(Op::Stop)
            .fail(Fault::Other)
            .carried_out_after(Duration::from_secs(5)),
    );
    let mut state = bed.state();
    let swapped = swap(&bed, &mut state, ActionKind::Recreate, V1).await;
    assert_eq!(
        swapped,
        Swapped::RolledBack(
            "stop the old container: the Docker engine did not answer in time".into()
        )
    );
    assert_eq!(
        bed.calls(),
        concat(&[
            up_to_stop(V1),
            // Still running: the stop may still land. Every 250 ms until it has …
            expand(&[
                "details 00000001",
                "details 00000003",
                "details 00000001 ×20",
            ]),
            // … then down: started again, as it ran before.
            expand(UNDO_AFTER_STOP),
        ])
    );
    assert_eq!(bed.fake.containers(), ["web 00000001 running"]);
    assert_failed_once(&bed, &state, None);
}

#[tokio::test(start_paused = true)]
async fn a_refused_stop_is_not_waited_for() {
    let bed = Bed::new();
    bed.run("web", V1);
    bed.fake.script(Rule::next(Op::Stop).fail(Fault::Refused));
    let mut state = bed.state();
    let swapped = swap(&bed, &mut state, ActionKind::Recreate, V1).await;
    assert_eq!(
        swapped,
        Swapped::RolledBack(
            "stop the old container: stop 00000001 refused by the engine (HTTP 500)".into()
        )
    );
    assert_eq!(
        bed.calls(),
        concat(&[
            up_to_stop(V1),
            expand(&[
                "details 00000001",
                "details 00000003",
                "remove 00000003",
                "rename 00000001 web",
                "remove_claim 00000002",
            ]),
        ])
    );
    assert_eq!(bed.fake.containers(), ["web 00000001 running"]);
}

#[tokio::test(start_paused = true)]
async fn an_undo_the_engine_does_not_answer_stays_in_the_journal() {
    let bed = Bed::new();
    bed.run("web", V1);
    bed.fake.script(Rule::next(Op::Start).fail(Fault::Refused));
    bed.fake.script(Rule::next(Op::Remove).fail(Fault::Other));
    let mut state = bed.state();
    let swapped = swap(&bed, &mut state, ActionKind::Recreate, V1).await;
    assert_eq!(
        swapped,
        Swapped::UndoPending {
            reason: "start the new container: start 00000003 refused by the engine (HTTP 500)"
                .into(),
            error: "removed web: the Docker engine did not answer in time".into(),
        }
    );
    assert_eq!(
        bed.calls(),
        concat(&[
            up_to_stop(V1),
            expand(&[
                "rename 00000003 web",
                "start 00000003",
                "details 00000001",
                "details 00000003",
                // No answer: nothing more is tried, and the claim stays with the entry.
                "remove 00000003",
            ]),
        ])
    );
    assert_eq!(
        bed.fake.containers(),
        [
            "web 00000003 stopped",
            "web-guerite-claim 00000002 stopped",
            "web-guerite-old-00000001 00000001 stopped",
        ]
    );
    let entry = state.journal.get("web").unwrap();
    assert_eq!((entry.phase, entry.stop.is_some()), (Phase::Undo, true));
    assert_eq!(state.container("web").unwrap().failures, 1, "counted once");
    assert_eq!(state, bed.saved());
}

#[tokio::test(start_paused = true)]
async fn a_claim_the_engine_does_not_remove_leaves_the_commit_pending() {
    let bed = Bed::new();
    bed.run("web", V1);
    bed.fake
        .script(Rule::next(Op::RemoveClaim).fail(Fault::Other));
    let mut state = bed.state();
    let swapped = swap(&bed, &mut state, ActionKind::Recreate, V1).await;
    assert_eq!(
        swapped,
        Swapped::CommitPending(
            "cannot remove its claim web-guerite-claim: the Docker engine did not answer in time"
                .into()
        )
    );
    assert_eq!(
        bed.calls(),
        concat(&[
            up_to_stop(V1),
            expand(&[
                "rename 00000003 web",
                "start 00000003",
                "details 00000003 ×22",
                "remove 00000001",
                // The claim stays, so the old image is not asked about.
                "remove_claim 00000002",
            ]),
        ])
    );
    assert_eq!(
        bed.fake.containers(),
        ["web 00000003 running", "web-guerite-claim 00000002 stopped"]
    );
    // The entry stays, in the commit phase, with the claim: the next run finishes the swap.
    let entry = state.journal.get("web").unwrap();
    assert_eq!(
        (entry.phase, entry.new_id.as_deref(), entry.claim.as_deref()),
        (
            Phase::Commit,
            Some(nth_id(3).as_str()),
            Some(nth_id(2).as_str())
        )
    );
    assert_eq!(state, bed.saved());
}

#[tokio::test(start_paused = true)]
async fn a_new_container_that_disappears_during_verification_is_rolled_back() {
    let bed = Bed::new();
    bed.run("web", V1);
    // Someone removes it between two looks; the engine answers 404.
    bed.fake.script(
        Rule::next(Op::Details)
            .on("00000003")
            .before(|w| w.remove("00000003"))
            .fail(Fault::Gone),
    );
    let mut state = bed.state();
    let swapped = swap(&bed, &mut state, ActionKind::Update, V2).await;
    assert_eq!(
        swapped,
        Swapped::RolledBack("the new container disappeared".into())
    );
    assert_eq!(
        bed.calls(),
        concat(&[
            up_to_stop(V2),
            expand(&[
                "rename 00000003 web",
                "start 00000003",
                "details 00000003",
                "details 00000001",
                "details 00000003",
                "rename 00000001 web",
                "start 00000001",
                "remove_claim 00000002",
            ]),
        ])
    );
    assert_eq!(bed.fake.containers(), ["web 00000001 running"]);
    // Counted against the image, as a crash of the new container would be.
    assert_failed_once(&bed, &state, Some(REMOTE));
}

#[tokio::test(start_paused = true)]
async fn verification_counts_time_not_looks_on_a_slow_engine() {
    let bed = Bed::new();
    bed.run("web", V1);
    // Each look at the new container takes the engine 2 s to answer: the first answers at
    // 2 s (the settle time starts then), the next ones 2.5 s apart, at 4.5 … 12 s.
    bed.fake.script(
        Rule::next(Op::Details)
            .on("00000003")
            .after(Duration::from_secs(2))
            .always(),
    );
    let mut state = bed.state();
    let swapped = swap(&bed, &mut state, ActionKind::Recreate, V1).await;
    assert_eq!(swapped, Swapped::Replaced);
    let looks = bed
        .calls()
        .iter()
        .filter(|c| *c == "details 00000003")
        .count();
    // 1 + the looks answered at 4, 6.5, 9 and 11.5 s (elapsed 2 … 9.5 s: go on), and at 14 s
    // (elapsed 12 s: settled), then the commit's look.
    assert_eq!(looks, 1 + 5 + 1);
}

#[tokio::test(start_paused = true)]
async fn a_claim_being_made_or_removed_unseen_is_busy_after_five_looks() {
    let bed = Bed::new();
    bed.run("web", V1);
    // The engine holds the claim's name but does not list it yet: every create is refused
    // for the name, and every look finds nothing.
    let squatter = bed.fake.with(|w| w.images[0].clone());
    bed.fake.script(
        Rule::next(Op::CreateClaim)
            .before(move |w| {
                w.add(Ctr::running("web-guerite-claim", &squatter, &[]));
            })
            .always(),
    );
    bed.fake.script(
        Rule::next(Op::Find)
            .before(|w| w.remove("web-guerite-claim"))
            .always(),
    );
    let mut state = bed.state();
    let swapped = swap(&bed, &mut state, ActionKind::Recreate, V1).await;
    assert_eq!(
        swapped,
        Swapped::Skipped(
            "another guerite is working on it (its claim web-guerite-claim is being made or \
             removed)"
                .into()
        )
    );
    assert_eq!(
        bed.calls(),
        [
            "create_claim web-guerite-claim sha256:v1",
            "find web-guerite-claim"
        ]
        .repeat(5)
    );
    assert!(state.journal.is_empty() && state.container("web").is_none());
}

/// What the engine may do with one call the sweep below makes fail.
#[derive(Debug, Clone, Copy)]
enum Upset {
    /// Answers with an error status: it did nothing.
    Refused,
    /// No answer, and nothing done.
    Lost,
    /// No answer, but carried out.
    Unheard,
}

#[tokio::test(start_paused = true)]
async fn any_one_call_failing_leaves_one_container_with_the_name_after_the_next_run() {
    // The calls of a clean recreate: each of them in turn fails, every way an engine that
    // does not lie can fail it. After the swap and one recovery run (the next `guerite run`),
    // the rule holds: `web` is the old container or the verified new one, running; nothing of
    // the swap is left but an old container that could not be removed, recorded for prune.
    let clean = {
        let bed = Bed::new();
        bed.run("web", V1);
        let mut state = bed.state();
        swap(&bed, &mut state, ActionKind::Recreate, V1).await;
        bed.calls()
    };
    for n in 1..=clean.len() {
        for upset in [Upset::Refused, Upset::Lost, Upset::Unheard] {
            let case = format!("call {n} ({}) {upset:?}", clean[n - 1]);
            let bed = Bed::new();
            bed.run("web", V1);
            let old = bed.details("web").await;
            let rule = match upset {
                Upset::Refused => Rule::call(n).fail(Fault::Refused),
                Upset::Lost => Rule::call(n).fail(Fault::Other),
                Upset::Unheard => Rule::call(n)
                    .fail(Fault::Other)
                    .carried_out_after(Duration::ZERO),
            };
            bed.fake.script(rule);
            let mut state = bed.state();
            let swapped = bed
                .swapper()
                .swap(
                    &mut state,
                    &old,
                    ActionKind::Recreate,
                    V1,
                    None,
                    &bed.names(),
                )
                .await;
            let containers = bed.fake.list().await.unwrap();
            bed.swapper().recover_all(&mut state, &containers).await;

            assert!(state.journal.is_empty(), "{case}: {:?}", state.journal);
            let replaced = matches!(swapped, Swapped::Replaced | Swapped::CommitPending(_));
            let web = if replaced { "00000003" } else { "00000001" };
            let mut want = vec![format!("web {web} running")];
            // An old container whose removal got no answer is recorded for prune; the removal
            // may have landed all the same.
            let kept_aside = "web-guerite-old-00000001";
            if state.leftovers.contains_key(kept_aside) {
                assert!(replaced, "{case}");
                if bed
                    .fake
                    .with(|w| w.containers.iter().any(|c| c.name == kept_aside))
                {
                    want.push(format!("{kept_aside} 00000001 stopped"));
                }
            }
            assert_eq!(bed.fake.containers(), want, "{case}: {swapped:?}");
            if bed.state_file().exists() {
                assert_eq!(state, bed.saved(), "{case}");
            } else {
                assert_eq!(state, bed.state(), "nothing to save: {case}");
            }
        }
    }
}
