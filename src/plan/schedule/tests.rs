//! The schedule's fire times against Vixie cron's rules, in zones with and without daylight
//! saving, including Lord Howe's 30-minute shift.

use super::*;
use chrono_tz::{
    America::{New_York, Santiago},
    Antarctica::Troll,
    Asia::Tokyo,
    Australia::Lord_Howe,
    Europe::Paris,
    Pacific::{Apia, Chatham},
    UTC,
};
use std::collections::BTreeSet;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn sched(expr: &str) -> Schedule {
    Schedule::parse(expr).unwrap_or_else(|e| panic!("{expr:?}: {e}"))
}

// Wall clock time with its offset, as an operator reads it.
fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%F %R%:z").to_string()
}

#[test]
fn keeps_the_operator_text() {
    assert_eq!(sched("  @Daily\n").expr(), "@Daily");
    assert_eq!(sched("0 4 * * *"), sched(" 0 4 * * * "));
    assert_ne!(sched("0 0 * * *"), sched("@daily"));
    // OR-ed with a restricted day-of-week, 30 February is merely unused.
    assert_eq!(sched("0 0 30 2 1").expr(), "0 0 30 2 1");
    assert_eq!(
        Schedule::parse("0 0 30 2 *").err().as_deref(),
        Some("day-of-month \"30\" never occurs in month \"2\", so the schedule would never fire")
    );
}

// Every fire time in `from..=to`, by testing every local minute: the rules stated plainly,
// against which the searches are checked.
fn every_fire(s: &Schedule, tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut fires = BTreeSet::new();
    let start = local::local(tz, from - TimeDelta::days(2));
    let start = start - TimeDelta::seconds(start.and_utc().timestamp() % 60);
    let end = local::local(tz, to + TimeDelta::days(2));
    let mut minute = start;
    while minute <= end {
        if s.fields.matches(minute) {
            match local::resolve(tz, minute) {
                Local::Once(t) => _ = fires.insert(t),
                Local::Twice(first, second) => {
                    fires.insert(first);
                    if !s.fields.fixed {
                        fires.insert(second);
                    }
                }
                Local::Skipped if s.fields.fixed => {
                    fires.insert(local::after_gap(tz, minute).unwrap());
                }
                Local::Skipped => {}
            }
        }
        minute += TimeDelta::minutes(1);
    }
    fires
        .into_iter()
        .filter(|f| from <= *f && *f <= to)
        .collect()
}

// The changes of offset of `tz` in `year`, found hour by hour.
fn changes(tz: Tz, year: i32) -> Vec<DateTime<Utc>> {
    let start = at(&format!("{year}-01-01T00:00:00Z"));
    let offset = |t: DateTime<Utc>| local::local(tz, t) - t.naive_utc();
    (0..366 * 24)
        .map(|h| start + TimeDelta::hours(h))
        .filter(|t| offset(*t) != offset(*t + TimeDelta::hours(1)))
        .collect()
}

const EXPRESSIONS: [&str; 30] = [
    "30 2 * * *",
    "0 2 * * *",
    "0 2,14 * * *",
    "5,30 2 * * *",
    "0-59/20 2 * * *",
    "30 1-4 * * *",
    "0 1,14 * * *",
    "30 1 * * *",
    "0 * * * *",
    "*/30 * * * *",
    "15,45 * * * *",
    "0 */2 * * *",
    "*/20 2 * * *",
    "0 1-3 * * *",
    "59 1 * * *",
    "0 3 * * *",
    "45 1 * * *",
    "15 2 * * *",
    "0 0-23/1 * * *",
    "0 0 * * *",
    "30 23 * * *",
    "* * * * *",
    "*/7 * * * *",
    "0,30 0-3 * * 0",
    "@hourly",
    "@daily",
    "10 2 */2 * 1",
    "0 1 13 * 6",
    "20 0 * * *",
    "0,15,30,45 1,2 * * *",
];

