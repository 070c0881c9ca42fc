#!/usr/bin/env python3
"""Open N idle PostgreSQL client connections and hold them (stdlib only).

Each connection sends a protocol 3.0 StartupMessage (user/database given,
default postgres/postgres), expects trust auth (AuthenticationOk), reads until
ReadyForQuery ('Z'), then stays idle. When all are up it prints
"ready N" and holds them until SIGTERM/SIGINT or --hold seconds elapse, then
sends Terminate and closes. Used by run.sh to measure a proxy's RSS with
1,000 idle clients.

usage: idle_clients.py --host 127.0.0.1 --port 25441 [--count 1000]
                       [--hold 600] [--batch 50] [--user postgres] [--db postgres]
"""
import argparse
import resource
import signal
import socket
import struct
import sys
import time


def startup(user, db):
    body = struct.pack("!I", 196608)
    for k, v in (("user", user), ("database", db)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("server closed the connection during startup")
        buf += chunk
    return buf


def finish_startup(s):
    """Read messages until ReadyForQuery; raise on error or non-trust auth."""
    while True:
        tag, length = struct.unpack("!cI", recv_exact(s, 5))
        body = recv_exact(s, length - 4)
        if tag == b"R":
            code = struct.unpack("!I", body[:4])[0]
            if code != 0:
                raise ConnectionError(f"server wants authentication (code {code}); use trust")
        elif tag == b"E":
            fields = [f[1:].decode(errors="replace") for f in body.split(b"\0") if f]
            raise ConnectionError("server error: " + " | ".join(fields))
        elif tag == b"Z":
            return


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--hold", type=float, default=600.0, help="seconds to hold (default 600)")
    ap.add_argument("--batch", type=int, default=50, help="startups in flight at once")
    ap.add_argument("--user", default="postgres")
    ap.add_argument("--db", default="postgres")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    msg = startup(a.user, a.db)
    socks = []
    t0 = time.monotonic()
    try:
        while len(socks) < a.count and not stop:
            batch = []
            for _ in range(min(a.batch, a.count - len(socks))):
                s = socket.create_connection((a.host, a.port), timeout=30)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.sendall(msg)
                batch.append(s)
            for s in batch:
                finish_startup(s)
            socks.extend(batch)
    except (OSError, ConnectionError) as e:
        print(f"failed after {len(socks)} connections: {e}", flush=True)
        for s in socks:
            s.close()
        return 1
    print(f"ready {len(socks)} ({time.monotonic() - t0:.1f}s)", flush=True)

    deadline = time.monotonic() + a.hold
    while not stop and time.monotonic() < deadline:
        time.sleep(0.2)
    for s in socks:
        try:
            s.sendall(b"X\0\0\0\4")
        except OSError:
            pass
        s.close()
    print(f"closed {len(socks)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
