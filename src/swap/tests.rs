//! The swap, its rollback and recovery on the recording fake engine (engine/fake.rs): each test
//! pins the exact calls one branch makes, in order, and what the engine, the journal and the
//! state hold afterwards. Time is paused, so verification's waits cost nothing. The real-engine
//! tests (tests/swap.rs, kills.rs, rivals.rs, engine_death.rs) stay the proof that an engine
//! behaves as the fake does.
//!
//! Ids: the fake numbers containers in the order they appear, so in a swap of `web` (the first
//! container) the claim is 00000002 and the new container 00000003.

mod recovery;
mod swap;

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::action::ActionKind;
use crate::cli::Global;
use crate::config::Config;
use crate::engine::Details;
use crate::engine::api::Engine;
use crate::engine::fake::{Ctr, Fake, Image, Life};
use crate::event::Event;
use crate::store::state::State;
use crate::swap::Swapper;
use crate::swap::claim::{self, Holder};

pub const V1: &str = "sha256:v1";
pub const V2: &str = "sha256:v2";
pub const APP: &str = "registry.test/app:1";
/// A digest the registry serves, newer than the host's.
pub const REMOTE: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
/// Makes a container this guerite's (`is_ours`): one schedule label, no scope.
pub const LABELS: &[(&str, &str)] = &[("guerite.recreate", "0 3 * * *")];

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A fake engine with images v1 (named `APP`, keeps running, no healthcheck) and v2 (on the
/// host, untagged, the same life) and a state file in a directory of its own.
pub struct Bed {
    pub fake: Fake,
    pub config: Config,
    pub me: Holder,
    pub now: DateTime<Utc>,
    _dir: tempfile::TempDir,
}

impl Bed {
    pub fn new() -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::from_cli(&Global::default()).unwrap();
        config.state_file = dir.path().join("state.json");
        let me = Holder {
            instance: "i-test".into(),
            host: "test-host".into(),
            process: None,
            state_file: config.state_file.display().to_string(),
        };
        let fake = Fake::new();
        fake.with(|w| {
            w.images.push(Image::new(V1, APP));
            w.images.push(Image {
                refs: Vec::new(),
                ..Image::new(V2, APP)
            });
        });
        Bed {
            fake,
            config,
            me,
            now: at("2026-06-01T12:00:00Z"),
            _dir: dir,
        }
    }

    /// Changes an image the fake holds.
    pub fn image(&self, id: &str, change: impl FnOnce(&mut Image)) {
        self.fake
            .with(|w| change(w.images.iter_mut().find(|i| i.id == id).unwrap()));
    }

    /// A running container of a host image, this guerite's; returns its id.
    pub fn run(&self, name: &str, image: &str) -> String {
        let image = self
            .fake
            .with(|w| w.images.iter().find(|i| i.id == image).unwrap().clone());
        self.fake.add(Ctr::running(name, &image, LABELS))
    }

    pub fn state_file(&self) -> &Path {
        &self.config.state_file
    }

    /// A fresh state of this guerite's instance.
    pub fn state(&self) -> State {
        State {
            instance: self.me.instance.clone(),
            ..State::fresh()
        }
    }

    /// The state as the last save left it.
    pub fn saved(&self) -> State {
        State::load(self.state_file(), self.now, true).unwrap().0
    }

    pub fn swapper(&self) -> Swapper<'_, Fake> {
        Swapper {
            docker: &self.fake,
            config: &self.config,
            state_file: self.state_file(),
            now: self.now,
            me: &self.me,
        }
    }

    /// What the swap is handed: the container as inspected (not recorded as a call).
    pub async fn details(&self, key: &str) -> Details {
        let d = self.fake.details(key).await.unwrap();
        self.fake.take_calls();
        d
    }

    /// Ids to names, as the executor gives the swap.
    pub fn names(&self) -> HashMap<String, String> {
        self.fake.with(|w| {
            w.containers
                .iter()
                .map(|c| (c.id.clone(), c.name.clone()))
                .collect()
        })
    }

    pub fn calls(&self) -> Vec<String> {
        self.fake.take_calls()
    }
}

/// Expected calls, with `line ×N` for a line repeated N times (verification's polls).
pub fn expand(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .flat_map(|l| match l.rsplit_once(" ×") {
            Some((line, n)) => vec![line.to_string(); n.parse().unwrap()],
            None => vec![l.to_string()],
        })
        .collect()
}

/// Report items as one line each, `container action outcome: detail`: the one place these
/// tests read the report's types.
pub fn said(items: &[Event]) -> Vec<String> {
    items
        .iter()
        .map(|i| {
            let action = i.action.map_or("-", |a| a.as_str());
            format!("{} {action} {:?}: {}", i.container, i.outcome, i.detail)
        })
        .collect()
}

/// A swap of a running `web` by `image`, up to and including the stop of the old container.
pub fn up_to_stop(image: &str) -> Vec<String> {
    expand(&[
        "create_claim web-guerite-claim sha256:v1",
        "details 00000001",
        &format!("replacement 00000001 {image}"),
        "rename 00000001 web-guerite-old-00000001",
        &format!("create web-guerite-new-00000001 {image}"),
        "stop 00000001 10s",
    ])
}

pub fn concat(parts: &[Vec<String>]) -> Vec<String> {
    parts.concat()
}

/// The undo after the old container stopped and the new one (00000003) was created: look at
/// both, remove the new one, give the old one its name back and start it, release the claim.
pub const UNDO_AFTER_STOP: &[&str] = &[
    "details 00000001",
    "details 00000003",
    "remove 00000003",
    "rename 00000001 web",
    "start 00000001",
    "remove_claim 00000002",
];

/// The claim another guerite (instance `i-other`) holds on `web` for an update of `old_id`,
/// until `expires`.
pub fn foreign_claim(bed: &Bed, old_id: &str, expires: DateTime<Utc>) -> Ctr {
    let other = Holder {
        instance: "i-other".into(),
        ..bed.me.clone()
    };
    let purpose = claim::Purpose {
        action: ActionKind::Update,
        swap: true,
        old_id,
        old_running: true,
        expires,
    };
    let image = bed.fake.with(|w| w.images[0].clone());
    let mut c = Ctr::running("web-guerite-claim", &image, &[]);
    c.labels = claim::labels("web", &other, &purpose).into_iter().collect();
    c.running = false;
    c
}

/// `Life` of a new image, for the tests that need one.
pub fn life(bed: &Bed, id: &str, life: Life, healthcheck: bool) {
    bed.image(id, |i| {
        i.life = life;
        i.healthcheck = healthcheck;
    });
}