// The searches agree with `every_fire` at every minute (and between minutes) for six
// hours either side of each change of offset, in zones that shift by 30 minutes, an hour or
// two, at midnight, and a whole day (Samoa, 2011).
#[test]
fn searches_agree_with_every_minute_around_each_change() {
    let zones = [
        (New_York, 2027),
        (Paris, 2027),
        (Lord_Howe, 2027),
        (Santiago, 2027),
        (Troll, 2027),
        (Chatham, 2027),
        (Apia, 2011),
        (Tokyo, 2027),
        (UTC, 2027),
    ];
    for (tz, year) in zones {
        let mut around = changes(tz, year);
        if around.is_empty() {
            around.push(at(&format!("{year}-03-14T07:00:00Z")));
        }
        for change in around {
            let (from, to) = (change - TimeDelta::hours(8), change + TimeDelta::hours(8));
            for expr in EXPRESSIONS {
                let s = sched(expr);
                let (first, last) = (from - TimeDelta::days(1), to + TimeDelta::days(1));
                let fires = every_fire(&s, tz, first, last);
                for m in -6 * 60..=6 * 60 {
                    for seconds in [0, 30] {
                        let t = change + TimeDelta::minutes(m) + TimeDelta::seconds(seconds);
                        let next = fires.iter().find(|f| **f > t).copied();
                        let latest = fires.iter().rev().find(|f| **f <= t).copied();
                        let name = format!("{expr} in {tz} at {}", local(t, tz));
                        // Beyond the listed range, only that the search went beyond it.
                        match next {
                            Some(_) => {
                                assert_eq!(s.first_after(t, tz), next, "first after: {name}")
                            }
                            None => {
                                assert!(s.first_after(t, tz) > Some(last), "first after: {name}")
                            }
                        }
                        match latest {
                            Some(_) => {
                                assert_eq!(s.latest_at_or_before(t, tz), latest, "latest: {name}")
                            }
                            None => assert!(
                                s.latest_at_or_before(t, tz) < Some(first),
                                "latest: {name}"
                            ),
                        }
                    }
                }
            }
        }
    }
}

// Vixie cron's runs on each day of change, as Debian's cron makes them.
#[test]
fn runs_on_days_of_change() {
    // New York: 02:00 EST -> 03:00 EDT on 2027-03-14, 02:00 EDT -> 01:00 EST on 2027-11-07.
    // Each window is (from, to] in UTC.
    // Lord Howe: 02:00 -> 02:30 (+10:30 -> +11) on 2027-10-03, 02:00 -> 01:30 on 2027-04-04.
    let ny_spring = ("2027-03-14T05:00:00Z", "2027-03-14T11:00:00Z");
    let ny_fall = ("2027-11-07T04:00:00Z", "2027-11-07T09:00:00Z");
    let lh_spring = ("2027-10-02T14:30:00Z", "2027-10-02T16:30:00Z");
    let lh_fall = ("2027-04-03T13:00:00Z", "2027-04-03T17:00:00Z");
    #[rustfmt::skip]
    let rows = [
        ("30 2 * * *",      New_York, ny_spring, "03:00-04:00"),
        ("0 2,14 * * *",    New_York, ny_spring, "03:00-04:00"),
        ("5,30 2 * * *",    New_York, ny_spring, "03:00-04:00"),
        ("0-59/20 2 * * *", New_York, ny_spring, "03:00-04:00"),
        ("30 1-4 * * *",    New_York, ny_spring, "01:30-05:00 03:00-04:00 03:30-04:00 04:30-04:00"),
        ("0 1-3 * * *",     New_York, ny_spring, "01:00-05:00 03:00-04:00"),
        ("0 * * * *",       New_York, ny_spring, "01:00-05:00 03:00-04:00 04:00-04:00 05:00-04:00 06:00-04:00 07:00-04:00"),
        ("*/20 2 * * *",    New_York, ny_spring, ""),
        ("0 */2 * * *",     New_York, ny_spring, "04:00-04:00 06:00-04:00"),
        ("0 1,14 * * *",    New_York, ny_fall,   "01:00-04:00"),
        ("30 1 * * *",      New_York, ny_fall,   "01:30-04:00"),
        ("30 1-4 * * *",    New_York, ny_fall,   "01:30-04:00 02:30-05:00 03:30-05:00"),
        ("0 * * * *",       New_York, ny_fall,   "01:00-04:00 01:00-05:00 02:00-05:00 03:00-05:00 04:00-05:00"),
        ("*/30 * * * *",    New_York, ny_fall,   "00:30-04:00 01:00-04:00 01:30-04:00 01:00-05:00 01:30-05:00 02:00-05:00 02:30-05:00 03:00-05:00 03:30-05:00 04:00-05:00"),
        ("*/20 1 * * *",    New_York, ny_fall,   "01:00-04:00 01:20-04:00 01:40-04:00 01:00-05:00 01:20-05:00 01:40-05:00"),
        ("0 2 * * *",       Lord_Howe, lh_spring, "02:30+11:00"),
        ("15 2 * * *",      Lord_Howe, lh_spring, "02:30+11:00"),
        ("30 1-3 * * *",    Lord_Howe, lh_spring, "01:30+10:30 02:30+11:00 03:30+11:00"),
        ("*/20 * * * *",    Lord_Howe, lh_spring, "01:20+10:30 01:40+10:30 02:40+11:00 03:00+11:00 03:20+11:00"),
        ("45 1 * * *",      Lord_Howe, lh_fall,   "01:45+11:00"),
        ("0,30 1 * * *",    Lord_Howe, lh_fall,   "01:00+11:00 01:30+11:00"),
        ("*/15 1 * * *",    Lord_Howe, lh_fall,   "01:00+11:00 01:15+11:00 01:30+11:00 01:45+11:00 01:30+10:30 01:45+10:30"),
    ];
    for (expr, tz, (from, to), want) in rows {
        let s = sched(expr);
        let got: Vec<String> = s
            .next_after(at(from), tz, 30)
            .into_iter()
            .filter(|t| *t <= at(to))
            .map(|t| t.with_timezone(&tz).format("%R%:z").to_string())
            .collect();
        assert_eq!(got.join(" "), want, "{expr} in {tz} from {from}");
    }
}

