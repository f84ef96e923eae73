//! Recovery on the fake engine, after a run that died at each phase of a swap: the swap is
//! run until the call a rule catches hangs, and dropped there, as a `kill -9` ends a run; the
//! engine may still carry that call out. The next run recovers from the state file that the
//! dead run saved, and the tests pin its calls, its report and what the engine holds after.
//! Then the journal-less cases: an engine that does not answer, a lost journal, leftovers,
//! another guerite's claim, an entry that names someone else's container.

use std::time::Duration;

use super::*;
use crate::action::ActionKind;
use crate::engine::fake::{Fault, Op, Rule};
use crate::store::journal::Phase;
use crate::swap::recovery::Recovered;

/// Runs a recreate of `web` until `rule`'s call hangs, lets it hang for `for_`, then drops the
/// run. Returns the state it saved; the dead run's calls are the swap tests' business, but its
/// last one must be the call that hung.
async fn crash(bed: &Bed, rule: Rule, for_: Duration, hung: &str) -> State {
    bed.fake.script(rule.hang());
    let mut state = bed.state();
    let old = bed.details("web").await;
    let names = bed.names();
    let swapper = bed.swapper();
    let run = swapper.swap(&mut state, &old, ActionKind::Recreate, V1, None, &names);
    assert!(
        tokio::time::timeout(for_, run).await.is_err(),
        "the run hangs"
    );
    assert_eq!(bed.calls().last().map(String::as_str), Some(hung));
    bed.saved()
}

/// The next run's recovery, from the container list on (the list call not recorded).
async fn recover(swapper: &Swapper<'_, Fake>, state: &mut State) -> Recovered {
    let containers = swapper.docker.list().await.unwrap();
    swapper.docker.take_calls();
    swapper.recover_all(state, &containers).await
}

fn phase(state: &State) -> Phase {
    state.journal.get("web").unwrap().phase
}

/// Crashes at `rule`, checks the phase the journal says, recovers, and checks the calls, the
/// report and that `web` is the old container, running, with nothing left beside it.
async fn crash_and_undo(
    (rule, for_, hung): (Rule, Duration, &str),
    at: Phase,
    calls: &[&str],
    text: &str,
) {
    let bed = Bed::new();
    bed.run("web", V1);
    let mut state = crash(&bed, rule, for_, hung).await;
    assert_eq!(phase(&state), at);
    let recovered = recover(&bed.swapper(), &mut state).await;
    assert_eq!(bed.calls(), expand(calls), "{at:?}");
    assert_eq!(said(&recovered.items), [format!("web - Done: {text}")]);
    assert!(recovered.changed && recovered.busy.is_empty());
    assert_eq!(bed.fake.containers(), ["web 00000001 running"], "{at:?}");
    assert!(state.journal.is_empty());
    assert_eq!(state, bed.saved());
}

const UNDID: &str = "undid the interrupted recreate: the old container is back";

