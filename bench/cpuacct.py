#!/usr/bin/env python3
"""CPU accounting for bench/run.sh (stdlib only, Linux /proc).

  cpuacct.py snap FILE
      Save host counters and every process's CPU ticks to FILE.
  cpuacct.py diff A B --script PID --proxy PID --txns N
      Print one line "proxy_us_per_txn host_busy_pct foreign_cores kthread_cores"
      followed by "# top foreign: ..." lines.

"ours" = the benchmark shell and its descendants: pgbench, the proxies and
the postmaster it started (whose cutime covers exited backends). Kernel threads (ksoftirqd, kworkers) are reported separately.
Everything else is "foreign": CPU that other work took from the benchmark.
Process times include the softirq time charged to them, so host busy counts
user+nice+system+irq+softirq.
"""
import json
import os
import sys
import time


def snap():
    procs = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            uid = os.stat("/proc/" + p).st_uid
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        name = s[s.index("(") + 1 : s.rindex(")")]
        fl = s[s.rindex(")") + 2 :].split()
        # fields after comm: state ppid ... utime(11) stime(12) cutime(13) cstime(14)
        procs[p] = [name, int(fl[1]), uid, int(fl[11]) + int(fl[12]), int(fl[13]) + int(fl[14])]
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    return {"cpu": cpu, "t": time.time(), "procs": procs}


def diff(a, b, script, proxy, txns):
    tick = os.sysconf("SC_CLK_TCK")
    ncpu = os.cpu_count() or 1
    busy = sum(b["cpu"][i] - a["cpu"][i] for i in (0, 1, 2, 5, 6))
    procs = b["procs"]

    def ours(p):
        seen = set()
        while p and p not in seen:
            if p == script:
                return True
            seen.add(p)
            p = str(procs[p][1]) if p in procs else None
        return False

    foreign, kthread, px, mine = {}, 0, 0, 0
    for p, (name, ppid, uid, own, kids) in procs.items():
        own0, kids0 = (a["procs"][p][3], a["procs"][p][4]) if p in a["procs"] else (0, 0)
        d = own - own0 + kids - kids0
        if p == proxy:
            px = own - own0
        if d <= 0:
            continue
        if ours(p):
            mine += d
            continue
        if ppid == 2 or p == "2":
            kthread += d
        else:
            foreign[f"{name}[{p}]"] = d
    el = max(b["t"] - a["t"], 1e-3)
    us = px / tick * 1e6 / txns if txns > 0 else 0.0
    # Foreign = host busy minus ours minus kernel threads. Summing the foreign
    # processes directly would over-count: a foreign parent reaping a child
    # inside the window gains the child's whole lifetime in its cutime.
    other = max(0, busy - mine - kthread)
    print(f"{us:.1f} {100 * busy / tick / el / ncpu:.0f} {other / tick / el:.2f} {kthread / tick / el:.2f}")
    top = sorted(foreign.items(), key=lambda kv: -kv[1])[:5]
    print("# top foreign processes (incl. children reaped in the window): " + (", ".join(f"{k} {v / tick / el:.2f} cores" for k, v in top) or "none"))


def main():
    if sys.argv[1] == "snap":
        with open(sys.argv[2], "w") as f:
            json.dump(snap(), f)
        return
    args = dict(zip(sys.argv[4::2], sys.argv[5::2]))
    with open(sys.argv[2]) as f:
        a = json.load(f)
    with open(sys.argv[3]) as f:
        b = json.load(f)
    diff(a, b, args["--script"], args["--proxy"], int(args["--txns"]))


if __name__ == "__main__":
    main()
