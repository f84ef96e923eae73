//! The five crontab fields as sets of values, parsed strictly, and the local wall-clock
//! minutes they match. Knows nothing about time zones: `local.rs` maps these minutes to
//! instants.

use chrono::{Datelike, Days, Months, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

// Expanded here so that every schedule is checked and evaluated in one form.
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

const LONGEST_MONTH: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/// How far `next`/`previous` look. The longest wait a valid schedule can have is 29 February
/// on a given weekday across 2100, which is not a leap year: 40 years.
const HORIZON_YEARS: u32 = 48;

/// A parsed schedule: bit `v` of a field is set when the field matches value `v`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Vixie cron's DOM_STAR and DOW_STAR: a day field that starts with `*` makes the two
    /// day fields AND-ed; only when neither does are they OR-ed.
    day_star: bool,
    weekday_star: bool,
    /// Vixie cron's "fixed-time" job: neither the minute nor the hour field starts with `*`.
    /// Such a job runs its daylight-saving gap times after the gap and a repeated hour once.
    pub fixed: bool,
}

impl Fields {
    /// Parses a 5-field crontab expression or an @ shorthand. The error is one line meant
    /// for the operator.
    pub fn parse(expr: &str) -> Result<Fields, String> {
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
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() {
            return Err("empty cron expression".to_string());
        }
        let Ok(words) = <[&str; 5]>::try_from(words.as_slice()) else {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                words.len()
            ));
        };
        let mut bits = [0u64; 5];
        for ((field, text), bits) in FIELDS.iter().zip(words).zip(&mut bits) {
            *bits = parse_field(field, text)?;
        }
        let [minutes, hours, days, months, weekdays] = bits;
        let star = |i: usize| words[i].starts_with('*');
        let fields = Fields {
            minutes,
            hours,
            days,
            months,
            // 7 is Sunday too.
            weekdays: (weekdays | weekdays >> 7) & 0x7f,
            day_star: star(2),
            weekday_star: star(4),
            fixed: !star(0) && !star(1),
        };
        // With the day fields AND-ed, a day of month that no chosen month has never comes
        // (30 February); OR-ed, the day of week always does.
        if fields.day_star || fields.weekday_star {
            let longest = (1..=12u32)
                .filter(|m| months & 1 << m != 0)
                .map(|m| LONGEST_MONTH[m as usize - 1])
                .max()
                .unwrap_or(0);
            if days.trailing_zeros() > longest {
                return Err(format!(
                    "day-of-month \"{}\" never occurs in month \"{}\", so the schedule \
                     would never fire",
                    words[2], words[3]
                ));
            }
        }
        Ok(fields)
    }

    /// Whether the schedule runs on this local date.
    pub fn on(&self, date: NaiveDate) -> bool {
        let day = self.days & 1 << date.day() != 0;
        let weekday = self.weekdays & 1 << date.weekday().num_days_from_sunday() != 0;
        let days = if self.day_star || self.weekday_star {
            day && weekday
        } else {
            day || weekday
        };
        self.months & 1 << date.month() != 0 && days
    }

    /// Whether the schedule matches this local minute.
    #[cfg(test)]
    pub fn matches(&self, local: NaiveDateTime) -> bool {
        self.on(local.date())
            && self.hours & 1 << local.hour() != 0
            && self.minutes & 1 << local.minute() != 0
    }

    /// The first matching local minute strictly after `t`.
    pub fn next(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let start = floor_minute(t) + chrono::TimeDelta::minutes(1);
        let end = start
            .date()
            .checked_add_months(Months::new(12 * HORIZON_YEARS))?;
        let mut date = start.date();
        let mut from = (start.hour(), start.minute());
        while date < end {
            if self.months & 1 << date.month() == 0 {
                // Straight to the first of the next month.
                date = date.with_day(1)?.checked_add_months(Months::new(1))?;
                from = (0, 0);
                continue;
            }
            if self.on(date)
                && let Some(time) = self.first_time_from(from)
            {
                return Some(date.and_time(time));
            }
            date = date.checked_add_days(Days::new(1))?;
            from = (0, 0);
        }
        None
    }

    /// The last matching local minute at or before `t`.
    pub fn previous(&self, t: NaiveDateTime) -> Option<NaiveDateTime> {
        let start = floor_minute(t);
        let end = start
            .date()
            .checked_sub_months(Months::new(12 * HORIZON_YEARS))?;
        let mut date = start.date();
        let mut until = (start.hour(), start.minute());
        while date > end {
            if self.months & 1 << date.month() == 0 {
                // Straight to the last of the previous month.
                date = date.with_day(1)?.checked_sub_days(Days::new(1))?;
                until = (23, 59);
                continue;
            }
            if self.on(date)
                && let Some(time) = self.last_time_until(until)
            {
                return Some(date.and_time(time));
            }
            date = date.checked_sub_days(Days::new(1))?;
            until = (23, 59);
        }
        None
    }

    fn first_time_from(&self, (hour, minute): (u32, u32)) -> Option<NaiveTime> {
        let mut h = first_bit_from(self.hours, hour)?;
        if h == hour {
            if let Some(m) = first_bit_from(self.minutes, minute) {
                return NaiveTime::from_hms_opt(h, m, 0);
            }
            h = first_bit_from(self.hours, hour + 1)?;
        }
        NaiveTime::from_hms_opt(h, first_bit_from(self.minutes, 0)?, 0)
    }

    fn last_time_until(&self, (hour, minute): (u32, u32)) -> Option<NaiveTime> {
        let mut h = last_bit_until(self.hours, hour)?;
        if h == hour {
            if let Some(m) = last_bit_until(self.minutes, minute) {
                return NaiveTime::from_hms_opt(h, m, 0);
            }
            h = last_bit_until(self.hours, hour.checked_sub(1)?)?;
        }
        NaiveTime::from_hms_opt(h, last_bit_until(self.minutes, 59)?, 0)
    }
}

