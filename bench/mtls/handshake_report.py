#!/usr/bin/env python3
"""The Markdown report of bench/mtls/handshake.sh (standard library only).

  handshake_report.py WORKDIR    print the report built from WORKDIR's raw files:
    runs.csv   round,chain,test,rps,p50_ms,p99_ms,requests,cpu_ticks   (test: conn, lat or tput)
    rss.csv    chain,rss_idle_kb,rss_end_kb,hwm_kb               (both proxies summed)
    meta.txt   key=value lines; checks.txt, after.txt: one line each
"""
import os
import statistics
import sys

LABEL = {
    "direct": "direct (no proxy)",
    "ferry-mtls": "Ferry, mutual TLS",
    "ferry-plain": "Ferry, plaintext",
    "envoy-mtls": "Envoy, mutual TLS",
    "haproxy-mtls": "HAProxy, mutual TLS",
}


def read_lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


class Runs:
    """Per (chain, test, round): rps, p50 and p99 in ms, requests, CPU ticks of the chain's
    proxies (indices 0 to 4)."""

    def __init__(self, rows):
        self.data = {}
        for rnd, chain, test, rps, p50, p99, reqs, ticks in rows:
            self.data[(chain, test, int(rnd))] = (float(rps), float(p50), float(p99), int(reqs), int(ticks))
        self.rounds = sorted({k[2] for k in self.data})

    def has(self, chain, test):
        return any((chain, test, r) in self.data for r in self.rounds)

    def values(self, chain, test, i):
        return [self.data[(chain, test, r)][i] for r in self.rounds if (chain, test, r) in self.data]

    def median(self, chain, test, i):
        v = self.values(chain, test, i)
        return statistics.median(v) if v else None

    def per_round_ratios(self, a, b, test, i):
        out = []
        for r in self.rounds:
            x, y = self.data.get((a, test, r)), self.data.get((b, test, r))
            if x and y and y[i]:
                out.append(x[i] / y[i])
        return out

    def cpu_us(self, chain, test, tick_us):
        """CPU µs per request over all rounds, and the per-round values."""
        ticks = sum(self.values(chain, test, 4))
        reqs = sum(self.values(chain, test, 3))
        per = [
            self.data[(chain, test, r)][4] * tick_us / self.data[(chain, test, r)][3]
            for r in self.rounds
            if (chain, test, r) in self.data and self.data[(chain, test, r)][3]
        ]
        return (ticks * tick_us / reqs if reqs else None), per


def ratio_cell(runs, a, b, test, i):
    ma, mb = runs.median(a, test, i), runs.median(b, test, i)
    if ma is None or not mb:
        return "–"
    rr = runs.per_round_ratios(a, b, test, i)
    spread = f" ({min(rr):.2f}–{max(rr):.2f})" if len(rr) > 1 else ""
    return f"**{ma / mb:.2f}**{spread}"


def plain_ratio(x, y):
    return f"**{x / y:.2f}**" if x is not None and y else "–"