// What Debian's real cron daemon ran, measured under a fake clock across both changes in New
// York, Paris and Lord Howe: guerite acts at the same minutes.
#[test]
fn agrees_with_debian_cron_measured() {
    let minute = |s: &str| {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%MZ")
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .and_utc()
    };
    let mut rows = 0;
    for line in include_str!("debian_cron_dst.tsv").lines() {
        if line.starts_with('#') {
            continue;
        }
        let [zone, expr, from, to, runs] =
            <[&str; 5]>::try_from(line.split('\t').collect::<Vec<_>>())
                .unwrap_or_else(|_| panic!("{line}"));
        let tz: Tz = zone.parse().unwrap();
        let expr = match expr.split(' ').count() {
            2 => format!("{expr} * * *"),
            _ => expr.to_string(),
        };
        let got: Vec<String> = sched(&expr)
            .next_after(minute(from) - SECOND, tz, 100)
            .into_iter()
            .take_while(|t| *t <= minute(to))
            .map(|t| t.format("%Y-%m-%dT%H:%MZ").to_string())
            .collect();
        assert_eq!(got.join(" "), runs, "{expr} in {zone}, {from} to {to}");
        rows += 1;
    }
    assert_eq!(rows, 114 + 36);
}

#[test]
fn says_what_daylight_saving_does_to_a_fire() {
    let time = |s: &str| NaiveDateTime::parse_from_str(s, "%F %R").unwrap();
    #[rustfmt::skip]
    let rows = [
        ("30 2 * * *",      New_York, "2027-03-14T07:00:00Z", Some(Shift::Skipped(vec![time("2027-03-14 02:30")]))),
        ("0-59/20 2 * * *", New_York, "2027-03-14T07:00:00Z", Some(Shift::Skipped(vec![time("2027-03-14 02:00"), time("2027-03-14 02:20"), time("2027-03-14 02:40")]))),
        ("0 2,3 * * *",     New_York, "2027-03-14T07:00:00Z", Some(Shift::Skipped(vec![time("2027-03-14 02:00")]))),
        ("0 3 * * *",       New_York, "2027-03-14T07:00:00Z", None),
        ("0 * * * *",       New_York, "2027-03-14T07:00:00Z", None),
        ("0 2 * * *",       Lord_Howe, "2027-10-02T15:30:00Z", Some(Shift::Skipped(vec![time("2027-10-03 02:00")]))),
        ("30 1 * * *",      New_York, "2027-11-07T05:30:00Z", Some(Shift::Repeated { local: time("2027-11-07 01:30"), both: false })),
        ("*/30 * * * *",    New_York, "2027-11-07T06:30:00Z", Some(Shift::Repeated { local: time("2027-11-07 01:30"), both: true })),
        ("30 1 * * *",      New_York, "2027-11-08T06:30:00Z", None),
        ("30 2 * * *",      UTC, "2027-03-14T02:30:00Z", None),
    ];
    for (expr, tz, fire, want) in rows {
        assert_eq!(sched(expr).shift(at(fire), tz), want, "{expr} at {fire}");
    }
}

