//! Cron schedules from container labels, and whether an action is due now.
//!
//! Pure logic: nothing here reads the clock or talks to Docker, so every
//! decision can be table-tested with fixed instants.

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

/// How far back a container with no recorded run looks, so a fire in the
/// minute before guerite first sees it is not lost.
pub const FIRST_RUN_LOOKBACK: Duration = Duration::from_secs(60);

// Expanded here rather than by croner: croner 4.0 has no @midnight, and
// expanding them all lets the field checks see every schedule in one form.
const MACROS: [(&str, &str); 7] = [
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"),
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
#[rustfmt::skip]
const FIELDS: [Field; 5] = [
    Field { name: "minute", min: 0, max: 59, names: &[] },
    Field { name: "hour", min: 0, max: 23, names: &[] },
    Field { name: "day-of-month", min: 1, max: 31, names: &[] },
    Field { name: "month", min: 1, max: 12, names: &MONTHS },
    Field { name: "day-of-week", min: 0, max: 7, names: &DAYS },
];

const LONGEST_MONTH: [u16; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

thread_local! {
    // croner spends ~13 µs a parse filling a 5000-year bitmap, and one run
    // parses the same few expressions for many containers.
    static PARSED: RefCell<HashMap<String, Result<Cron, String>>> = RefCell::default();
}

#[derive(Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
}

// By hand: croner's Debug prints its 5000-entry year bitmap.
impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule")
            .field("expr", &self.expr)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl Eq for Schedule {}

impl Schedule {
    /// Parses a 5-field crontab expression or an @ shorthand. The error is
    /// one line meant for the operator.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let expr = expr.trim();
        let cron = PARSED.with_borrow_mut(|parsed| {
            if let Some(known) = parsed.get(expr) {
                return known.clone();
            }
            let result = parse_cron(expr);
            if parsed.len() < 1024 {
                parsed.insert(expr.to_string(), result.clone());
            }
            result
        })?;
        Ok(Schedule {
            expr: expr.to_string(),
            cron,
        })
    }

    /// The expression as the operator wrote it (trimmed).
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The latest fire time at or before `t`, if any within a bounded search.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        // Bounded because `parse` only accepts patterns that fire at least
        // once every 8 years (29 February skips 2100), so croner's walk stops.
        let found = self
            .cron
            .find_previous_occurrence(&t.with_timezone(&tz), true);
        found.ok().map(|fire| fire.with_timezone(&Utc))
    }

    /// The next `n` fire times strictly after `t` (fewer if the pattern runs out).
    pub fn next_after(&self, t: DateTime<Utc>, tz: Tz, n: usize) -> Vec<DateTime<Utc>> {
        // Not croner's iterator: it prints its errors to stderr in Debug form.
        let mut fires = Vec::with_capacity(n);
        let mut from = t;
        while fires.len() < n
            && let Some(fire) = self.first_after(from, tz)
        {
            fires.push(fire);
            from = fire;
        }
        fires
    }

    fn first_after(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let found = self.cron.find_next_occurrence(&t.with_timezone(&tz), false);
        found.ok().map(|fire| fire.with_timezone(&Utc))
    }
}

fn parse_cron(expr: &str) -> Result<Cron, String> {
    let macros = MACROS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(expr));
    let text = if !expr.starts_with('@') {
        expr
    } else if let Some((_, text)) = macros {
        text
    } else if expr.eq_ignore_ascii_case("@reboot") {
        return Err("@reboot is not supported: guerite only runs time-based schedules".into());
    } else {
        return Err(format!(
            "unknown shorthand \"{expr}\" (known: @hourly @daily @midnight @weekly @monthly \
             @yearly @annually)"
        ));
    };
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.is_empty() {
        return Err("empty cron expression".to_string());
    }
    if fields.len() != 5 {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        ));
    }
    // croner alone is too lenient for a strict crontab: it turns names into
    // numbers in any field ("0 MON * * *" is hour 1, "* * * * JAN" Monday),
    // accepts "1,,2", and adds L, W, # and + (which ANDs the day fields).
    for (field, text) in FIELDS.iter().zip(&fields) {
        check_field(field, text)?;
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("invalid cron expression: {e}"))?;
    // croner searches up to year 5000 for a day that never comes, about
    // 6 ms a search. Only a day of month no chosen month has can do that,
    // and then only when day-of-week is `*`, as otherwise the fields OR.
    if cron.pattern.is_dow_wildcard() {
        let longest = (cron.pattern.months.values().into_iter())
            .filter_map(|m| LONGEST_MONTH.get(usize::from(m).checked_sub(1)?))
            .max();
        if cron.pattern.days.values().first() > longest {
            return Err(format!(
                "day-of-month \"{}\" never occurs in month \"{}\", so the schedule \
                 would never fire",
                fields[2], fields[3]
            ));
        }
    }
    Ok(cron)
}

