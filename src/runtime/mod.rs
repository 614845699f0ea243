//! The tokio layer: sockets, the media clock, timers, signals. Everything it receives goes
//! into the one [`Core`](crate::core::Core), which runs on a single task; this layer only
//! moves bytes and sleeps until the core's next deadline.

pub mod desk;
pub mod http;
pub mod memory;
pub mod notify;
pub mod outreach_api;
pub mod rtp;
pub mod tcp;
pub mod tls;
pub mod trunk_link;
pub mod ws;

use crate::config::Config;
use crate::core::{Core, RtpEvent};
use crate::ivr::dialplan::Dialplan;
use crate::media::prompts::PromptStore;
use crate::sip::{Peer, Transport};
use crate::stats::Stats;
use crate::time::WallClock;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, error, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot bind SIP UDP {addr}: {source}")]
    BindUdp {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind SIP TCP {addr}: {source}")]
    BindTcp {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind HTTP {addr}: {source}")]
    BindHttp {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind SIP TLS {addr}: {source}")]
    BindTls {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    TrunkLink(#[from] trunk_link::LinkError),
    #[error(transparent)]
    Store(crate::metrics::store::StoreError),
    #[error(transparent)]
    Ship(#[from] crate::metrics::postgres::ShipError),
    #[error(transparent)]
    Feed(#[from] crate::metrics::feed::FeedError),
}

const MEDIA_TICK_MS: u64 = 5;
/// An event-loop pass this long is logged (it delays every call's media).
const SLOW_ITERATION: Duration = Duration::from_millis(20);

/// What a stream connection (TCP or TLS) tells the core.
pub enum StreamEvent {
    /// A SIP message read from it.
    Message {
        transport: Transport,
        addr: std::net::SocketAddr,
        bytes: bytes::Bytes,
    },
    /// A link the daemon opened (to a trunk) is up.
    Up {
        transport: Transport,
        addr: std::net::SocketAddr,
    },
    /// It is closed: bindings made over it end.
    Closed {
        transport: Transport,
        addr: std::net::SocketAddr,
    },
}

/// The desk's view of the configuration: seats that may sign in, transfer targets, queue
/// labels.
fn desk_for<M: crate::core::MediaIo>(cfg: &Config, core: &Core<M>) -> desk::Desk {
    let seats = cfg
        .seats
        .iter()
        .map(|s| desk::DeskSeat {
            id: s.id.clone(),
            user: s.user.clone(),
            ha1_md5: s.ha1_md5.clone(),
        })
        .collect();
    let targets = cfg
        .targets
        .iter()
        .map(|t| {
            serde_json::json!({
                "number": t.number,
                "name": t.name,
                "kind": t.kind,
            })
        })
        .collect();
    desk::Desk::new(
        cfg.registrar.realm.clone(),
        seats,
        Duration::from_secs(cfg.http.desk_session_s.max(1)),
        targets,
        core.queue_labels(),
    )
}

/// Runs the daemon until SIGTERM/SIGINT and a graceful drain.
pub async fn run(
    cfg: Arc<Config>,
    plan: Arc<Dialplan>,
    prompts: Arc<PromptStore>,
    clock: WallClock,
) -> Result<(), RuntimeError> {
    let stats = Arc::new(Stats::default());
    let udp = UdpSocket::bind(cfg.sip.listen)
        .await
        .map_err(|source| RuntimeError::BindUdp {
            addr: cfg.sip.listen,
            source,
        })?;
    grow_buffers(&udp);
    let tcp = tokio::net::TcpListener::bind(cfg.sip.listen)
        .await
        .map_err(|source| RuntimeError::BindTcp {
            addr: cfg.sip.listen,
            source,
        })?;
    let http = std::net::TcpListener::bind(cfg.http.listen)
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
        .map_err(|source| RuntimeError::BindHttp {
            addr: cfg.http.listen,
            source,
        })?;
    info!(sip = %cfg.sip.listen, http = %cfg.http.listen, https = cfg.http.tls_listen, numbers = plan.numbers(), prompts = prompts.len(), "hotline listening (SIP over UDP and TCP)");

    let conns: tcp::Connections = Arc::new(DashMap::new());
    let (tcp_tx, mut tcp_rx) = mpsc::channel::<StreamEvent>(4096);
    // One certificate for SIP over TLS and HTTPS (the desk's wss://), re-read on SIGHUP.
    let http_certs = match cfg.https_listen() {
        Some(_) => Some(tls::Certificates::load(&cfg.tls)?),
        None => None,
    };
    let certs = match cfg.tls_listen() {
        Some(addr) => {
            let certs = match &http_certs {
                Some(c) => c.clone(),
                None => tls::Certificates::load(&cfg.tls)?,
            };
            let l = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|_| l))
                .map_err(|source| RuntimeError::BindTls { addr, source })?;
            info!(tls = %addr, cert = %cfg.tls.cert.display(), "SIP over TLS listening");
            tls::spawn(
                l,
                certs.clone(),
                Duration::from_millis(cfg.tls.handshake_timeout_ms),
                conns.clone(),
                tcp_tx.clone(),
                stats.clone(),
            )
            .map_err(|source| RuntimeError::BindTls { addr, source })?;
            Some(certs)
        }
        None => {
            if !cfg.sip.tls_listen.trim().is_empty() {
                info!("no [tls] certificate configured: SIP over TLS is off");
            }
            http_certs.clone()
        }
    };
    trunk_link::spawn(&cfg, conns.clone(), tcp_tx.clone(), stats.clone())?;
    let ws_tx = tcp_tx.clone();
    tokio::spawn(tcp::accept_loop(tcp, conns.clone(), tcp_tx));
    let (store, lost) =
        crate::metrics::store::Store::open(&cfg.store.path, &cfg.store.queue_log, &cfg.node.id)
            .map_err(RuntimeError::Store)?;
    stats
        .calls_lost
        .fetch_add(lost as u64, std::sync::atomic::Ordering::Relaxed);
    info!(path = %cfg.store.path.display(), node = %cfg.node.id, "call records go to the store");
    // Copies of the store, each on a thread of its own: dropped after the store (below), so
    // they deliver its last records before the daemon exits.
    let shipper = match cfg.store.postgres.trim() {
        "" => None,
        url => Some(crate::metrics::postgres::start(
            url,
            &cfg.store.path,
            &cfg.node.id,
            stats.clone(),
        )?),
    };
    let feed = match cfg.feed.nats.trim() {
        "" => None,
        url => Some(crate::metrics::feed::start(
            url,
            &cfg.store.path,
            &cfg.node.id,
            stats.clone(),
        )?),
    };
    let (rtp_tx, mut rtp_rx) = mpsc::unbounded_channel::<RtpEvent>();
    let rtp_io = rtp::RtpIo::new(&cfg, rtp_tx, stats.clone());
    let today = clock.today_shanghai().to_string();
    if !cfg.reports.folder.as_os_str().is_empty() {
        tokio::spawn(daily_reports(cfg.clone(), clock.clone()));
    }
    let mut core = Core::new(
        clock.now(),
        cfg.clone(),
        plan,
        prompts,
        stats.clone(),
        rtp_io,
        crate::entropy::Entropy::from_os(),
    );
    match crate::metrics::store::read_day(&cfg.store.path, &today) {
        Ok(records) => core.preload_figures(&records),
        Err(e) => warn!(error = %e, "today's figures start from zero"),
    }
    match crate::metrics::store::read_kind(&cfg.store.path, "revisit") {
        Ok(records) => core.preload_revisits(&records),
        Err(e) => warn!(error = %e, "revisit cases not restored from the store"),
    }
    if cfg.repeat_callers.enabled {
        // The calls of the whole window, yesterday's too when it reaches back there.
        let hours = i64::try_from(cfg.repeat_callers.window_h).unwrap_or(i64::MAX);
        let window = chrono::Duration::try_hours(hours).unwrap_or(chrono::Duration::MAX);
        let since = clock
            .now()
            .shanghai()
            .checked_sub_signed(window)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, false))
            .unwrap_or_default();
        match crate::metrics::store::read_kind_since(&cfg.store.path, "call_start", &since) {
            Ok(records) => core.preload_repeat(&records),
            Err(e) => warn!(error = %e, "repeat callers counted from zero"),
        }
    }
    match crate::metrics::store::read_kind(&cfg.store.path, "callback") {
        Ok(records) => core.preload_callbacks(clock.now(), &records),
        Err(e) => warn!(error = %e, "callbacks not restored from the store"),
    }
    core.start(clock.now());
    let (api_tx, mut api_rx) = mpsc::channel::<http::ApiCommand>(64);
    let (outreach_tx, mut outreach_rx) = mpsc::channel::<outreach_api::OutreachCommand>(64);
    http::spawn(
        http,
        stats.clone(),
        core.seat_directory(),
        core.queue_directory(),
        api_tx,
        cfg.http.tokens.clone(),
        http::Extras {
            desk: desk_for(&cfg, &core),
            sip: cfg.http.websocket.then(|| http::SipWs {
                conns: conns.clone(),
                to_core: ws_tx,
            }),
            https: match (cfg.https_listen(), http_certs) {
                (Some(addr), Some(c)) => Some(http::Https {
                    listener: std::net::TcpListener::bind(addr)
                        .and_then(|l| l.set_nonblocking(true).map(|_| l))
                        .map_err(|source| RuntimeError::BindHttp { addr, source })?,
                    certs: c,
                    handshake: Duration::from_millis(cfg.tls.handshake_timeout_ms),
                }),
                _ => None,
            },
            outreach: outreach_api::router(&cfg.http.tokens, outreach_tx),
        },
    );

    // The media clock ticks four times per frame: each stream's frames fall due at its own
    // phase (its call's start), so a finer tick spreads the sends over the 20 ms instead of
    // sending every call's packet in one burst, and no packet waits more than 5 ms.
    let mut ticker = tokio::time::interval(Duration::from_millis(MEDIA_TICK_MS));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut sigterm = signal(tokio::signal::unix::SignalKind::terminate());
    let mut sigint = signal(tokio::signal::unix::SignalKind::interrupt());
    let mut sighup = signal(tokio::signal::unix::SignalKind::hangup());
    let mut draining: Option<Instant> = None;
    let mut hung_up_all = false;
    let mut buf = vec![0u8; 65536];
    let mut alive_sent = std::time::Instant::now();
    let mut yielded = std::time::Instant::now();
    store.alive(clock.now().stamp());
    let far = Duration::from_secs(3600);
    let mut watchdog = notify::ready(&cfg);

    loop {
        let next = core
            .poll_timeout()
            .map(Instant::from_std)
            .unwrap_or_else(|| Instant::now() + far);
        let woke;
        let branch: &str;
        tokio::select! {
            r = udp.recv_from(&mut buf) => {
                let now = clock.now();
                (woke, branch) = (now.mono, "sip");
                match r {
                    Ok((n, addr)) => core.handle_datagram(now, &buf[..n], Peer { transport: Transport::Udp, addr }),
                    Err(e) => warn!(error = %e, "SIP UDP receive failed"),
                }
                // Drain what else is queued before sending, so a burst costs one wake-up.
                for _ in 0..64 {
                    match udp.try_recv_from(&mut buf) {
                        Ok((n, addr)) => core.handle_datagram(now, &buf[..n], Peer { transport: Transport::Udp, addr }),
                        Err(_) => break,
                    }
                }
            }
            Some(ev) = tcp_rx.recv() => {
                (woke, branch) = (std::time::Instant::now(), "stream");
                match ev {
                    StreamEvent::Message { transport, addr, bytes } => core.handle_datagram(clock.now(), &bytes, Peer { transport, addr }),
                    StreamEvent::Up { transport, addr } => core.connection_up(Peer { transport, addr }),
                    StreamEvent::Closed { transport, addr } => core.connection_closed(clock.now(), Peer { transport, addr }),
                }
            }
            _ = recv_signal(&mut sighup) => {
                (woke, branch) = (std::time::Instant::now(), "signal");
                match certs.as_ref().map(|c| c.reload()) {
                    Some(Ok(())) => info!(cert = %cfg.tls.cert.display(), "SIGHUP: TLS certificate and key re-read; new connections use them"),
                    Some(Err(e)) => error!(error = %e, "SIGHUP: TLS certificate not re-read; the old one stays in use"),
                    None => info!("SIGHUP: nothing to re-read (no TLS certificate configured)"),
                }
            }
            Some(ev) = rtp_rx.recv() => {
                (woke, branch) = (std::time::Instant::now(), "rtp event");
                core.handle_rtp_event(clock.now(), ev)
            }
            Some(cmd) = api_rx.recv() => {
                let now = clock.now();
                (woke, branch) = (now.mono, "api");
                let r = match cmd.action {
                    http::ApiAction::State(action) => core.agent_action_by_id(now, &cmd.seat, action, &cmd.by).map(|state| serde_json::json!({ "state": state })),
                    http::ApiAction::Transfer { number, emergency } => core.transfer_by_id(now, &cmd.seat, &number, emergency, &cmd.by),
                };
                let _ = cmd.reply.send(r);
            }
            Some(cmd) = outreach_rx.recv() => {
                let now = clock.now();
                (woke, branch) = (now.mono, "api");
                outreach(&mut core, now, cmd);
            }
            at = ticker.tick() => {
                let now = clock.now();
                (woke, branch) = (now.mono, "media tick");
                // How late the media clock ticks: the event loop's lag, for overload control.
                core.loop_lag(now, now.mono.saturating_duration_since(at.into_std()));
                core.tick_media(now);
            }
            _ = tokio::time::sleep_until(next) => {
                (woke, branch) = (std::time::Instant::now(), "timers");
                core.handle_timeout(clock.now())
            }
            _ = recv_signal(&mut sigterm), if draining.is_none() => {
                (woke, branch) = (std::time::Instant::now(), "signal");
                info!(calls = core.active_calls(), grace_s = cfg.sip.shutdown_grace_s, "SIGTERM: refusing new calls, draining");
                core.begin_shutdown();
                stats.draining.store(1, std::sync::atomic::Ordering::Relaxed);
                draining = Some(Instant::now() + Duration::from_secs(cfg.sip.shutdown_grace_s));
            }
            _ = recv_signal(&mut sigint), if draining.is_none() => {
                (woke, branch) = (std::time::Instant::now(), "signal");
                info!(calls = core.active_calls(), "SIGINT: refusing new calls, draining");
                core.begin_shutdown();
                stats.draining.store(1, std::sync::atomic::Ordering::Relaxed);
                draining = Some(Instant::now() + Duration::from_secs(cfg.sip.shutdown_grace_s));
            }
        }
        let now = clock.now();
        watchdog.tick(now.mono);
        if core.poll_timeout().is_some_and(|t| t <= now.mono) {
            core.handle_timeout(now);
        }
        while let Some(r) = core.poll_record() {
            store.record(r);
        }
        // The store's heartbeat: after a crash, calls still open are closed at this time.
        if now.mono.saturating_duration_since(alive_sent) >= Duration::from_secs(1) {
            alive_sent = now.mono;
            store.alive(now.stamp());
        }
        while let Some(t) = core.poll_transmit() {
            match t.peer.transport {
                Transport::Udp => {
                    // Never wait on a full socket: that would stall the media clock of every
                    // call. A dropped message is recovered by SIP retransmission.
                    if let Err(e) = udp.try_send_to(&t.bytes, t.peer.addr) {
                        Stats::inc(&stats.sip_send_errors);
                        debug!(error = %e, to = %t.peer.addr, "SIP UDP send failed");
                    }
                }
                Transport::Tcp(id) | Transport::Tls(id) | Transport::Ws(id) => {
                    if let Some(c) = conns.get(&id) {
                        let _ = c.send(t.bytes);
                    }
                }
            }
        }
        let took = std::time::Instant::now().saturating_duration_since(woke);
        if took >= SLOW_ITERATION {
            warn!(branch, ms = took.as_millis() as u64, "slow event-loop pass");
        }
        // Real-time scheduling gives the other threads of the same priority (HTTP for
        // /healthz, the store) the core only when this one yields: every millisecond at least.
        if now.mono.saturating_duration_since(yielded) >= Duration::from_millis(1) {
            std::thread::yield_now();
            yielded = std::time::Instant::now();
        }
        if let Some(deadline) = draining {
            if core.active_calls() == 0 {
                info!("all calls ended; exiting");
                break;
            }
            if Instant::now() >= deadline && !hung_up_all {
                info!(
                    calls = core.active_calls(),
                    "grace period over; hanging up the remaining calls"
                );
                core.hangup_all(clock.now());
                hung_up_all = true;
                draining = Some(Instant::now() + Duration::from_secs(5));
            } else if Instant::now() >= deadline {
                warn!(
                    calls = core.active_calls(),
                    "BYEs unanswered; exiting anyway"
                );
                core.close_all(clock.now());
                break;
            }
        }
    }
    while let Some(r) = core.poll_record() {
        store.record(r);
    }
    drop(store); // flushes
    drop(shipper);
    drop(feed);
    core.media_io().finish(); // recordings closed as valid WAV
    Ok(())
}

/// Carries out a revisit or caller-number request of the API.
fn outreach<M: crate::core::MediaIo>(
    core: &mut Core<M>,
    now: crate::time::Now,
    cmd: outreach_api::OutreachCommand,
) {
    use outreach_api::OutreachCommand as C;
    match cmd {
        C::Revisits { cases, reply } => {
            let _ = reply.send(core.accept_revisits(now, cases));
        }
        C::Revisit { case, reply } => {
            let _ = reply.send(core.revisit_view(&case));
        }
        C::Calls { reply } => {
            let _ = reply.send(core.call_views());
        }
        C::Number { call_id, by, reply } => {
            let _ = reply.send(core.read_number(now, &call_id, &by));
        }
    }
}

/// After each midnight (Asia/Shanghai, on the daemon's wall clock) the day before's report is
/// written to `reports.folder/<day>/`, off the call-control thread.
async fn daily_reports(cfg: Arc<Config>, clock: WallClock) {
    loop {
        let now = clock.now_utc().with_timezone(&crate::time::shanghai());
        let today = now.date_naive();
        // A few seconds past midnight, so the day's last records are in the store.
        let at = (today + chrono::Days::new(1))
            .and_hms_opt(0, 0, 3)
            .and_then(|t| t.and_local_timezone(crate::time::shanghai()).single());
        let Some(at) = at else { return };
        let wait = (at - now).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        let cfg = cfg.clone();
        let written = tokio::task::spawn_blocking(move || {
            let rules = crate::metrics::report::load_rules(&cfg.reports.rules)?;
            let exemptions = crate::metrics::report::load_exemptions(&cfg.reports.exemptions)?;
            let day = today.to_string();
            let report = crate::metrics::report::from_store(
                &cfg.store.path,
                &day,
                &[today],
                &cfg.seat_units(),
                &rules,
                &exemptions,
            )?;
            let dir = cfg.reports.folder.join(&day);
            report.write(&dir)?;
            Ok::<_, crate::metrics::report::ReportError>(dir)
        })
        .await;
        match written {
            Ok(Ok(dir)) => info!(dir = %dir.display(), "daily report written"),
            Ok(Err(e)) => warn!(error = %e, "daily report not written"),
            Err(e) => warn!(error = %e, "daily report task failed"),
        }
    }
}

/// The SIP socket's kernel buffers: 8 MiB each way. The default (about 200 KiB, some 90
/// datagrams) overflows in a few milliseconds of a surge, and every datagram the kernel drops
/// comes back as a retransmission. With CAP_NET_ADMIN (root) the size is forced past
/// `net.core.rmem_max`/`wmem_max`; without, it is capped there (raise them with sysctl; the
/// Debian package does).
fn grow_buffers(udp: &UdpSocket) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    const SIZE: usize = 8 << 20;
    if setsockopt(udp, sockopt::RcvBufForce, &SIZE).is_err() {
        let _ = setsockopt(udp, sockopt::RcvBuf, &SIZE);
    }
    if setsockopt(udp, sockopt::SndBufForce, &SIZE).is_err() {
        let _ = setsockopt(udp, sockopt::SndBuf, &SIZE);
    }
    let rcv = getsockopt(udp, sockopt::RcvBuf).unwrap_or(0);
    let snd = getsockopt(udp, sockopt::SndBuf).unwrap_or(0);
    if rcv < SIZE {
        warn!(
            receive_buffer = rcv,
            "the SIP socket's receive buffer is small: a surge overflows it (raise net.core.rmem_max)"
        );
    }
    debug!(
        receive_buffer = rcv,
        send_buffer = snd,
        "SIP socket buffers"
    );
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            error!(error = %e, "cannot install signal handler");
            None
        }
    }
}

async fn recv_signal(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
