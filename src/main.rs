//! `hotline run` starts the daemon; `hotline check` validates configuration, dialplans and
//! prompts and prints every problem with its file and reason. `hotline man DIR` and
//! `hotline completions SHELL` (hidden) generate the man pages and shell completions from this
//! CLI for the Debian package (`scripts/package`).

use clap::{CommandFactory, Parser, Subcommand};
use hotline::config::Config;
use hotline::ivr::dialplan;
use hotline::media::prompts::PromptStore;
use hotline::time::WallClock;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "hotline", version, about = "12345 hotline SIP/RTP daemon")]
struct Cli {
    /// Configuration file [default: config/hotline.toml, or else the Debian package's
    /// /etc/hotline/hotline.toml].
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run,
    /// Validate configuration, dialplans and prompts; non-zero exit on any problem. Prints the
    /// province profile the lists are read for.
    Check {
        /// How a call to this number is routed and why: mode, name, unit, window dates,
        /// queue or target.
        #[arg(long, value_name = "NUMBER")]
        explain: Option<String>,
    },
    /// Per-seat and per-queue figures of one day, rebuilt from the durable store.
    Figures {
        /// YYYY-MM-DD (Asia/Shanghai); default today.
        #[arg(long)]
        day: Option<String>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// A day's or a month's report: seats, queues, units with their scores, indicators.
    Report {
        /// YYYY-MM-DD (Asia/Shanghai).
        #[arg(long, conflicts_with = "month")]
        day: Option<String>,
        /// YYYY-MM.
        #[arg(long)]
        month: Option<String>,
        /// Also write seats.csv, queues.csv, units.csv and indicators.csv into this folder.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// The assessment rules (default: reports.rules of the config).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Read the events of every node from this PostgreSQL (postgres://…, where the nodes'
        /// store.postgres ship them) instead of this node's store.
        #[arg(long, value_name = "URL")]
        from_postgres: Option<String>,
    },
    /// Print the ha1_md5 and ha1_sha256 lines for a seat's credentials.
    Passwd {
        user: String,
        password: String,
        /// Digest realm (registrar.realm).
        #[arg(long, default_value = "hotline")]
        realm: String,
    },
    /// Write the man pages (hotline.1 and one per subcommand) into DIR.
    #[command(hide = true)]
    Man { dir: PathBuf },
    /// Print the completion script for SHELL.
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
}

/// `config/hotline.toml` in a source tree; where it is missing and the Debian package's
/// configuration exists, that one (so `hotline report` works without --config on a server).
fn default_config() -> PathBuf {
    let local = PathBuf::from("config/hotline.toml");
    let packaged = PathBuf::from("/etc/hotline/hotline.toml");
    if !local.exists() && packaged.exists() {
        packaged
    } else {
        local
    }
}

/// The man page's sections after the generated ones: where the Debian package puts things.
const MAN_FILES: &str = r#".SH FILES
.TP
\fI/etc/hotline/hotline.toml\fR
The configuration of the Debian package (a conffile: an upgrade keeps local changes). Relative
paths in it are taken from its folder.
.TP
\fI/etc/hotline/dialplans/\fR, \fI/etc/hotline/scoring.toml\fR
Dial plans and the assessment rules of \fBhotline report\fR.
.TP
\fI/usr/share/hotline/prompts/\fR
The shipped voice prompts.
.TP
\fI/var/lib/hotline/\fR
The call store (hotline.sqlite), queue_log, recordings/ and reports/, owned by the user hotline.
.SH ENVIRONMENT
.TP
\fBHOTLINE__\fISECTION\fB__\fIKEY\fR
Overrides a configuration key, e.g. HOTLINE__SIP__LISTEN=127.0.0.1:15060.
.TP
\fBRUST_LOG\fR
A tracing filter that wins over log.level.
.TP
\fBHOTLINE_NOW\fR
An RFC 3339 time the wall clock starts at (drills of calendar rules).
.SH SEE ALSO
\fBsystemctl\fR(1), \fBjournalctl\fR(1); the unit hotline.service.
"#;

/// hotline.1 (the generated sections, then [`MAN_FILES`]) and a page per visible subcommand.
fn man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    // No page for `help`; built, each subcommand is named hotline-<sub> (its page's file name)
    // and shown as `hotline <sub>` in its synopsis.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let source = format!("hotline {}", env!("CARGO_PKG_VERSION"));
    let page = |c: &clap::Command| {
        clap_mangen::Man::new(c.clone())
            .source(source.clone())
            .manual("12345 hotline")
    };
    std::fs::create_dir_all(dir)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page(sub).generate_to(dir)?;
    }
    let man = page(&cmd);
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    page.extend_from_slice(MAN_FILES.as_bytes());
    man.render_version_section(&mut page)?;
    // Each render_* call starts with the same two-line preamble: keep the first.
    let text = String::from_utf8_lossy(&page);
    let mut lines: Vec<&str> = text.lines().collect();
    let preamble = lines[..2].to_vec();
    let mut i = 2;
    while i + 1 < lines.len() {
        if lines[i..i + 2] == preamble[..] {
            lines.drain(i..i + 2);
        } else {
            i += 1;
        }
    }
    std::fs::write(dir.join("hotline.1"), lines.join("\n") + "\n")
}

