//! A recording fake engine, for unit tests of the effect layer (swap, rollback, recovery,
//! executor). Containers and images live in memory. Every call is recorded, in order, as one
//! line of its name and arguments (ids cut to their first 8 hex digits), so that a test pins the
//! exact sequence. A script makes chosen calls fail (gone, refused, no answer), answer late,
//! hang for ever (a test drops the future there, as a `kill -9` would end the run), or lets
//! someone else change the engine just before a call is answered; a call that got no answer may
//! still be carried out by the engine later, as a stop whose client gave up is.
//!
//! Time is tokio's: under `#[tokio::test(start_paused = true)]` a minute of verification, a
//! stop the engine finishes 5 s later or a container that turns healthy after 3 s cost nothing,
//! and always happen in the same order.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::engine::api::{CallError, Created, Engine, PullAuth};
use crate::engine::{Container, Details, Health, ImageInfo, RunState};

/// The kinds of call, for scripting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    List,
    Details,
    Find,
    Family,
    CreateClaim,
    RemoveClaim,
    Image,
    Replacement,
    Create,
    Rename,
    Start,
    Stop,
    Remove,
    Pull,
    InsecureRegistries,
    RemoveImage,
    Restart,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::List => "list",
            Op::Details => "details",
            Op::Find => "find",
            Op::Family => "family",
            Op::CreateClaim => "create_claim",
            Op::RemoveClaim => "remove_claim",
            Op::Image => "image",
            Op::Replacement => "replacement",
            Op::Create => "create",
            Op::Rename => "rename",
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Remove => "remove",
            Op::Pull => "pull",
            Op::InsecureRegistries => "insecure_registries",
            Op::RemoveImage => "remove_image_if_unused",
            Op::Restart => "restart",
        }
    }
}

/// What a container does once the fake starts it (taken from its image at create).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Life {
    /// Keeps running; its health stays what it is.
    Runs,
    /// Health "starting", then "healthy" this long after the start.
    Healthy(Duration),
    /// Health "starting", then "unhealthy" this long after the start.
    Unhealthy(Duration),
    /// Exits this long after the start.
    Exits(Duration),
}

#[derive(Debug, Clone)]
pub struct Image {
    pub id: String,
    /// The references (tags) that name it on the host.
    pub refs: Vec<String>,
    pub repo_digests: Vec<String>,
    pub healthcheck: bool,
    pub life: Life,
}

