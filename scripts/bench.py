#!/usr/bin/env python3
"""Benchmark: SIPp against the release daemon on loopback, daemon and SIPp pinned to separate
cores. Prints figures; asserts nothing (speed is measured, not tested).

  scripts/bench.py                 # both workloads
  scripts/bench.py --only prompt   # concurrent calls holding a prompt
  scripts/bench.py --only rate     # short IVR calls per second
  scripts/bench.py --only bridge   # caller-seat calls bridged through the daemon
  scripts/bench.py --only dispatch # how fast a seat turning free is offered the next caller
  scripts/bench.py --only threeway # three-way calls (caller, seat, sub-centre) mixed by the daemon
  scripts/bench.py --only overload # 2x and 4x the capacity offered: shedding, goodput, health
  scripts/bench.py --only crash    # kill -9 with 500 calls up, restart: every call closed
  scripts/bench.py --only loss     # 20 % of SIP datagrams lost each way (network namespace)
  scripts/bench.py --only srtp     # prompt calls over TLS with SRTP beside the same in plain RTP
  scripts/bench.py --only browser  # bridged calls to browser seats (WebRTC) beside plain RTP seats
  scripts/bench.py --bins OLD,NEW  # the same workloads against each daemon binary, in one run

Workloads
- prompt: N calls to 12345 each hearing the welcome and menu prompts (~23 s of speech);
  in the steady window an RTP sink measures every stream's packet gaps. Reported per N:
  failed calls, RTP packets/s, max and p99.9 gap, daemon CPU, RSS per call, SIPp CPU.
- rate: short IVR calls (answer, 1 s of prompt, BYE) for 10 s at R calls/s; the highest R with
  zero failed calls is the figure.
- bridge: N seats (generated, digest-registered, logged in) answered by one SIPp UAS that
  echoes RTP; N callers to 12333 queue after the greeting and are bridged; the RTP sink speaks
  for every caller, so audio goes caller -> daemon -> seat -> daemon -> caller. Reported per N:
  bridged calls, relayed packets/s, gaps of the echoed streams, daemon CPU and RSS, CPU of
  the two SIPp processes and the sink.
- dispatch: 50 seats in a Python seat pool that answer at once, talk 1 s and hang up; callers
  arrive faster than the seats serve them, so a queue waits; the pool measures the time from
  each seat's BYE to the next INVITE it gets (wrap-up 0): p50 / p99.
- threeway: as bridge, then every seat asks for a three-way transfer to 12366 through the
  API (POST /api/seats/<id>/transfer); one SIPp UAS on the shipped sub-centre trunk
  (127.0.0.1:5070) answers and echoes RTP. In the steady window every conference mixes three
  members (caller from the sink, seat and sub-centre echoing). Reported per N: conferences
  held, mixed packets/s, gaps of what the callers hear, daemon CPU and RSS, CPU of the three
  SIPp processes and the sink.
- overload: --capacity calls/s (the rate workload's figure) offered at 2x and 4x for 20 s
  (1 s calls; a shed caller gets 503 and ACKs it). Before the surge 200 calls hold a prompt
  and the RTP sink measures their gaps during it. /healthz is polled every 100 ms. Reported
  per factor: goodput (calls served per second, and as a share of capacity), shed, failed
  (time-outs), SIPp's retransmissions, the health poll latencies, how long SIPp ran past its
  last call, the pre-surge calls' gaps, daemon CPU, SIPp CPU.
- crash: 250 callers in the 12345 menu and 250 waiting in line-12333 (no seat at work), then
  kill -9 and a restart on the same store: calls closed as lost, and the queue's lost count,
  against what SIPp placed.
- browser: as bridge with N seats, once with SIPp seat phones (plain RTP) and once with browser
  seats from examples/webrtc_seats (SIP over WebSocket, ICE, DTLS-SRTP handshake per call, SRTP
  echo), each on a fresh daemon: the daemon's CPU per call for each kind, beside the load tool's.
- loss: in a network namespace of its own (nftables, 20 % of SIP datagrams dropped each way),
  N calls to 12345; every call must complete through retransmission.
Every run is bounded by SIPp's -m (call count) and -timeout, and by our own timeouts.
"""
import argparse, json, os, re, resource, signal, subprocess, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seatpool  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIP_PORT, HTTP_PORT, SINK_PORT, SEAT_PORT = 25060, 28080, 47000, 27070
DAEMON_CORE, LOAD_CORE = "0", "1"
CLK = os.sysconf("SC_CLK_TCK")
# The daemon runs with real-time scheduling, as a media server is deployed (systemd
# CPUSchedulingPolicy=fifo; FreeSWITCH -rp, Asterisk -p): on loopback the kernel's packet
# work (ksoftirqd) otherwise preempts it for tens of ms. BENCH_DAEMON_PREFIX="" measures without.
PREFIX = os.environ.get("BENCH_DAEMON_PREFIX", "chrt -f 10").split()
# The daemon binary measured (--bins runs several in turn).
DAEMON_BIN = f"{ROOT}/target/release/hotline"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / CLK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def health():
    """/healthz as JSON, whatever its status (503 while overloaded or draining)."""
    import urllib.request, urllib.error
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/healthz", timeout=2) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)


