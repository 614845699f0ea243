#!/usr/bin/env python3
"""Soak: the release daemon at 70 % of its measured capacity for a bounded time (an hour by
default), with callers in the IVR, in a queue and bridged to seats. Every minute it prints the
daemon's RSS, open file descriptors, RTP sockets, active calls and seats stuck in a state; at
the end, whether RSS and descriptors stayed flat (within 10 % after the warm-up). Not part of
the test suite.

  scripts/soak.py [--minutes 60] [--capacity 2000] [--seats 100]

Load (SIPp and the seat phones on core 1, the daemon on core 0, as in bench.py):
- short IVR calls (answer, 1 s of prompt, BYE) at 70 % of --capacity calls/s;
- callers to 12333 (greeting, queue line-12333, a seat answers, 6 s of talk, the caller hangs
  up) at a rate that keeps about 70 % of --seats busy.
Every SIPp run is bounded by -m and -timeout; the whole soak by --minutes.
"""
import argparse, json, os, signal, subprocess, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import seatpool  # noqa: E402


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def udp_sockets(pid):
    """UDP sockets the daemon holds (its SIP socket and one per RTP port in use)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    n = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with open(table) as f:
            next(f)
            for line in f:
                if line.split()[9] in inodes:
                    n += 1
    return n


def stuck_seats(limit_s=120):
    seats = json.loads(bench.api_get("/api/seats"))
    return sum(1 for s in seats if s["state"] in ("ringing", "on_call") and s["state_for_s"] > limit_s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--capacity", type=int, default=2000, help="short IVR calls/s the rate benchmark sustained")
    ap.add_argument("--seats", type=int, default=100)
    args = ap.parse_args()
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    subprocess.run(["cargo", "build", "--release", "--bin", "hotline", "--example", "rtp_sink"], cwd=bench.ROOT, check=True)
    daemon = bench.seats_daemon(args.seats)
    seconds = int(args.minutes * 60)
    ivr_rate = int(args.capacity * 0.7)
    talk_s, greeting_s = 6, 8.5
    queue_rate = max(1, int(args.seats * 0.7 / (talk_s + 1)))
    print(f"soak {args.minutes:g} min: {ivr_rate} IVR calls/s, {queue_rate} queue calls/s to {args.seats} seats",
          flush=True)
    phone = subprocess.Popen(["taskset", "-c", bench.LOAD_CORE, "sipp", f"127.0.0.1:{bench.SIP_PORT}", "-sf",
                              f"{bench.ROOT}/sipp-scenarios/agent_bridge.xml", "-i", "127.0.0.1",
                              "-p", str(bench.SEAT_PORT), "-m", str(queue_rate * seconds + 1000), "-d", "300",
                              "-rtp_echo", "-nostdin", "-timeout", str(seconds + 120), "-max_socket", "60000"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/tmp")
    sink = subprocess.Popen(["taskset", "-c", bench.LOAD_CORE, f"{bench.ROOT}/target/release/examples/rtp_sink",
                             str(bench.SINK_PORT), str(seconds + 60), "0", "1", "talk"],
                            stdout=subprocess.DEVNULL, text=True)
    ivr = bench.sipp(["-r", str(ivr_rate), "-m", str(ivr_rate * seconds), "-l", str(ivr_rate * 4), "-d", "1000"],
                     seconds + 120)
    queued = bench.sipp(["-r", str(queue_rate), "-m", str(queue_rate * seconds), "-l", str(queue_rate * 60),
                         "-d", str(int((greeting_s + talk_s) * 1000))], seconds + 120, service="12333", port=26061)
    rows = []
    t0 = time.time()
    try:
        while time.time() - t0 < seconds:
            time.sleep(min(60, max(1, seconds - (time.time() - t0))))
            h = bench.health()
            row = {"minute": round((time.time() - t0) / 60, 1), "rss_mib": round(bench.rss_kib(daemon.pid) / 1024, 1),
                   "fds": fds(daemon.pid), "udp_sockets": udp_sockets(daemon.pid),
                   "calls_active": h["calls_active"], "seats_stuck": stuck_seats(),
                   "shed": h.get("calls_shed", 0), "lag_us": h.get("event_loop_lag_us", 0)}
            rows.append(row)
            print("soak", json.dumps(row), flush=True)
    finally:
        for p in (ivr, queued):
            p.send_signal(signal.SIGINT)
        for p in (ivr, queued):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        for p in (phone, sink):
            p.kill()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    warm = [r for r in rows if r["minute"] >= min(5, args.minutes / 4)]
    if warm:
        for key in ("rss_mib", "fds"):
            lo, hi = min(r[key] for r in warm), max(r[key] for r in warm)
            flat = hi <= lo * 1.10 + (2 if key == "fds" else 0)
            print(f"RESULT {key} after warm-up: {lo} .. {hi} ({'flat within 10 %' if flat else 'NOT flat'})",
                  flush=True)
        print(f"RESULT seats stuck at the end: {warm[-1]['seats_stuck']}", flush=True)


if __name__ == "__main__":
    main()
