//! Dialplans: every `*.toml` in the dialplan folder, parsed into typed, validated structs.
//! Each file may hold `[[numbers]]` (a number → a flow), `[flows.NAME]`, `[[merged]]` (retired
//! whole-merge numbers with their transition window) and `[[dual]]` (dual-number lines).
//! Numbers match the Request-URI user part exactly: never by prefix or substring.
//!
//! **Province profiles.** The files hold the seeds' lists for every province at once (Anhui,
//! seed 002 attachment; Gansu, seed 003 attachment): each entry says which `provinces` list
//! it (none: every province) and, under `as_in.<province>`, where that province's list names
//! the line or its unit differently, or keeps its seats. `dialplan.province` in the
//! configuration picks the profile; only its entries are routed. So 12393 is a whole-merge
//! entry for `gansu` (003 line 124) and a dual-number entry for `anhui` (002 line 120) in the
//! same folder. `[[subcentre]]` entries are not routed (callers do not reach sub-centres
//! through us): they give the sub-centre transfer targets their names and units.
//!
//! **Transition window** (整体并入: 3 months of voice prompt, seed 000 line 30): the prompt
//! plays from the merge date through the day before the same date three months later; where
//! that date does not exist (31 August → "31 November") the window runs through the end of
//! that month. Every window thus covers three whole calendar months (89 to 92 days) and a
//! later merge never ends earlier; clamping back instead would cut 31 August's window to
//! 29 November, like 30 August's (31 January and 1 February do end alike, on 30 April).
//! The merge dates and the behaviour after the window are the deployment's, set in one place:
//! `[dialplan]` and `[dialplan.lines."<number>"]` of the configuration.

use crate::config::{Config, TargetKind};
use crate::media::prompts::{PromptId, PromptStore};
use chrono::{Datelike, Months, NaiveDate};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One problem found in a dialplan, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file.display(), l, self.reason),
            None => write!(f, "{}: {}", self.file.display(), self.reason),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowId(pub usize);
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueueId(pub usize);

#[derive(Debug, Clone)]
pub enum Step {
    Play(Vec<PromptId>),
    Menu(Menu),
    /// Wait in a queue; a higher priority is served first (within the queue's bound).
    Queue {
        queue: QueueId,
        priority: u8,
    },
    /// A transfer target by name; reached through the transfer layer (later issue). Until it
    /// exists the call hears the sorry prompt and is hung up, so the step is never silent.
    Transfer(String),
    Goto(FlowId),
    Hangup,
    /// Ask for a callback that keeps the caller's place in its last queue (回拨); when it
    /// cannot be had, the next step.
    Callback,
}

#[derive(Debug, Clone)]
pub struct Menu {
    pub prompt: Vec<PromptId>,
    pub timeout: Duration,
    /// Further attempts after the first one.
    pub retries: u32,
    pub options: HashMap<char, FlowId>,
    pub invalid_prompt: Option<PromptId>,
    pub timeout_prompt: Option<PromptId>,
    /// Where a caller goes after the last failed attempt; hang up when unset.
    pub on_fail: Option<FlowId>,
}

#[derive(Debug, Clone)]
pub struct Flow {
    pub name: String,
    pub steps: Vec<Step>,
}

/// Where a caller goes when its wait in a queue is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// The queue's sorry prompt, then hang up.
    Sorry,
    /// Another queue, keeping the caller's seniority.
    Queue(QueueId),
    /// A flow (e.g. a callback request).
    Flow(FlowId),
}

#[derive(Debug, Clone)]
pub struct Queue {
    pub name: String,
    pub strategy: crate::acd::queue::Strategy,
    pub max_wait: Duration,
    pub ring_timeout: Duration,
    pub wrap_up: Duration,
    pub widen_every: Duration,
    pub max_overtaken: Duration,
    pub announce_position: bool,
    pub announce_wait: bool,
    pub on_timeout: Overflow,
    /// `None`: callers wait even when no member is logged in.
    pub when_no_agents: Option<Overflow>,
    pub short_abandon: Duration,
    pub record: bool,
    pub survey: bool,
    pub hold_music: PromptId,
    pub hold_prompt: PromptId,
    pub hold_prompt_every: Duration,
    pub sorry: PromptId,
    /// The key a waiting caller presses for a callback that keeps its place, and the prompt
    /// of each announcement that says so.
    pub callback_key: Option<char>,
    pub callback_prompt: Option<PromptId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterWindow {
    /// Straight to the target flow, without the prompt (default).
    Continue,
    /// Answer with "number retired" and hang up.
    Announce,
    /// Refuse with 410 Gone.
    Reject,
}

/// A dual-number line's seats (双号并行, seed 002 line 98, 003 line 41): merged into 12345
/// (the line is a skill group of our ACD) or retained (the line's own seats, reached over a
/// trunk, with a call-transfer link to 12345).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Seats {
    Merged,
    Retained,
}

/// Where a line's name, unit and mode come from: the list entry (seed lines) and, where the
/// deployment departs from it, its note.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// Seed references of the profile's list, e.g. "003 line 112".
    pub seed: String,
    /// The deployment's `[dialplan.lines."<number>"]` note, when it set something.
    pub deployment: Option<String>,
}

#[derive(Debug, Clone)]
pub struct MergedLine {
    pub number: String,
    pub name: String,
    pub unit: String,
    pub merged_on: NaiveDate,
    /// First day after the 3-calendar-month transition window (see [`window_end`]).
    pub window_end: NaiveDate,
    pub after_window: AfterWindow,
    pub transition: Vec<PromptId>,
    pub flow: FlowId,
    pub provenance: Provenance,
}

/// The retained seats of a dual-number line: the `retained` transfer target that reaches
/// them, and where its callers go when they do not answer (the 7×24 rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retained {
    /// Index into the configuration's `[[targets]]`.
    pub target: usize,
    pub fallback: QueueId,
}

#[derive(Debug, Clone)]
pub struct DualLine {
    pub number: String,
    pub name: String,
    pub unit: String,
    pub seats: Seats,
    /// 设专家座席: the line sets up expert seats.
    pub expert: bool,
    /// The expert group's transfer target (`[[targets]]` kind expert with this number).
    pub expert_target: Option<usize>,
    pub greeting: PromptId,
    /// The line's skill group (merged seats).
    pub queue: Option<QueueId>,
    pub retained: Option<Retained>,
    pub provenance: Provenance,
}

/// A sub-centre (设分中心) as the profile's list names it; not routed.
#[derive(Debug, Clone)]
pub struct ListedLine {
    pub number: String,
    pub name: String,
    pub unit: String,
    pub seed: String,
}