def start_daemon(config=None, extra_env=None, keep_store=False):
    config = config or f"{ROOT}/config/hotline.toml"
    env = dict(os.environ,
               HOTLINE__PATHS__PROMPTS=f"{ROOT}/prompts", HOTLINE__PATHS__DIALPLANS=f"{ROOT}/dialplans",
               HOTLINE__SIP__LISTEN=f"127.0.0.1:{SIP_PORT}", HOTLINE__HTTP__LISTEN=f"127.0.0.1:{HTTP_PORT}",
               HOTLINE__RTP__PORT_MIN="10000", HOTLINE__RTP__PORT_MAX="39998", HOTLINE__RTP__BIND_IP="127.0.0.1",
               HOTLINE__LOG__LEVEL="warn", HOTLINE__SIP__SHUTDOWN_GRACE_S="2",
               HOTLINE__STORE__PATH="/tmp/hotline-bench.sqlite", HOTLINE__STORE__QUEUE_LOG="/tmp/hotline-bench.queue_log",
               HOTLINE__HTTP__TOKENS__BENCH=seatpool.API_TOKEN)
    for suffix in ("", "-wal", "-shm"):
        try:
            if not keep_store:
                os.remove("/tmp/hotline-bench.sqlite" + suffix)
        except FileNotFoundError:
            pass
    env.pop("RUST_LOG", None)
    env.update(extra_env or {})
    log = open("/tmp/hotline-bench.log", "w")
    p = subprocess.Popen(PREFIX + ["taskset", "-c", DAEMON_CORE, DAEMON_BIN, "run", "--config",
                          config], env=env, stdout=subprocess.DEVNULL, stderr=log)
    for _ in range(100):
        try:
            health()
            return p
        except Exception:
            time.sleep(0.1)
    sys.exit("daemon did not start; see /tmp/hotline-bench.log")


def sipp(extra, timeout, scenario="uac_call.xml", service="12345", port=26060, to=None):
    cmd = ["taskset", "-c", LOAD_CORE, "sipp", to or f"127.0.0.1:{SIP_PORT}", "-sf", f"{ROOT}/sipp-scenarios/{scenario}",
           "-s", service, "-i", "127.0.0.1", "-p", str(port), "-key", "rtp_port", str(SINK_PORT), "-nostdin",
           "-timeout", str(timeout), "-timeout_error", "-max_socket", "60000", "-buff_size", "8388608"] + extra
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/tmp")


def sipp_retrans(out):
    """The sum of SIPp's Retrans column (its final screen)."""
    total = 0
    for line in out.splitlines():
        if "---------->" in line or "<----------" in line:
            cols = line.split()
            i = next((k for k, c in enumerate(cols) if "----" in c), None)
            nums = [c for c in cols[i + 1:] if c.isdigit()] if i is not None else []
            if len(nums) >= 2:
                total += int(nums[1])
    return total


def sipp_result(p, timeout):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    def row(name):
        m = re.findall(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", out)
        return int(m[-1]) if m else None
    return {"successful": row("Successful call"), "failed": row("Failed call"), "exit": p.returncode,
            "retransmissions": sipp_retrans(out)}


def wait_idle(limit=60):
    end = time.time() + limit
    while time.time() < end:
        if health()["calls_active"] == 0:
            return True
        time.sleep(0.5)
    return False


def prompt_run(daemon, n, rate, sipp_extra=(), scenario="uac_call.xml", sipp_to=None, extra_cpu=()):
    ramp = n / rate
    hold_ms = int((ramp + 14) * 1000)  # every call still listening through the window
    w0, w1 = ramp + 3, ramp + 13
    total = ramp + 16
    rss0 = rss_kib(daemon.pid)
    sink = subprocess.Popen(["taskset", "-c", LOAD_CORE, f"{ROOT}/target/release/examples/rtp_sink", str(SINK_PORT),
                             str(total), str(w0), str(w1)], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    t0 = time.time()
    sp = sipp(["-r", str(rate), "-l", str(n), "-m", str(n), "-d", str(hold_ms)] + list(sipp_extra), int(total + 60),
              scenario=scenario, to=sipp_to)
    time.sleep(max(0, w0 - (time.time() - t0)))
    c0, s0, k0, tw = cpu_seconds(daemon.pid), cpu_seconds(sp.pid), cpu_seconds(sink.pid), time.time()
    e0 = sum(cpu_seconds(p) for p in extra_cpu)
    time.sleep(max(0, w1 - (time.time() - t0)))
    c1, s1, k1, tw1 = cpu_seconds(daemon.pid), cpu_seconds(sp.pid), cpu_seconds(sink.pid), time.time()
    e1 = sum(cpu_seconds(p) for p in extra_cpu)
    active, rss1 = health()["calls_active"], rss_kib(daemon.pid)
    res = sipp_result(sp, total + 90)
    sink_out = json.loads(sink.communicate(timeout=60)[0].strip().splitlines()[-1])
    wait_idle()
    dt = tw1 - tw
    return {
        "calls": n, "active_in_window": active, "failed": res["failed"], "successful": res["successful"],
        "rtp_pps": sink_out["pps_window"], "streams": sink_out["streams_window"],
        "max_gap_ms": sink_out["max_gap_ms"], "p999_gap_ms": sink_out["p999_gap_ms"], "gaps_over_40ms": sink_out["gaps_over_40ms"],
        "daemon_cpu_pct": round(100 * (c1 - c0) / dt, 1), "sipp_cpu_pct": round(100 * (s1 - s0) / dt, 1),
        "sink_cpu_pct": round(100 * (k1 - k0) / dt, 1), "other_load_cpu_pct": round(100 * (e1 - e0) / dt, 1),
        "daemon_us_per_call_s": round(1e6 * (c1 - c0) / dt / max(active, 1), 1),
        "rss_mib": round(rss1 / 1024, 1), "rss_per_call_kib": round((rss1 - rss0) / max(active, 1), 1),
    }


TLS_PORT = SIP_PORT + 1
TLS_DIR = "/tmp/hotline-bench-tls"


def tls_env():
    """A test CA and a certificate for 127.0.0.1, and the daemon's TLS settings."""
    os.makedirs(TLS_DIR, exist_ok=True)
    ca, cert = f"{TLS_DIR}/ca.pem", f"{TLS_DIR}/cert.pem"
    q = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=bench CA",
                    "-keyout", f"{TLS_DIR}/ca.key", "-out", ca], **q)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-CA", ca,
                    "-CAkey", f"{TLS_DIR}/ca.key", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:FALSE", "-keyout", f"{TLS_DIR}/cert.key", "-out", cert], **q)
    return {"HOTLINE__SIP__TLS_LISTEN": f"127.0.0.1:{TLS_PORT}", "HOTLINE__TLS__CERT": cert,
            "HOTLINE__TLS__KEY": f"{TLS_DIR}/cert.key"}


