//! Dialplans: every `*.toml` in the dialplan folder, parsed into typed, validated structs.
//! Each file may hold `[[numbers]]` (a number → a flow), `[flows.NAME]`, `[[merged]]` (retired
//! whole-merge numbers with their transition window) and `[[dual]]` (dual-number lines).
//! Numbers match the Request-URI user part exactly: never by prefix or substring.

use crate::config::QueueConfig;
use crate::media::prompts::{PromptId, PromptStore};
use chrono::{Months, NaiveDate};
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

#[derive(Debug, Clone)]
pub struct MergedLine {
    pub number: String,
    pub name: String,
    pub merged_on: NaiveDate,
    /// First day after the 3-calendar-month transition window.
    pub window_end: NaiveDate,
    pub after_window: AfterWindow,
    pub transition: Vec<PromptId>,
    pub flow: FlowId,
}

#[derive(Debug, Clone)]
pub struct DualLine {
    pub number: String,
    pub name: String,
    pub greeting: PromptId,
    pub queue: QueueId,
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
    Hangup,
}

#[derive(Debug, Default)]
pub struct Dialplan {
    pub flows: Vec<Flow>,
    pub queues: Vec<Queue>,
    pub merged: Vec<MergedLine>,
    pub dual: Vec<DualLine>,
    routes: HashMap<String, Route>,
    pub number_retired: Option<PromptId>,
    pub sorry: Option<PromptId>,
    /// The satisfaction survey after a seat hangs up, and its closing prompts.
    pub survey: Option<PromptId>,
    pub survey_thanks: Option<PromptId>,
    pub goodbye: Option<PromptId>,
}

impl Dialplan {
    pub fn route(&self, number: &str) -> Option<&Route> {
        self.routes.get(number)
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
                Decision::Run {
                    first: vec![d.greeting],
                    next: Next::Queue(d.queue),
                }
            }
        })
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
    #[allow(dead_code)]
    unit: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    provinces: Vec<String>,
    merged_on: NaiveDate,
    #[serde(default)]
    after_window: Option<AfterWindow>,
    /// Flow to continue into; default `main`.
    #[serde(default)]
    flow: Option<String>,
    /// A recorded transition prompt that overrides the composed one.
    #[serde(default)]
    prompt: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawDual {
    number: String,
    name: String,
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    seats: Option<String>,
    #[serde(default)]
    expert: bool,
    greeting: String,
    queue: String,
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
pub fn load(
    dir: &Path,
    prompts: &PromptStore,
    queues: &BTreeMap<String, QueueConfig>,
) -> Result<Dialplan, Vec<Problem>> {
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
    match load_from(dir, &texts, prompts, queues) {
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
    queues: &BTreeMap<String, QueueConfig>,
) -> Result<Dialplan, Vec<Problem>> {
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
        sorry: prompts.id("sorry-busy"),
        survey: prompts.id("survey"),
        survey_thanks: prompts.id("survey-thanks"),
        goodbye: prompts.id("goodbye"),
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
            let what = format!("merged number {}", m.number);
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
                        parts.push(loader.prompt(
                            file,
                            text,
                            &format!("names/{}", m.number),
                            &what,
                        ));
                        parts.push(loader.prompt(file, text, "transition/merged", &what));
                        parts.into_iter().flatten().collect()
                    }
                },
            };
            let Some(window_end) = m.merged_on.checked_add_months(Months::new(3)) else {
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
                name: m.name.clone(),
                merged_on: m.merged_on,
                window_end,
                after_window: m.after_window.unwrap_or(AfterWindow::Continue),
                transition,
                flow,
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
            let what = format!("dual number {}", d.number);
            let greeting = loader.prompt(file, text, &d.greeting, &what);
            let queue = queue_ids.get(&d.queue).copied();
            if queue.is_none() {
                loader.problem(
                    file,
                    text,
                    &d.queue,
                    format!(
                        "{what}: queue \"{}\" is not in the configuration's [queues]",
                        d.queue
                    ),
                );
            }
            if let (Some(greeting), Some(queue)) = (greeting, queue) {
                let idx = plan.dual.len();
                plan.dual.push(DualLine {
                    number: d.number.clone(),
                    name: d.name.clone(),
                    greeting,
                    queue,
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