/// The first day after the transition window of a number merged on `merged_on`: the same
/// date three months later, or, where that date does not exist, the first day of the month
/// after (31 August → 1 December: the prompt plays through 30 November).
pub fn window_end(merged_on: NaiveDate) -> Option<NaiveDate> {
    let first = merged_on.with_day(1)?.checked_add_months(Months::new(3))?;
    match first.with_day(merged_on.day()) {
        Some(same) => Some(same),
        None => first.checked_add_months(Months::new(1)),
    }
}

#[derive(Debug, Clone)]
pub enum Route {
    Flow(FlowId),
    Merged(usize),
    Dual(usize),
}

/// What a call to a number does on a given day.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Answer; play `first` (may be empty), then go on to `next`.
    Run { first: Vec<PromptId>, next: Next },
    /// Answer, play this, hang up.
    Announce(PromptId),
    /// Refuse with this status.
    Refuse(u16, &'static str),
}

/// Where a call goes after its first prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Flow(FlowId),
    Queue(QueueId),
    /// The retained seats of a dual-number line, over their trunk; to the fallback queue
    /// when they do not answer.
    Retained(Retained),
    Hangup,
}

#[derive(Debug, Default)]
pub struct Dialplan {
    pub flows: Vec<Flow>,
    pub queues: Vec<Queue>,
    pub merged: Vec<MergedLine>,
    pub dual: Vec<DualLine>,
    pub subcentres: Vec<ListedLine>,
    /// The province profile the lists were read for.
    pub province: String,
    /// What `hotline check` should say but that does not stop the daemon (e.g. a merged
    /// line's queue that no seat serves).
    pub warnings: Vec<String>,
    routes: HashMap<String, Route>,
    pub number_retired: Option<PromptId>,
    /// Told to a caller whose seat's connection dropped mid-call, before it waits again.
    pub seat_lost: Option<PromptId>,
    pub sorry: Option<PromptId>,
    /// The satisfaction survey after a seat hangs up, and its closing prompts.
    pub survey: Option<PromptId>,
    pub survey_thanks: Option<PromptId>,
    pub goodbye: Option<PromptId>,
    /// The key that makes a call confidential in any menu, and what the caller then hears.
    pub confidential_key: Option<char>,
    pub confidential_prompt: Option<PromptId>,
    /// What a caller hears once its callback is booked (then it is hung up).
    pub callback_requested: Option<PromptId>,
}

impl Dialplan {
    pub fn route(&self, number: &str) -> Option<&Route> {
        self.routes.get(number)
    }

    /// What a desk shows for a dialled number: a retired (merged) line says so, so the agent
    /// knows the caller rang the old number.
    pub fn number_label(&self, number: &str) -> String {
        if let Some(m) = self.merged.iter().find(|m| m.number == number) {
            return format!("{number} {}（已并入12345）", m.name);
        }
        if let Some(d) = self.dual.iter().find(|d| d.number == number) {
            return format!("{number} {}", d.name);
        }
        if let Some(l) = self.subcentres.iter().find(|l| l.number == number) {
            return format!("{number} {}", l.name);
        }
        if number == "12345" {
            return "12345 政务服务便民热线".into();
        }
        number.to_string()
    }

    pub fn numbers(&self) -> usize {
        self.routes.len()
    }

    /// The decision for a call to `number` on `today` (Asia/Shanghai).
    pub fn decide(&self, number: &str, today: NaiveDate) -> Option<Decision> {
        Some(match self.routes.get(number)? {
            Route::Flow(f) => Decision::Run {
                first: vec![],
                next: Next::Flow(*f),
            },
            Route::Merged(i) => {
                let m = &self.merged[*i];
                if today >= m.merged_on && today < m.window_end {
                    Decision::Run {
                        first: m.transition.clone(),
                        next: Next::Flow(m.flow),
                    }
                } else if today < m.merged_on {
                    // Not merged yet: the line's calls reach 12345 only if the carrier already
                    // routes them here; serve them without the transition prompt.
                    Decision::Run {
                        first: vec![],
                        next: Next::Flow(m.flow),
                    }
                } else {
                    match m.after_window {
                        AfterWindow::Continue => Decision::Run {
                            first: vec![],
                            next: Next::Flow(m.flow),
                        },
                        AfterWindow::Announce => match self.number_retired {
                            Some(p) => Decision::Announce(p),
                            None => Decision::Refuse(410, "Gone"),
                        },
                        AfterWindow::Reject => Decision::Refuse(410, "Gone"),
                    }
                }
            }
            Route::Dual(i) => {
                let d = &self.dual[*i];
                let next = match (d.retained, d.queue) {
                    (Some(r), _) => Next::Retained(r),
                    (None, Some(q)) => Next::Queue(q),
                    (None, None) => Next::Hangup, // not built: the loader refuses it
                };
                Decision::Run {
                    first: vec![d.greeting],
                    next,
                }
            }
        })
    }