def stunnel(port):
    """SIPp's TCP wrapped in TLS to the daemon (Debian's SIPp has no TLS), on the load core."""
    conf = f"{TLS_DIR}/stunnel.conf"
    with open(conf, "w") as f:
        f.write(f"foreground = yes\npid =\ndebug = 3\n[sip]\nclient = yes\naccept = 127.0.0.1:{port}\n"
                f"connect = 127.0.0.1:{TLS_PORT}\nCAfile = {TLS_DIR}/ca.pem\nverifyChain = yes\n")
    p = subprocess.Popen(["taskset", "-c", LOAD_CORE, "stunnel4", conf], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return p


def srtp_runs(levels):
    """The prompt workload in plain RTP (SIPp over UDP) and in SRTP (SIPp over TLS through
    stunnel, RTP/SAVP with an SDES key), in one run against one daemon: the sink counts and
    times the packets either way (the SRTP header is RTP's)."""
    daemon = start_daemon(extra_env=tls_env())
    tunnel_port = SIP_PORT + 2
    tunnel = stunnel(tunnel_port)
    try:
        for n in levels:
            plain = prompt_run(daemon, n, rate=400)
            print("srtp-plain", json.dumps(plain), flush=True)
            sec = prompt_run(daemon, n, rate=400, sipp_extra=["-t", "t1"], scenario="uac_call_srtp.xml",
                             sipp_to=f"127.0.0.1:{tunnel_port}", extra_cpu=[tunnel.pid])
            print("srtp", json.dumps(sec), flush=True)
            print(f"RESULT {n} prompt calls: plain RTP {plain['daemon_cpu_pct']} % "
                  f"({plain['daemon_us_per_call_s']} us CPU per call-second, max gap {plain['max_gap_ms']} ms, "
                  f"{plain['gaps_over_40ms']} gaps > 40 ms); SRTP {sec['daemon_cpu_pct']} % "
                  f"({sec['daemon_us_per_call_s']} us per call-second, max gap {sec['max_gap_ms']} ms, "
                  f"{sec['gaps_over_40ms']} gaps > 40 ms, {sec['successful']} of {n} calls; stunnel "
                  f"{sec['other_load_cpu_pct']} %, SIPp {sec['sipp_cpu_pct']} %)", flush=True)
    finally:
        tunnel.kill()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)