/// Hands the heap's free pages back to the system (see `hotline::runtime::memory`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim takes no pointers; it only walks glibc's own arenas, under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn main() -> ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    hotline::runtime::memory::set_trim(trim_heap);
    let cli = Cli::parse();
    if let Command::Passwd {
        user,
        password,
        realm,
    } = &cli.command
    {
        use hotline::sip::digest::{Algorithm, ha1};
        println!(
            "ha1_md5 = \"{}\"",
            ha1(Algorithm::Md5, user, realm, password)
        );
        println!(
            "ha1_sha256 = \"{}\"",
            ha1(Algorithm::Sha256, user, realm, password)
        );
        return ExitCode::SUCCESS;
    }
    match &cli.command {
        Command::Man { dir } => {
            return match man_pages(dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {}: {e}", dir.display());
                    ExitCode::from(2)
                }
            };
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "hotline",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let config = cli.config.clone().unwrap_or_else(default_config);
    let cfg = match Config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Check { explain } => check(&cfg, explain.as_deref()),
        Command::Run => run(cfg),
        Command::Figures { day, json } => figures(&cfg, day, json),
        Command::Report {
            day,
            month,
            csv,
            rules,
            from_postgres,
        } => {
            let rules = rules.unwrap_or_else(|| cfg.reports.rules.clone());
            report(&cfg, day, month, csv, &rules, from_postgres.as_deref())
        }
        Command::Passwd { .. } | Command::Man { .. } | Command::Completions { .. } => {
            ExitCode::SUCCESS
        }
    }
}

fn report(
    cfg: &Config,
    day: Option<String>,
    month: Option<String>,
    csv: Option<PathBuf>,
    rules: &std::path::Path,
    from_postgres: Option<&str>,
) -> ExitCode {
    use hotline::metrics::report;
    let fail = |msg: String| {
        eprintln!("error: {msg}");
        ExitCode::from(2)
    };
    let rules = match report::load_rules(rules) {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    let days: Vec<chrono::NaiveDate> = match (&day, &month) {
        (Some(d), None) => match chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d") {
            Ok(d) => vec![d],
            Err(_) => return fail(format!("--day {d:?} is not YYYY-MM-DD")),
        },
        (None, Some(m)) => {
            match chrono::NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d") {
                Ok(first) => first
                    .iter_days()
                    .take_while(|d| d.format("%Y-%m").to_string() == *m)
                    .collect(),
                Err(_) => return fail(format!("--month {m:?} is not YYYY-MM")),
            }
        }
        _ => return fail("give --day YYYY-MM-DD or --month YYYY-MM".into()),
    };
    let period = day.or(month).unwrap_or_default();
    let exemptions = match report::load_exemptions(&cfg.reports.exemptions) {
        Ok(e) => e,
        Err(e) => return fail(e.to_string()),
    };
    let r = if let Some(url) = from_postgres {
        // Every node's events, folded into the same report as one node's.
        let mut records = Vec::new();
        for d in &days {
            match hotline::metrics::postgres::read_day(url, &d.to_string()) {
                Ok(r) => records.extend(r),
                Err(e) => return fail(e.to_string()),
            }
        }
        report::build(&period, &records, &cfg.seat_units(), &rules, &exemptions)
    } else {
        if !cfg.store.path.exists() {
            return fail(format!(
                "no store at {} (the daemon writes it)",
                cfg.store.path.display()
            ));
        }
        match report::from_store(
            &cfg.store.path,
            &period,
            &days,
            &cfg.seat_units(),
            &rules,
            &exemptions,
        ) {
            Ok(r) => r,
            Err(e) => return fail(e.to_string()),
        }
    };
    print!("{}", r.text());
    if let Some(dir) = csv {
        if let Err(e) = r.write(&dir) {
            return fail(e.to_string());
        }
        println!("\nreport.txt and CSV written to {}", dir.display());
    }
    ExitCode::SUCCESS
}