fn floor_minute(t: NaiveDateTime) -> NaiveDateTime {
    t.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t)
}

fn first_bit_from(bits: u64, from: u32) -> Option<u32> {
    let rest = bits.checked_shr(from)? << from;
    (rest != 0).then(|| rest.trailing_zeros())
}

fn last_bit_until(bits: u64, until: u32) -> Option<u32> {
    let kept = bits & (u64::MAX >> (63 - until.min(63)));
    (kept != 0).then(|| 63 - kept.leading_zeros())
}

fn parse_field(field: &Field, text: &str) -> Result<u64, String> {
    let name = field.name;
    let mut bits = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("{name} list \"{text}\" has an empty entry"));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        let step = match step {
            None => 1,
            Some(step) => match step.parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(format!(
                        "{name} step \"{item}\" needs a number of at least 1 after the slash"
                    ));
                }
            },
        };
        let (low, high) = match range.split_once('-') {
            _ if range == "*" => (field.min, field.max),
            Some((low, high)) if low.is_empty() || high.is_empty() => {
                return Err(format!(
                    "{name} range \"{range}\" needs a value on both sides of the dash"
                ));
            }
            Some((low, high)) => {
                let (low, high) = (value(field, low, false)?, value(field, high, true)?);
                if low > high {
                    return Err(backwards(field, range, low, high));
                }
                (low, high)
            }
            // Vixie cron refuses "5/10" too: the step needs a range.
            None if item.contains('/') => {
                return Err(format!(
                    "{name} step \"{item}\" needs \"*\" or a range before the slash, \
                     e.g. \"*/10\" or \"5-59/10\""
                ));
            }
            None => {
                let v = value(field, range, false)?;
                (v, v)
            }
        };
        bits |= (low..=high)
            .step_by(step as usize)
            .fold(0, |b, v| b | 1 << v);
    }
    Ok(bits)
}