    /// How a call to `number` is routed on `today` and why: `hotline check --explain`.
    /// `None` for a number neither routed nor a transfer target.
    pub fn explain(&self, number: &str, today: NaiveDate, cfg: &Config) -> Option<String> {
        use std::fmt::Write as _;
        let mut o = String::new();
        let province = &self.province;
        let deployment = |p: &Provenance| match &p.deployment {
            Some(n) => format!("\n  deployment: {n} (hotline.toml [dialplan.lines.\"{number}\"])"),
            None => String::new(),
        };
        let queue_name = |q: QueueId| self.queues.get(q.0).map_or("?", |q| q.name.as_str());
        let seats_of = |q: &str| {
            cfg.seats
                .iter()
                .filter(|s| s.queues.iter().any(|x| x == q))
                .map(|s| s.id.as_str())
                .collect::<Vec<_>>()
        };
        match self.routes.get(number) {
            Some(Route::Flow(f)) => {
                let _ = write!(
                    o,
                    "{number}: answered with flow \"{}\" (profile {province})",
                    self.flows.get(f.0).map_or("?", |f| f.name.as_str())
                );
            }
            Some(Route::Merged(i)) => {
                let m = &self.merged[*i];
                let last = m.window_end.pred_opt().unwrap_or(m.window_end);
                let now = if today < m.merged_on {
                    "before the merge date: served as 12345, no prompt".to_string()
                } else if today < m.window_end {
                    "inside the window: the transition prompt plays, then 12345's flow".to_string()
                } else {
                    match m.after_window {
                        AfterWindow::Continue => "after the window: served as 12345, no prompt",
                        AfterWindow::Announce => "after the window: number-retired prompt, hang up",
                        AfterWindow::Reject => "after the window: refused with 410 Gone",
                    }
                    .to_string()
                };
                let _ = write!(
                    o,
                    "{number}: whole merge (整体并入) in the {province} profile\n  name: {}\n  unit: {}\n  seed: {}\n  merged on {}; transition prompt {} through {} (3 calendar months; seed 000 line 30)\n  after the window: {}\n  on {today}: {now}\n  continues into flow \"{}\"{}",
                    m.name,
                    m.unit,
                    m.provenance.seed,
                    m.merged_on,
                    m.merged_on,
                    last,
                    match m.after_window {
                        AfterWindow::Continue => "continue (served as 12345, no prompt)",
                        AfterWindow::Announce => "announce (number-retired prompt, hang up)",
                        AfterWindow::Reject => "reject (410 Gone)",
                    },
                    self.flows.get(m.flow.0).map_or("?", |f| f.name.as_str()),
                    deployment(&m.provenance)
                );
            }
            Some(Route::Dual(i)) => {
                let d = &self.dual[*i];
                let _ = write!(
                    o,
                    "{number}: dual number (双号并行) in the {province} profile\n  name: {}\n  unit: {}\n  seed: {}\n  greeting: its own, then ",
                    d.name, d.unit, d.provenance.seed
                );
                match (d.seats, d.retained, d.queue) {
                    (Seats::Retained, Some(r), _) => {
                        let t = &cfg.targets[r.target];
                        let _ = write!(
                            o,
                            "seats retained (保留座席): the caller is passed to target {} \"{}\" over trunk {} (rings up to {} s); if it does not answer, 12345's agents in queue \"{}\" take the call (7×24)",
                            t.number,
                            t.name,
                            t.trunk.as_deref().unwrap_or("?"),
                            t.timeout_s,
                            queue_name(r.fallback)
                        );
                    }
                    (Seats::Retained, None, Some(q)) => {
                        let _ = write!(
                            o,
                            "seats retained (保留座席), but no [[targets]] entry of kind \"retained\" reaches them: callers go straight to 12345's agents in queue \"{}\"",
                            queue_name(q)
                        );
                    }
                    (_, _, Some(q)) => {
                        let name = queue_name(q);
                        let seats = seats_of(name);
                        let _ = write!(
                            o,
                            "seats merged into 12345 (座席并入): queued in \"{name}\", served by {}",
                            if seats.is_empty() {
                                "NO seat".to_string()
                            } else {
                                format!("seats {}", seats.join(", "))
                            }
                        );
                    }
                    _ => {}
                }
                if d.expert {
                    match d.expert_target.and_then(|t| cfg.targets.get(t)) {
                        Some(t) => {
                            let _ = write!(
                                o,
                                "\n  expert seats (设专家座席): agents transfer with *{}# to \"{}\" (queue {})",
                                t.number,
                                t.name,
                                t.queue.as_deref().unwrap_or("?")
                            );
                        }
                        None if d.seats == Seats::Retained => {
                            let _ = write!(
                                o,
                                "\n  expert seats (设专家座席): among the line's retained seats, reached with *{number}#"
                            );
                        }
                        None => {
                            let _ = write!(
                                o,
                                "\n  expert seats (设专家座席): NO expert target configured"
                            );
                        }
                    }
                }
                o.push_str(&deployment(&d.provenance));
            }
            None => {}
        }
        if let Some(t) = cfg.targets.iter().find(|t| t.number == number) {
            if !o.is_empty() {
                o.push('\n');
            }
            let _ = write!(
                o,
                "{number}: transfer target \"{}\" (kind {}), agents key *{number}#; ",
                t.name,
                match t.kind {
                    TargetKind::Subcentre => "subcentre",
                    TargetKind::Retained => "retained",
                    TargetKind::Expert => "expert",
                    TargetKind::Emergency => "emergency",
                    TargetKind::Utility => "utility",
                }
            );
            match (&t.trunk, &t.queue) {
                (_, Some(q)) if t.kind == TargetKind::Expert => {
                    let _ = write!(o, "offered to the seats of queue \"{q}\"");
                }
                (Some(trunk), _) => {
                    let _ = write!(
                        o,
                        "dialled over trunk {trunk}, rings up to {} s",
                        t.timeout_s
                    );
                }
                _ => {}
            }
            let listed = self.subcentre(number);
            let unit = t
                .unit
                .clone()
                .or_else(|| listed.map(|l| l.unit.clone()))
                .unwrap_or_else(|| t.name.clone());
            let _ = write!(o, "\n  unit: {unit}");
            match listed {
                Some(l) => {
                    let _ = write!(
                        o,
                        "\n  sub-centre (设分中心) of the {province} list: {} ({})",
                        l.name, l.seed
                    );
                }
                None if t.kind == TargetKind::Utility => {
                    let _ = write!(
                        o,
                        "\n  an example of the utility lines (水电气热, seed 003 line 55; 001 line 53) that no list names"
                    );
                }
                None => {}
            }
        }
        (!o.is_empty()).then_some(o)
    }

    /// The sub-centre with this number in the profile's list.
    pub fn subcentre(&self, number: &str) -> Option<&ListedLine> {
        self.subcentres.iter().find(|s| s.number == number)
    }

    /// Gives the configured transfer targets the names' units of the profile's lists where
    /// the configuration sets none (sub-centres, retained-seat lines, expert groups), so
    /// reports group them by the unit the plan names.
    pub fn fill_target_units(&self, targets: &mut [crate::config::TargetConfig]) {
        for t in targets.iter_mut().filter(|t| t.unit.is_none()) {
            let unit = self
                .subcentre(&t.number)
                .map(|s| s.unit.clone())
                .or_else(|| {
                    self.dual
                        .iter()
                        .find(|d| d.number == t.number)
                        .map(|d| d.unit.clone())
                });
            t.unit = unit;
        }
    }
}

// ---- raw file format -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    numbers: Vec<RawNumber>,
    #[serde(default)]
    flows: BTreeMap<String, RawFlow>,
    #[serde(default)]
    merged: Vec<RawMerged>,
    #[serde(default)]
    dual: Vec<RawDual>,
    #[serde(default)]
    subcentre: Vec<RawListed>,
}

/// What one province's list says differently about a line (`as_in.<province>`).
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawAsIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    seed: Option<String>,
    #[serde(default)]
    seats: Option<Seats>,
}

/// The fields every list entry has: the profiles it belongs to and their wording.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListed {
    number: String,
    name: String,
    #[serde(default)]
    unit: Option<String>,
    /// The province profiles whose lists name this line; empty: every profile.
    #[serde(default)]
    provinces: Vec<String>,
    /// Where the lists name it, e.g. "002 line 80; 003 line 112".
    #[serde(default)]
    seed: Option<String>,
    #[serde(default)]
    as_in: BTreeMap<String, RawAsIn>,
}