fn check_field(field: &Field, text: &str) -> Result<(), String> {
    let name = field.name;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("{name} list \"{text}\" has an empty entry"));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        if let Some(step) = step
            && !step.parse::<u32>().is_ok_and(|n| n >= 1)
        {
            return Err(format!(
                "{name} step \"{item}\" needs a number of at least 1 after the slash"
            ));
        }
        match range.split_once('-') {
            _ if range == "*" => {}
            Some((low, high)) => {
                if value(field, low, false)? > value(field, high, true)? {
                    return Err(format!("{name} range \"{range}\" runs backwards"));
                }
            }
            // Vixie and croner both refuse "5/10": the step needs a range.
            None if step.is_some() => {
                return Err(format!(
                    "{name} step \"{item}\" needs \"*\" or a range before the slash, \
                     e.g. \"*/10\" or \"5-59/10\""
                ));
            }
            None => _ = value(field, range, false)?,
        }
    }
    Ok(())
}

fn value(field: &Field, token: &str, ends_range: bool) -> Result<u32, String> {
    let (name, min, max) = (field.name, field.min, field.max);
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
        return match token.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!("{name} value {token} is out of range {min}-{max}")),
        };
    }
    let upper = token.to_ascii_uppercase();
    match field.names.iter().position(|n| *n == upper) {
        // croner reads a range ending in SUN as ending in 7, e.g. FRI-SUN.
        Some(0) if ends_range && max == 7 => Ok(7),
        Some(i) => Ok(min + i as u32),
        None => match (field.names.first(), field.names.last()) {
            (Some(first), Some(last)) => Err(format!(
                "{name} value \"{token}\" is neither a number nor a name {first}-{last}"
            )),
            _ => Err(format!("{name} value \"{token}\" is not a number")),
        },
    }
}

/// What `evaluate` looks at for one action of one container.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub previous_run: Option<DateTime<Utc>>,
    pub handled: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub max_catchup: Duration,
}

/// The verdict, carrying the latest fire time in the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // `Due::Due` and `Due::NotDue` are the agreed API
pub enum Due {
    Due { fire: DateTime<Utc> },
    Missed { fire: DateTime<Utc> },
    NotDue,
}

/// Whether a fire time `t` with `lower < t <= now` exists, where `lower` is
/// the latest of the previous run (or now minus [`FIRST_RUN_LOOKBACK`]), the
/// fire last handled and the container's creation. Several fires coalesce
/// into one; a latest fire older than `now - max_catchup` is `Missed`.
pub fn evaluate(schedule: &Schedule, tz: Tz, window: &Window) -> Due {
    let now = window.now;
    let since = window
        .previous_run
        .unwrap_or_else(|| before(now, FIRST_RUN_LOOKBACK));
    let lower = since
        .max(window.created)
        .max(window.handled.unwrap_or(since));
    // Forward from `lower` first: it settles the usual "nothing due" in one
    // short search, where a backward search from `now` would walk back to
    // the last fire, months for a yearly job.
    let Some(first) = schedule.first_after(lower, tz).filter(|fire| *fire <= now) else {
        return Due::NotDue;
    };
    // A fire exists in the window, so this backward search stops at `first`
    // at the latest; the max only guards against croner disagreeing.
    let fire = (schedule.latest_at_or_before(now, tz)).map_or(first, |latest| latest.max(first));
    if fire < before(now, window.max_catchup) {
        Due::Missed { fire }
    } else {
        Due::Due { fire }
    }
}