// Debian's cron takes "sat-mon" and the like without a word and never matches them; a
// clear rejection with the wrapped-around spelling serves better.
fn backwards(field: &Field, range: &str, low: u32, high: u32) -> String {
    // Sunday is 0 and 7: the wrap goes through 6 and 0.
    let max = if field.max == 7 { 6 } else { field.max };
    let span = |a: u32, b: u32| {
        if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        }
    };
    let high = if field.max == 7 && high == 7 { 0 } else { high };
    // From Sunday as 7, the wrap starts at Sunday as 0: nothing comes before it.
    let spelling = if low > max {
        span(field.min, high)
    } else {
        format!("{},{}", span(low, max), span(field.min, high))
    };
    format!(
        "{} range \"{range}\" runs backwards; cron does not wrap around, so write it as \"{spelling}\"",
        field.name,
    )
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
        // A range ending in SUN ends in 7, so that FRI-SUN is not backwards.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn local(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    fn fields(expr: &str) -> Fields {
        Fields::parse(expr).unwrap_or_else(|e| panic!("{expr:?}: {e}"))
    }

    #[test]
    fn rejects_with_one_line_messages() {
        #[rustfmt::skip]
        let rows = [
            ("empty", "", "empty cron expression"),
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
            ("long day name", "0 0 * * monday", "day-of-week value \"monday\" is neither a number nor a name SUN-SAT"),
            ("empty list entry", "1,,2 * * * *", "minute list \"1,,2\" has an empty entry"),
            ("trailing comma", "1, * * * *", "minute list \"1,\" has an empty entry"),
            ("zero step", "*/0 * * * *", "minute step \"*/0\" needs a number of at least 1 after the slash"),
            ("empty step", "*/ * * * *", "minute step \"*/\" needs a number of at least 1 after the slash"),
            ("step on a number", "5/10 * * * *", "minute step \"5/10\" needs \"*\" or a range before the slash, e.g. \"*/10\" or \"5-59/10\""),
            ("step of 1 on a number", "5/1 * * * *", "minute step \"5/1\" needs \"*\" or a range before the slash, e.g. \"*/10\" or \"5-59/10\""),
            ("backwards hours", "0 22-2 * * *", "hour range \"22-2\" runs backwards; cron does not wrap around, so write it as \"22-23,0-2\""),
            ("backwards days", "0 0 * * sat-mon", "day-of-week range \"sat-mon\" runs backwards; cron does not wrap around, so write it as \"6,0-1\""),
            ("backwards from sunday 7", "0 0 * * 7-1", "day-of-week range \"7-1\" runs backwards; cron does not wrap around, so write it as \"0-1\""),
            ("backwards to sunday 0", "0 0 * * 5-0", "day-of-week range \"5-0\" runs backwards; cron does not wrap around, so write it as \"5-6,0\""),
            ("backwards months", "0 0 1 nov-feb *", "month range \"nov-feb\" runs backwards; cron does not wrap around, so write it as \"11-12,1-2\""),
            ("croner's L", "0 0 L * *", "day-of-month value \"L\" is not a number"),
            ("a # suffix", "0 0 * * 5#2", "day-of-week value \"5#2\" is neither a number nor a name SUN-SAT"),
            ("a ? for a day", "0 0 ? * *", "day-of-month value \"?\" is not a number"),
            ("croner's + (AND)", "0 0 13 * +5", "day-of-week value \"+5\" is neither a number nor a name SUN-SAT"),
            ("negative", "-5 * * * *", "minute range \"-5\" needs a value on both sides of the dash"),
            ("open range", "0 1- * * *", "hour range \"1-\" needs a value on both sides of the dash"),
            ("never fires", "0 0 30 2 *", "day-of-month \"30\" never occurs in month \"2\", so the schedule would never fire"),
            ("never fires, AND-ed", "0 0 31 4,6 */2", "day-of-month \"31\" never occurs in month \"4,6\", so the schedule would never fire"),
        ];
        for (name, expr, want) in rows {
            assert_eq!(Fields::parse(expr).err().as_deref(), Some(want), "{name}");
        }
    }

    #[test]
    fn star_flags_follow_vixie() {
        #[rustfmt::skip]
        let rows = [
            // expr             fixed  day_star weekday_star
            ("30 2 * * *",      true,  true,  true),
            ("0 2,14 * * *",    true,  true,  true),
            ("0-59/20 2 * * *", true,  true,  true),
            ("*/20 2 * * *",    false, true,  true),
            ("0 * * * *",       false, true,  true),
            ("0 */2 * * *",     false, true,  true),
            ("0 0-23 * * *",    true,  true,  true),
            ("0 12 */2 * 1",    true,  true,  false),
            ("0 12 13 * 5",     true,  false, false),
            ("0 12 1-31 * 5",   true,  false, false),
            ("@hourly",         false, true,  true),
            ("@daily",          true,  true,  true),
            ("@weekly",         true,  true,  false),
            ("@monthly",        true,  false, true),
        ];
        for (expr, fixed, day_star, weekday_star) in rows {
            let f = fields(expr);
            assert_eq!(
                (f.fixed, f.day_star, f.weekday_star),
                (fixed, day_star, weekday_star),
                "{expr}"
            );
        }
    }

    #[test]
    fn day_fields_or_only_without_a_star() {
        // March 2027: Monday the 1st, 8th, 15th, 22nd, 29th; Wednesday the 3rd; the 13th is a
        // Saturday.
        #[rustfmt::skip]
        let rows = [
            ("odd days that are Mondays", "0 12 */2 * 1", "2027-03-01 2027-03-15 2027-03-29"),
            ("Mondays, any day (* ANDs)", "0 12 * * 1", "2027-03-01 2027-03-08 2027-03-15 2027-03-22 2027-03-29"),
            ("13th if Sun/Wed/Sat", "0 12 13 * */3", "2027-03-13"),
            ("13th OR Friday", "0 12 13 * 5", "2027-03-05 2027-03-12 2027-03-13 2027-03-19 2027-03-26"),
            ("1-31 is not a star: OR", "0 12 1-7 * 3", "2027-03-01 2027-03-02 2027-03-03 2027-03-04 2027-03-05 2027-03-06 2027-03-07 2027-03-10 2027-03-17 2027-03-24 2027-03-31"),
            ("7 is Sunday", "0 12 * * 7", "2027-03-07 2027-03-14 2027-03-21 2027-03-28"),
            ("names to SUN", "0 12 1 * FRI-SUN", "2027-03-01 2027-03-05 2027-03-06 2027-03-07 2027-03-12 2027-03-13 2027-03-14 2027-03-19 2027-03-20 2027-03-21 2027-03-26 2027-03-27 2027-03-28"),
            ("other months only", "0 12 * apr-dec *", ""),
        ];
        for (name, expr, want) in rows {
            let f = fields(expr);
            let start = NaiveDate::from_ymd_opt(2027, 3, 1).unwrap();
            let got: Vec<String> = start
                .iter_days()
                .take(31)
                .filter(|d| f.on(*d))
                .map(|d| d.to_string())
                .collect();
            assert_eq!(got.join(" "), want, "{name}");
        }
    }

    #[test]
    fn next_and_previous_walk_local_minutes() {
        #[rustfmt::skip]
        let rows = [
            // expr             from                 next                 previous (at or before)
            ("30 2 * * *",      "2027-03-14 02:30", "2027-03-15 02:30", "2027-03-14 02:30"),
            ("30 2 * * *",      "2027-03-14 02:29", "2027-03-14 02:30", "2027-03-13 02:30"),
            ("*/20 * * * *",    "2027-03-14 23:59", "2027-03-15 00:00", "2027-03-14 23:40"),
            ("5,30 2,14 * * *", "2027-03-14 02:05", "2027-03-14 02:30", "2027-03-14 02:05"),
            ("5,30 2,14 * * *", "2027-03-14 02:31", "2027-03-14 14:05", "2027-03-14 02:30"),
            ("5,30 2,14 * * *", "2027-03-14 00:00", "2027-03-14 02:05", "2027-03-13 14:30"),
            ("0 0 1 1 *",       "2027-03-14 12:00", "2028-01-01 00:00", "2027-01-01 00:00"),
            ("0 0 29 2 *",      "2027-03-14 12:00", "2028-02-29 00:00", "2024-02-29 00:00"),
            ("0 0 29 2 */7",    "2027-03-14 12:00", "2032-02-29 00:00", "2004-02-29 00:00"),
            ("59 23 31 12 *",   "2027-12-31 23:59", "2028-12-31 23:59", "2027-12-31 23:59"),
        ];
        for (expr, from, next, previous) in rows {
            let f = fields(expr);
            assert_eq!(
                f.next(local(from)),
                Some(local(next)),
                "{expr} after {from}"
            );
            assert_eq!(
                f.previous(local(from)),
                Some(local(previous)),
                "{expr} at {from}"
            );
        }
    }

    // The walk by fields agrees with testing every minute of two months.
    #[test]
    fn next_and_previous_agree_with_every_minute() {
        let start = local("2027-02-01 00:00");
        let minutes: Vec<NaiveDateTime> = (0..60 * 24 * 59)
            .map(|m| start + chrono::TimeDelta::minutes(m))
            .collect();
        for expr in [
            "*/7 3-5 * * *",
            "0 12 */2 * 1",
            "15,45 */3 13 * 5",
            "0 0 * * *",
            "59 23 * * 0",
        ] {
            let f = fields(expr);
            let hits: Vec<NaiveDateTime> =
                minutes.iter().copied().filter(|l| f.matches(*l)).collect();
            let (first, last) = (hits[0], hits[hits.len() - 1]);
            for t in minutes
                .iter()
                .step_by(7)
                .map(|t| *t + chrono::TimeDelta::seconds(13))
            {
                if t < last {
                    let i = hits.partition_point(|h| *h <= t);
                    assert_eq!(f.next(t), Some(hits[i]), "{expr} after {t}");
                }
                if t >= first {
                    let i = hits.partition_point(|h| *h <= t);
                    assert_eq!(f.previous(t), Some(hits[i - 1]), "{expr} at {t}");
                }
            }
        }
    }
}