/// One entry as the profile sees it.
struct Resolved {
    name: String,
    unit: String,
    seed: String,
    seats: Option<Seats>,
}

/// The entry as `province` lists it, or `None` when that province's lists do not name it
/// (or an `as_in` names a province the entry is not in: a problem).
#[allow(clippy::too_many_arguments)]
fn resolve(
    province: &str,
    number: &str,
    name: &str,
    unit: Option<&str>,
    provinces: &[String],
    seed: Option<&str>,
    as_in: &BTreeMap<String, RawAsIn>,
    problems: &mut Vec<String>,
) -> Option<Resolved> {
    for p in as_in.keys() {
        if !provinces.is_empty() && !provinces.contains(p) {
            problems.push(format!(
                "number {number}: as_in.{p}, but {p} is not among its provinces {provinces:?}"
            ));
        }
    }
    if !provinces.is_empty() && !provinces.iter().any(|p| p == province) {
        return None;
    }
    let over = as_in.get(province).cloned().unwrap_or_default();
    Some(Resolved {
        name: over.name.unwrap_or_else(|| name.to_string()),
        unit: over
            .unit
            .or_else(|| unit.map(str::to_string))
            .unwrap_or_default(),
        seed: over
            .seed
            .or_else(|| seed.map(str::to_string))
            .unwrap_or_default(),
        seats: over.seats,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNumber {
    number: String,
    flow: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
enum RawStep {
    Play {
        prompts: Vec<String>,
    },
    Menu {
        prompts: Vec<String>,
        #[serde(default = "default_menu_timeout")]
        timeout_ms: u64,
        #[serde(default = "default_retries")]
        retries: u32,
        options: BTreeMap<String, String>,
        invalid_prompt: Option<String>,
        timeout_prompt: Option<String>,
        on_fail: Option<String>,
    },
    Queue {
        queue: String,
        #[serde(default)]
        priority: u8,
    },
    Transfer {
        target: String,
    },
    Goto {
        flow: String,
    },
    Hangup,
    Callback,
}

fn default_menu_timeout() -> u64 {
    5000
}
fn default_retries() -> u32 {
    2
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMerged {
    number: String,
    name: String,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    provinces: Vec<String>,
    #[serde(default)]
    seed: Option<String>,
    #[serde(default)]
    as_in: BTreeMap<String, RawAsIn>,
    /// Flow to continue into; default `main`.
    #[serde(default)]
    flow: Option<String>,
    /// A recorded transition prompt that overrides the composed one.
    #[serde(default)]
    prompt: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDual {
    number: String,
    name: String,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    provinces: Vec<String>,
    #[serde(default)]
    seed: Option<String>,
    #[serde(default)]
    as_in: BTreeMap<String, RawAsIn>,
    /// Default `merged`: seeds 002 (line 98) and 003 (line 41) merge a dual-number line's
    /// seats into 12345 and retain them only where the line cannot be merged yet.
    #[serde(default)]
    seats: Option<Seats>,
    #[serde(default)]
    expert: bool,
    greeting: String,
    /// The line's skill group (merged seats); default `line-<number>`.
    #[serde(default)]
    queue: Option<String>,
}

// ---- loading ----------------------------------------------------------------------------------

struct Loader<'a> {
    prompts: &'a PromptStore,
    problems: Vec<Problem>,
}

impl Loader<'_> {
    fn problem(&mut self, file: &Path, text: &str, needle: &str, reason: String) {
        self.problems.push(Problem {
            file: file.to_path_buf(),
            line: line_of(text, needle),
            reason,
        });
    }

    fn prompt(&mut self, file: &Path, text: &str, name: &str, what: &str) -> Option<PromptId> {
        let id = self.prompts.id(name);
        if id.is_none() {
            self.problem(
                file,
                text,
                name,
                format!("{what}: prompt \"{name}\" has no file prompts/{name}.wav"),
            );
        }
        id
    }
}

/// The 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.find(needle)
        .map(|i| text[..i].matches('\n').count() + 1)
}

/// Whether a dialled number looks like one: digits only (with an optional leading +).
fn valid_number(n: &str) -> bool {
    let digits = n.strip_prefix('+').unwrap_or(n);
    !digits.is_empty() && digits.len() <= 32 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Loads and validates every dialplan file in `dir` against the prompts and queues. Returns
/// the dialplan when there are no problems, else every problem found.
pub fn load(dir: &Path, prompts: &PromptStore, cfg: &Config) -> Result<Dialplan, Vec<Problem>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect(),
        Err(e) => {
            return Err(vec![Problem {
                file: dir.to_path_buf(),
                line: None,
                reason: format!("cannot read dialplan folder: {e}"),
            }]);
        }
    };
    files.sort();
    let mut texts = Vec::new();
    let mut unreadable = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(t) => texts.push((file, t)),
            Err(e) => unreadable.push(Problem {
                file,
                line: None,
                reason: format!("cannot read: {e}"),
            }),
        }
    }
    match load_from(dir, &texts, prompts, cfg) {
        Ok(plan) if unreadable.is_empty() => Ok(plan),
        Ok(_) => Err(unreadable),
        Err(mut problems) => {
            unreadable.append(&mut problems);
            Err(unreadable)
        }
    }
}

