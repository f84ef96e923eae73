//! TEMPORARY STUB: replaced by the real module (helper is writing it).
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::time::Duration;

pub const FIRST_RUN_LOOKBACK: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct Schedule {
    expr: String,
    cron: croner::Cron,
}
impl PartialEq for Schedule {
    fn eq(&self, o: &Self) -> bool {
        self.expr == o.expr
    }
}
impl Schedule {
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| e.to_string())?;
        Ok(Schedule {
            expr: expr.trim().to_string(),
            cron,
        })
    }
    pub fn expr(&self) -> &str {
        &self.expr
    }
    pub fn latest_at_or_before(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&tz), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
    pub fn next_after(&self, t: DateTime<Utc>, tz: Tz, n: usize) -> Vec<DateTime<Utc>> {
        self.cron
            .iter_after(t.with_timezone(&tz))
            .take(n)
            .map(|d| d.with_timezone(&Utc))
            .collect()
    }
}
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub previous_run: Option<DateTime<Utc>>,
    pub handled: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub max_catchup: Duration,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    Due { fire: DateTime<Utc> },
    Missed { fire: DateTime<Utc> },
    NotDue,
}
pub fn evaluate(s: &Schedule, tz: Tz, w: &Window) -> Due {
    let lb = w
        .previous_run
        .unwrap_or(w.now - FIRST_RUN_LOOKBACK)
        .max(w.handled.unwrap_or(w.created))
        .max(w.created);
    match s.latest_at_or_before(w.now, tz) {
        Some(t) if t > lb => {
            if t < w.now - w.max_catchup {
                Due::Missed { fire: t }
            } else {
                Due::Due { fire: t }
            }
        }
        _ => Due::NotDue,
    }
}
