//! Configuration: a TOML file plus `HOTLINE__SECTION__KEY` environment overrides, parsed into
//! typed structs at the edge so the rest of the daemon never sees an unchecked value.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration {path}: {source}")]
    Load {
        path: String,
        source: config::ConfigError,
    },
    #[error("configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub sip: SipConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub rtp: RtpConfig,
    #[serde(default)]
    pub paths: PathsConfig,
    #[serde(default)]
    pub queues: BTreeMap<String, QueueConfig>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub registrar: RegistrarConfig,
    /// Seats (座席): who may register, with which credentials, for which queues.
    #[serde(default)]
    pub seats: Vec<SeatConfig>,
    #[serde(default)]
    pub agents: AgentsConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub acd: AcdConfig,
    #[serde(default)]
    pub reports: ReportsConfig,
    /// SIP trunks to sub-centres, retained-seat lines and emergency centres, by name.
    #[serde(default)]
    pub trunks: BTreeMap<String, TrunkConfig>,
    /// Where an agent can transfer a call or hand it off (numbers matched exactly).
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub transfer: TransferConfig,
    #[serde(default)]
    pub probes: ProbesConfig,
    #[serde(default)]
    pub overload: OverloadConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    /// Which province's lists decide each number's mode, name and unit; the deployment's
    /// merge dates and after-window behaviour.
    #[serde(default)]
    pub dialplan: DialplanConfig,
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub feed: FeedConfig,
    /// Callbacks that keep the caller's place in line (回拨).
    #[serde(default)]
    pub callback: CallbackConfig,
    /// Revisit calls (回访) of closed cases.
    #[serde(default)]
    pub revisit: RevisitConfig,
    /// Confidential callers (保密).
    #[serde(default)]
    pub privacy: PrivacyConfig,
    /// Graduated handling of numbers that call many times.
    #[serde(default)]
    pub repeat_callers: RepeatCallersConfig,
    /// 110 non-police diversion (110 非警务类诉求分流) and hand-offs to 110.
    #[serde(default)]
    pub diversion: DiversionConfig,
}

/// A daily window of allowed hours, Asia/Shanghai (`"09:00-20:00"`): calls are placed from
/// the first time up to, not including, the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    pub from: chrono::NaiveTime,
    pub to: chrono::NaiveTime,
}

impl Hours {
    pub fn parse(s: &str) -> Result<Hours, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("hours {s:?}: write \"HH:MM-HH:MM\""))?;
        let t = |x: &str| {
            chrono::NaiveTime::parse_from_str(x.trim(), "%H:%M")
                .map_err(|_| format!("hours {s:?}: {x:?} is not HH:MM"))
        };
        let (from, to) = (t(a)?, t(b)?);
        if from >= to {
            return Err(format!(
                "hours {s:?}: the window must start before it ends (no night calls)"
            ));
        }
        Ok(Hours { from, to })
    }

    /// Whether `at` (Asia/Shanghai) is inside the window.
    pub fn contains(&self, at: chrono::DateTime<chrono::FixedOffset>) -> bool {
        let t = at.time();
        t >= self.from && t < self.to
    }

    /// How long from `at` until the window next opens (zero inside it).
    pub fn wait_from(&self, at: chrono::DateTime<chrono::FixedOffset>) -> std::time::Duration {
        if self.contains(at) {
            return std::time::Duration::ZERO;
        }
        let day = if at.time() < self.from {
            at.date_naive()
        } else {
            at.date_naive() + chrono::Days::new(1)
        };
        let opens = day.and_time(self.from);
        (opens - at.naive_local()).to_std().unwrap_or_default()
    }
}

impl<'de> Deserialize<'de> for Hours {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hours::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn default_hours() -> Hours {
    Hours {
        from: chrono::NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default(),
        to: chrono::NaiveTime::from_hms_opt(20, 0, 0).unwrap_or_default(),
    }
}

/// `[callback]`: a caller waiting in a queue with a `callback_key` may hang up and be called
/// back, keeping its place; when it is first in line and a seat is free, the seat rings first
/// and then the citizen is called over `trunk`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallbackConfig {
    /// The trunk citizens are called over (a name in `[trunks]`); empty: no callbacks.
    pub trunk: String,
    /// The number presented to the citizen.
    pub caller: String,
    /// Calls to the citizen before the callback is recorded failed.
    pub attempts: u32,
    /// Between one unanswered attempt and the next.
    pub spacing_s: u64,
    /// How long the citizen's phone may ring.
    pub ring_timeout_s: u64,
    /// Callbacks are placed only within these hours (Asia/Shanghai).
    pub hours: Hours,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        CallbackConfig {
            trunk: String::new(),
            caller: "12345".into(),
            attempts: 3,
            spacing_s: 300,
            ring_timeout_s: 30,
            hours: Hours {
                from: chrono::NaiveTime::from_hms_opt(8, 0, 0).unwrap_or_default(),
                to: chrono::NaiveTime::from_hms_opt(21, 0, 0).unwrap_or_default(),
            },
        }
    }
}

/// `[revisit]`: cases posted to `/api/revisits` are called within `hours`, asked the
/// satisfaction survey, and retried up to `attempts` times.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevisitConfig {
    /// The trunk citizens are called over; empty: revisits are refused.
    pub trunk: String,
    pub caller: String,
    pub attempts: u32,
    pub spacing_s: u64,
    pub ring_timeout_s: u64,
    pub hours: Hours,
}