/// As [`load`], from the dialplan files' names and texts (`dir`: their folder, for problems
/// of the whole).
pub fn load_from(
    dir: &Path,
    files: &[(PathBuf, String)],
    prompts: &PromptStore,
    cfg: &Config,
) -> Result<Dialplan, Vec<Problem>> {
    let queues = &cfg.queues;
    let province = cfg.dialplan.province.as_str();
    let mut loader = Loader {
        prompts,
        problems: Vec::new(),
    };
    let mut parsed = Vec::new();
    for (file, text) in files {
        let (file, text) = (file.clone(), text.clone());
        match toml::from_str::<RawFile>(&text) {
            Ok(raw) => parsed.push((file, text, raw)),
            Err(e) => {
                let line = e
                    .span()
                    .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
                loader.problems.push(Problem {
                    file,
                    line,
                    reason: e.message().to_string(),
                });
            }
        }
    }

    let mut plan = Dialplan {
        number_retired: prompts.id("number-retired"),
        seat_lost: prompts.id("queue/seat-lost"),
        sorry: prompts.id("sorry-busy"),
        survey: prompts.id("survey"),
        survey_thanks: prompts.id("survey-thanks"),
        goodbye: prompts.id("goodbye"),
        confidential_key: cfg.privacy.confidential_key.chars().next(),
        confidential_prompt: prompts.id("confidential/on"),
        callback_requested: prompts.id("callback/requested"),
        province: province.to_string(),
        ..Dialplan::default()
    };

    // Queues come from the configuration.
    let mut queue_ids = HashMap::new();
    let cfg_file = PathBuf::from("config");
    for (name, q) in queues {
        let mut get = |p: &str, what: &str| {
            let id = prompts.id(p);
            if id.is_none() {
                loader.problems.push(Problem {
                    file: cfg_file.clone(),
                    line: None,
                    reason: format!("queues.{name}.{what}: prompt \"{p}\" has no file"),
                });
            }
            id
        };
        let (m, h, s) = (
            get(&q.hold_music, "hold_music"),
            get(&q.hold_prompt, "hold_prompt"),
            get(&q.sorry_prompt, "sorry_prompt"),
        );
        let callback_prompt = if q.callback_prompt.is_empty() {
            None
        } else {
            get(&q.callback_prompt, "callback_prompt")
        };
        if let (Some(hold_music), Some(hold_prompt), Some(sorry)) = (m, h, s) {
            queue_ids.insert(name.clone(), QueueId(plan.queues.len()));
            plan.queues.push(Queue {
                name: name.clone(),
                strategy: q.strategy,
                max_wait: Duration::from_secs(q.max_wait_s),
                ring_timeout: Duration::from_secs(q.ring_timeout_s.max(1)),
                wrap_up: Duration::from_secs(q.wrap_up_s),
                widen_every: Duration::from_secs(q.widen_every_s),
                max_overtaken: Duration::from_secs(q.max_overtaken_s),
                announce_position: q.announce_position,
                announce_wait: q.announce_wait,
                // Resolved once the flows are known (below).
                on_timeout: Overflow::Sorry,
                when_no_agents: None,
                short_abandon: Duration::from_secs(q.short_abandon_s),
                record: q.record,
                survey: q.survey,
                hold_music,
                hold_prompt,
                hold_prompt_every: Duration::from_secs(q.hold_prompt_every_s),
                sorry,
                callback_key: q.callback_key.chars().next(),
                callback_prompt,
            });
        }
    }

    // Flow names first, so steps may refer to flows defined later or in other files.
    let mut flow_ids: HashMap<String, FlowId> = HashMap::new();
    for (file, text, raw) in &parsed {
        for name in raw.flows.keys() {
            if flow_ids.contains_key(name) {
                loader.problem(
                    file,
                    text,
                    &format!("[flows.{name}]"),
                    format!("flow \"{name}\" is defined twice"),
                );
            } else {
                flow_ids.insert(name.clone(), FlowId(flow_ids.len()));
                plan.flows.push(Flow {
                    name: name.clone(),
                    steps: vec![],
                });
            }
        }
    }
    let flow_ref =
        |loader: &mut Loader, file: &Path, text: &str, name: &str, what: &str| -> Option<FlowId> {
            let id = flow_ids.get(name).copied();
            if id.is_none() {
                loader.problem(
                    file,
                    text,
                    name,
                    format!("{what}: no flow named \"{name}\""),
                );
            }
            id
        };

    for (file, text, raw) in &parsed {
        for (name, flow) in &raw.flows {
            let Some(&fid) = flow_ids.get(name) else {
                continue;
            };
            if flow.steps.is_empty() {
                loader.problem(file, text, name, format!("flow \"{name}\" has no steps"));
            }
            let mut steps = Vec::new();
            for raw_step in &flow.steps {
                let what = format!("flow \"{name}\"");
                let step = match raw_step {
                    RawStep::Play { prompts: ps } => {
                        let ids: Vec<_> = ps
                            .iter()
                            .filter_map(|p| loader.prompt(file, text, p, &what))
                            .collect();
                        if ps.is_empty() {
                            loader.problem(
                                file,
                                text,
                                name,
                                format!("{what}: play step with no prompts"),
                            );
                        }
                        Step::Play(ids)
                    }
                    RawStep::Menu {
                        prompts: ps,
                        timeout_ms,
                        retries,
                        options,
                        invalid_prompt,
                        timeout_prompt,
                        on_fail,
                    } => {
                        let prompt: Vec<_> = ps
                            .iter()
                            .filter_map(|p| loader.prompt(file, text, p, &what))
                            .collect();
                        let mut opts = HashMap::new();
                        for (key, target) in options {
                            let mut chars = key.chars();
                            match (chars.next(), chars.next()) {
                                (Some(c), None) if crate::media::dtmf::char_event(c).is_some() => {
                                    if let Some(f) = flow_ref(&mut loader, file, text, target, &what) {
                                        opts.insert(c, f);
                                    }
                                }
                                _ => loader.problem(file, text, key, format!("{what}: menu option \"{key}\" is not one DTMF key (0-9, *, #, A-D)")),
                            }
                        }
                        if *timeout_ms < 500 || *timeout_ms > 60_000 {
                            loader.problem(
                                file,
                                text,
                                "timeout_ms",
                                format!("{what}: menu timeout_ms {timeout_ms} outside 500..=60000"),
                            );
                        }
                        Step::Menu(Menu {
                            prompt,
                            timeout: Duration::from_millis(*timeout_ms),
                            retries: *retries,
                            options: opts,
                            invalid_prompt: invalid_prompt
                                .as_deref()
                                .and_then(|p| loader.prompt(file, text, p, &what)),
                            timeout_prompt: timeout_prompt
                                .as_deref()
                                .and_then(|p| loader.prompt(file, text, p, &what)),
                            on_fail: on_fail
                                .as_deref()
                                .and_then(|f| flow_ref(&mut loader, file, text, f, &what)),
                        })
                    }
                    RawStep::Queue { queue, priority } => match queue_ids.get(queue) {
                        Some(q) => Step::Queue {
                            queue: *q,
                            priority: *priority,
                        },
                        None => {
                            loader.problem(file, text, queue, format!("{what}: queue \"{queue}\" is not in the configuration's [queues]"));
                            continue;
                        }
                    },
                    RawStep::Transfer { target } => Step::Transfer(target.clone()),
                    RawStep::Goto { flow: f } => {
                        match flow_ref(&mut loader, file, text, f, &what) {
                            Some(f) => Step::Goto(f),
                            None => continue,
                        }
                    }
                    RawStep::Hangup => Step::Hangup,
                    RawStep::Callback => Step::Callback,
                };
                steps.push(step);
            }
            plan.flows[fid.0].steps = steps;
        }
    }

    // Queue overflow targets, now that flows and queues are known.
    for (name, q) in queues {
        let Some(&id) = queue_ids.get(name) else {
            continue;
        };
        let mut target = |v: &str, key: &str| -> Option<Overflow> {
            let t = match v.split_once(':') {
                Some(("queue", other)) => queue_ids.get(other).map(|&o| Overflow::Queue(o)),
                Some(("flow", f)) => flow_ids.get(f).map(|&f| Overflow::Flow(f)),
                None if v == "sorry" => Some(Overflow::Sorry),
                _ => None,
            };
            if t.is_none() {
                loader.problems.push(Problem {
                    file: cfg_file.clone(),
                    line: None,
                    reason: format!("queues.{name}.{key}: no such target {v:?}"),
                });
            }
            t
        };
        let on_timeout = target(&q.on_timeout, "on_timeout").unwrap_or(Overflow::Sorry);
        let when_no_agents = if q.when_no_agents == "wait" {
            None
        } else {
            target(&q.when_no_agents, "when_no_agents")
        };
        plan.queues[id.0].on_timeout = on_timeout;
        plan.queues[id.0].when_no_agents = when_no_agents;
    }

    let add_route = |loader: &mut Loader,
                     plan: &mut Dialplan,
                     file: &Path,
                     text: &str,
                     number: &str,
                     route: Route| {
        if !valid_number(number) {
            loader.problem(
                file,
                text,
                number,
                format!("\"{number}\" is not a dialable number (digits only)"),
            );
        } else if plan.routes.contains_key(number) {
            loader.problem(
                file,
                text,
                number,
                format!("number {number} is routed twice"),
            );
        } else {
            plan.routes.insert(number.to_string(), route);
        }
    };

    for (file, text, raw) in &parsed {
        for n in &raw.numbers {
            if let Some(f) = flow_ref(
                &mut loader,
                file,
                text,
                &n.flow,
                &format!("number {}", n.number),
            ) {
                add_route(
                    &mut loader,
                    &mut plan,
                    file,
                    text,
                    &n.number,
                    Route::Flow(f),
                );
            }
        }
        for m in &raw.merged {
            let mut why = Vec::new();
            let listed = resolve(
                province,
                &m.number,
                &m.name,
                m.unit.as_deref(),
                &m.provinces,
                m.seed.as_deref(),
                &m.as_in,
                &mut why,
            );
            for w in why {
                loader.problem(file, text, &m.number, w);
            }
            let Some(listed) = listed else { continue };
            let what = format!("merged number {}", m.number);
            if listed.seats.is_some() {
                loader.problem(
                    file,
                    text,
                    &m.number,
                    format!("{what}: seats belong to dual-number lines"),
                );
            }
            let line = cfg.dialplan.lines.get(&m.number);
            let Some(merged_on) = line.and_then(|l| l.merged_on).or(cfg.dialplan.merged_on) else {
                loader.problem(
                    file,
                    text,
                    &m.number,
                    format!("{what}: no merge date; set dialplan.merged_on (or dialplan.lines.\"{}\".merged_on) in the configuration", m.number),
                );
                continue;
            };
            let after_window = line
                .and_then(|l| l.after_window)
                .unwrap_or(cfg.dialplan.after_window);
            let flow_name = m.flow.as_deref().unwrap_or("main");
            let Some(flow) = flow_ref(&mut loader, file, text, flow_name, &what) else {
                continue;
            };
            let transition = match &m.prompt {
                Some(p) => loader.prompt(file, text, p, &what).into_iter().collect(),
                None => match prompts.id(&format!("transition/{}", m.number)) {
                    Some(recorded) => vec![recorded],
                    None => {
                        let mut parts =
                            vec![loader.prompt(file, text, "transition/you-dialled", &what)];
                        for d in m.number.chars() {
                            parts.push(loader.prompt(file, text, &format!("digits/{d}"), &what));
                        }
                        // The province's own wording where its list names the line
                        // differently (names/<province>/<number>).
                        let own = format!("names/{province}/{}", m.number);
                        let name = if prompts.id(&own).is_some() {
                            own
                        } else {
                            format!("names/{}", m.number)
                        };
                        parts.push(loader.prompt(file, text, &name, &what));
                        parts.push(loader.prompt(file, text, "transition/merged", &what));
                        parts.into_iter().flatten().collect()
                    }
                },
            };
            let Some(window_end) = window_end(merged_on) else {
                loader.problem(
                    file,
                    text,
                    &m.number,
                    format!("{what}: merged_on out of range"),
                );
                continue;
            };
            let idx = plan.merged.len();
            plan.merged.push(MergedLine {
                number: m.number.clone(),
                name: listed.name,
                unit: listed.unit,
                merged_on,
                window_end,
                after_window,
                transition,
                flow,
                provenance: Provenance {
                    seed: listed.seed,
                    deployment: line.map(|l| {
                        l.note
                            .clone()
                            .unwrap_or_else(|| "set in [dialplan.lines]".into())
                    }),
                },
            });
            add_route(
                &mut loader,
                &mut plan,
                file,
                text,
                &m.number,
                Route::Merged(idx),
            );
        }
        for d in &raw.dual {
            let mut why = Vec::new();
            let listed = resolve(
                province,
                &d.number,
                &d.name,
                d.unit.as_deref(),
                &d.provinces,
                d.seed.as_deref(),
                &d.as_in,
                &mut why,
            );
            for w in why {
                loader.problem(file, text, &d.number, w);
            }
            let Some(listed) = listed else { continue };
            let what = format!("dual number {}", d.number);
            let line = cfg.dialplan.lines.get(&d.number);
            if line.is_some_and(|l| l.merged_on.is_some() || l.after_window.is_some()) {
                loader.problem(
                    file,
                    text,
                    &d.number,
                    format!("{what}: dialplan.lines.\"{}\" sets a merge date or after_window, but the {province} list keeps this number (双号并行)", d.number),
                );
            }
            let seats = line
                .and_then(|l| l.seats)
                .or(listed.seats)
                .or(d.seats)
                .unwrap_or(Seats::Merged);
            let greeting = loader.prompt(file, text, &d.greeting, &what);
            let queue_name = d
                .queue
                .clone()
                .unwrap_or_else(|| format!("line-{}", d.number));
            let queue = queue_ids.get(&queue_name).copied();
            let expert_target = cfg
                .targets
                .iter()
                .position(|t| t.number == d.number && t.kind == TargetKind::Expert);
            let mut retained = None;
            let mut retained_unlinked = None;
            match seats {
                Seats::Merged => {
                    if queue.is_none() {
                        loader.problem(
                            file,
                            text,
                            &d.number,
                            format!("{what}: its seats are merged into 12345, so its skill group needs queue \"{queue_name}\" in the configuration's [queues]"),
                        );
                    } else if !cfg.seats.iter().any(|s| s.queues.contains(&queue_name)) {
                        plan.warnings.push(format!(
                            "{what} ({}): its seats are merged into 12345 but no seat serves its queue \"{queue_name}\"; its callers wait and then overflow",
                            listed.name
                        ));
                    }
                }
                Seats::Retained => {
                    let target = cfg
                        .targets
                        .iter()
                        .position(|t| t.number == d.number && t.kind == TargetKind::Retained);
                    let fallback = queue_ids.get(&cfg.dialplan.retained_fallback).copied();
                    match (target, fallback) {
                        (Some(target), Some(fallback)) => {
                            retained = Some(Retained { target, fallback })
                        }
                        (None, Some(fallback)) => {
                            // Never a dead end: without the link, 12345's agents answer.
                            plan.warnings.push(format!(
                                "{what} ({}): its seats are retained (保留座席) but no [[targets]] entry with number = \"{}\" and kind = \"retained\" reaches them over a trunk (seed 003 line 41: 与同级12345热线建立电话转接机制); its callers go straight to queue \"{}\"",
                                listed.name, d.number, cfg.dialplan.retained_fallback
                            ));
                            retained_unlinked = Some(fallback);
                        }
                        (_, None) => loader.problem(
                            file,
                            text,
                            &d.number,
                            format!("{what}: dialplan.retained_fallback \"{}\" is not in the configuration's [queues]", cfg.dialplan.retained_fallback),
                        ),
                    }
                }
            }
            if d.expert && seats == Seats::Merged && expert_target.is_none() {
                plan.warnings.push(format!(
                    "{what} ({}) sets up expert seats (设专家座席) but no [[targets]] entry with number = \"{}\" and kind = \"expert\" offers them to agents",
                    listed.name, d.number
                ));
            }
            let queue = match seats {
                Seats::Merged => queue,
                Seats::Retained => retained_unlinked,
            };
            let complete = queue.is_some() || retained.is_some();
            if let (Some(greeting), true) = (greeting, complete) {
                let idx = plan.dual.len();
                plan.dual.push(DualLine {
                    number: d.number.clone(),
                    name: listed.name,
                    unit: listed.unit,
                    seats,
                    expert: d.expert,
                    expert_target,
                    greeting,
                    queue,
                    retained,
                    provenance: Provenance {
                        seed: listed.seed,
                        deployment: line.map(|l| {
                            l.note
                                .clone()
                                .unwrap_or_else(|| "set in [dialplan.lines]".into())
                        }),
                    },
                });
                add_route(
                    &mut loader,
                    &mut plan,
                    file,
                    text,
                    &d.number,
                    Route::Dual(idx),
                );
            }
        }
        for sc in &raw.subcentre {
            let mut why = Vec::new();
            let listed = resolve(
                province,
                &sc.number,
                &sc.name,
                sc.unit.as_deref(),
                &sc.provinces,
                sc.seed.as_deref(),
                &sc.as_in,
                &mut why,
            );
            for w in why {
                loader.problem(file, text, &sc.number, w);
            }
            if let Some(l) = listed {
                plan.subcentres.push(ListedLine {
                    number: sc.number.clone(),
                    name: l.name,
                    unit: l.unit,
                    seed: l.seed,
                });
            }
        }
    }
    // The profile must be one the lists know, and the deployment's per-number settings must
    // name numbers of it.
    let known: std::collections::BTreeSet<&str> = parsed
        .iter()
        .flat_map(|(_, _, raw)| {
            raw.merged
                .iter()
                .flat_map(|m| m.provinces.iter())
                .chain(raw.dual.iter().flat_map(|d| d.provinces.iter()))
                .chain(raw.subcentre.iter().flat_map(|s| s.provinces.iter()))
                .map(String::as_str)
        })
        .collect();
    if !known.is_empty() && !known.contains(province) {
        loader.problems.push(Problem {
            file: cfg_file.clone(),
            line: None,
            reason: format!(
                "dialplan.province = \"{province}\": no list entry names it (known: {})",
                known.iter().copied().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    for number in cfg.dialplan.lines.keys() {
        let listed = plan.merged.iter().any(|m| &m.number == number)
            || plan.dual.iter().any(|d| &d.number == number);
        if !listed && !plan.routes.contains_key(number) {
            loader.problems.push(Problem {
                file: cfg_file.clone(),
                line: None,
                reason: format!(
                    "dialplan.lines.\"{number}\": not a whole-merge or dual-number line of the {province} profile"
                ),
            });
        }
    }
    if plan.routes.is_empty() && loader.problems.is_empty() {
        loader.problems.push(Problem {
            file: dir.to_path_buf(),
            line: None,
            reason: "no numbers are routed".into(),
        });
    }
    if plan.sorry.is_none() {
        loader.problems.push(Problem {
            file: dir.to_path_buf(),
            line: None,
            reason: "prompt \"sorry-busy\" is missing".into(),
        });
    }
    if loader.problems.is_empty() {
        Ok(plan)
    } else {
        Err(loader.problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().expect("a date")
    }

    /// The last day the transition prompt plays for a number merged on `merged_on`.
    fn last_day(merged_on: &str) -> String {
        window_end(d(merged_on))
            .and_then(|e| e.pred_opt())
            .map(|l| l.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn transition_windows_at_month_ends() {
        // The same date three months later exists: the window ends the day before it.
        assert_eq!(last_day("2026-12-01"), "2027-02-28");
        assert_eq!(
            last_day("2028-02-29"),
            "2028-05-28",
            "29 Feb 2028 → 29 May exists"
        );
        // It does not: the window runs through the end of that month (three whole months).
        assert_eq!(last_day("2028-08-31"), "2028-11-30", "no 31 November");
        assert_eq!(
            last_day("2028-08-30"),
            "2028-11-29",
            "30 and 31 August end apart"
        );
        assert_eq!(last_day("2028-11-30"), "2029-02-28", "no 30 February 2029");
        assert_eq!(last_day("2028-01-31"), "2028-04-30", "no 31 April");
        assert_eq!(
            last_day("2027-11-30"),
            "2028-02-29",
            "leap year: 29 February is the last day"
        );
        // Every day of a year gives a window of three whole calendar months (89 to 92 days),
        // and a later merge never ends earlier.
        let mut last_end = d("2027-12-31");
        let mut day = d("2028-01-01");
        while day < d("2029-01-01") {
            let end = window_end(day).expect("in range");
            let days = (end - day).num_days();
            assert!((89..=92).contains(&days), "{day}: {days} days");
            assert!(end >= last_end, "{day} ends before the day before it");
            last_end = end;
            day = day.succ_opt().expect("in range");
        }
    }

    /// The shipped lists under a profile, with the shipped configuration.
    fn shipped(province: &str) -> Dialplan {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut cfg = Config::load(&root.join("config/hotline.toml")).expect("shipped config");
        cfg.dialplan.province = province.into();
        let (prompts, _) = PromptStore::load_dir(&cfg.paths.prompts).expect("shipped prompts");
        load(&cfg.paths.dialplans, &prompts, &cfg).expect("shipped dialplans load")
    }

    fn mode(plan: &Dialplan, number: &str) -> &'static str {
        match plan.route(number) {
            Some(Route::Merged(_)) => "merged",
            Some(Route::Dual(_)) => "dual",
            Some(Route::Flow(_)) => "flow",
            None => "none",
        }
    }

    #[test]
    fn the_province_decides_mode_name_and_unit() {
        let (gansu, anhui) = (shipped("gansu"), shipped("anhui"));
        for n in ["12350", "12317", "12393", "12385"] {
            assert_eq!(
                mode(&gansu, n),
                "merged",
                "{n} in Gansu (003 lines 120-129)"
            );
            assert_eq!(mode(&anhui, n), "dual", "{n} in Anhui (002 lines 118-124)");
        }
        assert_eq!(gansu.merged.len(), 42, "003 line 37: 42 条");
        assert_eq!(gansu.dual.len(), 10, "003 line 41: 10 条");
        assert_eq!((anhui.merged.len(), anhui.dual.len()), (13, 14));
        assert_eq!(mode(&gansu, "12365"), "none", "not in the Gansu list");
        assert_eq!(
            mode(&anhui, "09318929999"),
            "none",
            "a Lanzhou department line"
        );
        let merged = |p: &Dialplan, n: &str| {
            let m = p.merged.iter().find(|m| m.number == n).expect("listed");
            (m.name.clone(), m.unit.clone())
        };
        let dual = |p: &Dialplan, n: &str| {
            let x = p.dual.iter().find(|x| x.number == n).expect("listed");
            (x.name.clone(), x.unit.clone(), x.seats)
        };
        assert_eq!(merged(&gansu, "96119").1, "省应急厅");
        assert_eq!(merged(&anhui, "96119").1, "省消防救援总队");
        assert_eq!(merged(&gansu, "12331").0, "全国统一食品药品监督举报电话");
        assert_eq!(
            merged(&anhui, "12331").0,
            "全国统一食品药品监督举报服务电话"
        );
        assert_eq!(
            merged(&gansu, "12317"),
            ("全国扶贫监督举报平台电话".into(), "省扶贫办".into())
        );
        assert_eq!(
            dual(&anhui, "12317"),
            (
                "防止返贫监测和乡村振兴咨询服务平台电话".into(),
                "省乡村振兴局".into(),
                Seats::Merged
            )
        );
        assert_eq!(
            dual(&gansu, "12319"),
            (
                "全国住房和城乡建设服务电话 (城管热线)".into(),
                "省住建厅".into(),
                Seats::Retained
            )
        );
        assert_eq!(dual(&anhui, "12319").1, "省住房城乡建设厅");
        assert_eq!(
            dual(&gansu, "12333").2,
            Seats::Merged,
            "003 line 166: 座席并入"
        );
        // 12369 keeps its seats in Gansu: greeted, then its retained target; 12393 in Anhui is
        // greeted and queued in its own line.
        let today = d("2026-12-15");
        let greet = |p: &Dialplan, n: &str| match p.route(n) {
            Some(Route::Dual(i)) => p.dual[*i].greeting,
            _ => panic!("{n} is not a dual line"),
        };
        match gansu.decide("12369", today) {
            Some(Decision::Run {
                first,
                next: Next::Retained(_),
            }) => assert_eq!(first, [greet(&gansu, "12369")]),
            other => panic!("12369: {other:?}"),
        }
        match anhui.decide("12393", today) {
            Some(Decision::Run {
                first,
                next: Next::Queue(q),
            }) => {
                assert_eq!(first, [greet(&anhui, "12393")]);
                assert_eq!(anhui.queues[q.0].name, "line-12393");
            }
            other => panic!("12393: {other:?}"),
        }
        // Sub-centres' units as each list writes them.
        assert_eq!(
            gansu.subcentre("12360").map(|s| s.unit.as_str()),
            Some("兰州海关")
        );
        assert_eq!(
            anhui.subcentre("12360").map(|s| s.unit.as_str()),
            Some("合肥海关")
        );
        assert_eq!(
            gansu.subcentre("12366").map(|s| s.unit.as_str()),
            Some("省税务局")
        );
        // `hotline check --explain`.
        let cfg =
            Config::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/hotline.toml"))
                .expect("config");
        let explain = |p: &Dialplan, n: &str| p.explain(n, today, &cfg).unwrap_or_default();
        let e = explain(&gansu, "12393");
        assert!(
            e.contains("whole merge") && e.contains("through 2027-02-28"),
            "{e}"
        );
        assert!(explain(&gansu, "12360").contains("unit: 兰州海关"));
        assert!(explain(&anhui, "12360").contains("unit: 合肥海关"));
        assert!(explain(&gansu, "96777").contains("that no list names"));
        assert!(
            explain(&gansu, "12348").contains("deployment: demo"),
            "the deployment's note"
        );
        assert_eq!(
            gansu.explain("12365", today, &cfg),
            None,
            "not in the Gansu list"
        );
    }

    #[test]
    fn the_deployment_sets_dates_and_seats_in_one_place() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut cfg = Config::load(&root.join("config/hotline.toml")).expect("shipped config");
        cfg.dialplan.lines.insert(
            "12396".into(),
            crate::config::LineConfig {
                merged_on: Some(d("2028-08-31")),
                after_window: Some(AfterWindow::Reject),
                ..Default::default()
            },
        );
        let (prompts, _) = PromptStore::load_dir(&cfg.paths.prompts).expect("prompts");
        let plan = load(&cfg.paths.dialplans, &prompts, &cfg).expect("loads");
        let prompt = |day: &str| match plan.decide("12396", d(day)) {
            Some(Decision::Run { first, .. }) => !first.is_empty(),
            Some(Decision::Refuse(410, _)) => false,
            other => panic!("{other:?}"),
        };
        assert!(prompt("2028-08-31") && prompt("2028-11-30"));
        assert_eq!(
            plan.decide("12396", d("2028-12-01")),
            Some(Decision::Refuse(410, "Gone"))
        );
        assert!(!prompt("2028-08-30"), "before the merge: no prompt");
        // Others keep the deployment's default date.
        assert!(
            matches!(plan.decide("12300", d("2027-02-28")), Some(Decision::Run { ref first, .. }) if !first.is_empty())
        );
        // Without any merge date the lists do not load.
        cfg.dialplan.merged_on = None;
        let problems = load(&cfg.paths.dialplans, &prompts, &cfg).expect_err("no date");
        assert!(problems.iter().any(|p| p.reason.contains("no merge date")));
    }
}