#[test]
fn next_after_follows_vixie_cron() {
    const SAT: &str = "2026-05-09T12:00:00Z";
    // Paris springs forward 02:00 CET -> 03:00 CEST on 2026-03-29 and
    // falls back 03:00 CEST -> 02:00 CET on 2026-10-25.
    #[rustfmt::skip]
    let rows = [
        ("1-5 is Monday-Friday", "0 9 * * 1-5", UTC, SAT, "2026-05-11 09:00+00:00, 2026-05-12 09:00+00:00, 2026-05-13 09:00+00:00"),
        ("0 is Sunday", "0 9 * * 0", UTC, SAT, "2026-05-10 09:00+00:00, 2026-05-17 09:00+00:00, 2026-05-24 09:00+00:00"),
        ("7 is Sunday", "0 9 * * 7", UTC, SAT, "2026-05-10 09:00+00:00, 2026-05-17 09:00+00:00, 2026-05-24 09:00+00:00"),
        ("SUN is Sunday", "0 9 * * SUN", UTC, SAT, "2026-05-10 09:00+00:00, 2026-05-17 09:00+00:00, 2026-05-24 09:00+00:00"),
        ("names up to SUN", "0 9 * * FRI-SUN", UTC, SAT, "2026-05-10 09:00+00:00, 2026-05-15 09:00+00:00, 2026-05-16 09:00+00:00"),
        ("month names any case", "0 9 1 jul,Jan *", UTC, SAT, "2026-07-01 09:00+00:00, 2027-01-01 09:00+00:00, 2027-07-01 09:00+00:00"),
        ("13th OR Friday", "0 12 13 * 5", UTC, SAT, "2026-05-13 12:00+00:00, 2026-05-15 12:00+00:00, 2026-05-22 12:00+00:00"),
        ("13th, weekday *", "0 12 13 * *", UTC, SAT, "2026-05-13 12:00+00:00, 2026-06-13 12:00+00:00, 2026-07-13 12:00+00:00"),
        ("leap day", "0 0 29 2 *", UTC, SAT, "2028-02-29 00:00+00:00, 2032-02-29 00:00+00:00, 2036-02-29 00:00+00:00"),
        ("stepped range", "0 8-18/5 * * *", UTC, SAT, "2026-05-09 13:00+00:00, 2026-05-09 18:00+00:00, 2026-05-10 08:00+00:00"),
        ("@hourly", "@hourly", UTC, SAT, "2026-05-09 13:00+00:00, 2026-05-09 14:00+00:00, 2026-05-09 15:00+00:00"),
        ("@daily", "@daily", UTC, SAT, "2026-05-10 00:00+00:00, 2026-05-11 00:00+00:00, 2026-05-12 00:00+00:00"),
        ("@midnight", "@midnight", UTC, SAT, "2026-05-10 00:00+00:00, 2026-05-11 00:00+00:00, 2026-05-12 00:00+00:00"),
        ("@weekly on Sunday", "@weekly", UTC, SAT, "2026-05-10 00:00+00:00, 2026-05-17 00:00+00:00, 2026-05-24 00:00+00:00"),
        ("@monthly", "@monthly", UTC, SAT, "2026-06-01 00:00+00:00, 2026-07-01 00:00+00:00, 2026-08-01 00:00+00:00"),
        ("@yearly", "@yearly", UTC, SAT, "2027-01-01 00:00+00:00, 2028-01-01 00:00+00:00, 2029-01-01 00:00+00:00"),
        ("@annually", "@annually", UTC, SAT, "2027-01-01 00:00+00:00, 2028-01-01 00:00+00:00, 2029-01-01 00:00+00:00"),
        ("Paris wall clock", "0 9 * * *", Paris, SAT, "2026-05-10 09:00+02:00, 2026-05-11 09:00+02:00, 2026-05-12 09:00+02:00"),
        ("Tokyo wall clock", "0 9 * * *", Tokyo, SAT, "2026-05-10 09:00+09:00, 2026-05-11 09:00+09:00, 2026-05-12 09:00+09:00"),
        ("gap: fixed runs after it", "30 2 * * *", Paris, "2026-03-28T12:00:00Z", "2026-03-29 03:00+02:00, 2026-03-30 02:30+02:00, 2026-03-31 02:30+02:00"),
        ("overlap: fixed runs once", "30 2 * * *", Paris, "2026-10-24T12:00:00Z", "2026-10-25 02:30+02:00, 2026-10-26 02:30+01:00, 2026-10-27 02:30+01:00"),
        ("gap: hourly has no 02:00", "0 * * * *", Paris, "2026-03-29T00:30:00Z", "2026-03-29 03:00+02:00, 2026-03-29 04:00+02:00, 2026-03-29 05:00+02:00"),
        ("overlap: hourly twice", "0 * * * *", Paris, "2026-10-24T23:30:00Z", "2026-10-25 02:00+02:00, 2026-10-25 02:00+01:00, 2026-10-25 03:00+01:00"),
        ("gap: */30 skips it", "*/30 * * * *", Paris, "2026-03-29T00:15:00Z", "2026-03-29 01:30+01:00, 2026-03-29 03:00+02:00, 2026-03-29 03:30+02:00"),
        ("overlap: */30 repeats", "*/30 * * * *", Paris, "2026-10-25T00:15:00Z", "2026-10-25 02:30+02:00, 2026-10-25 02:00+01:00, 2026-10-25 02:30+01:00"),
        // No `*` starts the minute or hour field: fixed-time, as a single time is.
        ("gap: hour list runs after it", "0 2,14 * * *", Paris, "2026-03-28T12:00:00Z", "2026-03-28 14:00+01:00, 2026-03-29 03:00+02:00, 2026-03-29 14:00+02:00"),
        ("overlap: hour list once", "0 2,14 * * *", Paris, "2026-10-24T12:00:00Z", "2026-10-25 02:00+02:00, 2026-10-25 14:00+01:00, 2026-10-26 02:00+01:00"),
        ("odd days that are Mondays", "0 12 */2 * 1", UTC, "2027-02-28T00:00:00Z", "2027-03-01 12:00+00:00, 2027-03-15 12:00+00:00, 2027-03-29 12:00+00:00"),
        ("the 13th if Sun, Wed or Sat", "0 12 13 * */3", UTC, "2027-01-01T00:00:00Z", "2027-01-13 12:00+00:00, 2027-02-13 12:00+00:00, 2027-03-13 12:00+00:00"),
    ];
    for (name, expr, tz, from, want) in rows {
        let got: Vec<String> = sched(expr)
            .next_after(at(from), tz, 3)
            .into_iter()
            .map(|t| local(t, tz))
            .collect();
        assert_eq!(got.join(", "), want, "{name}");
    }
}