impl Default for RevisitConfig {
    fn default() -> Self {
        RevisitConfig {
            trunk: String::new(),
            caller: "12345".into(),
            attempts: 3,
            spacing_s: 1800,
            ring_timeout_s: 30,
            hours: default_hours(),
        }
    }
}

/// `[privacy]`: confidential callers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// The key that makes a call confidential in any menu (e.g. "*"); empty: none.
    pub confidential_key: String,
}

/// `[repeat_callers]`: one number calling many times within `window_h` hours.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepeatCallersConfig {
    pub enabled: bool,
    pub window_h: u64,
    /// From this call in the window on, the caller hears the reminder first.
    pub remind_at: u32,
    /// From this call on, the caller goes (after the reminder) to `queue`.
    pub queue_at: u32,
    pub queue: String,
    /// Never treated as repeat callers (emergency-related numbers; the emergency targets'
    /// numbers are always added).
    pub exempt: Vec<String>,
}

impl Default for RepeatCallersConfig {
    fn default() -> Self {
        RepeatCallersConfig {
            enabled: false,
            window_h: 24,
            remind_at: 3,
            queue_at: 5,
            queue: "general".into(),
            exempt: vec![],
        }
    }
}

/// `[diversion]`: the headers of 110's hand-overs and of ours to 110.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiversionConfig {
    /// The header in which 110's trunk names its incident (shown to the seat, stored).
    pub incident_header: String,
    /// The header our hand-off to an emergency centre carries the 12345 call reference in.
    pub call_ref_header: String,
    /// The queue priority of a call that carries 110's incident reference (110's trunk
    /// presents the citizen's number, so `acd.priority_callers` cannot know it).
    pub priority: u8,
}

impl Default for DiversionConfig {
    fn default() -> Self {
        DiversionConfig {
            incident_header: "X-110-Incident".into(),
            call_ref_header: "X-12345-Call-Ref".into(),
            priority: 5,
        }
    }
}

/// This node's name: written on every record, and the key (with the record's id) of its events
/// in the shared PostgreSQL table and the live feed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// 1 to 32 of `A-Za-z0-9_-` (a NATS subject token and a readable key). Default: the host
    /// name up to its first dot, or `node-a` when it has none or it does not fit.
    pub id: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: default_node_id(),
        }
    }
}

/// Whether `id` can name a node.
pub fn valid_node_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let host = host.trim().split('.').next().unwrap_or("").to_string();
    if valid_node_id(&host) {
        host
    } else {
        "node-a".into()
    }
}

/// The live feed to the provincial platform.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// NATS server with JetStream, e.g. `nats://127.0.0.1:4222`; empty = off.
    pub nats: String,
}

/// The certificate SIP over TLS presents (RFC 3261 §26.2.1), re-read on SIGHUP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first; relative to the config file. Empty: no TLS.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key: PathBuf,
    /// A client that has not finished its handshake by then is dropped.
    pub handshake_timeout_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: PathBuf::new(),
            key: PathBuf::new(),
            handshake_timeout_ms: 5000,
        }
    }
}

/// The deployment's side of the dialplans (`[dialplan]`): the files in `dialplans/` are the
/// seeds' lists for every province; this picks one and sets what only a deployment knows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DialplanConfig {
    /// The province profile: entries whose `provinces` list names it are routed, with that
    /// province's names and units (shipped "gansu"; "anhui" is the other seeded profile).
    pub province: String,
    /// Merge date of every whole-merge number (its transition window starts that day), unless
    /// `lines.<number>.merged_on` says otherwise.
    pub merged_on: Option<chrono::NaiveDate>,
    /// After the window, for every whole-merge number unless `lines.<number>` says otherwise.
    pub after_window: crate::ivr::dialplan::AfterWindow,
    /// Where a retained-seat line's caller goes when the line's own seats do not answer
    /// (the 7×24 rule: 12345's agents take the call).
    pub retained_fallback: String,
    /// Per number: the deployment's merge date, after-window behaviour, or (dual-number
    /// lines) whether its seats are merged into 12345 or retained.
    pub lines: BTreeMap<String, LineConfig>,
}

impl Default for DialplanConfig {
    fn default() -> Self {
        DialplanConfig {
            province: "gansu".into(),
            merged_on: None,
            after_window: crate::ivr::dialplan::AfterWindow::Continue,
            retained_fallback: "general".into(),
            lines: BTreeMap::new(),
        }
    }
}

impl TlsConfig {
    /// Whether a certificate and key are configured.
    pub fn configured(&self) -> bool {
        !self.cert.as_os_str().is_empty() && !self.key.as_os_str().is_empty()
    }
}

/// `[dialplan.lines."<number>"]`: what the deployment decided for one number.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    #[serde(default)]
    pub merged_on: Option<chrono::NaiveDate>,
    #[serde(default)]
    pub after_window: Option<crate::ivr::dialplan::AfterWindow>,
    #[serde(default)]
    pub seats: Option<crate::ivr::dialplan::Seats>,
    /// Why the deployment departs from the list (shown by `hotline check --explain`).
    #[serde(default)]
    pub note: Option<String>,
}