#[tokio::test(start_paused = true)]
async fn killed_while_the_engine_renames_the_old_container_aside() {
    // The rename lands although nobody heard of it: the old one is given its name back.
    let rule = Rule::next(Op::Rename).carried_out_after(Duration::ZERO);
    crash_and_undo(
        (
            rule,
            Duration::from_secs(1),
            "rename 00000001 web-guerite-old-00000001",
        ),
        Phase::RenameOld,
        &[
            "details 00000001",
            "details web-guerite-new-00000001",
            "rename 00000001 web",
            "remove_claim 00000002",
        ],
        UNDID,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn killed_before_the_rename_aside_landed() {
    // Nothing changed on the engine: nothing to do but count the interrupted swap.
    let bed = Bed::new();
    bed.run("web", V1);
    let rename = Rule::next(Op::Rename);
    let hung = "rename 00000001 web-guerite-old-00000001";
    let mut state = crash(&bed, rename, Duration::from_secs(1), hung).await;
    assert_eq!(phase(&state), Phase::RenameOld);
    let recovered = recover(&bed.swapper(), &mut state).await;
    assert_eq!(
        bed.calls(),
        [
            "details 00000001",
            "details web-guerite-new-00000001",
            "remove_claim 00000002"
        ]
    );
    assert_eq!(said(&recovered.items), [format!("web - Done: {UNDID}")]);
    assert_eq!(bed.fake.containers(), ["web 00000001 running"]);
    // Backs off like a failure; a crash says nothing against the image.
    let c = state.container("web").unwrap();
    assert_eq!(
        (c.failures, c.retry_after, c.quarantined.as_deref()),
        (1, Some(bed.now + Duration::from_secs(300)), None)
    );
}

#[tokio::test(start_paused = true)]
async fn killed_while_the_engine_creates_the_new_container() {
    // Created, but its id never reached the journal: found by its temporary name.
    let rule = Rule::next(Op::Create).carried_out_after(Duration::ZERO);
    crash_and_undo(
        (
            rule,
            Duration::from_secs(1),
            "create web-guerite-new-00000001 sha256:v1",
        ),
        Phase::CreateNew,
        &[
            "details 00000001",
            "details web-guerite-new-00000001",
            "remove 00000003",
            "rename 00000001 web",
            "remove_claim 00000002",
        ],
        UNDID,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn killed_while_the_engine_is_still_stopping_the_old_container() {
    // The stop takes the engine 5 s and goes on after the run died at 1 s. Recovery sees the
    // old container still running and waits for the stop to end (every 250 ms, from 1.25 s to
    // 5 s) before it decides: starting it at once would leave it stopped when the stop lands.
    let rule = Rule::next(Op::Stop).carried_out_after(Duration::from_secs(5));
    crash_and_undo(
        (rule, Duration::from_secs(1), "stop 00000001 10s"),
        Phase::StopOld,
        &[
            &[
                "details 00000001",
                "details 00000003",
                "details 00000001 ×16",
            ],
            UNDO_AFTER_STOP,
        ]
        .concat(),
        UNDID,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn killed_after_a_stop_whose_time_is_over() {
    // The journal says the stop was sent long ago: no wait, whatever the old one shows.
    let bed = Bed::new();
    bed.run("web", V1);
    let stop = Rule::next(Op::Stop);
    let mut state = crash(&bed, stop, Duration::from_secs(1), "stop 00000001 10s").await;
    let entry = state.journal.get_mut("web").unwrap();
    entry.stop.as_mut().unwrap().at -= chrono::TimeDelta::seconds(3600);
    let recovered = recover(&bed.swapper(), &mut state).await;
    assert_eq!(
        bed.calls(),
        [
            "details 00000001",
            "details 00000003",
            "remove 00000003",
            "rename 00000001 web",
            "remove_claim 00000002"
        ]
    );
    assert_eq!(said(&recovered.items), [format!("web - Done: {UNDID}")]);
    assert_eq!(bed.fake.containers(), ["web 00000001 running"]);
}

#[tokio::test(start_paused = true)]
async fn killed_after_the_stop_undoes_whatever_the_new_container_got_to() {
    let cases = [
        // Stopped aside, the new one created under its temporary name.
        (
            Rule::next(Op::Rename).on("web-guerite-new-00000001"),
            "rename 00000003 web",
            Phase::StartNew,
        ),
        // The new one runs under the name, unverified: unverified means undone.
        (
            Rule::next(Op::Details).on("00000003"),
            "details 00000003",
            Phase::Verify,
        ),
    ];
    for (rule, hung, phase) in cases {
        let hang = (rule, Duration::from_secs(1), hung);
        crash_and_undo(hang, phase, UNDO_AFTER_STOP, UNDID).await;
    }
}

#[tokio::test(start_paused = true)]
async fn killed_while_committing_keeps_the_verified_new_container() {
    for (why, rule, calls) in [
        (
            "the old container is still there",
            Rule::next(Op::Remove),
            vec![
                "details 00000001",
                "details 00000003",
                "remove 00000001",
                "remove_claim 00000002",
            ],
        ),
        (
            "the engine removed the old container",
            Rule::next(Op::Remove).carried_out_after(Duration::ZERO),
            vec![
                "details 00000001",
                "details 00000003",
                "remove_claim 00000002",
            ],
        ),
    ] {
        let bed = Bed::new();
        bed.run("web", V1);
        let mut state = crash(&bed, rule, Duration::from_secs(60), "remove 00000001").await;
        assert_eq!(phase(&state), Phase::Commit, "{why}");
        let recovered = recover(&bed.swapper(), &mut state).await;
        assert_eq!(bed.calls(), calls, "{why}");
        assert_eq!(
            said(&recovered.items),
            [
                "web - Done: finished the interrupted recreate (the new container passed \
              verification)"
            ],
            "{why}"
        );
        assert_eq!(bed.fake.containers(), ["web 00000003 running"], "{why}");
        assert!(state.journal.is_empty(), "{why}");
        assert_eq!(
            state.container("web"),
            None,
            "a finished swap is no failure: {why}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn killed_while_undoing_a_failed_verification() {
    let bed = Bed::new();
    life(&bed, V1, Life::Exits(Duration::from_secs(2)), false);
    bed.run("web", V1);
    let remove = Rule::next(Op::Remove);
    let mut state = crash(&bed, remove, Duration::from_secs(60), "remove 00000003").await;
    assert_eq!(phase(&state), Phase::Undo);
    assert_eq!(state.container("web").unwrap().failures, 1);
    let recovered = recover(&bed.swapper(), &mut state).await;
    assert_eq!(bed.calls(), UNDO_AFTER_STOP);
    assert_eq!(
        said(&recovered.items),
        ["web - Done: finished rolling back the failed recreate: the old container is back"]
    );
    assert_eq!(bed.fake.containers(), ["web 00000001 running"]);
    assert_eq!(
        state.container("web").unwrap().failures,
        1,
        "the failure was counted before the undo began, not again"
    );
}

#[tokio::test(start_paused = true)]
async fn an_engine_that_does_not_answer_keeps_the_entry_for_the_next_run() {
    let bed = Bed::new();
    bed.run("web", V1);
    let rule = Rule::next(Op::Rename).on("web-guerite-new-00000001");
    let mut state = crash(&bed, rule, Duration::from_secs(1), "rename 00000003 web").await;
    let entry = state.journal.get("web").cloned();
    bed.fake.script(Rule::next(Op::Details).fail(Fault::Other));
    let swapper = bed.swapper();
    let recovered = recover(&swapper, &mut state).await;
    assert_eq!(bed.calls(), ["details 00000001"]);
    let why = "cannot see container 000000010000: the Docker engine did not answer in time; \
               the interrupted recreate is finished by a later run";
    assert_eq!(
        said(&recovered.items),
        [format!("web - Failed: recovery failed: {why}")]
    );
    assert_eq!(recovered.busy.get("web").map(String::as_str), Some(why));
    assert_eq!(state.journal.get("web").cloned(), entry, "kept as it was");
    assert_eq!(
        bed.fake.containers(),
        [
            "web-guerite-claim 00000002 stopped",
            "web-guerite-new-00000001 00000003 stopped",
            "web-guerite-old-00000001 00000001 stopped",
        ],
        "nothing touched, the claim kept"
    );

    // The next run, with an engine that answers, finishes the work.
    let recovered = recover(&swapper, &mut state).await;
    assert_eq!(said(&recovered.items), [format!("web - Done: {UNDID}")]);
    assert_eq!(bed.fake.containers(), ["web 00000001 running"]);
}

#[tokio::test(start_paused = true)]
async fn a_lost_journal_is_undone_from_an_abandoned_claim() {
    // The state file was deleted mid-swap: the next run is a new instance, for which the
    // dead run's claim is another guerite's, until its deadline has passed.
    let bed = Bed::new();
    bed.run("web", V1);
    let rule = Rule::next(Op::Rename).on("web-guerite-new-00000001");
    crash(&bed, rule, Duration::from_secs(1), "rename 00000003 web").await;
    let new_instance = Holder {
        instance: "i-new".into(),
        ..bed.me.clone()
    };
    let swapper = Swapper {
        me: &new_instance,
        ..bed.swapper()
    };
    let mut state = State {
        instance: "i-new".into(),
        ..State::fresh()
    };

    let recovered = recover(&swapper, &mut state).await;
    assert_eq!(bed.calls(), Vec::<String>::new(), "held: nothing touched");
    assert!(recovered.items.is_empty());
    assert!(
        recovered.busy["web"].starts_with("another guerite is working on it (recreate since "),
        "{:?}",
        recovered.busy
    );

    bed.fake.with(|w| {
        let expired = (Utc::now() - chrono::TimeDelta::seconds(1)).to_rfc3339();
        let claim = w.container("web-guerite-claim");
        claim.labels.insert("guerite.claim.expires".into(), expired);
    });
    let recovered = recover(&swapper, &mut state).await;
    assert_eq!(
        bed.calls(),
        [
            "remove_claim 00000002",
            // Its own claim, made from the old container (found by the claim's old_id).
            "create_claim web-guerite-claim sha256:v1",
            "details 00000001",
            "details web-guerite-new-00000001",
            "remove 00000003",
            "rename 00000001 web",
            "start 00000001",
            "remove_claim 00000004",
        ]
    );
    assert_eq!(
        said(&recovered.items),
        [
            "web - Done: undid the recreate whose journal entry was lost (from its claim): the \
          old container is back"
        ]
    );
    assert_eq!(bed.fake.containers(), ["web 00000001 running"]);
}

#[tokio::test(start_paused = true)]
async fn leftovers_without_a_journal_give_the_old_container_its_name_back() {
    let bed = Bed::new();
    let old = bed.run("web-guerite-old-00000001", V1);
    bed.fake.with(|w| w.container(&old).running = false);
    let mut state = bed.state();
    let recovered = recover(&bed.swapper(), &mut state).await;
    assert_eq!(
        bed.calls(),
        [
            "create_claim web-guerite-claim sha256:v1",
            "family web",
            "rename 00000001 web",
            "start 00000001",
            "family web",
            "remove_claim 00000002",
        ]
    );
    assert_eq!(
        said(&recovered.items),
        [
            "web - Done: leftovers of an earlier swap: renamed web-guerite-old-00000001 to web; \
          started web"
        ]
    );
    assert_eq!(bed.fake.containers(), ["web 00000001 running"]);
}

#[tokio::test(start_paused = true)]
async fn an_old_leftover_beside_its_name_is_kept_aside_and_said_once() {
    let bed = Bed::new();
    bed.run("web", V1);
    let old = bed.run("web-guerite-old-00000009", V1);
    bed.fake.with(|w| w.container(&old).running = false);
    let mut state = bed.state();
    let recovered = recover(&bed.swapper(), &mut state).await;
    assert_eq!(
        bed.calls(),
        Vec::<String>::new(),
        "nothing to do on the engine"
    );
    assert_eq!(
        said(&recovered.items),
        [
            "web - Skipped: web-guerite-old-00000009 is an old container left by a swap that has \
          no journal entry; it is kept aside, stopped, for GUERITE_ROLLBACK_GRACE_SECONDS"
        ]
    );
    assert_eq!(
        state.leftovers.get("web-guerite-old-00000009"),
        Some(&bed.now)
    );
    let recovered = recover(&bed.swapper(), &mut state).await;
    assert!(recovered.items.is_empty(), "said once");
}

#[tokio::test(start_paused = true)]
async fn another_guerites_live_claim_leaves_the_name_alone() {
    let bed = Bed::new();
    let web = bed.run("web", V1);
    let expires = Utc::now() + chrono::TimeDelta::seconds(600);
    bed.fake.add(foreign_claim(&bed, &web, expires));
    // A leftover of that guerite's swap, which this one must not touch either.
    bed.run("web-guerite-new-00000001", V1);
    let mut state = bed.state();
    let recovered = recover(&bed.swapper(), &mut state).await;
    assert_eq!(bed.calls(), Vec::<String>::new());
    assert!(recovered.items.is_empty());
    assert!(!recovered.changed);
    assert!(
        recovered.busy["web"].starts_with("another guerite is working on it (update since "),
        "{:?}",
        recovered.busy
    );
}

#[tokio::test(start_paused = true)]
async fn an_entry_naming_a_container_that_is_not_ours_is_refused() {
    let bed = Bed::new();
    bed.run("web", V1);
    let rule = Rule::next(Op::Rename).on("web-guerite-new-00000001");
    let mut state = crash(&bed, rule, Duration::from_secs(1), "rename 00000003 web").await;
    // Someone relabelled the old container: it is no longer this guerite's.
    bed.fake.with(|w| w.container("00000001").labels.clear());
    let recovered = recover(&bed.swapper(), &mut state).await;
    assert_eq!(bed.calls(), ["details 00000001", "details 00000003"]);
    let text = format!(
        "journal entry for the interrupted recreate refused, nothing touched: container \
         000000010000 (web-guerite-old-00000001) does not carry this guerite's labels and \
         scope; check the containers, then remove the entry from {}",
        bed.state_file().display()
    );
    assert_eq!(said(&recovered.items), [format!("web - Error: {text}")]);
    assert_eq!(recovered.busy.get("web"), Some(&text));
    assert!(state.journal.contains_key("web"), "kept");
}