// Saturates, so an absurd `max_catchup` means "no cap" rather than a panic.
fn before(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    let delta = TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
    t.checked_sub_signed(delta)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{Asia::Tokyo, Europe::Paris, UTC};

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
    fn rejects_with_one_line_messages() {
        #[rustfmt::skip]
        let rows = [
            ("empty", "", "empty cron expression"),
            ("blank", " \t ", "empty cron expression"),
            ("seconds field", "0 0 4 * * *", "expected 5 fields (minute hour day-of-month month day-of-week), found 6"),
            ("year field", "0 4 * * * 2026 x", "expected 5 fields (minute hour day-of-month month day-of-week), found 7"),
            ("garbage", "garbage", "expected 5 fields (minute hour day-of-month month day-of-week), found 1"),
            ("reboot", "@reboot", "@reboot is not supported: guerite only runs time-based schedules"),
            ("unknown shorthand", "@every 5m", "unknown shorthand \"@every 5m\" (known: @hourly @daily @midnight @weekly @monthly @yearly @annually)"),
            ("minute 61", "61 * * * *", "minute value 61 is out of range 0-59"),
            ("hour 24", "0 24 * * *", "hour value 24 is out of range 0-23"),
            ("day 0", "0 0 0 * *", "day-of-month value 0 is out of range 1-31"),
            ("month 13", "0 0 * 13 *", "month value 13 is out of range 1-12"),
            ("weekday 8", "0 0 * * 8", "day-of-week value 8 is out of range 0-7"),
            ("huge number", "99999999999 * * * *", "minute value 99999999999 is out of range 0-59"),
            ("letters", "a b c d e", "minute value \"a\" is not a number"),
            ("day name as hour", "0 MON * * *", "hour value \"MON\" is not a number"),
            ("month as weekday", "0 0 * * JAN", "day-of-week value \"JAN\" is neither a number nor a name SUN-SAT"),
            ("empty list entry", "1,,2 * * * *", "minute list \"1,,2\" has an empty entry"),
            ("zero step", "*/0 * * * *", "minute step \"*/0\" needs a number of at least 1 after the slash"),
            ("step on a number", "5/10 * * * *", "minute step \"5/10\" needs \"*\" or a range before the slash, e.g. \"*/10\" or \"5-59/10\""),
            ("backwards range", "0 5-1 * * *", "hour range \"5-1\" runs backwards"),
            ("croner's L", "0 0 L * *", "day-of-month value \"L\" is not a number"),
            ("croner's #", "0 0 * * 5#2", "day-of-week value \"5#2\" is neither a number nor a name SUN-SAT"),
            ("croner's + (AND)", "0 0 13 * +5", "day-of-week value \"+5\" is neither a number nor a name SUN-SAT"),
            ("never fires", "0 0 30 2 *", "day-of-month \"30\" never occurs in month \"2\", so the schedule would never fire"),
        ];
        for (name, expr, want) in rows {
            assert_eq!(Schedule::parse(expr).err().as_deref(), Some(want), "{name}");
        }
    }

    #[test]
    fn keeps_the_operator_text() {
        assert_eq!(sched("  @Daily\n").expr(), "@Daily");
        assert_eq!(sched("0 4 * * *"), sched(" 0 4 * * * "));
        assert_ne!(sched("0 0 * * *"), sched("@daily"));
        assert_eq!(
            format!("{:?}", sched("@daily")),
            r#"Schedule { expr: "@daily", .. }"#
        );
        // OR-ed with a restricted day-of-week, 30 February is merely unused.
        assert_eq!(sched("0 0 30 2 1").expr(), "0 0 30 2 1");
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
            // croner only calls a single minute and hour "fixed time", so a
            // list of hours loses 02:00 in the gap (Vixie would run it late).
            ("gap: hour list skips it", "0 2,14 * * *", Paris, "2026-03-28T12:00:00Z", "2026-03-28 14:00+01:00, 2026-03-29 14:00+02:00, 2026-03-30 02:00+02:00"),
            ("overlap: hour list twice", "0 2,14 * * *", Paris, "2026-10-24T12:00:00Z", "2026-10-25 02:00+02:00, 2026-10-25 02:00+01:00, 2026-10-25 14:00+01:00"),
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
    enum Verdict {
        Run,
        Skip,
        Miss,
    }

    #[test]
    fn evaluate_a_daily_job() {
        use Verdict::*;
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

    // Runs guerite every minute, a few seconds late as cron does, for six
    // hours across each Paris DST change: every fire is acted on once.
    #[test]
    fn minutely_runs_act_once_per_fire_across_dst() {
        let (spring, fall) = ("2026-03-28T22:00:00Z", "2026-10-24T22:00:00Z");
        #[rustfmt::skip]
        let rows = [
            ("30 2 * * *", spring, 1), ("30 2 * * *", fall, 1), ("0 2 * * *", spring, 1),
            ("0 2,14 * * *", spring, 0), ("0 2,14 * * *", fall, 2),
            ("0 * * * *", spring, 6), ("0 * * * *", fall, 6),
            ("*/30 * * * *", spring, 12), ("*/30 * * * *", fall, 12),
        ];
        for (expr, start, count) in rows {
            let (schedule, start) = (sched(expr), at(start));
            let mut previous_run = start;
            let mut acted = Vec::new();
            for minute in 1..=6 * 60 {
                let now = start + TimeDelta::seconds(minute * 60 + 3);
                let window = Window {
                    previous_run: Some(previous_run),
                    handled: acted.last().copied(),
                    created: start,
                    now,
                    max_catchup: Duration::from_secs(600),
                };
                match evaluate(&schedule, Paris, &window) {
                    Due::Due { fire } => acted.push(fire),
                    Due::Missed { fire } => panic!("{expr}: missed {fire}"),
                    Due::NotDue => {}
                }
                previous_run = now;
            }
            let expected = schedule.next_after(start, Paris, count + 1);
            assert_eq!(acted, expected[..count], "{expr}");
            assert!(expected[count] > start + TimeDelta::hours(6), "{expr}");
        }
    }
}