/// What a caller gets when the hotline sheds new calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShedMode {
    /// 503 Service Unavailable with Retry-After (the carrier plays its busy tone).
    Reject,
    /// Answered with the busy prompt (the lines are busy, call again), then hung up, while
    /// there is room for it; 503 beyond that.
    Prompt,
}

/// Overload control: new calls beyond what the node can serve are shed at once, before any
/// state is made for them, on configured ceilings and on the measured event-loop lag.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverloadConfig {
    /// Citizens' calls at once; 0: as many as the RTP ports allow.
    pub max_calls: usize,
    /// New calls admitted per second (a token bucket one second deep); 0: no ceiling.
    pub calls_per_s: u32,
    /// New calls are shed while the event loop runs this late (ms, the media clock's
    /// lateness over 100 ms); 0: not measured.
    pub max_lag_ms: u64,
    pub shed: ShedMode,
    /// Retry-After of the 503.
    pub retry_after_s: u32,
    /// With `shed = "prompt"`: busy prompts playing at once at most (beyond: 503).
    pub max_busy_prompts: usize,
}

impl Default for OverloadConfig {
    fn default() -> Self {
        OverloadConfig {
            max_calls: 0,
            calls_per_s: 0,
            max_lag_ms: 5,
            shed: ShedMode::Reject,
            retry_after_s: 10,
            max_busy_prompts: 200,
        }
    }
}

/// A SIP gateway the daemon sends calls to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    /// host:port of the gateway.
    pub address: SocketAddr,
    /// Digest credentials, when the gateway challenges our INVITEs.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// How SIP reaches the gateway: "udp" (default), "tcp" or "tls" (a connection the daemon
    /// keeps open and re-opens, RFC 5626-like; calls fail at once while it is down).
    #[serde(default)]
    pub transport: TrunkTransport,
    /// SRTP towards the gateway (needs `transport = "tls"`): "off" (default), "optional"
    /// (RTP/AVP offered with keys; plain if the answer has none) or "mandatory" (RTP/SAVP).
    #[serde(default)]
    pub srtp: SrtpMode,
    /// PEM certificates of the authorities the gateway's TLS certificate must chain to
    /// (relative to the config file); required for `transport = "tls"`.
    #[serde(default)]
    pub ca: PathBuf,
    /// The name (or IP address) the gateway's certificate must be for; default: its address.
    #[serde(default)]
    pub server_name: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SrtpMode {
    #[default]
    Off,
    Optional,
    Mandatory,
}

/// Stream connections to trunks are numbered from here (in the order of the trunks' names),
/// apart from those the runtime numbers as phones connect.
pub const TRUNK_CONNECTIONS: u64 = 1 << 62;

impl Config {
    /// The transport the daemon reaches trunk `name` by.
    pub fn trunk_transport(&self, name: &str) -> Option<crate::sip::Transport> {
        use crate::sip::Transport;
        let (i, t) = self
            .trunks
            .iter()
            .enumerate()
            .find(|(_, (n, _))| *n == name)?;
        let id = TRUNK_CONNECTIONS + i as u64;
        Some(match t.1.transport {
            TrunkTransport::Udp => Transport::Udp,
            TrunkTransport::Tcp => Transport::Tcp(id),
            TrunkTransport::Tls => Transport::Tls(id),
        })
    }
}

/// What a transfer target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// A sub-centre (分中心: 12366, 12360, …) over a trunk.
    Subcentre,
    /// A line that kept its own seats (保留座席) over a trunk.
    Retained,
    /// An expert group: one of the daemon's own queues.
    Expert,
    /// 110, 119, 120, 122: one-key hand-off, capacity reserved, the caller's number presented.
    Emergency,
    /// Water, power, gas, heat lines over a trunk.
    Utility,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The number as agents key it and as the trunk receives it.
    pub number: String,
    pub name: String,
    pub kind: TargetKind,
    /// The trunk that reaches it (all kinds but expert).
    #[serde(default)]
    pub trunk: Option<String>,
    /// The queue that serves it (expert).
    #[serde(default)]
    pub queue: Option<String>,
    /// The unit (承办单位) the line belongs to, for the reports; defaults to the name.
    #[serde(default)]
    pub unit: Option<String>,
    /// How long the target may ring before the transfer fails.
    #[serde(default = "default_target_timeout")]
    pub timeout_s: u64,
    /// Answer-rate probes call this line (电话接通率).
    #[serde(default)]
    pub probe: bool,
}

fn default_target_timeout() -> u64 {
    30
}

impl TargetConfig {
    pub fn unit_name(&self) -> &str {
        self.unit.as_deref().unwrap_or(&self.name)
    }
}

/// Transfers and hand-offs started by agents.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransferConfig {
    /// During a call an agent keys `<prefix><target number>#` (e.g. `*12366#`, `*110#`).
    pub prefix: String,
    /// Digits of a transfer code must follow each other within this many seconds.
    pub digit_timeout_s: u64,
    /// RTP ports kept free for emergency hand-offs: new inbound calls are refused (503) rather
    /// than take them.
    pub reserved_for_emergency: usize,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            prefix: "*".into(),
            digit_timeout_s: 4,
            reserved_for_emergency: 16,
        }
    }
}