#[test]
fn latest_at_or_before_includes_t() {
    #[rustfmt::skip]
    let rows = [
        ("fire at t", "0 4 * * *", UTC, "2026-05-09T04:00:00Z", "2026-05-09 04:00+00:00"),
        ("a second before", "0 4 * * *", UTC, "2026-05-09T03:59:59Z", "2026-05-08 04:00+00:00"),
        ("yearly, months back", "@yearly", UTC, "2026-05-09T12:00:00Z", "2026-01-01 00:00+00:00"),
        ("leap day, years back", "0 0 29 2 *", UTC, "2026-05-09T12:00:00Z", "2024-02-29 00:00+00:00"),
        ("gap: moved after it", "30 2 * * *", Paris, "2026-03-29T01:00:30Z", "2026-03-29 03:00+02:00"),
        ("overlap: fixed keeps the first", "30 2 * * *", Paris, "2026-10-25T01:45:00Z", "2026-10-25 02:30+02:00"),
        ("overlap: interval has the second", "*/30 * * * *", Paris, "2026-10-25T01:45:00Z", "2026-10-25 02:30+01:00"),
    ];
    for (name, expr, tz, t, want) in rows {
        let got = sched(expr)
            .latest_at_or_before(at(t), tz)
            .map(|t| local(t, tz));
        assert_eq!(got.as_deref(), Some(want), "{name}");
    }
}