fn figures(cfg: &Config, day: Option<String>, json: bool) -> ExitCode {
    let day = day.unwrap_or_else(|| {
        WallClock::from_env()
            .unwrap_or_else(|_| WallClock::real())
            .today_shanghai()
            .to_string()
    });
    if chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d").is_err() {
        eprintln!("error: --day {day:?} is not YYYY-MM-DD");
        return ExitCode::from(2);
    }
    if !cfg.store.path.exists() {
        eprintln!(
            "error: no store at {} (the daemon writes it)",
            cfg.store.path.display()
        );
        return ExitCode::from(2);
    }
    let records = match hotline::metrics::store::read_day(&cfg.store.path, &day) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut f = hotline::metrics::figures::Figures {
        day: day.clone(),
        ..Default::default()
    };
    for r in &records {
        f.apply(r);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&f).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    println!("{day}: {} events", records.len());
    println!(
        "\nseat        offered answered missed rejected failed withdrawn answer_rate avg_answer_s talk_s wrap_s"
    );
    for (id, s) in &f.seats {
        let avg = if s.answered == 0 {
            0.0
        } else {
            s.answer_time_s / s.answered as f64
        };
        println!(
            "{id:<11} {:>7} {:>8} {:>6} {:>8} {:>6} {:>9} {:>10.1}% {:>12.1} {:>6.0} {:>6.0}",
            s.offered,
            s.answered,
            s.missed,
            s.rejected,
            s.failed,
            s.withdrawn,
            s.answer_rate * 100.0,
            avg,
            s.talk_time_s,
            s.wrap_up_time_s
        );
    }
    println!(
        "\nqueue         offered answered abandoned short timeout no_agents sl15 sl30 asa_s aht_s longest_s"
    );
    for (name, q) in &f.queues {
        println!(
            "{name:<13} {:>7} {:>8} {:>9} {:>5} {:>7} {:>9} {:>3.0}% {:>3.0}% {:>5.1} {:>5.1} {:>9.1}",
            q.offered,
            q.answered,
            q.abandoned,
            q.short_abandoned,
            q.timed_out,
            q.no_agents,
            q.service_level_15s * 100.0,
            q.service_level_30s * 100.0,
            q.asa_s,
            q.aht_s,
            q.longest_wait_s
        );
    }
    if f.queues.values().any(|q| q.callbacks_requested > 0) {
        println!("\ncallbacks     requested answered failed");
        for (name, q) in f.queues.iter().filter(|(_, q)| q.callbacks_requested > 0) {
            println!(
                "{name:<13} {:>9} {:>8} {:>6}",
                q.callbacks_requested, q.callbacks_answered, q.callbacks_failed
            );
        }
    }
    let r = &f.repeat_callers;
    println!(
        "\nrepeat callers: {} repeat calls, {} reminded, {} sent to the designated queue",
        r.calls, r.reminded, r.designated
    );
    for (unit, s) in &f.revisits {
        println!(
            "revisit ratings {unit}: {} 满意, {} 基本满意, {} 不满意, {} no answer",
            s.satisfied, s.basically_satisfied, s.dissatisfied, s.no_answer
        );
    }
    ExitCode::SUCCESS
}

/// Loads prompts and dialplans; the problems found, each as one line.
fn load(
    cfg: &Config,
) -> (
    Option<(Arc<PromptStore>, Arc<dialplan::Dialplan>)>,
    Vec<String>,
) {
    let mut problems = Vec::new();
    let prompts = match PromptStore::load_dir(&cfg.paths.prompts) {
        Ok((store, bad)) => {
            problems.extend(bad.iter().map(|e| e.to_string()));
            store
        }
        Err(e) => {
            problems.push(e.to_string());
            return (None, problems);
        }
    };
    match dialplan::load(&cfg.paths.dialplans, &prompts, cfg) {
        Ok(plan) if problems.is_empty() => (Some((Arc::new(prompts), Arc::new(plan))), problems),
        Ok(_) => (None, problems),
        Err(ps) => {
            problems.extend(ps.iter().map(|p| p.to_string()));
            (None, problems)
        }
    }
}