/// Answer-rate probes: the platform calls each probed line; a round is up to `attempts` calls
/// `spacing_s` apart, and a round nobody answered is one failure (seed 004: 间隔拨打3次，若无人
/// 接听，视为电话不通).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbesConfig {
    pub enabled: bool,
    /// A new round for each probed line this often; the first one this long after start.
    pub every_s: u64,
    /// The first round this long after start.
    pub first_after_s: u64,
    pub attempts: u32,
    pub spacing_s: u64,
    /// An attempt rings this long before it counts as unanswered.
    pub ring_timeout_s: u64,
    /// The number the probe presents as its caller.
    pub caller: String,
}

impl Default for ProbesConfig {
    fn default() -> Self {
        ProbesConfig {
            enabled: false,
            every_s: 3600,
            first_after_s: 60,
            attempts: 3,
            spacing_s: 60,
            ring_timeout_s: 20,
            caller: "12345".into(),
        }
    }
}

/// Daily report files, written after midnight (Asia/Shanghai) for the day before.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsConfig {
    /// `<folder>/<YYYY-MM-DD>/` gets report.txt and the CSV files; empty = off. Relative to
    /// the config file.
    pub folder: PathBuf,
    /// The assessment rules (relative to the config file).
    pub rules: PathBuf,
    /// Matters the platform exempted from the satisfaction deduction after review (seed 004
    /// line 117: 客观因素或依法不能办理者不扣分); a missing file exempts none.
    pub exemptions: PathBuf,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig {
            folder: PathBuf::from("../data/reports"),
            rules: PathBuf::from("scoring.toml"),
            exemptions: PathBuf::from("exemptions.toml"),
        }
    }
}

impl Config {
    /// Every unit the configuration names (seats' and targets' units, targets without one by
    /// name): revisits must name one of them.
    pub fn units(&self) -> std::collections::BTreeSet<String> {
        self.seats
            .iter()
            .map(|s| s.unit.clone())
            .filter(|u| !u.is_empty())
            .chain(self.targets.iter().map(|t| t.unit_name().to_string()))
            .collect()
    }

    /// Numbers never treated as repeat callers: the configured ones and every emergency
    /// target's.
    pub fn repeat_exempt(&self) -> std::collections::HashSet<String> {
        self.repeat_callers
            .exempt
            .iter()
            .cloned()
            .chain(
                self.targets
                    .iter()
                    .filter(|t| t.kind == TargetKind::Emergency)
                    .map(|t| t.number.clone()),
            )
            .collect()
    }

    /// `[callback]`, `[revisit]`, `[privacy]`, `[repeat_callers]`, `[diversion]`.
    fn validate_outreach(&self) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError::Invalid(s));
        for (what, trunk) in [
            ("callback", &self.callback.trunk),
            ("revisit", &self.revisit.trunk),
        ] {
            if !trunk.is_empty() && !self.trunks.contains_key(trunk) {
                return bad(format!("{what}.trunk {trunk:?} is not in [trunks]"));
            }
        }
        if self.callback.attempts == 0 || self.revisit.attempts == 0 {
            return bad("callback.attempts and revisit.attempts must be at least 1".into());
        }
        let one_key = |k: &str| {
            let mut c = k.chars();
            matches!((c.next(), c.next()), (Some(x), None) if crate::media::dtmf::char_event(x).is_some())
        };
        for (name, q) in &self.queues {
            if !q.callback_key.is_empty() && !one_key(&q.callback_key) {
                return bad(format!(
                    "queues.{name}.callback_key {:?} is not one DTMF key",
                    q.callback_key
                ));
            }
        }
        let k = &self.privacy.confidential_key;
        if !k.is_empty() && !one_key(k) {
            return bad(format!(
                "privacy.confidential_key {k:?} is not one DTMF key"
            ));
        }
        let r = &self.repeat_callers;
        if r.enabled {
            if r.remind_at < 2 || r.queue_at < r.remind_at || r.window_h == 0 {
                return bad("repeat_callers: need 2 <= remind_at <= queue_at and window_h > 0 (the reminder always comes before the designated queue)".into());
            }
            if !self.queues.contains_key(&r.queue) {
                return bad(format!(
                    "repeat_callers.queue {:?} is not in [queues]",
                    r.queue
                ));
            }
        }
        for (what, h) in [
            ("incident_header", &self.diversion.incident_header),
            ("call_ref_header", &self.diversion.call_ref_header),
        ] {
            if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return bad(format!("diversion.{what} {h:?} is not a header name"));
            }
        }
        Ok(())
    }

    /// The target with exactly this number (never a prefix or substring match: `1100` is not
    /// 110).
    pub fn target(&self, number: &str) -> Option<usize> {
        self.targets.iter().position(|t| t.number == number)
    }

    /// Seat id → its unit (单位), for the reports.
    pub fn seat_units(&self) -> BTreeMap<String, String> {
        self.seats
            .iter()
            .map(|s| {
                (
                    s.id.clone(),
                    if s.unit.is_empty() {
                        "—".to_string()
                    } else {
                        s.unit.clone()
                    },
                )
            })
            .collect()
    }
}

/// ACD settings across queues.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcdConfig {
    /// Caller numbers (From user) queued with a priority, e.g. { "110" = 5 } for calls handed
    /// over from 110. Higher is served first, within each queue's max_overtaken_s.
    pub priority_callers: BTreeMap<String, u8>,
    /// Folder for call recordings (queues with record = true); relative to the config file.
    pub recordings: PathBuf,
}