#[derive(Clone, Copy)]
enum Expect {
    Run,
    Skip,
    Miss,
}

#[test]
fn evaluate_a_daily_job() {
    use Expect::*;
    const DAY: i64 = 86_400;
    const OLD: i64 = -365 * DAY;
    let fire = at("2026-05-09T04:00:00Z");
    let t = |seconds: i64| fire + TimeDelta::seconds(seconds);
    // "0 4 * * *" in UTC; every instant is in seconds from its 04:00 fire.
    #[rustfmt::skip]
    let rows = [
        // name                            previous      handled    created now   cap (min)
        ("fire in the last minute",        Some(-58),     None,      OLD,   2,     60, Run),
        ("nothing in the window",          Some(2),       None,      OLD,   62,    60, Skip),
        ("fire at previous run",           Some(0),       None,      OLD,   60,    60, Skip),
        ("fire at now",                    Some(-60),     None,      OLD,   0,     60, Run),
        ("first run looks back 60 s",      None,          None,      OLD,   59,    60, Run),
        ("first run looks back no more",   None,          None,      OLD,   60,    60, Skip),
        ("handled stops a rerun",          Some(-30),     Some(0),   OLD,   40,    60, Skip),
        ("older handled changes nothing",  Some(-30),     Some(-DAY), OLD,  40,    60, Run),
        ("fire at creation",               None,          None,      0,     30,    60, Skip),
        ("fire after creation",            None,          None,      -1,    30,    60, Run),
        ("created after now",              None,          None,      300,   30,    60, Skip),
        ("8 days of fires act once",       Some(-8 * DAY), None,     OLD,   30,    60, Run),
        ("older than the cap",             Some(-3600),   None,      OLD,   600,   5,  Miss),
        ("exactly at the cap",             Some(-3600),   None,      OLD,   600,   10, Run),
        ("a second past the cap",          Some(-3600),   None,      OLD,   601,   10, Miss),
        ("outage reports the latest fire", Some(-8 * DAY), None,     OLD,   28800, 60, Miss),
        ("zero cap, fire at now",          Some(-60),     None,      OLD,   0,     0,  Run),
    ];
    for (name, previous_run, handled, created, now, catchup, verdict) in rows {
        let window = Window {
            previous_run: previous_run.map(t),
            handled: handled.map(t),
            created: t(created),
            now: t(now),
            max_catchup: Duration::from_secs(catchup * 60),
        };
        let want = match verdict {
            Run => Due::Due { fire },
            Skip => Due::NotDue,
            Miss => Due::Missed { fire },
        };
        assert_eq!(evaluate(&sched("0 4 * * *"), UTC, &window), want, "{name}");
    }
}

