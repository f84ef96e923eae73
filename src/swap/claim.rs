//! The claim: before a guerite changes the container `<name>` (a swap, a restart, a recovery) it
//! creates a container `<name>-guerite-claim` that is never started, and removes it when it is
//! done. The engine refuses a second container under a taken name, so the claim is a lock that
//! every guerite using the engine sees, whatever its host or state file; its labels say who holds
//! it, what it is doing and until when. Pure: parsing and judging claims; the engine calls are
//! in swap.rs and recovery.rs.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::action::ActionKind;
use crate::engine::Container;
use crate::process::Process;

pub const SUFFIX: &str = "-guerite-claim";

const BASE: &str = "guerite.claim";
const INSTANCE: &str = "guerite.claim.instance";
const ACTION: &str = "guerite.claim.action";
const SWAP: &str = "guerite.claim.swap";
const OLD_ID: &str = "guerite.claim.old_id";
const OLD_RUNNING: &str = "guerite.claim.old_running";
const EXPIRES: &str = "guerite.claim.expires";
const HOST: &str = "guerite.claim.host";
const PROCESS: &str = "guerite.claim.process";
const STATE_FILE: &str = "guerite.claim.state_file";

pub fn name(base: &str) -> String {
    format!("{base}{SUFFIX}")
}

/// Who holds a claim, as far as another guerite can tell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Holder {
    /// The holder's state file instance id: equal to ours means an earlier run of ours.
    pub instance: String,
    pub host: String,
    #[serde(skip)]
    pub process: Option<Process>,
    pub state_file: String,
}

/// What a claim says. The old container's id and whether it ran let a later run finish the
/// work even if the holder's journal is lost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Claim {
    pub id: String,
    pub base: String,
    pub created: DateTime<Utc>,
    pub holder: Holder,
    pub action: ActionKind,
    /// It guards a swap, whose half-done state `old_id` and `old_running` describe.
    pub swap: bool,
    pub old_id: String,
    pub old_running: bool,
    pub expires: DateTime<Utc>,
}

/// What a new claim is for.
pub struct Purpose<'a> {
    pub action: ActionKind,
    pub swap: bool,
    pub old_id: &'a str,
    pub old_running: bool,
    pub expires: DateTime<Utc>,
}

/// The labels of a new claim.
pub fn labels(base: &str, holder: &Holder, p: &Purpose) -> HashMap<String, String> {
    let mut l = HashMap::from([
        (BASE.to_string(), base.to_string()),
        (INSTANCE.to_string(), holder.instance.clone()),
        (ACTION.to_string(), p.action.as_str().to_string()),
        (SWAP.to_string(), p.swap.to_string()),
        (OLD_ID.to_string(), p.old_id.to_string()),
        (OLD_RUNNING.to_string(), p.old_running.to_string()),
        (EXPIRES.to_string(), p.expires.to_rfc3339()),
        (HOST.to_string(), holder.host.clone()),
        (STATE_FILE.to_string(), holder.state_file.clone()),
    ]);
    if let Some(p) = &holder.process {
        l.insert(PROCESS.to_string(), p.encode());
    }
    l
}

/// The name a claim container protects, when `c` is one: its name is `<base>-guerite-claim`
/// and its `guerite.claim` label says the same base (a name alone could be anyone's).
pub fn base_of(c: &Container) -> Option<&str> {
    let base = c.name.strip_suffix(SUFFIX)?;
    (!base.is_empty() && c.labels.get(BASE).map(String::as_str) == Some(base)).then_some(base)
}

/// A claim's labels read back; `Err` names what is missing or wrong. `None`: not a claim.
pub fn parse(c: &Container) -> Option<Result<Claim, String>> {
    let base = base_of(c)?;
    let get = |key: &str| {
        c.labels
            .get(key)
            .ok_or_else(|| format!("claim {} has no {key} label", c.name))
    };
    let time = |key: &str| -> Result<DateTime<Utc>, String> {
        let v = get(key)?;
        DateTime::parse_from_rfc3339(v)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| format!("claim {} has an unreadable {key} label", c.name))
    };
    Some((|| {
        Ok(Claim {
            id: c.id.clone(),
            base: base.to_string(),
            created: c.created,
            holder: Holder {
                instance: get(INSTANCE)?.clone(),
                host: c.labels.get(HOST).cloned().unwrap_or_default(),
                process: c.labels.get(PROCESS).and_then(|p| Process::decode(p)),
                state_file: c.labels.get(STATE_FILE).cloned().unwrap_or_default(),
            },
            action: get(ACTION)?
                .parse()
                .map_err(|_| format!("claim {} has an unreadable {ACTION} label", c.name))?,
            swap: c.labels.get(SWAP).map(String::as_str) == Some("true"),
            old_id: get(OLD_ID)?.clone(),
            old_running: get(OLD_RUNNING)? == "true",
            expires: time(EXPIRES)?,
        })
    })())
}

