//! Local wall-clock times as instants in a zone, and the changes of offset (daylight saving)
//! that make a local time happen twice or not at all.

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// How far from an instant a change of offset is looked for. Every change since 1970 is at
/// most 2 hours, and changes are months apart, so one window holds at most one.
const NEAR: TimeDelta = TimeDelta::hours(4);

/// A local time in a zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    Once(DateTime<Utc>),
    /// The clock went back over it: it happens twice, in this order.
    Twice(DateTime<Utc>, DateTime<Utc>),
    /// The clock went forward over it.
    Skipped,
}

pub fn resolve(tz: Tz, local: NaiveDateTime) -> Local {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Local::Once(t.to_utc()),
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.to_utc(), b.to_utc());
            Local::Twice(a.min(b), a.max(b))
        }
        LocalResult::None => Local::Skipped,
    }
}

pub fn local(tz: Tz, t: DateTime<Utc>) -> NaiveDateTime {
    t.with_timezone(&tz).naive_local()
}

fn offset(tz: Tz, t: DateTime<Utc>) -> TimeDelta {
    let seconds = tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    TimeDelta::seconds(seconds.local_minus_utc().into())
}

/// The first instant after the gap that skipped local time `skipped`: where a fixed-time job
/// due at `skipped` runs.
pub fn after_gap(tz: Tz, skipped: NaiveDateTime) -> Option<DateTime<Utc>> {
    // Offsets change on whole minutes in every zone since 1972, so the gap ends on the first
    // local minute that exists. The longest gap, Samoa's lost day in 2011, is 1440 minutes.
    (1..=2 * 1440).find_map(|m| match resolve(tz, skipped + TimeDelta::minutes(m)) {
        Local::Once(t) | Local::Twice(t, _) => Some(t),
        Local::Skipped => None,
    })
}

/// A change of offset where the clock goes back, so that local times from `from` up to
/// `until` happen twice: first from `at - (until - from)` up to `at`, then from `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repeat {
    pub at: DateTime<Utc>,
    pub from: NaiveDateTime,
    pub until: NaiveDateTime,
}

impl Repeat {
    /// When the second pass over the repeated local times ends.
    pub fn ends(&self) -> DateTime<Utc> {
        self.at + (self.until - self.from)
    }

    /// The instant of the second occurrence of `local`, a time in `from..until`.
    pub fn second(&self, local: NaiveDateTime) -> DateTime<Utc> {
        self.at + (local - self.from)
    }

    /// The local time the second pass shows at `t` (before `from` when `t` precedes it).
    pub fn replayed(&self, t: DateTime<Utc>) -> NaiveDateTime {
        self.from + (t - self.at)
    }

    /// Whether `t` is in the second pass, when the clock shows again what it showed.
    pub fn replays(&self, t: DateTime<Utc>) -> bool {
        self.at <= t && t < self.ends()
    }
}

/// The repeat whose change of offset is within [`NEAR`] of `t`, if any.
pub fn repeat_near(tz: Tz, t: DateTime<Utc>) -> Option<Repeat> {
    let (low, high) = (t - NEAR, t + NEAR);
    let (before, after) = (offset(tz, low), offset(tz, high));
    if after >= before {
        return None;
    }
    // The change is the first second in (low, high] with another offset than `low`'s.
    let (mut low, mut high) = (low.timestamp(), high.timestamp());
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        let at = DateTime::from_timestamp(mid, 0)?;
        if offset(tz, at) == before {
            low = mid;
        } else {
            high = mid;
        }
    }
    let at = DateTime::from_timestamp(high, 0)?;
    Some(Repeat {
        at,
        from: (at + after).naive_utc(),
        until: (at + before).naive_utc(),
    })
}