#[test]
fn evaluate_other_schedules() {
    let due = |s| Due::Due { fire: at(s) };
    #[rustfmt::skip]
    let rows = [
        // name                          expr            zone   previous run            now                     cap (min)
        ("3 days of */5 act once",       "*/5 * * * *",  UTC,   "2026-05-06T12:00:00Z", "2026-05-09T12:07:00Z", 60, due("2026-05-09T12:05:00Z")),
        ("yearly caught up",             "@yearly",      UTC,   "2025-12-31T23:59:00Z", "2026-01-01T00:30:00Z", 60, due("2026-01-01T00:00:00Z")),
        ("yearly missed",                "@yearly",      UTC,   "2025-12-31T23:59:00Z", "2026-01-03T00:00:00Z", 60, Due::Missed { fire: at("2026-01-01T00:00:00Z") }),
        ("gap: 02:30 runs at 03:00",     "30 2 * * *",   Paris, "2026-03-29T00:59:02Z", "2026-03-29T01:00:02Z", 60, due("2026-03-29T01:00:00Z")),
        ("overlap: no second 02:30",     "30 2 * * *",   Paris, "2026-10-25T01:29:02Z", "2026-10-25T01:30:02Z", 60, Due::NotDue),
        ("overlap: hourly second 02:00", "0 * * * *",    Paris, "2026-10-25T00:59:02Z", "2026-10-25T01:00:02Z", 60, due("2026-10-25T01:00:00Z")),
        ("gap: 02:00,02:20,02:40 once",  "0-59/20 2 * * *", Paris, "2026-03-29T00:59:02Z", "2026-03-29T01:00:02Z", 60, due("2026-03-29T01:00:00Z")),
        ("gap: a late run still acts",   "5,30 2 * * *", Paris, "2026-03-29T00:50:02Z", "2026-03-29T01:20:02Z", 60, due("2026-03-29T01:00:00Z")),
        ("overlap: no second 01:00 EST", "0 1,14 * * *", New_York, "2027-11-07T05:59:02Z", "2027-11-07T06:00:02Z", 60, Due::NotDue),
        ("overlap: second pass, wild",   "*/20 1 * * *", New_York, "2027-11-07T06:19:02Z", "2027-11-07T06:20:02Z", 60, due("2027-11-07T06:20:00Z")),
        ("catch-up over the overlap",    "*/20 1 * * *", New_York, "2027-11-07T04:00:00Z", "2027-11-07T06:50:00Z", 60, due("2027-11-07T06:40:00Z")),
    ];
    for (name, expr, tz, previous_run, now, catchup, want) in rows {
        let window = Window {
            previous_run: Some(at(previous_run)),
            handled: None,
            created: at("2020-01-01T00:00:00Z"),
            now: at(now),
            max_catchup: Duration::from_secs(catchup * 60),
        };
        assert_eq!(evaluate(&sched(expr), tz, &window), want, "{name}");
    }
}

// Runs guerite every minute, a few seconds late as cron does, for eight hours across each
// change of offset: every fire time is acted on once, none twice, none lost.
#[test]
fn minutely_runs_act_once_per_fire_across_dst() {
    for (tz, year) in [
        (New_York, 2027),
        (Paris, 2027),
        (Lord_Howe, 2027),
        (Chatham, 2027),
    ] {
        for change in changes(tz, year) {
            let start = change - TimeDelta::hours(4);
            let end = start + TimeDelta::hours(8);
            for expr in EXPRESSIONS {
                let schedule = sched(expr);
                let mut previous_run = start;
                let mut acted = Vec::new();
                for minute in 1..=8 * 60 {
                    let now = start + TimeDelta::seconds(minute * 60 + 3);
                    let window = Window {
                        previous_run: Some(previous_run),
                        handled: acted.last().copied(),
                        created: start,
                        now,
                        max_catchup: Duration::from_secs(600),
                    };
                    match evaluate(&schedule, tz, &window) {
                        Due::Due { fire } => acted.push(fire),
                        Due::Missed { fire } => panic!("{expr} in {tz}: missed {fire}"),
                        Due::NotDue => {}
                    }
                    previous_run = now;
                }
                let want = every_fire(&schedule, tz, start + SECOND, end + TimeDelta::seconds(3));
                assert_eq!(acted, want, "{expr} in {tz} around {change}");
            }
        }
    }
}
