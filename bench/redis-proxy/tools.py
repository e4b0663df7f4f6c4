#!/usr/bin/env python3
"""Helpers for bench/redis-proxy/run.sh (standard library only).

  tools.py hold PORT COUNT PID            open COUNT connections to 127.0.0.1:PORT, PING each,
                                          print VmRSS (kB) of PID while they are all open
  tools.py report WORKDIR                 print the Markdown report built from WORKDIR's raw files
  tools.py update-results FILE SECTION    replace (or append) the "## <SECTION>" section of FILE
                                          with the Markdown read from stdin
"""
import os
import socket
import statistics
import sys
import time


def vm_field(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit(f"{field} not found for pid {pid}")


def hold(port, count, pid):
    socks = []
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(s)
        # One round trip per connection, so each proxy has really connected upstream and set up
        # whatever per-connection state it keeps (protocol detection, buffers, telemetry).
        for s in socks:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
        for s in socks:
            got = b""
            while not got.endswith(b"\r\n"):
                chunk = s.recv(64)
                if not chunk:
                    raise SystemExit("connection closed before PONG")
                got += chunk
            if got != b"+PONG\r\n":
                raise SystemExit(f"unexpected reply {got!r}")
        time.sleep(0.5)
        print(vm_field(pid, "VmRSS"))
    finally:
        for s in socks:
            s.close()


def read_rows(path):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    rows.append(line.split(","))
    return rows


def fmt_rps(v):
    return f"{v:,.0f}"


def report(work):
    # rps.csv: round,pipeline,target,command,rps
    # cpu.csv: target,pipeline,cpu_ticks,requests
    # rss.csv: target,idle_kb,conn1000_kb,end_kb,hwm_kb
    # meta.txt: key=value lines
    meta = {}
    with open(os.path.join(work, "meta.txt")) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    targets = meta["targets"].split()
    proxies = [t for t in targets if t != "direct"]
    tick_us = 1e6 / float(meta["clk_tck"])

    rps = {}  # (pipeline, command, target) -> [rps per round]
    per_round = {}  # (pipeline, command, target, round) -> rps
    for rnd, pipe, target, cmd, value in read_rows(os.path.join(work, "rps.csv")):
        rps.setdefault((pipe, cmd, target), []).append(float(value))
        per_round[(pipe, cmd, target, rnd)] = float(value)
    rounds = sorted({r[0] for r in read_rows(os.path.join(work, "rps.csv"))}, key=int)

    out = []
    out.append(f"Machine: {meta['machine']}")
    out.append(f"Versions: {meta['versions']}")
    out.append(f"Layout: {meta['layout']}")
    if meta.get("load"):
        out.append(f"Machine load: {meta['load']} (other work on the machine shows up as noise)")
    out.append(f"Workload: `{meta['workload']}`, {len(rounds)} rounds, targets rotated each round")
    out.append("")
    out.append("### Throughput (median requests/s over rounds; ratio = target median / direct median)")
    out.append("")
    header = "| test | " + " | ".join(targets) + " |"
    if "ferry" in targets and any(t in targets for t in ("haproxy", "envoy")):
        header += " ferry / best(haproxy, envoy) |"
    out.append(header)
    out.append("|" + "---|" * (header.count("|") - 1))
    pipes = sorted({k[0] for k in rps}, key=int)
    for pipe in pipes:
        for cmd in ("SET", "GET"):
            if (pipe, cmd, targets[0]) not in rps:
                continue
            med = {t: statistics.median(rps[(pipe, cmd, t)]) for t in targets if (pipe, cmd, t) in rps}
            cells = []
            for t in targets:
                if t not in med:
                    cells.append("–")
                elif t == "direct" or "direct" not in med:
                    cells.append(fmt_rps(med[t]) + " rps")
                else:
                    ratios = [
                        per_round[(pipe, cmd, t, r)] / per_round[(pipe, cmd, "direct", r)]
                        for r in rounds
                        if (pipe, cmd, t, r) in per_round and (pipe, cmd, "direct", r) in per_round
                    ]
                    spread = f" ({min(ratios):.2f}–{max(ratios):.2f})" if ratios else ""
                    cells.append(f"**{med[t] / med['direct']:.2f}**{spread} · {fmt_rps(med[t])}")
            line = f"| {cmd} -P {pipe} | " + " | ".join(cells) + " |"
            if header.endswith("haproxy, envoy) |"):
                others = [med[t] for t in ("haproxy", "envoy") if t in med]
                line += f" **{med['ferry'] / max(others):.2f}x** |" if "ferry" in med and others else " – |"
            out.append(line)
    out.append("")
    out.append(
        "Cells: ratio to direct of the medians, in parentheses the lowest and highest per-round "
        "ratio (each round's target against the same round's direct), then the median requests/s."
    )

    cpu = {}
    for target, pipe, ticks, reqs in read_rows(os.path.join(work, "cpu.csv")):
        c = cpu.setdefault((target, pipe), [0, 0])
        c[0] += int(ticks)
        c[1] += int(reqs)
    rss = {r[0]: r[1:] for r in read_rows(os.path.join(work, "rss.csv"))}
    if proxies:
        out.append("")
        out.append("### Proxy cost (whole proxy process: all its threads, user + system)")
        out.append("")
        cols = ["proxy"] + [f"CPU µs/request -P {p}" for p in pipes] + [
            "RSS idle",
            "RSS with 1,000 conns open",
            "RSS at end",
            "peak RSS (VmHWM)",
        ]
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "---|" * len(cols))
        for t in proxies:
            cells = [t]
            for p in pipes:
                ticks, reqs = cpu.get((t, p), (0, 0))
                cells.append(f"{ticks * tick_us / reqs:.2f}" if reqs else "–")
            for kb in rss.get(t, ["", "", "", ""]):
                cells.append(f"{int(kb) / 1024:.1f} MB" if kb else "–")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        out.append(
            "CPU: utime+stime from /proc/<pid>/stat (resolution 1/CLK_TCK = "
            f"{tick_us / 1000:.0f} ms) summed over the measured runs only, divided by the requests "
            "those runs sent (2 × N per run: N SET + N GET). RSS: VmRSS from /proc/<pid>/status; "
            "MB = 1024 kB."
        )
    if "ferry" in proxies and "direct" in targets and "1" in pipes:
        # The goals of issue 3, with Redis telemetry on, checked against this run.
        checks = []
        for cmd in ("SET", "GET"):
            m = {t: statistics.median(v) for (p, c, t), v in rps.items() if p == "1" and c == cmd}
            if "ferry" in m and "direct" in m:
                r = m["ferry"] / m["direct"]
                checks.append(f"{cmd} -P 1 ≥ 0.70 of direct: {r:.2f} {'met' if r >= 0.70 else 'NOT met'}")
                others = [m[t] for t in ("haproxy", "envoy") if t in m]
                if others:
                    x = m["ferry"] / max(others)
                    checks.append(f"{cmd} -P 1 ≥ 1.2x best(haproxy, envoy): {x:.2f}x {'met' if x >= 1.2 else 'NOT met'}")
        ticks, reqs = cpu.get(("ferry", "1"), (0, 0))
        if reqs:
            us = ticks * tick_us / reqs
            checks.append(f"≤ 12 µs proxy CPU/request (-P 1): {us:.2f} {'met' if us <= 12 else 'NOT met'}")
        if rss.get("ferry", [""])[0]:
            mb = int(rss["ferry"][0]) / 1024
            checks.append(f"< 10 MB RSS idle: {mb:.1f} MB {'met' if mb < 10 else 'NOT met'}")
        out.append("")
        out.append("Issue 3 targets for Ferry: " + "; ".join(checks) + ".")
    if "ferry" in proxies and "ferry-policy" in proxies:
        # Issue 7: a weighted route and a RedisPolicy present (not firing) cost at most 5%.
        checks = []
        for pipe in pipes:
            for cmd in ("SET", "GET"):
                m = {t: statistics.median(v) for (p, c, t), v in rps.items() if p == pipe and c == cmd}
                if "ferry" in m and "ferry-policy" in m:
                    r = m["ferry-policy"] / m["ferry"]
                    checks.append(f"{cmd} -P {pipe}: {r:.3f}")
        cpu_cells = []
        for pipe in pipes:
            plain, policy = cpu.get(("ferry", pipe), (0, 0)), cpu.get(("ferry-policy", pipe), (0, 0))
            if plain[1] and policy[1] and plain[0]:
                cpu_cells.append(
                    f"-P {pipe}: {policy[0] * tick_us / policy[1]:.2f} vs {plain[0] * tick_us / plain[1]:.2f} µs "
                    f"({(policy[0] / policy[1]) / (plain[0] / plain[1]):.2f}x)"
                )
        out.append("")
        out.append(
            "Traffic policy (issue 7: ferry-policy within 5% of ferry): throughput ratio ferry-policy / ferry "
            + ", ".join(checks)
            + ("; proxy CPU per request " + ", ".join(cpu_cells) if cpu_cells else "")
            + "."
        )
    if meta.get("ferry_telemetry"):
        out.append("")
        out.append(f"Ferry telemetry check: {meta['ferry_telemetry']}")
    print("\n".join(out))


def update_results(path, section):
    body = sys.stdin.read().strip("\n")
    head = f"## {section}"
    lines = open(path).read().split("\n") if os.path.exists(path) else ["# Benchmark results", ""]
    start = next((i for i, l in enumerate(lines) if l.strip() == head), None)
    new = [head, "", body, ""]
    if start is None:
        while lines and lines[-1] == "":
            lines.pop()
        lines += [""] + new
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = new
    text = "\n".join(lines).rstrip("\n") + "\n"
    tmp = path + ".tmp-redis-proxy"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "hold":
        hold(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "report":
        report(sys.argv[2])
    elif cmd == "update-results":
        update_results(sys.argv[2], sys.argv[3])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