fn check(cfg: &Config, explain: Option<&str>) -> ExitCode {
    let clock = match WallClock::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let (loaded, mut problems) = load(cfg);
    if let Err(e) = hotline::metrics::report::load_rules(&cfg.reports.rules) {
        problems.push(e.to_string());
    }
    let tls = hotline::runtime::tls::check(cfg, std::time::SystemTime::now());
    problems.extend(tls.errors);
    problems.extend(hotline::runtime::trunk_link::check(cfg));
    if let Err(e) = hotline::metrics::report::load_exemptions(&cfg.reports.exemptions) {
        problems.push(e.to_string());
    }
    for p in &problems {
        println!("error: {p}");
    }
    for w in demo_credentials(cfg).into_iter().chain(tls.warnings) {
        println!("warning: {w}");
    }
    if let Some((_, plan)) = &loaded {
        for w in &plan.warnings {
            println!("warning: {w}");
        }
    }
    if let Some(addr) = cfg.tls_listen() {
        println!(
            "tls: SIP over TLS on {addr} with {}",
            cfg.tls.cert.display()
        );
    }
    match loaded {
        Some((prompts, plan)) if problems.is_empty() => {
            if let Some(number) = explain {
                let mut cfg = cfg.clone();
                plan.fill_target_units(&mut cfg.targets);
                return match plan.explain(number, clock.today_shanghai(), &cfg) {
                    Some(text) => {
                        println!("{text}");
                        ExitCode::SUCCESS
                    }
                    None => {
                        println!(
                            "{number}: not routed in the {} profile and not a transfer target: a call to it gets 404",
                            plan.province
                        );
                        ExitCode::from(1)
                    }
                };
            }
            println!(
                "profile: {} ({} whole-merge, {} dual-number of which {} with retained seats, {} sub-centres listed); dialplan.province in the configuration",
                plan.province,
                plan.merged.len(),
                plan.dual.len(),
                plan.dual
                    .iter()
                    .filter(|d| d.seats == dialplan::Seats::Retained)
                    .count(),
                plan.subcentres.len()
            );
            println!(
                "ok: {} numbers ({} retired whole-merge, {} dual-number), {} flows, {} queues, {} prompts ({} KiB encoded)",
                plan.numbers(),
                plan.merged.len(),
                plan.dual.len(),
                plan.flows.len(),
                plan.queues.len(),
                prompts.len(),
                prompts.total_bytes() / 1024
            );
            ExitCode::SUCCESS
        }
        _ => {
            println!("{} problem(s)", problems.len());
            ExitCode::from(1)
        }
    }
}

/// The shipped demo seats use the password `demo-<user>`; say so wherever it is still in use.
fn demo_credentials(cfg: &Config) -> Vec<String> {
    use hotline::sip::digest::{Algorithm, ha1};
    cfg.seats
        .iter()
        .filter(|s| s.ha1_md5 == ha1(Algorithm::Md5, &s.user, &cfg.registrar.realm, &format!("demo-{}", s.user)))
        .map(|s| format!("seat {} uses the demo password from the README; set real credentials with `hotline passwd`", s.id))
        .chain(
            cfg.http
                .tokens
                .iter()
                .filter(|(_, t)| t.starts_with("demo-"))
                .map(|(name, _)| format!("http.tokens.{name} is the demo token from the README; set a secret one")),
        )
        .collect()
}

fn run(cfg: Config) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    // The DTLS crate logs every TLS extension it does not know from a browser's hello as a
    // warning; its errors still show.
    let filter = match "dtls=error".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let clock = match WallClock::from_env() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let (loaded, problems) = load(&cfg);
    let mut cfg = cfg;
    let Some((prompts, plan)) = loaded else {
        for p in problems {
            tracing::error!("{p}");
        }
        tracing::error!("refusing to start; `hotline check` lists the problems");
        return ExitCode::from(2);
    };
    tracing::info!(today = %clock.today_shanghai(), province = %plan.province, "calendar date (Asia/Shanghai) for transition windows; province profile");
    plan.fill_target_units(&mut cfg.targets);
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    for w in demo_credentials(&cfg) {
        tracing::warn!("{w}");
    }
    // One thread: call control, media clock, sockets and reactor share it, so no wake-up crosses
    // threads (measured: with the multi-thread runtime, context switches cost more than RTP).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(hotline::runtime::run(Arc::new(cfg), plan, prompts, clock)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}