/// How a claim stands for the guerite that finds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Standing {
    /// Left by an earlier run of this guerite (same state instance); that run is over, since
    /// this one holds the state lock.
    Mine,
    /// Another guerite holds it, or may: its container must be left alone.
    Held,
    /// Its holder is provably gone, or the claim outlived every deadline its holder had: its
    /// work may be taken over.
    Abandoned(Abandon),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandon {
    HolderGone,
    Expired,
}

/// `holder_alive`: what /proc says of the holder's process (`None`: cannot tell, e.g. another
/// host or another pid namespace).
pub fn standing(
    claim: &Claim,
    instance: &str,
    now: DateTime<Utc>,
    holder_alive: Option<bool>,
) -> Standing {
    if claim.holder.instance == instance {
        Standing::Mine
    } else {
        match holder_alive {
            Some(false) => Standing::Abandoned(Abandon::HolderGone),
            // A holder past its deadline but alive is hung, not gone: it may still act.
            None if now > claim.expires => Standing::Abandoned(Abandon::Expired),
            _ => Standing::Held,
        }
    }
}

/// One line about a claim someone else holds, for the log, the report and `check`.
pub fn describe(claim: &Claim) -> String {
    let pid = claim
        .holder
        .process
        .as_ref()
        .map(|p| format!(" pid {}", p.pid))
        .unwrap_or_default();
    format!(
        "another guerite is working on it ({} since {}, by{pid} on host {}, state {}; \
         its claim {} expires {})",
        claim.action,
        claim.created.format("%Y-%m-%d %H:%M:%S UTC"),
        claim.holder.host,
        claim.holder.state_file,
        name(&claim.base),
        claim.expires.format("%Y-%m-%d %H:%M:%S UTC"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sample;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn holder(instance: &str) -> Holder {
        Holder {
            instance: instance.into(),
            host: "h1".into(),
            process: Some(Process {
                boot_id: "b".into(),
                pid_ns: "4026531836".into(),
                pid: 42,
                start: 7,
            }),
            state_file: "/var/lib/guerite/state.json".into(),
        }
    }

    fn claim_container(base: &str, holder: &Holder) -> Container {
        let labels = labels(
            base,
            holder,
            &Purpose {
                action: ActionKind::Update,
                swap: true,
                old_id: "0123abcd",
                old_running: true,
                expires: at("2026-12-01T12:20:00Z"),
            },
        );
        let mut c = sample(&name(base), &[]);
        c.labels = labels.into_iter().collect();
        c
    }

    #[test]
    fn labels_round_trip() {
        let c = claim_container("web", &holder("i1"));
        let claim = parse(&c).unwrap().unwrap();
        assert_eq!(claim.base, "web");
        assert_eq!(claim.holder, holder("i1"));
        assert_eq!((claim.action, claim.swap), (ActionKind::Update, true));
        assert_eq!(
            (claim.old_id.as_str(), claim.old_running),
            ("0123abcd", true)
        );
        assert_eq!(claim.expires, at("2026-12-01T12:20:00Z"));
    }

    #[test]
    fn only_a_matching_name_and_label_make_a_claim() {
        let mut c = claim_container("web", &holder("i1"));
        c.name = "db-guerite-claim".into();
        assert_eq!(parse(&c), None, "label for another name");
        assert_eq!(parse(&sample("web-guerite-claim", &[])), None, "no label");
        assert_eq!(parse(&sample("web", &[("guerite.claim", "web")])), None);
        let mut broken = claim_container("web", &holder("i1"));
        broken.labels.remove(EXPIRES);
        assert_eq!(
            parse(&broken),
            Some(Err(
                "claim web-guerite-claim has no guerite.claim.expires label".into()
            ))
        );
    }

    #[test]
    fn standing_table() {
        let claim = parse(&claim_container("web", &holder("i-claim")))
            .unwrap()
            .unwrap();
        let before = at("2026-12-01T12:10:00Z");
        let after = at("2026-12-01T12:30:00Z");
        use Standing::*;
        let cases = [
            ("an earlier run of ours", "i-claim", after, None, Mine),
            (
                "ours, whatever /proc says",
                "i-claim",
                before,
                Some(true),
                Mine,
            ),
            ("held: cannot tell", "i-other", before, None, Held),
            ("held: alive", "i-other", before, Some(true), Held),
            (
                "holder gone",
                "i-other",
                before,
                Some(false),
                Abandoned(Abandon::HolderGone),
            ),
            (
                "expired",
                "i-other",
                after,
                None,
                Abandoned(Abandon::Expired),
            ),
            (
                "expired but provably alive: hung, not gone; it may still act",
                "i-other",
                after,
                Some(true),
                Held,
            ),
        ];
        for (why, instance, now, alive, want) in cases {
            assert_eq!(standing(&claim, instance, now, alive), want, "{why}");
        }
    }
}