/// The durable record of calls and state events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// SQLite file; relative paths are taken from the configuration file's folder.
    pub path: PathBuf,
    /// Queue events in Asterisk's queue_log format, for existing reporting tools; empty = off.
    pub queue_log: PathBuf,
    /// PostgreSQL URL the events are shipped to (`postgres://user@host:port/db`); empty = off.
    pub postgres: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("../data/hotline.sqlite"),
            queue_log: PathBuf::from("../data/queue_log"),
            postgres: String::new(),
        }
    }
}

/// Agents: feature codes dialled from a seat's softphone, and automatic pause.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    pub login_code: String,
    pub logout_code: String,
    /// Dial this code alone, or followed by a reason key from `pause_reasons` (e.g. *232).
    pub pause_code: String,
    pub unpause_code: String,
    pub pause_reasons: BTreeMap<String, String>,
    /// Consecutive ring-no-answers after which an agent is paused; 0 = never.
    pub auto_pause_after: u32,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            login_code: "*21".into(),
            logout_code: "*22".into(),
            pause_code: "*23".into(),
            unpause_code: "*24".into(),
            pause_reasons: [("1", "休息"), ("2", "用餐"), ("3", "培训"), ("4", "会议")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            auto_pause_after: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SeatKind {
    #[default]
    Agent,
    /// 专家座席
    Expert,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeatConfig {
    pub id: String,
    /// SIP user name: the To user of its REGISTER and the digest username.
    pub user: String,
    /// MD5(user:realm:password), lower-case hex; `hotline passwd` prints it.
    #[serde(skip_serializing)]
    pub ha1_md5: String,
    /// SHA-256(user:realm:password), lower-case hex (RFC 8760).
    #[serde(skip_serializing)]
    pub ha1_sha256: String,
    #[serde(default)]
    pub queues: Vec<String>,
    /// Penalty per queue (default 0): higher penalties are offered calls only after the
    /// queue's lower-penalty seats, or once the caller has waited (queues.*.widen_every_s).
    #[serde(default)]
    pub penalties: BTreeMap<String, u32>,
    #[serde(default)]
    pub kind: SeatKind,
    /// 单位 the seat belongs to.
    #[serde(default)]
    pub unit: String,
    /// 远端座席: a seat outside the centre.
    #[serde(default)]
    pub remote: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarConfig {
    pub realm: String,
    /// Digest algorithms offered, in challenge order: "MD5", "SHA-256" (RFC 8760). Default MD5
    /// only: SIPp answers only the first challenge and knows only MD5, and Debian's baresip
    /// (libre 1.1) fails outright when any challenge names SHA-256. List "SHA-256" first where
    /// every phone supports it.
    pub algorithms: Vec<String>,
    pub min_expires: u64,
    pub max_expires: u64,
    pub default_expires: u64,
    pub max_contacts: usize,
    pub nonce_ttl_s: u64,
    /// This many failed attempts for one user from one address within `failure_window_s`
    /// block that user from that address for `block_s` (other seats behind the same NAT
    /// address go on registering).
    pub max_failures: u32,
    /// This many failed attempts from one address, whatever the users (a scan), block the
    /// address for every user.
    pub max_failures_per_source: u32,
    pub failure_window_s: u64,
    pub block_s: u64,
    /// Keep-alive OPTIONS to every contact this often; 0 disables.
    pub qualify_s: u64,
    /// Secret the digest nonces are made with; the nodes of one centre behind a proxy share it,
    /// so a challenge one issued is good at the other. Empty: a random one per start.
    #[serde(skip_serializing)]
    pub nonce_secret: String,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            realm: "hotline".into(),
            algorithms: vec!["MD5".into()],
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 5,
            nonce_ttl_s: 300,
            max_failures: 5,
            max_failures_per_source: 20,
            failure_window_s: 60,
            block_s: 60,
            qualify_s: 30,
            nonce_secret: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Address for both UDP and TCP.
    pub listen: SocketAddr,
    /// Address for SIP over TLS (RFC 3261 §26); empty: off. It needs `[tls]` cert and key.
    pub tls_listen: String,
    /// SIP proxies in front of the daemon (Kamailio): for requests they forward, throttling
    /// and blocking count the address the proxy vouches for (the `received`/host of the Via
    /// below its own), not the proxy's.
    pub trusted_proxies: Vec<IpAddr>,
    /// Address written into Contact and Via when `listen` is a wildcard; defaults to the address
    /// the request was sent to (its Request-URI host) or the listen address.
    pub public_ip: Option<IpAddr>,
    /// How long an incoming call rings (180) before it is answered; 0 answers at once.
    pub ring_ms: u64,
    /// On SIGTERM, calls in progress may go on for this long before they are hung up.
    pub shutdown_grace_s: u64,
    /// A call longer than this is hung up (protects against lost BYEs).
    pub max_call_s: u64,
    pub user_agent: String,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5060),
            tls_listen: "0.0.0.0:5061".into(),
            trusted_proxies: Vec::new(),
            public_ip: None,
            ring_ms: 0,
            shutdown_grace_s: 30,
            max_call_s: 4 * 3600,
            user_agent: concat!("hotline/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Who may use `/api/*`: name → bearer token. Every endpoint but `/healthz` and
    /// `/metrics` needs one; control actions are logged with the token's name.
    pub tokens: BTreeMap<String, String>,
    /// SIP over WebSocket at `/sip` (the browser desk's phone).
    pub websocket: bool,
    /// HTTPS (and wss:// for the desk's phone) on this address with the certificate of
    /// `[tls]`, the same pages and APIs as `listen`; empty = off. Browsers give a microphone
    /// only to a secure page: plain HTTP serves desks on the machine itself (loopback counts
    /// as secure), a desk on another machine needs this. `listen` stays plain for monitoring.
    pub tls_listen: String,
    /// A desk session (`/agent`) ends after this long unused.
    pub desk_session_s: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            tokens: BTreeMap::new(),
            websocket: true,
            tls_listen: String::new(),
            desk_session_s: 12 * 3600,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtpConfig {
    pub port_min: u16,
    pub port_max: u16,
    /// Address the RTP sockets bind to.
    pub bind_ip: IpAddr,
    /// Address announced in SDP; defaults to the SIP local address of the call.
    pub public_ip: Option<IpAddr>,
    /// A browser leg's DTLS-SRTP handshake must complete this long after its answer, or the
    /// offer fails over to the next seat like one not answered.
    pub dtls_timeout_ms: u64,
}

impl Default for RtpConfig {
    fn default() -> Self {
        RtpConfig {
            port_min: 20000,
            port_max: 29999,
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            public_ip: None,
            dtls_timeout_ms: 5000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// Relative paths are taken from the configuration file's folder.
    pub prompts: PathBuf,
    pub dialplans: PathBuf,
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig {
            prompts: PathBuf::from("../prompts"),
            dialplans: PathBuf::from("../dialplans"),
        }
    }
}

/// An ACD queue (one per skill group): how seats are chosen, what the caller hears while
/// waiting, and where the caller goes when the wait is over or nobody is logged in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// What desks and the wallboard show for the queue (e.g. "12348 法律服务"); default: the
    /// merged or dual line's number and name for a `line-<number>` queue, else the id.
    pub label: String,
    pub strategy: crate::acd::queue::Strategy,
    pub max_wait_s: u64,
    /// How long one seat rings before the call is offered to the next.
    pub ring_timeout_s: u64,
    /// After-call work before the agent is offered the next call.
    pub wrap_up_s: u64,
    /// Seats with penalty p are offered a caller once it has waited p times this; 0 = every
    /// member at once (lowest penalty first).
    pub widen_every_s: u64,
    /// A caller who has waited this long is no longer overtaken by priority callers; 0 =
    /// priority always wins.
    pub max_overtaken_s: u64,
    /// Announce the caller's position / expected wait with each hold prompt.
    pub announce_position: bool,
    pub announce_wait: bool,
    /// Where a caller goes after max_wait_s: "sorry" (prompt, hang up), "queue:<name>"
    /// (overflow, keeping its seniority) or "flow:<name>" (e.g. a callback request).
    pub on_timeout: String,
    /// When no member of the queue is logged in: "wait" (until max_wait_s), or a target as
    /// for on_timeout, taken at once.
    pub when_no_agents: String,
    /// Callers who hang up within this many seconds of queueing are short abandons.
    pub short_abandon_s: u64,
    /// Record bridged calls of this queue to WAV (stereo: caller left, seat right).
    pub record: bool,
    /// When the seat hangs up, ask the caller to rate the call (1 满意, 2 基本满意, 3 不满意).
    pub survey: bool,
    pub hold_music: String,
    pub hold_prompt: String,
    pub hold_prompt_every_s: u64,
    pub sorry_prompt: String,
    /// A key a waiting caller presses to hang up and be called back, keeping its place
    /// (needs `[callback] trunk`); empty: none.
    pub callback_key: String,
    /// A prompt added to each hold announcement telling waiting callers the callback key
    /// (e.g. "callback/offer"); empty: none.
    pub callback_prompt: String,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            label: String::new(),
            strategy: crate::acd::queue::Strategy::LongestIdle,
            max_wait_s: 120,
            ring_timeout_s: 15,
            wrap_up_s: 5,
            widen_every_s: 0,
            max_overtaken_s: 60,
            announce_position: true,
            announce_wait: true,
            on_timeout: "sorry".into(),
            when_no_agents: "wait".into(),
            short_abandon_s: 5,
            record: false,
            survey: false,
            hold_music: "hold-music".into(),
            hold_prompt: "please-hold".into(),
            hold_prompt_every_s: 30,
            sorry_prompt: "sorry-busy".into(),
            callback_key: String::new(),
            callback_prompt: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `hotline=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}

impl Config {
    /// Loads `path` (which must exist) and applies `HOTLINE__…` environment overrides.
    /// A configuration from TOML text alone (no environment), with paths relative to
    /// `path`'s folder, validated: what the fuzzer feeds.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|source| ConfigError::Load {
                path: path.display().to_string(),
                source,
            })?;
        Self::typed(raw, path)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let raw = config::Config::builder()
            .add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            )
            .add_source(
                config::Environment::with_prefix("HOTLINE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("registrar.algorithms")
                    .with_list_parse_key("sip.trusted_proxies"),
            )
            .build()
            .map_err(|source| ConfigError::Load {
                path: shown.clone(),
                source,
            })?;
        Self::typed(raw, path)
    }

    /// Typed, with the paths made relative to the configuration's folder, and validated.
    fn typed(raw: config::Config, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = raw.try_deserialize().map_err(|source| ConfigError::Load {
            path: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.paths.prompts = base.join(&cfg.paths.prompts);
        cfg.paths.dialplans = base.join(&cfg.paths.dialplans);
        cfg.store.path = base.join(&cfg.store.path);
        if !cfg.store.queue_log.as_os_str().is_empty() {
            cfg.store.queue_log = base.join(&cfg.store.queue_log);
        }
        if cfg.acd.recordings.as_os_str().is_empty() {
            cfg.acd.recordings = PathBuf::from("../data/recordings");
        }
        cfg.acd.recordings = base.join(&cfg.acd.recordings);
        if !cfg.reports.folder.as_os_str().is_empty() {
            cfg.reports.folder = base.join(&cfg.reports.folder);
        }
        cfg.reports.rules = base.join(&cfg.reports.rules);
        for t in cfg.trunks.values_mut() {
            if !t.ca.as_os_str().is_empty() {
                t.ca = base.join(&t.ca);
            }
        }
        if cfg.tls.configured() {
            cfg.tls.cert = base.join(&cfg.tls.cert);
            cfg.tls.key = base.join(&cfg.tls.key);
        }
        cfg.reports.exemptions = base.join(&cfg.reports.exemptions);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Where SIP over TLS listens: `None` when `sip.tls_listen` is empty or no certificate is
    /// configured.
    /// The HTTPS address, when on.
    pub fn https_listen(&self) -> Option<SocketAddr> {
        self.http.tls_listen.trim().parse().ok()
    }

    pub fn tls_listen(&self) -> Option<SocketAddr> {
        let a = self.sip.tls_listen.trim();
        if a.is_empty() || !self.tls.configured() {
            return None;
        }
        a.parse().ok()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(a) = Some(self.http.tls_listen.trim()).filter(|a| !a.is_empty()) {
            if a.parse::<SocketAddr>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "http.tls_listen {a:?} is not an address:port"
                )));
            }
            if !self.tls.configured() {
                return Err(ConfigError::Invalid(
                    "http.tls_listen needs [tls] cert and key".into(),
                ));
            }
        }
        self.validate_outreach()?;
        if !valid_node_id(&self.node.id) {
            return Err(ConfigError::Invalid(format!(
                "node.id {:?}: 1 to 32 letters, digits, '-' or '_'",
                self.node.id
            )));
        }
        let pg = self.store.postgres.trim();
        if !(pg.is_empty() || pg.starts_with("postgres://") || pg.starts_with("postgresql://")) {
            return Err(ConfigError::Invalid(format!(
                "store.postgres {pg:?} is not a postgres:// URL (or empty for off)"
            )));
        }
        let nats = self.feed.nats.trim();
        if !(nats.is_empty() || nats.starts_with("nats://")) {
            return Err(ConfigError::Invalid(format!(
                "feed.nats {nats:?} is not a nats:// URL (or empty for off)"
            )));
        }
        if !self.sip.tls_listen.trim().is_empty()
            && self.sip.tls_listen.trim().parse::<SocketAddr>().is_err()
        {
            return Err(ConfigError::Invalid(format!(
                "sip.tls_listen {:?} is not an address:port (or empty for no TLS)",
                self.sip.tls_listen
            )));
        }
        for (name, t) in &self.trunks {
            if t.srtp != SrtpMode::Off && t.transport != TrunkTransport::Tls {
                return Err(ConfigError::Invalid(format!(
                    "trunks.{name}: srtp needs transport = \"tls\" (SDES keys travel only over TLS)"
                )));
            }
            if t.transport == TrunkTransport::Tls && t.ca.as_os_str().is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "trunks.{name}: transport = \"tls\" needs ca, the authorities its certificate must chain to"
                )));
            }
        }
        if self.tls.cert.as_os_str().is_empty() != self.tls.key.as_os_str().is_empty() {
            return Err(ConfigError::Invalid(
                "tls.cert and tls.key go together: set both or neither".into(),
            ));
        }
        if self.rtp.port_min == 0 || self.rtp.port_min > self.rtp.port_max {
            return Err(ConfigError::Invalid(format!(
                "rtp.port_min ({}) must be non-zero and not above rtp.port_max ({})",
                self.rtp.port_min, self.rtp.port_max
            )));
        }
        if (self.rtp.port_max - self.rtp.port_min) < 2 {
            return Err(ConfigError::Invalid(
                "rtp port range holds no even/odd port pair".into(),
            ));
        }
        if self.registrar.algorithms.is_empty()
            || self
                .registrar
                .algorithms
                .iter()
                .any(|a| a != "MD5" && a != "SHA-256")
        {
            return Err(ConfigError::Invalid(format!(
                "registrar.algorithms must list \"MD5\" and/or \"SHA-256\", not {:?}",
                self.registrar.algorithms
            )));
        }
        if let Some((name, _)) = self.http.tokens.iter().find(|(_, t)| t.len() < 12) {
            return Err(ConfigError::Invalid(format!(
                "http.tokens.{name} is shorter than 12 characters"
            )));
        }
        if self.registrar.max_contacts == 0 {
            return Err(ConfigError::Invalid(
                "registrar.max_contacts must be at least 1".into(),
            ));
        }
        let mut ids = std::collections::HashSet::new();
        let mut users = std::collections::HashSet::new();
        for seat in &self.seats {
            let bad = |why: String| Err(ConfigError::Invalid(format!("seat {}: {why}", seat.id)));
            if !ids.insert(&seat.id) {
                return bad("id used twice".into());
            }
            if seat.user.is_empty() || !users.insert(&seat.user) {
                return bad(format!("user {:?} empty or used twice", seat.user));
            }
            let hex = |h: &str, n: usize| h.len() == n && h.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex(&seat.ha1_md5, 32) || !hex(&seat.ha1_sha256, 64) {
                return bad("ha1_md5 must be 32 and ha1_sha256 64 hex digits (hotline passwd USER PASSWORD prints both)".into());
            }
            for q in &seat.queues {
                if !self.queues.contains_key(q) {
                    return bad(format!("queue {q:?} is not in [queues]"));
                }
            }
            for q in seat.penalties.keys() {
                if !seat.queues.contains(q) {
                    return bad(format!(
                        "penalty for queue {q:?}, which is not among the seat's queues"
                    ));
                }
            }
        }
        for (name, q) in &self.queues {
            if q.max_wait_s == 0 {
                return Err(ConfigError::Invalid(format!(
                    "queues.{name}.max_wait_s must be > 0"
                )));
            }
            for (key, v) in [
                ("on_timeout", &q.on_timeout),
                ("when_no_agents", &q.when_no_agents),
            ] {
                let ok = match v.split_once(':') {
                    Some(("queue", other)) => self.queues.contains_key(other) && other != name,
                    Some(("flow", f)) => !f.is_empty(),
                    None => v == "sorry" || (v == "wait" && key == "when_no_agents"),
                    _ => false,
                };
                if !ok {
                    return Err(ConfigError::Invalid(format!(
                        "queues.{name}.{key} = {v:?}: use \"sorry\", \"queue:<another queue>\" or \"flow:<flow>\"{}",
                        if key == "when_no_agents" {
                            " or \"wait\""
                        } else {
                            ""
                        }
                    )));
                }
            }
            if q.hold_prompt_every_s == 0 {
                return Err(ConfigError::Invalid(format!(
                    "queues.{name}.hold_prompt_every_s must be > 0"
                )));
            }
        }
        let mut numbers = std::collections::HashSet::new();
        for t in &self.targets {
            let bad = |why: String| {
                Err(ConfigError::Invalid(format!(
                    "target {} ({}): {why}",
                    t.number, t.name
                )))
            };
            if t.number.is_empty()
                || t.number.len() > 20
                || !t.number.bytes().all(|b| b.is_ascii_digit())
            {
                return bad("number must be 1 to 20 digits".into());
            }
            if !numbers.insert(&t.number) {
                return bad("number listed twice".into());
            }
            if t.timeout_s == 0 {
                return bad("timeout_s must be > 0".into());
            }
            match (t.kind, &t.trunk, &t.queue) {
                (TargetKind::Expert, _, Some(q)) if self.queues.contains_key(q) => {
                    // Every transfer to a group nobody can serve would be refused.
                    if !self.seats.iter().any(|s| s.queues.contains(q)) {
                        return bad(format!("no seat serves its queue {q:?}"));
                    }
                }
                (TargetKind::Expert, _, q) => {
                    return bad(format!(
                        "an expert target needs queue = one of [queues], not {q:?}"
                    ));
                }
                (_, Some(trunk), _) if self.trunks.contains_key(trunk) => {}
                (_, trunk, _) => {
                    return bad(format!("needs trunk = one of [trunks], not {trunk:?}"));
                }
            }
            if t.probe && t.kind == TargetKind::Expert {
                return bad(
                    "probes call lines over trunks; an expert queue can't be probed".into(),
                );
            }
        }
        for (name, t) in &self.trunks {
            if t.username.is_some() != t.password.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "trunks.{name}: username and password go together"
                )));
            }
        }
        if self.transfer.prefix.is_empty()
            || !self
                .transfer
                .prefix
                .bytes()
                .all(|b| b == b'*' || b.is_ascii_digit())
        {
            return Err(ConfigError::Invalid(format!(
                "transfer.prefix {:?}: use '*' and digits",
                self.transfer.prefix
            )));
        }
        if self.probes.enabled
            && (self.probes.attempts == 0
                || self.probes.every_s == 0
                || self.probes.ring_timeout_s == 0)
        {
            return Err(ConfigError::Invalid(
                "probes: attempts, every_s and ring_timeout_s must be > 0".into(),
            ));
        }
        if self.probes.enabled
            && u64::from(self.probes.attempts.saturating_sub(1)) * self.probes.spacing_s
                >= self.probes.every_s
        {
            return Err(ConfigError::Invalid(
                "probes: a round's attempts (attempts-1 × spacing_s) must fit within every_s"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_subject_tokens() {
        for ok in ["node-a", "hefei_1", "N7", &"x".repeat(32)] {
            assert!(valid_node_id(ok), "{ok}");
        }
        for bad in ["", "a.b", "a b", "a*", "a>", "节点", &"x".repeat(33)] {
            assert!(!valid_node_id(bad), "{bad}");
        }
        assert!(valid_node_id(&NodeConfig::default().id));
    }
}
