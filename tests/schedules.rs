//! Schedules across daylight-saving changes, end to end: the binary runs once per simulated
//! minute (the `test-hooks` clock, GUERITE_TEST_NOW) over New York's spring gap and autumn
//! repeat, restarting real containers, and each fire time is acted on once: none twice, none
//! lost.
#![cfg(feature = "test-hooks")]

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use common::Bed;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

// (short name, expression, fires in the spring window, fires in the autumn window), in UTC.
// New York: 02:00 EST -> 03:00 EDT at 07:00Z on 2027-03-14; 02:00 EDT -> 01:00 EST at 06:00Z
// on 2027-11-07.
#[rustfmt::skip]
const JOBS: [(&str, &str, &[&str], &[&str]); 9] = [
    ("single", "30 2 * * *", &["07:00"], &["07:30"]),
    ("hours", "0 2,14 * * *", &["07:00"], &["07:00"]),
    ("minutes", "5,30 2 * * *", &["07:00"], &["07:05", "07:30"]),
    ("stepped", "0-59/20 2 * * *", &["07:00"], &["07:00", "07:20", "07:40"]),
    ("range", "30 1-4 * * *", &["06:30", "07:00", "07:30", "08:30"], &["05:30", "07:30"]),
    ("repeat", "0 1,14 * * *", &["06:00"], &["05:00"]),
    ("hourly", "0 * * * *", &["06:00", "07:00", "08:00"], &["05:00", "06:00", "07:00"]),
    ("wild-gap", "*/20 2 * * *", &[], &["07:00", "07:20", "07:40"]),
    ("wild-repeat", "*/30 1 * * *", &["06:00", "06:30"], &["05:00", "05:30", "06:00", "06:30"]),
];

#[test]
fn minutely_runs_act_once_per_fire_time_across_new_york_changes() {
    let bed = Bed::new();
    let names: BTreeMap<String, usize> = JOBS
        .iter()
        .enumerate()
        .map(|(i, (short, expr, _, _))| (bed.container(short, &[("restart", expr)], &[]), i))
        .collect();
    // Each window starts from no state, a few seconds after a minute, as cron starts guerite.
    let windows = [
        ("2027-03-14", at("2027-03-14T06:00:03Z"), 160),
        ("2027-11-07", at("2027-11-07T04:50:03Z"), 180),
    ];
    for (w, (day, start, minutes)) in windows.into_iter().enumerate() {
        let _ = std::fs::remove_file(bed.state_file());
        let mut acted: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for minute in 0..=minutes {
            let now = start + TimeDelta::minutes(minute);
            let out = bed
                .guerite()
                .args(["run", "--json"])
                .env("GUERITE_TZ", "America/New_York")
                .env("GUERITE_TEST_NOW", now.to_rfc3339())
                .output()
                .expect("guerite runs");
            let report: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
            assert_eq!(out.status.code(), Some(0), "at {now}: {report}");
            for item in report["items"].as_array().expect("items") {
                let Some(&job) = item["container"].as_str().and_then(|n| names.get(n)) else {
                    continue;
                };
                assert_eq!(item["outcome"], "done", "at {now}: {item}");
                assert_eq!(item["action"], "restart", "at {now}: {item}");
                let fire = at(item["trigger"]["fire"].as_str().expect("a fire time"));
                assert_eq!(fire.date_naive().to_string(), day, "at {now}: {item}");
                acted
                    .entry(job)
                    .or_default()
                    .push(fire.format("%H:%M").to_string());
            }
        }
        for (job, (short, expr, spring, autumn)) in JOBS.iter().enumerate() {
            let want = if w == 0 { spring } else { autumn };
            let got = acted.remove(&job).unwrap_or_default();
            assert_eq!(got, *want, "{short} ({expr}) on {day}");
        }
    }
}
