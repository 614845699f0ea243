//! Configuration: a TOML file plus `HOTLINE__SECTION__KEY` environment overrides, parsed into
//! typed structs at the edge so the rest of the daemon never sees an unchecked value.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration {path}: {source}")]
    Load { path: String, source: config::ConfigError },
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Address for both UDP and TCP.
    pub listen: SocketAddr,
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
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080) }
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
}

impl Default for RtpConfig {
    fn default() -> Self {
        RtpConfig {
            port_min: 20000,
            port_max: 29999,
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            public_ip: None,
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
        PathsConfig { prompts: PathBuf::from("../prompts"), dialplans: PathBuf::from("../dialplans") }
    }
}

/// A queue before the ACD exists: hold music with a periodic "please hold", then a sorry prompt.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    pub max_wait_s: u64,
    pub hold_music: String,
    pub hold_prompt: String,
    pub hold_prompt_every_s: u64,
    pub sorry_prompt: String,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_wait_s: 120,
            hold_music: "hold-music".into(),
            hold_prompt: "please-hold".into(),
            hold_prompt_every_s: 30,
            sorry_prompt: "sorry-busy".into(),
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
        LogConfig { level: "info".into() }
    }
}

impl Config {
    /// Loads `path` (which must exist) and applies `HOTLINE__…` environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml).required(true))
            .add_source(
                config::Environment::with_prefix("HOTLINE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|source| ConfigError::Load { path: shown.clone(), source })?;
        let mut cfg: Config =
            raw.try_deserialize().map_err(|source| ConfigError::Load { path: shown, source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.paths.prompts = base.join(&cfg.paths.prompts);
        cfg.paths.dialplans = base.join(&cfg.paths.dialplans);
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.rtp.port_min == 0 || self.rtp.port_min > self.rtp.port_max {
            return Err(ConfigError::Invalid(format!(
                "rtp.port_min ({}) must be non-zero and not above rtp.port_max ({})",
                self.rtp.port_min, self.rtp.port_max
            )));
        }
        if (self.rtp.port_max - self.rtp.port_min) < 2 {
            return Err(ConfigError::Invalid("rtp port range holds no even/odd port pair".into()));
        }
        for (name, q) in &self.queues {
            if q.max_wait_s == 0 {
                return Err(ConfigError::Invalid(format!("queues.{name}.max_wait_s must be > 0")));
            }
            if q.hold_prompt_every_s == 0 {
                return Err(ConfigError::Invalid(format!(
                    "queues.{name}.hold_prompt_every_s must be > 0"
                )));
            }
        }
        Ok(())
    }
}
