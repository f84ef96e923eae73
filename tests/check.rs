//! `guerite check` against the real engine.

mod common;

use common::{Bed, Run};

/// `guerite check` with GUERITE_TZ set to `tz`.
fn check_in(bed: &Bed, tz: &str, args: &[&str]) -> Run {
    Run::from(
        bed.guerite()
            .args(args)
            .env("GUERITE_TZ", tz)
            .output()
            .unwrap(),
    )
}

#[test]
fn table_and_single_container_diagnosis_in_the_configured_zone() {
    let bed = Bed::new();
    let web = bed.container(
        "web",
        &[("restart", "0 3 * * *"), ("update", "@weekly")],
        &[],
    );
    let bare = bed.container("bare", &[("health", "*/5 * * * *")], &[]);
    let check = |args: &[&str]| check_in(&bed, "Europe/Paris", args);

    let table = check(&["check"]);
    assert_eq!(table.code, 0, "{table:?}");
    assert!(table.stdout.contains("NEXT (Europe/Paris)"), "{table:?}");
    let web_row = table
        .stdout
        .lines()
        .find(|l| l.starts_with(&web))
        .expect("a row for web");
    assert!(
        web_row.contains("running") && web_row.contains("update") && web_row.contains("@weekly"),
        "{table:?}"
    );
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains("restart") && l.contains("0 3 * * *") && l.contains(" 03:00")),
        "{table:?}"
    );

    let one = check(&["check", &web]);
    assert_eq!(one.code, 0, "{one:?}");
    let next = one
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("next:") && l.contains("03:00"))
        .expect("next fire times");
    assert_eq!(
        next.matches("03:00 CE").count(),
        3,
        "three fire times in Paris time: {one:?}"
    );
    assert!(one.stdout.contains("not due; next"), "{one:?}");

    let bare_one = check(&["check", &bare]);
    assert!(
        bare_one.stdout.contains("has no healthcheck"),
        "{bare_one:?}"
    );

    let json = check(&["check", &web, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(v["schedules"][0]["action"], "update");
    assert_eq!(v["schedules"][1]["next"].as_array().map(Vec::len), Some(3));

    // Evaluated as if it were just after 03:00 Paris time, with no previous run: due.
    let at = check(&["check", &web, "--at", "2030-01-02 03:00:30"]);
    assert!(
        at.stdout
            .contains("due now (fire time 2030-01-02 03:00 CET)"),
        "{at:?}"
    );
}

#[test]
fn unknown_and_unmonitored_names() {
    let bed = Bed::new();
    let plain = bed.container("plain", &[], &[]);
    let run = bed.run(&["check", &plain]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("is not monitored"), "{run:?}");
    let missing = bed.name("missing");
    let run = bed.run(&["check", &missing]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("no container named \"{missing}\"")),
        "{run:?}"
    );
}

#[test]
fn daylight_saving_shifts_are_shown_beside_the_fire_times() {
    let bed = Bed::new();
    let web = bed.container(
        "web",
        &[("restart", "5,30 2 * * *"), ("update", "30 1 * * *")],
        &[],
    );
    let check = |args: &[&str]| check_in(&bed, "America/New_York", args);
    let text = check(&["check", &web, "--at", "2027-03-13 12:00"]);
    assert_eq!(text.code, 0, "{text:?}");
    let dst: Vec<&str> = text
        .stdout
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("dst:"))
        .map(str::trim)
        .collect();
    assert_eq!(
        dst,
        ["02:05 and 02:30 do not exist on 2027-03-14; they run once, at 03:00 EDT"],
        "{text:?}"
    );

    let json = check(&["check", &web, "--json", "--at", "2027-11-06 12:00"]);
    assert_eq!(json.code, 0, "{json:?}");
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    let update = &v["schedules"][0];
    assert_eq!(update["action"], "update", "{v}");
    assert_eq!(
        update["next"],
        serde_json::json!([
            "2027-11-07T05:30:00Z",
            "2027-11-08T06:30:00Z",
            "2027-11-09T06:30:00Z"
        ]),
        "{v}"
    );
    assert_eq!(
        update["dst"],
        serde_json::json!([{"fire": "2027-11-07T05:30:00Z", "local": ["2027-11-07 01:30"], "runs": "first_only"}]),
        "{v}"
    );
    let restart = &v["schedules"][1];
    assert_eq!(restart["dst"], serde_json::json!([]), "{v}");
}

#[test]
fn day_fields_and_backwards_ranges_as_vixie_cron_reads_them() {
    let bed = Bed::new();
    // A day field that starts with `*` ANDs the two: odd days that are Mondays.
    let odd_mondays = bed.container("odd-mondays", &[("restart", "0 12 */2 * 1")], &[]);
    // Neither starts with `*`: the 13th, or a Friday.
    let either = bed.container("either", &[("restart", "0 12 13 * 5")], &[]);
    let backwards = bed.container("backwards", &[("restart", "0 0 * * sat-mon")], &[]);
    let next = |name: &str| {
        let run = check_in(
            &bed,
            "UTC",
            &["check", name, "--json", "--at", "2027-02-28T12:00:00Z"],
        );
        assert_eq!(run.code, 0, "{run:?}");
        let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
        v["schedules"][0]["next"].clone()
    };
    assert_eq!(
        next(&odd_mondays),
        serde_json::json!([
            "2027-03-01T12:00:00Z",
            "2027-03-15T12:00:00Z",
            "2027-03-29T12:00:00Z"
        ])
    );
    assert_eq!(
        next(&either),
        serde_json::json!([
            "2027-03-05T12:00:00Z",
            "2027-03-12T12:00:00Z",
            "2027-03-13T12:00:00Z"
        ])
    );
    let run = check_in(&bed, "UTC", &["check", &backwards, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(
        v["label_errors"][0]["message"],
        "day-of-week range \"sat-mon\" runs backwards; cron does not wrap around, so write it as \"6,0-1\"",
        "{v}"
    );
}