/// The local times skipped by a change of offset at `t`, if the clock jumped forward then:
/// `from..until` in local time, where `until` is what the clock shows at `t`.
pub fn gap_ending_at(tz: Tz, t: DateTime<Utc>) -> Option<(NaiveDateTime, NaiveDateTime)> {
    let (before, after) = (offset(tz, t - TimeDelta::seconds(1)), offset(tz, t));
    let until = local(tz, t);
    (after > before).then(|| (until - (after - before), until))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America::New_York, Australia::Lord_Howe, Europe::Paris, UTC};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn naive(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn resolves_local_times() {
        #[rustfmt::skip]
        let rows = [
            ("plain", New_York, "2027-03-13 02:30", Local::Once(at("2027-03-13T07:30:00Z"))),
            ("New York gap", New_York, "2027-03-14 02:30", Local::Skipped),
            ("New York repeat", New_York, "2027-11-07 01:30", Local::Twice(at("2027-11-07T05:30:00Z"), at("2027-11-07T06:30:00Z"))),
            ("Lord Howe gap of 30 min", Lord_Howe, "2027-10-03 02:15", Local::Skipped),
            ("Lord Howe after the gap", Lord_Howe, "2027-10-03 02:30", Local::Once(at("2027-10-02T15:30:00Z"))),
            ("Lord Howe repeat", Lord_Howe, "2027-04-04 01:45", Local::Twice(at("2027-04-03T14:45:00Z"), at("2027-04-03T15:15:00Z"))),
            ("UTC", UTC, "2027-03-14 02:30", Local::Once(at("2027-03-14T02:30:00Z"))),
        ];
        for (name, tz, local, want) in rows {
            assert_eq!(resolve(tz, naive(local)), want, "{name}");
        }
    }

    #[test]
    fn the_first_instant_after_a_gap() {
        #[rustfmt::skip]
        let rows = [
            (New_York, "2027-03-14 02:00", "2027-03-14T07:00:00Z"),
            (New_York, "2027-03-14 02:59", "2027-03-14T07:00:00Z"),
            (Paris, "2027-03-28 02:30", "2027-03-28T01:00:00Z"),
            (Lord_Howe, "2027-10-03 02:00", "2027-10-02T15:30:00Z"),
        ];
        for (tz, skipped, want) in rows {
            assert_eq!(
                after_gap(tz, naive(skipped)),
                Some(at(want)),
                "{tz} {skipped}"
            );
            assert_eq!(
                gap_ending_at(tz, at(want)).map(|(_, until)| until),
                Some(local(tz, at(want))),
                "{tz} {skipped}"
            );
        }
        assert_eq!(
            gap_ending_at(Lord_Howe, at("2027-10-02T15:30:00Z")),
            Some((naive("2027-10-03 02:00"), naive("2027-10-03 02:30")))
        );
        assert_eq!(gap_ending_at(Paris, at("2027-03-28T01:00:01Z")), None);
        assert_eq!(gap_ending_at(Paris, at("2027-10-31T01:00:00Z")), None);
    }

    #[test]
    fn finds_the_repeat_near_an_instant() {
        let ny = Repeat {
            at: at("2027-11-07T06:00:00Z"),
            from: naive("2027-11-07 01:00"),
            until: naive("2027-11-07 02:00"),
        };
        let lh = Repeat {
            at: at("2027-04-03T15:00:00Z"),
            from: naive("2027-04-04 01:30"),
            until: naive("2027-04-04 02:00"),
        };
        #[rustfmt::skip]
        let rows = [
            ("4 h before", New_York, "2027-11-07T02:00:00Z", Some(ny)),
            ("in the first pass", New_York, "2027-11-07T05:10:00Z", Some(ny)),
            ("at the change", New_York, "2027-11-07T06:00:00Z", Some(ny)),
            ("4 h after", New_York, "2027-11-07T09:59:59Z", Some(ny)),
            ("too early", New_York, "2027-11-07T01:59:59Z", None),
            ("too late", New_York, "2027-11-07T10:00:00Z", None),
            ("a gap is no repeat", New_York, "2027-03-14T07:00:00Z", None),
            ("30 minutes", Lord_Howe, "2027-04-03T15:10:00Z", Some(lh)),
            ("no DST", UTC, "2027-11-07T06:00:00Z", None),
        ];
        for (name, tz, t, want) in rows {
            assert_eq!(repeat_near(tz, at(t)), want, "{name}");
        }
        assert_eq!(ny.ends(), at("2027-11-07T07:00:00Z"));
        assert_eq!(
            ny.second(naive("2027-11-07 01:30")),
            at("2027-11-07T06:30:00Z")
        );
        assert!(!ny.replays(at("2027-11-07T05:59:59Z")));
        assert!(ny.replays(at("2027-11-07T06:00:00Z")));
        assert!(!ny.replays(at("2027-11-07T07:00:00Z")));
    }
}