def report(work):
    meta = {}
    for line in read_lines(os.path.join(work, "meta.txt")):
        k, _, v = line.partition("=")
        meta[k] = v
    chains = meta["chains"].split()
    tick_us = 1e6 / float(meta["clk_tck"])
    runs = Runs([line.split(",") for line in read_lines(os.path.join(work, "runs.csv"))])
    rss = {}
    for line in read_lines(os.path.join(work, "rss.csv")):
        c, idle, end, hwm = line.split(",")
        rss[c] = (int(idle), int(end), int(hwm))

    out = [
        f"Machine: {meta['machine']}",
        f"Versions: {meta['versions']}",
        f"Certificates: {meta['certs']}",
        f"Machine load: {meta['load']} (other work on this shared machine is noise: read the per-round ranges)",
        f"Rounds: {len(runs.rounds)}, every chain in every round, the order rotated by one each round.",
        f"Ports: {meta.get('ports', '?')}",
        "",
        "Every chain runs between the same two pod namespaces of one `ferry up` mesh (client pod -> veth "
        "-> bridge -> veth -> Redis pod), one worker thread per proxy; see README.md for the set-up.",
        "",
        f"### New connections: `{meta['conn']}`",
        "",
        "| chain | connections/s | vs direct | p50 of a request (new connection) | vs direct | "
        "CPU of both proxies per connection | per-round range |",
        "|---|---|---|---|---|---|---|",
    ]
    cpu_conn = {}
    for c in chains:
        if not runs.has(c, "conn"):
            continue
        rps, p50 = runs.median(c, "conn", 0), runs.median(c, "conn", 1)
        if c == "direct":
            out.append(f"| {LABEL[c]} | {rps:,.0f} | 1 | {p50:.3f} ms | 1 | – | – |")
            continue
        cpu, per = runs.cpu_us(c, "conn", tick_us)
        cpu_conn[c] = cpu
        out.append(
            f"| {LABEL[c]} | {rps:,.0f} | {ratio_cell(runs, c, 'direct', 'conn', 0)} | {p50:.3f} ms | "
            f"{ratio_cell(runs, c, 'direct', 'conn', 1)} | {cpu:.0f} µs | {min(per):.0f}–{max(per):.0f} µs |"
        )
    out.append("")
    out.append(
        "Connections/s and p50 are redis-benchmark's (each request opens a connection: TCP connect to "
        "the client-side proxy, which connects to the server-side proxy and runs the TLS 1.3 handshake, "
        "which connects to Redis); medians over rounds, in parentheses the lowest and highest per-round "
        "ratio. CPU: utime+stime of both proxies of the chain from /proc/<pid>/stat around each run "
        f"(resolution {tick_us / 1000:.0f} ms), over all rounds, divided by the connections."
    )

    if any(runs.has(c, "lat") for c in chains):
        out += [
            "",
            f"### Latency of a request on a new connection, unloaded: `{meta['lat']}`",
            "",
            "| chain | p50 | vs direct | added to direct's p50 | p99 | vs direct | connections/s (one client) |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in chains:
            if not runs.has(c, "lat"):
                continue
            rps, p50, p99 = (runs.median(c, "lat", i) for i in range(3))
            if c == "direct":
                out.append(f"| {LABEL[c]} | {p50:.3f} ms | 1 | – | {p99:.3f} ms | 1 | {rps:,.0f} |")
                continue
            added = p50 - (runs.median("direct", "lat", 1) or 0)
            out.append(
                f"| {LABEL[c]} | {p50:.3f} ms | {ratio_cell(runs, c, 'direct', 'lat', 1)} | +{added:.3f} ms | {p99:.3f} ms | "
                f"{ratio_cell(runs, c, 'direct', 'lat', 2)} | {rps:,.0f} |"
            )
        out.append("")
        out.append(
            "One client, so no queueing: the time from the request's first write to its answer, "
            "which includes the client-side proxy's connect to the server side, the TLS handshake "
            "and (Ferry) the peer-metadata exchange, and the server side's connect to Redis. "
            "redis-benchmark starts the clock at the first write, once its own connect is done: direct's "
            "figure leaves out the TCP connect to Redis, a proxied chain's only the connect to the local "
            "client-side proxy, so the ratios to direct are large; compare the proxies with each other "
            "(the ratios below) or by the added milliseconds."
        )

    has_tput = any(runs.has(c, "tput") for c in chains)
    cpu_req = {}
    if has_tput:
        out += [
            "",
            f"### Long-lived connections: `{meta['tput']}`",
            "",
            "| chain | requests/s | vs direct | p50 | vs direct | CPU of both proxies per request | per-round range |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in chains:
            if not runs.has(c, "tput"):
                continue
            rps, p50 = runs.median(c, "tput", 0), runs.median(c, "tput", 1)
            if c == "direct":
                out.append(f"| {LABEL[c]} | {rps:,.0f} | 1 | {p50:.3f} ms | 1 | – | – |")
                continue
            cpu, per = runs.cpu_us(c, "tput", tick_us)
            cpu_req[c] = cpu
            out.append(
                f"| {LABEL[c]} | {rps:,.0f} | {ratio_cell(runs, c, 'direct', 'tput', 0)} | {p50:.3f} ms | "
                f"{ratio_cell(runs, c, 'direct', 'tput', 1)} | {cpu:.1f} µs | {min(per):.1f}–{max(per):.1f} µs |"
            )

    if rss:
        out += [
            "",
            "### Memory (both proxies of the chain summed)",
            "",
            "| chain | RSS after the checks | RSS at the end | peak RSS (VmHWM) |",
            "|---|---|---|---|",
        ]
        for c in chains:
            if c in rss:
                idle, end, hwm = rss[c]
                out.append(f"| {LABEL[c]} | {idle / 1024:.1f} MB | {end / 1024:.1f} MB | {hwm / 1024:.1f} MB |")
        out.append("")
        out.append(
            "Ferry's two chains run through the same two sidecars, so their memory is the same "
            "processes (which also hold the configuration stream and telemetry)."
        )

    def versus(other):
        if "ferry-mtls" not in chains or other not in chains:
            return None
        cells = [
            f"connections/s {ratio_cell(runs, 'ferry-mtls', other, 'conn', 0)}",
            f"p50 on a new connection unloaded {ratio_cell(runs, 'ferry-mtls', other, 'lat', 1)}"
            if runs.has("ferry-mtls", "lat")
            else None,
            f"p50 on a new connection under load {ratio_cell(runs, 'ferry-mtls', other, 'conn', 1)}",
            f"CPU per connection {plain_ratio(cpu_conn.get('ferry-mtls'), cpu_conn.get(other))}",
        ]
        if "ferry-mtls" in rss and other in rss:
            cells.append(f"peak RSS {plain_ratio(rss['ferry-mtls'][2], rss[other][2])}")
        if has_tput:
            cells.append(f"long-lived requests/s {ratio_cell(runs, 'ferry-mtls', other, 'tput', 0)}")
            cells.append(f"CPU per request {plain_ratio(cpu_req.get('ferry-mtls'), cpu_req.get(other))}")
        return ", ".join(c for c in cells if c)

    lines = []
    for other, name in (("envoy-mtls", "Envoy"), ("haproxy-mtls", "HAProxy"), ("ferry-plain", "Ferry plaintext")):
        v = versus(other)
        if v:
            lines.append(f"- **Ferry mTLS / {name}**: {v}")
    if lines:
        out += [
            "",
            "### Ratios (same run)",
            "",
            *lines,
            "",
            "Above 1: more connections or requests per second, slower p50, more CPU, more memory for "
            "Ferry. In parentheses the lowest and highest per-round ratio.",
        ]

    checks = read_lines(os.path.join(work, "checks.txt"))
    if checks:
        out += ["", "### Checks before measuring (the run fails if one does not hold)", ""]
        out += [f"- {c}" for c in checks]
    after = read_lines(os.path.join(work, "after.txt"))
    if after:
        out += ["", "After the rounds:", ""]
        out += [f"- {a}" for a in after]
    print("\n".join(out))


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    report(sys.argv[1])


if __name__ == "__main__":
    main()
