//! Cron schedules from container labels, and whether an action is due now.
//!
//! Pure logic: nothing here reads the clock or talks to Docker, so every decision can be
//! table-tested with fixed instants. The fire times are Vixie cron's (Debian's `cron`): the
//! day fields are OR-ed only when neither starts with `*`, and a fixed-time job (no `*` at
//! the start of the minute or hour field) runs the times a daylight-saving gap skips right
//! after the gap and a repeated hour's times once, at their first occurrence; a wildcard job
//! follows the wall clock.

mod fields;
mod local;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use std::time::Duration;

use fields::Fields;
use local::{Local, Repeat};

/// How far back a container with no recorded run looks, so a fire in the
/// minute before guerite first sees it is not lost.
pub const FIRST_RUN_LOOKBACK: Duration = Duration::from_secs(60);

const SECOND: TimeDelta = TimeDelta::seconds(1);

#[derive(Clone, Debug)]
pub struct Schedule {
    expr: String,
    fields: Fields,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl Eq for Schedule {}

/// What daylight saving does to one fire time, for `check` to say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shift {
    /// These matching local times do not exist (the clock jumped over them); the job runs
    /// once, at the fire time, the first instant after the gap.
    Skipped(Vec<NaiveDateTime>),
    /// The fire time's local time happens twice (the clock went back over it). A fixed-time
    /// job runs at the first only; a wildcard job at both.
    Repeated { local: NaiveDateTime, both: bool },
}

impl Schedule {
    /// Parses a 5-field crontab expression or an @ shorthand. The error is
    /// one line meant for the operator.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let expr = expr.trim();
        Ok(Schedule {
            expr: expr.to_string(),
            fields: Fields::parse(expr)?,
        })
    }

    /// The expression as the operator wrote it (trimmed).
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The next `n` fire times strictly after `t` (fewer if the pattern runs out).
    pub fn next_after(&self, t: DateTime<Utc>, tz: Tz, n: usize) -> Vec<DateTime<Utc>> {
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

    // A fire time is the instant of a matching local minute, its first if the minute happens
    // twice, or the end of the gap that skipped it for a fixed-time job: all non-decreasing
    // in the local minute. On top come, for a wildcard job, the second instants of repeated
    // minutes. Each search takes the first kind from the local minutes the clock has not yet
    // shown by `t` and the second from the repeat near `t`, if any.

    /// The first fire time strictly after `t`.
    pub fn first_after(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let repeat = local::repeat_near(tz, t);
        let mut from = shown_by(tz, t, repeat);
        let first = loop {
            let minute = self.fields.next(from)?;
            match self.resolve(tz, minute) {
                Some((fire, _)) => break fire,
                None => from = minute,
            }
        };
        let second = repeat
            .filter(|r| !self.fields.fixed && t < r.ends())
            .and_then(|r| {
                let minute = self.fields.next(r.replayed(t).max(r.from - SECOND))?;
                (minute < r.until).then(|| r.second(minute))
            });
        Some(second.map_or(first, |s| s.min(first)))
    }

    /// The latest fire time at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let repeat = local::repeat_near(tz, t);
        let mut until = shown_by(tz, t, repeat);
        let (first, twice) = loop {
            let minute = self.fields.previous(until)?;
            match self.resolve(tz, minute) {
                Some(found) => break found,
                None => until = minute - SECOND,
            }
        };
        let wildcard = !self.fields.fixed;
        // A repeated minute long before `t`, with no fire since.
        let far = twice.filter(|s| wildcard && *s <= t);
        let near = repeat.filter(|r| wildcard && r.at <= t).and_then(|r| {
            let minute = self.fields.previous(r.replayed(t).min(r.until - SECOND))?;
            (minute >= r.from).then(|| r.second(minute))
        });
        [Some(first), far, near].into_iter().flatten().max()
    }

    /// The first fire time of a matching local minute, and its second instant if the clock
    /// shows it twice; `None` when a gap skips it and the job follows the wall clock.
    fn resolve(
        &self,
        tz: Tz,
        minute: NaiveDateTime,
    ) -> Option<(DateTime<Utc>, Option<DateTime<Utc>>)> {
        match local::resolve(tz, minute) {
            Local::Once(t) => Some((t, None)),
            Local::Twice(first, second) => Some((first, Some(second))),
            Local::Skipped if self.fields.fixed => Some((local::after_gap(tz, minute)?, None)),
            Local::Skipped => None,
        }
    }

    /// What daylight saving does to `fire`, a fire time of this schedule.
    pub fn shift(&self, fire: DateTime<Utc>, tz: Tz) -> Option<Shift> {
        if self.fields.fixed
            && let Some((from, until)) = local::gap_ending_at(tz, fire)
        {
            let mut skipped = Vec::new();
            let mut at = from - SECOND;
            while let Some(minute) = self.fields.next(at).filter(|m| *m < until) {
                skipped.push(minute);
                at = minute;
            }
            if !skipped.is_empty() {
                return Some(Shift::Skipped(skipped));
            }
        }
        let minute = local::local(tz, fire);
        match local::resolve(tz, minute) {
            Local::Twice(..) => Some(Shift::Repeated {
                local: minute,
                both: !self.fields.fixed,
            }),
            Local::Once(_) | Local::Skipped => None,
        }
    }
}

/// The latest local time the clock has shown by `t`: what it shows at `t`, or, while it
/// shows a repeated hour again, the end of that hour.
fn shown_by(tz: Tz, t: DateTime<Utc>, repeat: Option<Repeat>) -> NaiveDateTime {
    match repeat {
        Some(r) if r.replays(t) => r.until - SECOND,
        _ => local::local(tz, t),
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
    // at the latest.
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
mod tests;