def rate_run(daemon, rate, seconds=10):
    n = rate * seconds
    sink = subprocess.Popen(["taskset", "-c", LOAD_CORE, f"{ROOT}/target/release/examples/rtp_sink", str(SINK_PORT),
                             str(seconds + 8), "2", str(seconds)], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    c0, t0 = cpu_seconds(daemon.pid), time.time()
    shed0 = metric("hotline_calls_shed_total")
    sp = sipp(["-r", str(rate), "-m", str(n), "-l", str(rate * 4), "-d", "1000"], seconds + 40)
    s_cpu = 0.0
    try:
        while sp.poll() is None:
            s_cpu = cpu_seconds(sp.pid)
            time.sleep(0.2)
    except FileNotFoundError:
        pass
    res = sipp_result(sp, seconds + 60)
    dt = time.time() - t0
    c1 = cpu_seconds(daemon.pid)
    try:
        sink_out = json.loads(sink.communicate(timeout=60)[0].strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, IndexError, ValueError):
        sink.kill()
        sink_out = {}
    wait_idle()
    return {"rate": rate, "calls": n, "successful": res["successful"], "failed": res["failed"],
            "max_gap_ms": sink_out.get("max_gap_ms"), "p999_gap_ms": sink_out.get("p999_gap_ms"),
            "gaps_over_40ms": sink_out.get("gaps_over_40ms"),
            "shed": int(metric("hotline_calls_shed_total") - shed0),
            "seconds": round(dt, 1), "daemon_cpu_pct": round(100 * (c1 - c0) / dt, 1),
            "sipp_cpu_pct": round(100 * s_cpu / dt, 1)}


def udp_drops(port):
    """Datagrams the kernel dropped for the socket bound to this local port (receive buffer
    full), from /proc/net/udp."""
    total = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port:
                    total += int(cols[-1])
    return total


def overload_run(daemon, capacity, factor, seconds=20, held=200):
    """`factor` times `capacity` new calls a second for `seconds`, on top of `held` calls
    that keep a prompt playing throughout (their gaps are measured during the surge)."""
    import threading, urllib.request
    rate = int(capacity * factor)
    n = rate * seconds
    # The held calls' audio goes to the measuring sink; the surge's to a second sink.
    window = (3, 3 + seconds)
    sink = subprocess.Popen(["taskset", "-c", LOAD_CORE, f"{ROOT}/target/release/examples/rtp_sink", str(SINK_PORT),
                             str(seconds + 12), str(window[0]), str(window[1])], stdout=subprocess.PIPE, text=True)
    discard = subprocess.Popen(["taskset", "-c", LOAD_CORE, f"{ROOT}/target/release/examples/rtp_sink", str(SINK_PORT + 2),
                                str(seconds + 40), "0", "1"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    held_p = sipp(["-r", "200", "-l", str(held), "-m", str(held), "-d", str((seconds + 8) * 1000)], seconds + 60,
                  port=26070)
    time.sleep(held / 200 + 1)
    polls, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            t = time.time()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/healthz", timeout=5) as r:
                    body = json.load(r)
            except urllib.error.HTTPError as e:
                body = json.load(e)
            except Exception:
                body = None
            polls.append((time.time() - t, body))
            stop.wait(0.1)
    poller = threading.Thread(target=poll)
    poller.start()
    answered0, shed0 = metric("hotline_calls_answered_total"), metric("hotline_calls_shed_total")
    drops0 = (udp_drops(SIP_PORT), udp_drops(26060))
    c0, t0 = cpu_seconds(daemon.pid), time.time()
    sp = subprocess.Popen(["taskset", "-c", LOAD_CORE, "sipp", f"127.0.0.1:{SIP_PORT}", "-sf",
                           f"{ROOT}/sipp-scenarios/uac_call_or_503.xml", "-s", "12345", "-i", "127.0.0.1", "-p", "26060",
                           "-key", "rtp_port", str(SINK_PORT + 2), "-nostdin", "-timeout", str(seconds + 90),
                           "-timeout_error", "-max_socket", "60000", "-buff_size", "8388608",
                           "-r", str(rate), "-m", str(n), "-l", str(n), "-d", "1000"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/tmp")
    s_cpu = 0.0
    while sp.poll() is None:
        try:
            s_cpu = cpu_seconds(sp.pid)
        except FileNotFoundError:
            pass
        time.sleep(0.2)
    t_end = time.time()
    out = sp.communicate()[0]
    c1 = cpu_seconds(daemon.pid)
    stop.set()
    poller.join()
    drops = (udp_drops(SIP_PORT) - drops0[0], udp_drops(26060) - drops0[1])
    served = metric("hotline_calls_answered_total") - answered0
    shed = metric("hotline_calls_shed_total") - shed0
    row = lambda name: int((re.findall(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", out) or [0])[-1])
    held_res = sipp_result(held_p, seconds + 60)
    sink_out = json.loads(sink.communicate(timeout=60)[0].strip().splitlines()[-1])
    discard.kill()
    wait_idle(120)
    lat = sorted(p[0] * 1000 for p in polls)
    dt = t_end - t0
    return {
        "capacity": capacity, "factor": factor, "offered_per_s": rate, "offered": n,
        "served": int(served), "goodput_per_s": round(served / seconds, 1),
        "goodput_of_capacity": round(served / seconds / capacity, 3),
        "shed": int(shed), "failed": row("Failed call"), "failed_share": round(row("Failed call") / n, 5),
        "retransmissions": sipp_retrans(out), "retrans_share": round(sipp_retrans(out) / n, 4),
        "sipp_seconds": round(dt, 1), "over_after_last_call_s": round(dt - seconds - 1, 1),
        "health_polls": len(lat), "health_max_ms": round(lat[-1], 1) if lat else None,
        "health_p99_ms": round(lat[int(len(lat) * 0.99) - 1], 1) if lat else None,
        "health_over_100ms": sum(1 for x in lat if x > 100),
        "health_unanswered": sum(1 for p in polls if p[1] is None),
        "said_overloaded": sum(1 for p in polls if p[1] and p[1].get("status") == "overloaded"),
        "held_failed": held_res["failed"], "held_max_gap_ms": sink_out["max_gap_ms"],
        "held_p999_gap_ms": sink_out["p999_gap_ms"], "held_gaps_over_40ms": sink_out["gaps_over_40ms"],
        "daemon_cpu_pct": round(100 * (c1 - c0) / dt, 1), "sipp_cpu_pct": round(100 * s_cpu / dt, 1),
        "kernel_drops_daemon_sip": drops[0], "kernel_drops_sipp": drops[1],
    }


def crash_run(ivr=250, queued=250):
    """Calls up in the IVR and in a queue, kill -9, restart on the same store."""
    daemon = start_daemon(extra_env={"HOTLINE__QUEUES__LINE-12333__MAX_WAIT_S": "600"})
    sink = subprocess.Popen(["taskset", "-c", LOAD_CORE, f"{ROOT}/target/release/examples/rtp_sink", str(SINK_PORT),
                             "60", "0", "1"], stdout=subprocess.PIPE, text=True)
    a = sipp(["-r", "100", "-l", str(ivr), "-m", str(ivr), "-d", "120000"], 150)
    b = sipp(["-r", "100", "-l", str(queued), "-m", str(queued), "-d", "120000"], 150, service="12333", port=26061)
    deadline = time.time() + 60
    while time.time() < deadline and health()["calls_active"] < ivr + queued:
        time.sleep(0.2)
    time.sleep(12)  # the queued callers are past 12333's greeting, waiting in line-12333
    up = health()["calls_active"]
    waiting = [q for q in json.loads(api_get("/api/queues")) if q["name"] == "line-12333"][0]["waiting"]
    time.sleep(1.5)  # a store heartbeat after the last event
    daemon.kill()
    daemon.wait()
    for p in (a, b):
        p.kill()
        p.communicate()
    sink.kill()
    t0 = time.time()
    daemon = start_daemon(keep_store=True)
    restart_s = time.time() - t0
    try:
        import sqlite3
        db = sqlite3.connect("/tmp/hotline-bench.sqlite")
        count = lambda sql: db.execute(sql).fetchone()[0]
        started = count("SELECT COUNT(*) FROM events WHERE kind='call_start'")
        ended = count("SELECT COUNT(*) FROM events WHERE kind='call_end'")
        lost = count("SELECT COUNT(*) FROM events WHERE kind='call_end' AND detail LIKE '%\"cause\":\"lost\"%'")
        queue_lost = [q for q in json.loads(api_get("/api/queues")) if q["name"] == "line-12333"][0]["today"]["lost"]
        open_calls = count("SELECT COUNT(*) FROM open_calls")
        return {"placed": ivr + queued, "up_at_kill": up, "waiting_in_queue_at_kill": waiting,
                "calls_started": started, "calls_ended": ended, "closed_as_lost": lost, "left_open": open_calls,
                "queue_lost_live": queue_lost, "lost_metric": metric("hotline_calls_lost_total"),
                "restart_s": round(restart_s, 2)}
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)


def api_get(path):
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{HTTP_PORT}{path}", headers={"Authorization": f"Bearer {seatpool.API_TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def loss_run(calls=300, rate=20, drop=20):
    """`calls` calls to 12345 in a network namespace where `drop` % of the SIP datagrams are
    dropped each way (nftables); every call must complete."""
    ns = f"hl-bench-loss-{os.getpid()}"
    run = lambda *a: subprocess.run(["ip", "netns", "exec", ns, *a], check=True, capture_output=True)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        run("ip", "link", "set", "lo", "up")
        run("nft", "add", "table", "inet", "loss")
        run("nft", "add chain inet loss in { type filter hook input priority 0; }")
        for d in ("dport", "sport"):
            run("nft", f"add rule inet loss in udp {d} 5060 numgen random mod 100 < {drop} drop")
        env = dict(os.environ, HOTLINE__SIP__LISTEN="127.0.0.1:5060", HOTLINE__HTTP__LISTEN="127.0.0.1:8080",
                   HOTLINE__RTP__BIND_IP="127.0.0.1", HOTLINE__LOG__LEVEL="warn",
                   HOTLINE__STORE__PATH="/tmp/hotline-bench-loss.sqlite", HOTLINE__STORE__QUEUE_LOG="")
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove("/tmp/hotline-bench-loss.sqlite" + suffix)
            except FileNotFoundError:
                pass
        d = subprocess.Popen(["ip", "netns", "exec", ns, DAEMON_BIN, "run", "--config", f"{ROOT}/config/hotline.toml"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5)
        t0 = time.time()
        sp = subprocess.run(["ip", "netns", "exec", ns, "sipp", "127.0.0.1:5060", "-sf", f"{ROOT}/sipp-scenarios/uac_call.xml",
                             "-s", "12345", "-i", "127.0.0.1", "-p", "5070", "-key", "rtp_port", "9", "-nostdin",
                             "-r", str(rate), "-m", str(calls), "-l", str(calls), "-d", "2000", "-max_retrans", "12",
                             "-timeout", "300", "-timeout_error"], capture_output=True, text=True, cwd="/tmp", timeout=400)
        dt = time.time() - t0
        row = lambda name: int((re.findall(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", sp.stdout) or [0])[-1])
        time.sleep(40)  # the daemon's own retransmissions and transactions run out
        h = json.loads(subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "http://127.0.0.1:8080/healthz"],
                                      capture_output=True, text=True).stdout)
        d.send_signal(signal.SIGTERM)
        d.wait(timeout=30)
        import sqlite3
        db = sqlite3.connect("/tmp/hotline-bench-loss.sqlite")
        ended = db.execute("SELECT COUNT(*) FROM events WHERE kind='call_end'").fetchone()[0]
        return {"calls": calls, "drop_pct_each_way": drop, "successful": row("Successful call"),
                "failed": row("Failed call"), "sipp_retransmissions": sipp_retrans(sp.stdout),
                "seconds": round(dt, 1), "daemon_calls_active_after": h["calls_active"], "written_ended": ended}
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def metric(name):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def seat_ids_in(state):
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{HTTP_PORT}/api/seats", headers={"Authorization": f"Bearer {seatpool.API_TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return [s["id"] for s in json.load(r) if s["state"] == state]


def seats_in(state):
    return len(seat_ids_in(state))


SEAT_QUEUE_ENV = {"HOTLINE__REGISTRAR__QUALIFY_S": "0", "HOTLINE__QUEUES__LINE-12333__WRAP_UP_S": "0",
                  "HOTLINE__QUEUES__LINE-12333__MAX_WAIT_S": "600", "HOTLINE__REGISTRAR__MAX_EXPIRES": "7200"}


def seats_daemon(n):
    """A daemon whose config has n generated seats for line-12333, all registered from
    SEAT_PORT and logged in."""
    os.makedirs("/tmp/hotline-bench", exist_ok=True)
    cfg = "/tmp/hotline-bench/hotline.toml"
    with open(f"{ROOT}/config/hotline.toml") as f:
        text = seatpool.seat_config(f.read(), n, "line-12333")
    with open(cfg, "w") as f:
        f.write(text)
    daemon = start_daemon(cfg, SEAT_QUEUE_ENV)
    failed = seatpool.register_all(("127.0.0.1", SIP_PORT), SEAT_PORT, n)
    seatpool.login_all(f"127.0.0.1:{HTTP_PORT}", n)
    print(f"{n} seats registered ({failed} failed) and logged in", flush=True)
    return daemon


def bridge_run(daemon, n, rate=200, browsers=None):
    """`browsers`: the webrtc_seats process whose seats answer (already registered), instead
    of the SIPp seat phone."""
    ramp = n / rate
    greeting = 8.5  # 12333's greeting, then the queue, where a free seat answers at once
    # Browser legs: the window starts once their DTLS associations are gone (10 s after the
    # handshake) and the heap is trimmed (5 s), so memory per call is a long call's.
    settle = 17 if browsers else 0
    w0 = ramp + greeting + 3 + settle
    w1 = w0 + 10
    hold_ms = int((w1 + 3) * 1000)
    total = w1 + 5
    rss0, relayed0 = rss_kib(daemon.pid), metric("hotline_rtp_relayed_total")
    sink = subprocess.Popen(["taskset", "-c", LOAD_CORE, f"{ROOT}/target/release/examples/rtp_sink", str(SINK_PORT),
                             str(total), str(w0), str(w1), "talk"], stdout=subprocess.PIPE, text=True)
    seats = browsers or subprocess.Popen(["taskset", "-c", LOAD_CORE, "sipp", "-sf", f"{ROOT}/sipp-scenarios/agent_bridge.xml",
                              "-i", "127.0.0.1", "-p", str(SEAT_PORT), "-mp", "40000", "-rtp_echo", "-m", str(n),
                              "-d", "200", "-nostdin", "-timeout", str(int(total + 60)), "-max_socket", "60000",
                              "-buff_size", "8388608"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/tmp")
    time.sleep(0.3)
    t0 = time.time()
    sp = sipp(["-r", str(rate), "-l", str(n), "-m", str(n), "-d", str(hold_ms)], int(total + 60), service="12333")
    time.sleep(max(0, w0 - (time.time() - t0)))
    cpu0 = [cpu_seconds(p.pid) for p in (daemon, sp, seats, sink)]
    r0, tw = metric("hotline_rtp_relayed_total"), time.time()
    bridged = seats_in("on_call")
    time.sleep(max(0, w1 - (time.time() - t0)))
    cpu1 = [cpu_seconds(p.pid) for p in (daemon, sp, seats, sink)]
    r1, tw1 = metric("hotline_rtp_relayed_total"), time.time()
    rss1 = rss_kib(daemon.pid)
    res = sipp_result(sp, total + 90)
    if browsers is None:
        seat_res = sipp_result(seats, 120)
    else:
        seat_res = json.loads(browsers.communicate(timeout=120)[0].strip().splitlines()[-1])
        seat_res["successful"] = seat_res["keyed"]
    sink_out = json.loads(sink.communicate(timeout=60)[0].strip().splitlines()[-1])
    wait_idle()
    dt = tw1 - tw
    pct = [round(100 * (b - a) / dt, 1) for a, b in zip(cpu0, cpu1)]
    return {
        "calls": n, "bridged_in_window": bridged, "failed": res["failed"], "successful": res["successful"],
        "seat_calls_ok": seat_res["successful"], "relayed_pps": round((r1 - r0) / dt),
        "echo_streams": sink_out["streams_window"], "max_gap_ms": sink_out["max_gap_ms"],
        "p999_gap_ms": sink_out["p999_gap_ms"], "gaps_over_40ms": sink_out["gaps_over_40ms"],
        "daemon_cpu_pct": pct[0], "sipp_callers_cpu_pct": pct[1], "seats_cpu_pct": pct[2], "sink_cpu_pct": pct[3],
        "daemon_us_per_call_s": round(pct[0] / 100 / max(bridged, 1) * 1e6, 1),
        "rss_mib": round(rss1 / 1024, 1), "rss_per_call_kib": round((rss1 - rss0) / max(bridged, 1), 1),
        "relayed_total": int(r1 - relayed0),
    }


def browser_runs(levels):
    """Per N: N bridged calls to plain SIPp seats, then N to browser seats (examples/webrtc_seats:
    WebSocket registration, ICE, DTLS-SRTP, SRTP echo), each on a fresh daemon; the daemon's CPU
    per call beside each other."""
    for n in levels:
        daemon = seats_daemon(n)
        try:
            plain = bridge_run(daemon, n)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
        print("browser-plain", json.dumps(plain), flush=True)
        os.makedirs("/tmp/hotline-bench", exist_ok=True)
        cfg = "/tmp/hotline-bench/hotline.toml"
        with open(f"{ROOT}/config/hotline.toml") as f:
            text = seatpool.seat_config(f.read(), n, "line-12333")
        with open(cfg, "w") as f:
            f.write(text)
        daemon = start_daemon(cfg, SEAT_QUEUE_ENV)
        try:
            seconds = int(n / 200 + 8.5 + 3 + 17 + 10 + 3 + 5 + 15)
            browsers = subprocess.Popen(["taskset", "-c", LOAD_CORE, f"{ROOT}/target/release/examples/webrtc_seats",
                                         f"127.0.0.1:{HTTP_PORT}", f"b0001-b{n:04d}", "bench", str(seconds)],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            deadline = time.time() + 60
            while time.time() < deadline and len([1 for _ in registered_seats()]) < n:
                time.sleep(0.5)
            seatpool.login_all(f"127.0.0.1:{HTTP_PORT}", n)
            print(f"{n} browser seats registered over WebSocket and logged in", flush=True)
            web = bridge_run(daemon, n, browsers=browsers)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
        print("browser-webrtc", json.dumps(web), flush=True)
        print(f"RESULT {n} bridged calls, daemon CPU per call: plain RTP seats {plain['daemon_us_per_call_s']} µs/s "
              f"({plain['daemon_cpu_pct']} %), browser seats (DTLS-SRTP) {web['daemon_us_per_call_s']} µs/s "
              f"({web['daemon_cpu_pct']} %); load tool CPU {plain['seats_cpu_pct']} % (SIPp) / {web['seats_cpu_pct']} % "
              f"(webrtc_seats); gaps >40 ms {plain['gaps_over_40ms']} / {web['gaps_over_40ms']}", flush=True)


def registered_seats():
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{HTTP_PORT}/api/seats", headers={"Authorization": f"Bearer {seatpool.API_TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return [s["id"] for s in json.load(r) if s["registered"] and s["id"].startswith("b")]


def api_transfer(seat, number="12366"):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=10)
    body = json.dumps({"number": number})
    c.request("POST", f"/api/seats/{seat}/transfer", body, {"Authorization": f"Bearer {seatpool.API_TOKEN}",
                                                              "Content-Type": "application/json"})
    code = c.getresponse().status
    c.close()
    return code


TRUNK_PORT = 5070  # the shipped config's sub-centre trunk


def threeway_run(daemon, n, rate=200, xfer_rate=250):
    """n callers bridged to n seats, then n three-way transfers to 12366; measured while all
    n conferences are up."""
    from concurrent.futures import ThreadPoolExecutor
    ramp = n / rate
    greeting = 8.5
    xfer_at = ramp + greeting + 3
    w0 = xfer_at + n / xfer_rate + 4
    w1 = w0 + 10
    hold_ms = int((w1 + 3) * 1000)
    total = w1 + 5
    rss0 = rss_kib(daemon.pid)
    sink = subprocess.Popen(["taskset", "-c", LOAD_CORE, f"{ROOT}/target/release/examples/rtp_sink", str(SINK_PORT),
                             str(total), str(w0), str(w1), "talk"], stdout=subprocess.PIPE, text=True)
    uas = ["-i", "127.0.0.1", "-rtp_echo", "-m", str(n), "-d", "100", "-nostdin", "-timeout", str(int(total + 60)),
           "-max_socket", "60000", "-buff_size", "8388608"]
    seats = subprocess.Popen(["taskset", "-c", LOAD_CORE, "sipp", "-sf", f"{ROOT}/sipp-scenarios/agent_bridge.xml",
                              "-p", str(SEAT_PORT), "-mp", "40000"] + uas,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/tmp")
    trunk = subprocess.Popen(["taskset", "-c", LOAD_CORE, "sipp", "-sf", f"{ROOT}/sipp-scenarios/trunk_answer.xml",
                              "-p", str(TRUNK_PORT), "-mp", "41000", "-key", "rtp_port", "41000"] + uas,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/tmp")
    time.sleep(0.3)
    t0 = time.time()
    sp = sipp(["-r", str(rate), "-l", str(n), "-m", str(n), "-d", str(hold_ms)], int(total + 60), service="12333")
    time.sleep(max(0, xfer_at - (time.time() - t0)))
    on_call = seat_ids_in("on_call")
    bridged = len(on_call)
    codes = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = []
        for seat in on_call:
            futures.append(pool.submit(api_transfer, seat))
            time.sleep(1 / xfer_rate)
        for f in futures:
            try:
                c = f.result()
            except Exception as e:  # noqa: BLE001 -- counted, not fatal: the figure says how many went
                c = type(e).__name__
            codes[c] = codes.get(c, 0) + 1
    time.sleep(max(0, w0 - (time.time() - t0)))
    procs = (daemon, sp, seats, trunk, sink)
    cpu0 = [cpu_seconds(p.pid) for p in procs]
    m0, tw = metric("hotline_rtp_mixed_total"), time.time()
    held = metric("hotline_conferences_active")
    time.sleep(max(0, w1 - (time.time() - t0)))
    cpu1 = [cpu_seconds(p.pid) for p in procs]
    m1, tw1 = metric("hotline_rtp_mixed_total"), time.time()
    held = min(held, metric("hotline_conferences_active"))
    rss1 = rss_kib(daemon.pid)
    res = sipp_result(sp, total + 90)
    seat_res, trunk_res = sipp_result(seats, 120), sipp_result(trunk, 120)
    sink_out = json.loads(sink.communicate(timeout=60)[0].strip().splitlines()[-1])
    wait_idle()
    dt = tw1 - tw
    pct = [round(100 * (b - a) / dt, 1) for a, b in zip(cpu0, cpu1)]
    return {
        "calls": n, "bridged_before": bridged, "transfer_api": codes, "conferences_in_window": int(held),
        "failed": res["failed"], "successful": res["successful"], "seat_calls_ok": seat_res["successful"],
        "target_calls_ok": trunk_res["successful"], "mixed_pps": round((m1 - m0) / dt),
        "caller_streams": sink_out["streams_window"], "max_gap_ms": sink_out["max_gap_ms"],
        "p999_gap_ms": sink_out["p999_gap_ms"], "gaps_over_40ms": sink_out["gaps_over_40ms"],
        "daemon_cpu_pct": pct[0], "sipp_callers_cpu_pct": pct[1], "sipp_seats_cpu_pct": pct[2],
        "sipp_target_cpu_pct": pct[3], "sink_cpu_pct": pct[4],
        "rss_mib": round(rss1 / 1024, 1), "rss_per_conference_kib": round((rss1 - rss0) / max(held, 1), 1),
    }


def dispatch_run(seats=50, rate=60, seconds=20, talk_s=1.0):
    daemon = seats_daemon(seats)
    try:
        n = rate * seconds
        # The callers' prompt audio has somewhere to go (no ICMP storm), as in the other workloads.
        sink = subprocess.Popen(["taskset", "-c", LOAD_CORE, f"{ROOT}/target/release/examples/rtp_sink", str(SINK_PORT),
                                 str(seconds + 30), "1", "2"], stdout=subprocess.DEVNULL)
        pool = subprocess.Popen(["taskset", "-c", LOAD_CORE, sys.executable, f"{ROOT}/scripts/seatpool.py", str(SEAT_PORT),
                                 str(talk_s), str(seconds + 25)], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        c0, t0 = cpu_seconds(daemon.pid), time.time()
        sp = sipp(["-r", str(rate), "-m", str(n), "-l", str(n)], seconds + 60, scenario="uac_call_remote_bye.xml", service="12333")
        res = sipp_result(sp, seconds + 90)
        c1, dt = cpu_seconds(daemon.pid), time.time() - t0
        out = json.loads(pool.communicate(timeout=seconds + 60)[0].strip().splitlines()[-1])
        sink.kill()
        return dict(out, seats=seats, callers=n, caller_rate=rate, failed=res["failed"], successful=res["successful"],
                    daemon_cpu_pct=round(100 * (c1 - c0) / dt, 1))
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=15)


def main():
    global DAEMON_BIN
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="comma-separated workloads: prompt, rate, bridge, dispatch, threeway (default: all)")
    ap.add_argument("--threeways", default="250,500,750", help="three-way calls for the threeway workload")
    ap.add_argument("--bridges", default="500,1000,1500,2000", help="bridged calls for the bridge workload")
    ap.add_argument("--levels", default="1000,2000,3000,4000", help="concurrent calls for the prompt workload")
    ap.add_argument("--rates", default="500,1000,1500,2000,2500", help="calls/s for the rate workload")
    ap.add_argument("--bins", help="comma-separated daemon binaries to measure in turn (default: this build)")
    ap.add_argument("--srtp-levels", default="500,1000,2000", help="concurrent calls for the srtp workload")
    ap.add_argument("--browser-levels", default="100,300", help="bridged calls for the browser workload")
    ap.add_argument("--capacity", type=int, default=2000, help="calls/s the overload workload takes as capacity")
    ap.add_argument("--factors", default="2,4", help="multiples of the capacity the overload workload offers")
    args = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    subprocess.run(["cargo", "build", "--release", "--bin", "hotline", "--example", "rtp_sink", "--example", "webrtc_seats"],
                   cwd=ROOT, check=True)
    print(f"daemon on core {DAEMON_CORE}; SIPp, the RTP sink and the seat pool on core {LOAD_CORE}", flush=True)
    bins = args.bins.split(",") if args.bins else [DAEMON_BIN]
    for b in bins:
        DAEMON_BIN = os.path.abspath(b)
        print(f"=== daemon binary {DAEMON_BIN}", flush=True)
        workloads(args)


DEFAULT_WORKLOADS = ("prompt", "rate", "bridge", "dispatch", "threeway")


def want(args, workload):
    if args.only is None:
        return workload in DEFAULT_WORKLOADS
    return workload in args.only.split(",")


def workloads(args):
    if want(args, "dispatch"):
        r = dispatch_run()
        print("dispatch", json.dumps(r), flush=True)
        print(f"RESULT seat turning free -> next INVITE: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms", flush=True)
    if want(args, "bridge"):
        levels = [int(x) for x in args.bridges.split(",")]
        daemon = seats_daemon(max(levels))
        try:
            best = None
            for n in levels:
                r = bridge_run(daemon, n)
                print("bridge", json.dumps(r), flush=True)
                if r["failed"] == 0 and r["bridged_in_window"] >= n:
                    best = r
            print("RESULT bridged seat calls held (daemon on one core):", best and best["calls"], flush=True)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
    if want(args, "threeway"):
        levels = [int(x) for x in args.threeways.split(",")]
        daemon = seats_daemon(max(levels))
        try:
            best = None
            for n in levels:
                r = threeway_run(daemon, n)
                print("threeway", json.dumps(r), flush=True)
                if r["failed"] == 0 and r["conferences_in_window"] >= n and r["gaps_over_40ms"] == 0:
                    best = r
            print("RESULT three-way calls held with no RTP gap >40 ms (daemon on one core):", best and best["calls"], flush=True)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
    if want(args, "overload"):
        daemon = start_daemon()
        try:
            for f in [float(x) for x in args.factors.split(",")]:
                r = overload_run(daemon, args.capacity, f)
                print("overload", json.dumps(r), flush=True)
                print(f"RESULT offered {f:g}x capacity: goodput {r['goodput_of_capacity']:.1%} of capacity, "
                      f"time-outs {r['failed_share']:.3%}, retransmissions {r['retrans_share']:.1%}, "
                      f"health max {r['health_max_ms']} ms, held calls' max gap {r['held_max_gap_ms']} ms", flush=True)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
    if want(args, "srtp"):
        srtp_runs([int(x) for x in args.srtp_levels.split(",")])
    if want(args, "browser"):
        browser_runs([int(x) for x in args.browser_levels.split(",")])
    if want(args, "crash"):
        r = crash_run()
        print("crash", json.dumps(r), flush=True)
        print(f"RESULT kill -9 with {r['up_at_kill']} calls up: {r['closed_as_lost']} closed as lost, "
              f"{r['left_open']} left open", flush=True)
    if want(args, "loss"):
        r = loss_run()
        print("loss", json.dumps(r), flush=True)
        print(f"RESULT {r['drop_pct_each_way']} % SIP loss each way: {r['successful']} of {r['calls']} calls completed",
              flush=True)
    if not (want(args, "prompt") or want(args, "rate")):
        return
    daemon = start_daemon()
    try:
        if want(args, "prompt"):
            best = None
            for n in [int(x) for x in args.levels.split(",")]:
                r = prompt_run(daemon, n, rate=400)
                print("prompt", json.dumps(r), flush=True)
                if r["failed"] == 0 and r["gaps_over_40ms"] == 0 and r["active_in_window"] >= n:
                    best = r
            print("RESULT concurrent prompt calls without RTP gaps >40 ms:", best and best["calls"], flush=True)
        if want(args, "rate"):
            best = None
            for rate in [int(x) for x in args.rates.split(",")]:
                r = rate_run(daemon, rate)
                print("rate", json.dumps(r), flush=True)
                if r["failed"] == 0 and r["successful"] == r["calls"]:
                    best = r
            print("RESULT short IVR calls/s with zero failed calls:", best and best["rate"], flush=True)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            print("daemon exit status", daemon.wait(timeout=15))
        except subprocess.TimeoutExpired:
            daemon.kill()


if __name__ == "__main__":
    main()
