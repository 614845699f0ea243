#!/usr/bin/env python3
"""Benchmark: SIPp against the release daemon on loopback, daemon and SIPp pinned to separate
cores. Prints figures; asserts nothing (speed is measured, not tested).

  scripts/bench.py                 # both workloads
  scripts/bench.py --only prompt   # concurrent calls holding a prompt
  scripts/bench.py --only rate     # short IVR calls per second
  scripts/bench.py --only bridge   # caller-seat calls bridged through the daemon
  scripts/bench.py --only dispatch # how fast a seat turning free is offered the next caller
  scripts/bench.py --only threeway # three-way calls (caller, seat, sub-centre) mixed by the daemon
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
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}/healthz", timeout=2) as r:
        return json.load(r)


def start_daemon(config=None, extra_env=None):
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


def sipp(extra, timeout, scenario="uac_call.xml", service="12345", port=26060):
    cmd = ["taskset", "-c", LOAD_CORE, "sipp", f"127.0.0.1:{SIP_PORT}", "-sf", f"{ROOT}/sipp-scenarios/{scenario}",
           "-s", service, "-i", "127.0.0.1", "-p", str(port), "-key", "rtp_port", str(SINK_PORT), "-nostdin",
           "-timeout", str(timeout), "-timeout_error", "-max_socket", "60000", "-buff_size", "8388608"] + extra
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/tmp")


def sipp_result(p, timeout):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    def row(name):
        m = re.findall(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", out)
        return int(m[-1]) if m else None
    return {"successful": row("Successful call"), "failed": row("Failed call"), "exit": p.returncode}


def wait_idle(limit=60):
    end = time.time() + limit
    while time.time() < end:
        if health()["calls_active"] == 0:
            return True
        time.sleep(0.5)
    return False


def prompt_run(daemon, n, rate):
    ramp = n / rate
    hold_ms = int((ramp + 14) * 1000)  # every call still listening through the window
    w0, w1 = ramp + 3, ramp + 13
    total = ramp + 16
    rss0 = rss_kib(daemon.pid)
    sink = subprocess.Popen(["taskset", "-c", LOAD_CORE, f"{ROOT}/target/release/examples/rtp_sink", str(SINK_PORT),
                             str(total), str(w0), str(w1)], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    t0 = time.time()
    sp = sipp(["-r", str(rate), "-l", str(n), "-m", str(n), "-d", str(hold_ms)], int(total + 60))
    time.sleep(max(0, w0 - (time.time() - t0)))
    c0, s0, k0, tw = cpu_seconds(daemon.pid), cpu_seconds(sp.pid), cpu_seconds(sink.pid), time.time()
    time.sleep(max(0, w1 - (time.time() - t0)))
    c1, s1, k1, tw1 = cpu_seconds(daemon.pid), cpu_seconds(sp.pid), cpu_seconds(sink.pid), time.time()
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
        "sink_cpu_pct": round(100 * (k1 - k0) / dt, 1),
        "rss_mib": round(rss1 / 1024, 1), "rss_per_call_kib": round((rss1 - rss0) / max(active, 1), 1),
    }


def rate_run(daemon, rate, seconds=10):
    n = rate * seconds
    sink = subprocess.Popen(["taskset", "-c", LOAD_CORE, f"{ROOT}/target/release/examples/rtp_sink", str(SINK_PORT),
                             str(seconds + 8), "2", str(seconds)], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    c0, t0 = cpu_seconds(daemon.pid), time.time()
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
    sink.kill()
    wait_idle()
    return {"rate": rate, "calls": n, "successful": res["successful"], "failed": res["failed"],
            "seconds": round(dt, 1), "daemon_cpu_pct": round(100 * (c1 - c0) / dt, 1),
            "sipp_cpu_pct": round(100 * s_cpu / dt, 1)}


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


def bridge_run(daemon, n, rate=200):
    ramp = n / rate
    greeting = 8.5  # 12333's greeting, then the queue, where a free seat answers at once
    w0 = ramp + greeting + 3
    w1 = w0 + 10
    hold_ms = int((w1 + 3) * 1000)
    total = w1 + 5
    rss0, relayed0 = rss_kib(daemon.pid), metric("hotline_rtp_relayed_total")
    sink = subprocess.Popen(["taskset", "-c", LOAD_CORE, f"{ROOT}/target/release/examples/rtp_sink", str(SINK_PORT),
                             str(total), str(w0), str(w1), "talk"], stdout=subprocess.PIPE, text=True)
    seats = subprocess.Popen(["taskset", "-c", LOAD_CORE, "sipp", "-sf", f"{ROOT}/sipp-scenarios/agent_bridge.xml",
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
    seat_res = sipp_result(seats, 120)
    sink_out = json.loads(sink.communicate(timeout=60)[0].strip().splitlines()[-1])
    wait_idle()
    dt = tw1 - tw
    pct = [round(100 * (b - a) / dt, 1) for a, b in zip(cpu0, cpu1)]
    return {
        "calls": n, "bridged_in_window": bridged, "failed": res["failed"], "successful": res["successful"],
        "seat_calls_ok": seat_res["successful"], "relayed_pps": round((r1 - r0) / dt),
        "echo_streams": sink_out["streams_window"], "max_gap_ms": sink_out["max_gap_ms"],
        "p999_gap_ms": sink_out["p999_gap_ms"], "gaps_over_40ms": sink_out["gaps_over_40ms"],
        "daemon_cpu_pct": pct[0], "sipp_callers_cpu_pct": pct[1], "sipp_seats_cpu_pct": pct[2], "sink_cpu_pct": pct[3],
        "rss_mib": round(rss1 / 1024, 1), "rss_per_call_kib": round((rss1 - rss0) / max(bridged, 1), 1),
        "relayed_total": int(r1 - relayed0),
    }


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
    args = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    subprocess.run(["cargo", "build", "--release", "--bin", "hotline", "--example", "rtp_sink"], cwd=ROOT, check=True)
    print(f"daemon on core {DAEMON_CORE}; SIPp, the RTP sink and the seat pool on core {LOAD_CORE}", flush=True)
    bins = args.bins.split(",") if args.bins else [DAEMON_BIN]
    for b in bins:
        DAEMON_BIN = os.path.abspath(b)
        print(f"=== daemon binary {DAEMON_BIN}", flush=True)
        workloads(args)


def want(args, workload):
    return args.only is None or workload in args.only.split(",")


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
