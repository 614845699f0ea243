"""Benchmark helpers for seats (座席): a config with N generated seats, digest REGISTER of
all of them from one UDP port (where a SIPp UAS or the seat pool below then answers), and a
small seat pool that answers offers, talks, hangs up and measures how long after its BYE the
daemon's next INVITE arrives (the dispatch latency of a seat turning free).

Used by scripts/bench.py; not a test.
"""
import asyncio, hashlib, json, os, re, socket, time, urllib.request, uuid

REALM = "hotline"


def seat_config(base_text, n, queue, password="bench"):
    """The shipped config text plus n seats b0001.. serving `queue`."""
    out = [base_text, "\n# ---- benchmark seats ----\n"]
    for i in range(1, n + 1):
        user = f"b{i:04d}"
        md5 = hashlib.md5(f"{user}:{REALM}:{password}".encode()).hexdigest()
        sha = hashlib.sha256(f"{user}:{REALM}:{password}".encode()).hexdigest()
        out.append(f'[[seats]]\nid = "{user}"\nuser = "{user}"\nha1_md5 = "{md5}"\nha1_sha256 = "{sha}"\n'
                   f'queues = ["{queue}"]\n')
    return "".join(out)


def _digest(user, password, nonce, uri, method="REGISTER"):
    h1 = hashlib.md5(f"{user}:{REALM}:{password}".encode()).hexdigest()
    h2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    resp = hashlib.md5(f"{h1}:{nonce}:00000001:c0ffee:auth:{h2}".encode()).hexdigest()
    return (f'Digest username="{user}", realm="{REALM}", nonce="{nonce}", uri="{uri}", response="{resp}", '
            f'algorithm=MD5, qop=auth, nc=00000001, cnonce="c0ffee"')


def register_all(sip, port, n, password="bench", expires=3600):
    """REGISTERs seats b0001..b{n} from 127.0.0.1:port, contact on that port. Returns failures."""
    host, sport = sip
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.settimeout(2)
    uri = f"sip:{host}:{sport}"
    failed = 0
    for i in range(1, n + 1):
        user = f"b{i:04d}"
        auth = ""
        for cseq in (1, 2):
            msg = (f"REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                   f"From: <sip:{user}@{host}>;tag=r{i}\r\nTo: <sip:{user}@{host}>\r\nCall-ID: reg-{user}\r\n"
                   f"CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.1:{port}>\r\nExpires: {expires}\r\n{auth}"
                   f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            s.sendto(msg.encode(), (host, sport))
            try:
                data = s.recv(4096).decode(errors="replace")
            except socket.timeout:
                failed += 1
                break
            if cseq == 1:
                m = re.search(r'nonce="([^"]+)"', data)
                if not m:
                    failed += 1
                    break
                auth = f"Authorization: {_digest(user, password, m.group(1), uri)}\r\n"
            elif not data.startswith("SIP/2.0 200"):
                failed += 1
    s.close()
    return failed


API_TOKEN = "bench-token-0123456789"


def login_all(http, n):
    for i in range(1, n + 1):
        req = urllib.request.Request(f"http://{http}/api/seats/b{i:04d}/state", data=b'{"action":"login"}',
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN}"},
                                     method="POST")
        urllib.request.urlopen(req, timeout=5).read()


class SeatPool(asyncio.DatagramProtocol):
    """Answers every INVITE at once, talks `talk_s`, sends BYE; records, per seat, the time
    from its BYE to the next INVITE it is offered."""

    def __init__(self, talk_s):
        self.talk_s = talk_s
        self.freed_at = {}      # seat -> time its BYE went out
        self.latencies = []
        self.answered = 0
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        now = time.monotonic()
        text = data.decode(errors="replace")
        head, _, _ = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        hdr = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdr.setdefault(k.strip().lower(), v.strip())
        if lines[0].startswith("INVITE "):
            seat = re.match(r"INVITE sip:([^@]+)@", lines[0]).group(1)
            if seat in self.freed_at:
                self.latencies.append(now - self.freed_at.pop(seat))
            tag = uuid.uuid4().hex[:8]
            sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
            common = (f"Via: {hdr['via']}\r\nFrom: {hdr['from']}\r\nTo: {hdr['to']};tag={tag}\r\n"
                      f"Call-ID: {hdr['call-id']}\r\nCSeq: {hdr['cseq']}\r\n"
                      f"Contact: <sip:{seat}@127.0.0.1:{self.transport.get_extra_info('sockname')[1]}>\r\n")
            self.transport.sendto(f"SIP/2.0 180 Ringing\r\n{common}Content-Length: 0\r\n\r\n".encode(), addr)
            self.transport.sendto((f"SIP/2.0 200 OK\r\n{common}Content-Type: application/sdp\r\n"
                                   f"Content-Length: {len(sdp)}\r\n\r\n{sdp}").encode(), addr)
            self.answered += 1
            target = re.search(r"<([^>]+)>", hdr.get("contact", "")).group(1)
            bye = (f"BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{self.transport.get_extra_info('sockname')[1]};"
                   f"branch=z9hG4bK{uuid.uuid4().hex}\r\nFrom: <sip:{seat}@127.0.0.1>;tag={tag}\r\nTo: {hdr['from']}\r\n"
                   f"Call-ID: {hdr['call-id']}\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            asyncio.get_running_loop().call_later(self.talk_s, self._bye, seat, bye.encode(), addr)
        elif lines[0].startswith(("OPTIONS ", "BYE ", "CANCEL ")):
            resp = (f"SIP/2.0 200 OK\r\nVia: {hdr['via']}\r\nFrom: {hdr['from']}\r\nTo: {hdr['to']}\r\n"
                    f"Call-ID: {hdr['call-id']}\r\nCSeq: {hdr['cseq']}\r\nContent-Length: 0\r\n\r\n")
            self.transport.sendto(resp.encode(), addr)

    def _bye(self, seat, bye, addr):
        self.transport.sendto(bye, addr)
        self.freed_at[seat] = time.monotonic()


async def run_pool(port, talk_s, seconds):
    loop = asyncio.get_running_loop()
    transport, pool = await loop.create_datagram_endpoint(lambda: SeatPool(talk_s), local_addr=("127.0.0.1", port))
    await asyncio.sleep(seconds)
    transport.close()
    return pool


def percentile(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


if __name__ == "__main__":
    # python3 scripts/seatpool.py PORT TALK_S SECONDS: run a pool, print its latencies as JSON.
    import sys
    port, talk_s, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    pool = asyncio.run(run_pool(port, talk_s, seconds))
    ms = [x * 1000 for x in pool.latencies]
    print(json.dumps({"answered": pool.answered, "offers_after_free": len(ms),
                      "p50_ms": percentile(ms, 0.5), "p99_ms": percentile(ms, 0.99), "max_ms": max(ms) if ms else None}))