impl Image {
    pub fn new(id: &str, reference: &str) -> Image {
        Image {
            id: id.to_string(),
            refs: vec![reference.to_string()],
            repo_digests: Vec::new(),
            healthcheck: false,
            life: Life::Runs,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Ctr {
    pub id: String,
    pub name: String,
    /// `Config.Image`, the reference it was run with.
    pub image: String,
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    pub created: DateTime<Utc>,
    pub running: bool,
    pub restarting: bool,
    pub restart_count: i64,
    pub stop_timeout: Option<i64>,
    pub healthcheck: bool,
    pub health: Option<Health>,
    pub started_at: Option<DateTime<Utc>>,
    pub network_mode: Option<String>,
    pub life: Life,
    /// When the fake last started it, on tokio's clock: `life` counts from there. `None` for a
    /// container the test put there: it stays as the test set it.
    started: Option<Instant>,
}

impl Ctr {
    /// A running container of `image` (its reference is the image's first), labelled `labels`.
    pub fn running(name: &str, image: &Image, labels: &[(&str, &str)]) -> Ctr {
        Ctr {
            id: String::new(),
            name: name.to_string(),
            image: image
                .refs
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            image_id: image.id.clone(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            created: at("2026-01-01T00:00:00Z"),
            running: true,
            restarting: false,
            restart_count: 0,
            stop_timeout: None,
            healthcheck: image.healthcheck,
            health: image.healthcheck.then_some(Health::Healthy),
            started_at: Some(at("2026-01-01T00:00:00Z")),
            network_mode: None,
            life: image.life,
            started: None,
        }
    }

    fn summary(&self) -> Container {
        let health = match self.health {
            Some(Health::Healthy) => " (healthy)",
            Some(Health::Unhealthy) => " (unhealthy)",
            Some(Health::Starting) => " (health: starting)",
            None => "",
        };
        let (state, status) = if self.restarting {
            (
                RunState::Restarting,
                "Restarting (1) 1 second ago".to_string(),
            )
        } else if self.running {
            (RunState::Running, format!("Up 1 hour{health}"))
        } else if self.started_at.is_none() {
            (RunState::Created, "Created".to_string())
        } else {
            (RunState::Exited, "Exited (0) 1 minute ago".to_string())
        };
        Container {
            id: self.id.clone(),
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            labels: self.labels.clone(),
            created: self.created,
            state,
            status,
            network_mode: self.network_mode.clone(),
            anonymous_volumes: Vec::new(),
        }
    }

    fn details(&self) -> Details {
        Details {
            id: self.id.clone(),
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            running: self.running,
            restarting: self.restarting,
            restart_count: self.restart_count,
            stop_timeout: self.stop_timeout,
            has_healthcheck: self.healthcheck,
            health: self.health,
            started_at: self.started_at,
            network_mode: self.network_mode.clone(),
            labels: self.labels.clone(),
        }
    }

    fn start(&mut self, now: Instant) {
        self.running = true;
        self.started = Some(now);
        self.started_at = Some(Utc::now());
        self.health = self.healthcheck.then_some(Health::Starting);
    }

    fn stop(&mut self) {
        self.running = false;
        self.health = None;
        self.started = None;
    }

    /// What `life` has made of it by `now`.
    fn live(&mut self, now: Instant) {
        let Some(since) = self.started.filter(|_| self.running) else {
            return;
        };
        let elapsed = now.saturating_duration_since(since);
        match self.life {
            Life::Runs => {}
            Life::Healthy(after) if elapsed >= after => self.health = Some(Health::Healthy),
            Life::Unhealthy(after) if elapsed >= after => self.health = Some(Health::Unhealthy),
            Life::Exits(after) if elapsed >= after => self.stop(),
            Life::Healthy(_) | Life::Unhealthy(_) | Life::Exits(_) => {}
        }
    }
}

/// The create body of the fake: the container it replaces, as inspected, and the new image.
#[derive(Debug, Clone)]
pub struct Spec {
    from: Ctr,
    image: Image,
    network_mode: Option<String>,
}

/// How a scripted call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 404: the container (or image) is not there.
    Gone,
    /// Another error status: the engine is done with the request.
    Refused,
    /// No answer: the engine may still carry the request out.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Normal,
    Fail(Fault),
    /// Never answers: the test drops the future (the run is killed) or times it out.
    Hang,
}

type Change = Box<dyn FnMut(&mut World)>;

/// One line of the script: which call it catches, and what happens to it. A rule catches one
/// call unless `always`; the first rule that matches a call is the one used.
pub struct Rule {
    op: Option<Op>,
    nth: Option<usize>,
    target: Option<String>,
    always: bool,
    before: Option<Change>,
    delay: Duration,
    answer: Answer,
    carried_out_after: Option<Duration>,
}

impl Rule {
    fn new(op: Option<Op>, nth: Option<usize>) -> Rule {
        Rule {
            op,
            nth,
            target: None,
            always: false,
            before: None,
            delay: Duration::ZERO,
            answer: Answer::Normal,
            carried_out_after: None,
        }
    }

    /// The next call of this kind.
    pub fn next(op: Op) -> Rule {
        Rule::new(Some(op), None)
    }

    /// The n-th call (1-based) since the last `take_calls`: the n-th line of the next list.
    pub fn call(n: usize) -> Rule {
        Rule::new(None, Some(n))
    }

    /// Only calls whose first argument names this container (by id, id as recorded, or name,
    /// as it is when the call arrives) or is this text.
    pub fn on(mut self, target: &str) -> Rule {
        self.target = Some(target.to_string());
        self
    }

    /// Every matching call, not only the next one.
    pub fn always(mut self) -> Rule {
        self.always = true;
        self
    }

    /// Someone else changes the engine just before the call is carried out.
    pub fn before(mut self, change: impl FnMut(&mut World) + 'static) -> Rule {
        self.before = Some(Box::new(change));
        self
    }

    /// The engine answers after this long.
    pub fn after(mut self, delay: Duration) -> Rule {
        self.delay = delay;
        self
    }

    pub fn fail(mut self, fault: Fault) -> Rule {
        self.answer = Answer::Fail(fault);
        self
    }

    pub fn hang(mut self) -> Rule {
        self.answer = Answer::Hang;
        self
    }

    /// For a call that fails or hangs: the engine carries it out anyway, this long after it
    /// arrived.
    pub fn carried_out_after(mut self, delay: Duration) -> Rule {
        self.carried_out_after = Some(delay);
        self
    }

    fn matches(&self, n: usize, op: Op, arg: Option<&str>, world: &World) -> bool {
        self.nth.is_none_or(|want| want == n)
            && self.op.is_none_or(|want| want == op)
            && self.target.as_deref().is_none_or(|t| {
                arg.is_some_and(|a| {
                    a == t
                        || world.find(a).is_some_and(|i| {
                            let c = &world.containers[i];
                            c.id == t || short(&c.id) == t || c.name == t
                        })
                })
            })
    }
}

/// One call, with what it was given.
#[derive(Debug, Clone)]
enum Req {
    List,
    Details(String),
    Find(String),
    Family(String),
    CreateClaim {
        name: String,
        image: String,
        labels: HashMap<String, String>,
    },
    RemoveClaim(String),
    Image(String),
    Replacement {
        id: String,
        image: String,
        names: HashMap<String, String>,
    },
    Create {
        name: String,
        spec: Box<Spec>,
    },
    Rename {
        id: String,
        to: String,
    },
    Start(String),
    Stop {
        id: String,
        timeout: Duration,
    },
    Remove(String),
    Pull {
        reference: String,
        auth: bool,
    },
    InsecureRegistries,
    RemoveImage(String),
    Restart {
        id: String,
        timeout: Duration,
    },
}

/// What the engine answers: each call's own type (a `Details`, a `Vec<Container>`, …),
/// unpacked by `Fake::ask`.
type Reply = Box<dyn std::any::Any>;

impl Req {
    fn op(&self) -> Op {
        match self {
            Req::List => Op::List,
            Req::Details(_) => Op::Details,
            Req::Find(_) => Op::Find,
            Req::Family(_) => Op::Family,
            Req::CreateClaim { .. } => Op::CreateClaim,
            Req::RemoveClaim(_) => Op::RemoveClaim,
            Req::Image(_) => Op::Image,
            Req::Replacement { .. } => Op::Replacement,
            Req::Create { .. } => Op::Create,
            Req::Rename { .. } => Op::Rename,
            Req::Start(_) => Op::Start,
            Req::Stop { .. } => Op::Stop,
            Req::Remove(_) => Op::Remove,
            Req::Pull { .. } => Op::Pull,
            Req::InsecureRegistries => Op::InsecureRegistries,
            Req::RemoveImage(_) => Op::RemoveImage,
            Req::Restart { .. } => Op::Restart,
        }
    }

    /// The argument a rule's `on` is matched against.
    fn subject(&self) -> Option<&str> {
        match self {
            Req::List | Req::InsecureRegistries => None,
            Req::Details(s)
            | Req::Find(s)
            | Req::Family(s)
            | Req::RemoveClaim(s)
            | Req::Image(s)
            | Req::Start(s)
            | Req::Remove(s)
            | Req::RemoveImage(s) => Some(s),
            Req::CreateClaim { name, .. } | Req::Create { name, .. } => Some(name),
            Req::Replacement { id, .. } | Req::Rename { id, .. } => Some(id),
            Req::Stop { id, .. } | Req::Restart { id, .. } => Some(id),
            Req::Pull { reference, .. } => Some(reference),
        }
    }

    /// The line the call is recorded as.
    fn line(&self) -> String {
        let args: Vec<String> = match self {
            Req::List | Req::InsecureRegistries => Vec::new(),
            Req::Details(s)
            | Req::Find(s)
            | Req::Family(s)
            | Req::RemoveClaim(s)
            | Req::Image(s)
            | Req::Start(s)
            | Req::Remove(s)
            | Req::RemoveImage(s) => vec![s.clone()],
            Req::CreateClaim { name, image, .. } => vec![name.clone(), image.clone()],
            Req::Replacement { id, image, .. } => vec![id.clone(), image.clone()],
            Req::Create { name, spec } => vec![name.clone(), spec.image.id.clone()],
            Req::Rename { id, to } => vec![id.clone(), to.clone()],
            Req::Stop { id, timeout } | Req::Restart { id, timeout } => {
                vec![id.clone(), format!("{}s", timeout.as_secs())]
            }
            Req::Pull { reference, auth } => {
                let mut a = vec![reference.clone()];
                if *auth {
                    a.push("with credentials".into());
                }
                a
            }
        };
        let mut line = self.op().as_str().to_string();
        for a in args {
            line.push(' ');
            line.push_str(short(&a));
        }
        line
    }
}

/// 64 hex digits (a container id) are shown by their first 8, as in the temporary names.
fn short(s: &str) -> &str {
    if crate::store::journal::is_full_id(s) {
        &s[..8]
    } else {
        s
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The n-th id the fake hands out: 64 hex digits whose first 8 count.
pub fn nth_id(n: u32) -> String {
    format!("{n:08x}{}", "0".repeat(56))
}

/// Everything the fake engine holds. Tests read and change it through `Fake::with`, and a
/// rule's `before` changes it between calls.
pub struct World {
    /// In creation order.
    pub containers: Vec<Ctr>,
    /// The images on the host.
    pub images: Vec<Image>,
    /// What the registry serves, by reference: `pull` brings it to the host.
    pub registry: BTreeMap<String, Image>,
    pub insecure: Vec<String>,
    calls: Vec<String>,
    rules: Vec<Rule>,
    /// Requests the engine carries out later, though their client got no answer.
    later: Vec<(Instant, Req)>,
    ids: u32,
}

impl World {
    /// The container `key` names, as the engine resolves it: full id, name, then id prefix.
    fn find(&self, key: &str) -> Option<usize> {
        let by = |f: &dyn Fn(&Ctr) -> bool| self.containers.iter().position(f);
        by(&|c| c.id == key)
            .or_else(|| by(&|c| c.name == key))
            .or_else(|| {
                let mut prefixed = self
                    .containers
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| !key.is_empty() && c.id.starts_with(key));
                match (prefixed.next(), prefixed.next()) {
                    (Some((i, _)), None) => Some(i),
                    _ => None,
                }
            })
    }

    pub fn container(&mut self, key: &str) -> &mut Ctr {
        let i = self
            .find(key)
            .unwrap_or_else(|| panic!("no container {key} on the fake"));
        &mut self.containers[i]
    }

    /// Someone else removes a container.
    pub fn remove(&mut self, key: &str) {
        let i = self
            .find(key)
            .unwrap_or_else(|| panic!("no container {key} on the fake"));
        self.containers.remove(i);
    }

    /// Puts a container there (with the next id) and returns its id.
    pub fn add(&mut self, mut c: Ctr) -> String {
        self.ids += 1;
        c.id = nth_id(self.ids);
        let id = c.id.clone();
        self.containers.push(c);
        id
    }

    fn image_ix(&self, reference: &str) -> Option<usize> {
        self.images.iter().position(|i| {
            i.id == reference
                || i.id.strip_prefix("sha256:") == Some(reference)
                || i.refs.iter().any(|r| r == reference)
        })
    }

    fn name_taken(&self, name: &str) -> Result<(), CallError> {
        match self.containers.iter().any(|c| c.name == name) {
            true => Err(CallError::Refused(format!(
                "Conflict. The container name \"/{name}\" is already in use (HTTP 409)"
            ))),
            false => Ok(()),
        }
    }

    /// Brings the world to `now`: containers live, and the engine finishes what it was
    /// still carrying out.
    fn catch_up(&mut self, now: Instant) {
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.later)
            .into_iter()
            .partition(|(when, _)| *when <= now);
        self.later = rest;
        for (_, req) in due {
            let _ = self.carry_out(&req, now);
        }
        for c in &mut self.containers {
            c.live(now);
        }
    }

    fn carry_out(&mut self, req: &Req, now: Instant) -> Result<Reply, CallError> {
        let gone = |what: &str| CallError::Gone(format!("No such container: {what}"));
        let no_image = |what: &str| CallError::Gone(format!("No such image: {what}"));
        let ix = |w: &World, key: &str| w.find(key).ok_or_else(|| gone(key));
        Ok(match req {
            Req::List => {
                // Newest first, as the engine lists.
                Box::new(
                    self.containers
                        .iter()
                        .rev()
                        .map(Ctr::summary)
                        .collect::<Vec<_>>(),
                )
            }
            Req::Details(key) => Box::new(self.containers[ix(self, key)?].details()),
            Req::Find(name) => Box::new(
                self.containers
                    .iter()
                    .find(|c| &c.name == name)
                    .map(Ctr::summary),
            ),
            Req::Family(base) => Box::new(
                self.containers
                    .iter()
                    .rev()
                    .filter(|c| {
                        c.name == *base
                            || crate::store::journal::leftover(&c.name)
                                .is_some_and(|(b, _)| b == base)
                    })
                    .map(Ctr::summary)
                    .collect::<Vec<_>>(),
            ),
            Req::CreateClaim {
                name,
                image,
                labels,
            } => {
                if self.name_taken(name).is_err() {
                    return Ok(Box::new(Created::NameTaken));
                }
                let image =
                    self.images[self.image_ix(image).ok_or_else(|| no_image(image))?].clone();
                let mut claim = Ctr::running(name, &image, &[]);
                claim.labels = labels.clone().into_iter().collect();
                claim.running = false;
                claim.health = None;
                claim.started_at = None;
                claim.created = Utc::now();
                claim.network_mode = Some("none".into());
                Box::new(Created::Id(self.add(claim)))
            }
            Req::RemoveClaim(key) | Req::Remove(key) => {
                let i = ix(self, key)?;
                self.containers.remove(i);
                Box::new(())
            }
            Req::Image(reference) => {
                let i = &self.images[self
                    .image_ix(reference)
                    .ok_or_else(|| no_image(reference))?];
                Box::new(ImageInfo {
                    id: i.id.clone(),
                    repo_digests: i.repo_digests.clone(),
                })
            }
            Req::Replacement { id, image, names } => {
                let from = self.containers[ix(self, id)?].clone();
                self.image_ix(&from.image_id)
                    .ok_or_else(|| no_image(&from.image_id))?;
                let image =
                    self.images[self.image_ix(image).ok_or_else(|| no_image(image))?].clone();
                // As recreate.rs: `container:<id>` follows the name to whoever carries it.
                let network_mode = from.network_mode.as_deref().map(|m| {
                    match m.strip_prefix("container:").and_then(|t| names.get(t)) {
                        Some(name) => format!("container:{name}"),
                        None => m.to_string(),
                    }
                });
                Box::new(Spec {
                    from,
                    image,
                    network_mode,
                })
            }
            Req::Create { name, spec } => {
                self.name_taken(name)?;
                let from = &spec.from;
                let mut new = Ctr::running(name, &spec.image, &[]);
                new.image = from.image.clone();
                new.labels = from.labels.clone();
                new.stop_timeout = from.stop_timeout;
                new.network_mode = spec.network_mode.clone();
                new.created = Utc::now();
                new.running = false;
                new.health = None;
                new.started_at = None;
                Box::new(self.add(new))
            }
            Req::Rename { id, to } => {
                let i = ix(self, id)?;
                if self.containers[i].name != *to {
                    self.name_taken(to)?;
                }
                self.containers[i].name = to.clone();
                Box::new(())
            }
            Req::Start(key) => {
                let i = ix(self, key)?;
                if !self.containers[i].running {
                    self.containers[i].start(now);
                    self.containers[i].live(now);
                }
                Box::new(())
            }
            Req::Stop { id, .. } => {
                let i = ix(self, id)?;
                self.containers[i].stop();
                Box::new(())
            }
            Req::Restart { id, .. } => {
                let i = ix(self, id)?;
                self.containers[i].stop();
                self.containers[i].start(now);
                self.containers[i].live(now);
                Box::new(())
            }
            Req::Pull { reference, .. } => {
                let Some(image) = self.registry.get(reference).cloned() else {
                    return Err(CallError::Gone(format!(
                        "manifest for {reference} not found (HTTP 404)"
                    )));
                };
                // The tag moves to the pulled image.
                for i in &mut self.images {
                    i.refs.retain(|r| r != reference);
                }
                let i = match self.images.iter().position(|i| i.id == image.id) {
                    Some(i) => i,
                    None => {
                        self.images.push(image);
                        self.images.len() - 1
                    }
                };
                if !self.images[i].refs.contains(reference) {
                    self.images[i].refs.push(reference.clone());
                }
                Box::new(())
            }
            Req::InsecureRegistries => Box::new(self.insecure.clone()),
            Req::RemoveImage(id) => {
                let i = self.image_ix(id).ok_or_else(|| no_image(id))?;
                let image_id = self.images[i].id.clone();
                if self.containers.iter().any(|c| c.image_id == image_id) {
                    Box::new(false)
                } else {
                    self.images.remove(i);
                    Box::new(true)
                }
            }
        })
    }
}

pub struct Fake {
    world: RefCell<World>,
}

impl Default for Fake {
    fn default() -> Self {
        Fake::new()
    }
}

impl Fake {
    pub fn new() -> Fake {
        Fake {
            world: RefCell::new(World {
                containers: Vec::new(),
                images: Vec::new(),
                registry: BTreeMap::new(),
                insecure: Vec::new(),
                calls: Vec::new(),
                rules: Vec::new(),
                later: Vec::new(),
                ids: 0,
            }),
        }
    }

    /// Reads or changes the world directly (setting up a test, or looking at its end).
    pub fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        f(&mut self.world.borrow_mut())
    }

    pub fn add(&self, c: Ctr) -> String {
        self.with(|w| w.add(c))
    }

    pub fn script(&self, rule: Rule) {
        self.with(|w| w.rules.push(rule));
    }

    /// The calls recorded since the last `take_calls`.
    pub fn take_calls(&self) -> Vec<String> {
        self.with(|w| std::mem::take(&mut w.calls))
    }

    /// The containers as they stand, by name: `name id8 running|stopped`.
    pub fn containers(&self) -> Vec<String> {
        self.with(|w| {
            w.catch_up(Instant::now());
            let mut all: Vec<String> = w
                .containers
                .iter()
                .map(|c| {
                    let running = if c.running { "running" } else { "stopped" };
                    format!("{} {} {running}", c.name, short(&c.id))
                })
                .collect();
            all.sort();
            all
        })
    }

    async fn call(&self, req: Req) -> Result<Reply, CallError> {
        let arrived = Instant::now();
        let (delay, answer, carried) = self.with(|w| {
            w.catch_up(arrived);
            w.calls.push(req.line());
            let n = w.calls.len();
            let found = w
                .rules
                .iter()
                .position(|r| r.matches(n, req.op(), req.subject(), w));
            let Some(i) = found else {
                return (Duration::ZERO, Answer::Normal, None);
            };
            // Out of the list while its change runs, so that the change may script the fake.
            let mut rule = w.rules.remove(i);
            if let Some(change) = rule.before.as_mut() {
                change(w);
            }
            let what = (rule.delay, rule.answer, rule.carried_out_after);
            if rule.always {
                w.rules.insert(i, rule);
            }
            what
        });
        if let Some(after) = carried {
            self.with(|w| w.later.push((arrived + after, req.clone())));
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match answer {
            Answer::Normal => self.with(|w| {
                let now = Instant::now();
                w.catch_up(now);
                w.carry_out(&req, now)
            }),
            Answer::Fail(fault) => Err(failure(fault, &req)),
            Answer::Hang => std::future::pending().await,
        }
    }
}

impl Fake {
    /// A call, and its answer as the type the trait method returns.
    async fn ask<T: 'static>(&self, req: Req) -> Result<T, CallError> {
        let what = req.op();
        let reply = self.call(req).await?;
        Ok(*reply
            .downcast()
            .unwrap_or_else(|_| panic!("the fake answered {what:?} with another type")))
    }
}

fn failure(fault: Fault, req: &Req) -> CallError {
    let what = short(req.subject().unwrap_or_default()).to_string();
    let object = match req.op() {
        Op::Image | Op::RemoveImage | Op::Pull => "image",
        _ => "container",
    };
    match fault {
        Fault::Gone => CallError::Gone(format!("No such {object}: {what}")),
        Fault::Refused => CallError::Refused(format!(
            "{} {what} refused by the engine (HTTP 500)",
            req.op().as_str()
        )),
        Fault::Other => CallError::Other(anyhow!("the Docker engine did not answer in time")),
    }
}

impl Engine for Fake {
    type Spec = Spec;

    fn api_version(&self) -> String {
        "1.45".into()
    }

    async fn list(&self) -> Result<Vec<Container>> {
        self.ask(Req::List)
            .await
            .map_err(|e| anyhow!("cannot list containers on the fake engine: {e}"))
    }

    async fn details(&self, id: &str) -> Result<Details, CallError> {
        self.ask(Req::Details(id.into())).await
    }

    async fn find(&self, name: &str) -> Result<Option<Container>, CallError> {
        self.ask(Req::Find(name.into())).await
    }

    async fn family(&self, base: &str) -> Result<Vec<Container>, CallError> {
        self.ask(Req::Family(base.into())).await
    }

    async fn create_claim(
        &self,
        name: &str,
        image_id: &str,
        labels: HashMap<String, String>,
    ) -> Result<Created, CallError> {
        let (name, image) = (name.into(), image_id.into());
        self.ask(Req::CreateClaim {
            name,
            image,
            labels,
        })
        .await
    }

    async fn remove_claim(&self, id: &str) -> Result<(), CallError> {
        self.ask(Req::RemoveClaim(id.into())).await
    }

    async fn image(&self, reference: &str) -> Result<ImageInfo, CallError> {
        self.ask(Req::Image(reference.into())).await
    }

    async fn replacement(
        &self,
        id: &str,
        new_image: &str,
        names: &HashMap<String, String>,
    ) -> Result<Spec, CallError> {
        let (id, image, names) = (id.into(), new_image.into(), names.clone());
        self.ask(Req::Replacement { id, image, names }).await
    }

    async fn create(&self, name: &str, spec: &Spec) -> Result<String, CallError> {
        let (name, spec) = (name.into(), Box::new(spec.clone()));
        self.ask(Req::Create { name, spec }).await
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), CallError> {
        let (id, to) = (id.into(), name.into());
        self.ask(Req::Rename { id, to }).await
    }

    async fn start(&self, id: &str) -> Result<(), CallError> {
        self.ask(Req::Start(id.into())).await
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), CallError> {
        self.ask(Req::Stop {
            id: id.into(),
            timeout,
        })
        .await
    }

    async fn remove(&self, id: &str) -> Result<(), CallError> {
        self.ask(Req::Remove(id.into())).await
    }

    async fn pull(&self, reference: &str, auth: Option<PullAuth>) -> Result<(), CallError> {
        let (reference, auth) = (reference.into(), auth.is_some());
        self.ask(Req::Pull { reference, auth }).await
    }

    async fn insecure_registries(&self) -> Result<Vec<String>> {
        self.ask(Req::InsecureRegistries)
            .await
            .map_err(|e| anyhow!("cannot read the engine's registry settings: {e}"))
    }

    async fn remove_image_if_unused(&self, id: &str) -> Result<bool, CallError> {
        self.ask(Req::RemoveImage(id.into())).await
    }

    async fn restart(&self, id: &str, stop_timeout: Duration) -> Result<(), CallError> {
        self.ask(Req::Restart {
            id: id.into(),
            timeout: stop_timeout,
        })
        .await
    }
}
