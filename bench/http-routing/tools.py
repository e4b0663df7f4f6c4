#!/usr/bin/env python3
"""Helpers for bench/http-routing/run.sh (standard library only).

  tools.py split ADDR PORT COUNT HOST [HEADER]   COUNT keep-alive GETs of / to ADDR:PORT with
                                                 Host: HOST (and "name: value" HEADER); print
                                                 how many bodies were v1, v2 and other
  tools.py wrk FILE             parse wrk --latency output; print rps,p50_us,p99_us,requests;
                                exit 1 on socket errors or non-2xx/3xx answers
  tools.py ferry-split FILE     one line: Ferry's istio_requests_total by destination and code
  tools.py envoy-split FILE     one line: Envoy's upstream_rq_total per cluster
  tools.py report WORKDIR       print the Markdown report built from WORKDIR's raw files
"""
import http.client
import os
import re
import statistics
import sys


def split(addr, port, count, host, header=None):
    headers = {"Host": host}
    if header:
        name, value = header.split(":", 1)
        headers[name.strip()] = value.strip()
    counts = {"v1": 0, "v2": 0, "other": 0}
    conn = http.client.HTTPConnection(addr, port, timeout=10)
    try:
        for _ in range(count):
            conn.request("GET", "/", headers=headers)
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace").strip()
            if resp.status == 200 and body in ("v1", "v2"):
                counts[body] += 1
            else:
                counts["other"] += 1
                print(f"unexpected answer {resp.status} {body[:80]!r}", file=sys.stderr)
            if resp.will_close:
                conn.close()
                conn = http.client.HTTPConnection(addr, port, timeout=10)
    finally:
        conn.close()
    print(counts["v1"], counts["v2"], counts["other"])


UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def to_us(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unknown duration {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(text):
    """Returns (rps, p50_us, p99_us, requests) from `wrk --latency` output; raises ValueError
    when the output lacks one of them or reports errors."""
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    reqs = re.search(r"^\s+(\d+) requests in ", text, re.M)
    if not (rps and p50 and p99 and reqs):
        raise ValueError("no Requests/sec, 50%, 99% or request count in the wrk output")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if errors and any(int(n) for n in errors.groups()):
        raise ValueError(f"wrk reported {errors.group(0)}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx and int(non2xx.group(1)):
        raise ValueError(f"wrk reported {non2xx.group(0)}")
    return float(rps.group(1)), to_us(p50.group(1)), to_us(p99.group(1)), int(reqs.group(1))


def wrk(path):
    text = open(path).read()
    try:
        rps, p50, p99, reqs = parse_wrk(text)
    except ValueError as e:
        print(text, file=sys.stderr)
        print(f"error: {path}: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"{rps:.1f},{p50:.1f},{p99:.1f},{reqs}")


def prom_samples(text, metric):
    """(labels dict, value) for every sample of `metric` in Prometheus text format."""
    out = []
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        labels_text, _, value = line[len(metric) + 1 :].rpartition("} ")
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels_text))
        out.append((labels, float(value.split()[0])))
    return out


def ferry_split(path):
    samples = prom_samples(open(path).read(), "istio_requests_total")
    by_dest, by_code = {}, {}
    for labels, value in samples:
        dest = labels.get("destination_version") or labels.get("destination_workload") or "unknown"
        if dest in ("", "unknown"):
            dest = labels.get("destination_workload", "unknown")
        by_dest[dest] = by_dest.get(dest, 0) + value
        code = labels.get("response_code", "?") + (f"/{labels['response_flags']}" if labels.get("response_flags", "-") != "-" else "")
        by_code[code] = by_code.get(code, 0) + value
    total = sum(by_dest.values())
    if not total:
        print("ferry: no istio_requests_total samples")
        return
    dests = ", ".join(f"{d} {v:,.0f} ({100 * v / total:.1f} %)" for d, v in sorted(by_dest.items()))
    codes = ", ".join(f"{c} {v:,.0f}" for c, v in sorted(by_code.items()))
    print(f"ferry: istio_requests_total {total:,.0f} by destination: {dests}; by response code: {codes}")


def envoy_split(path):
    per = {}
    for line in open(path):
        m = re.match(r"cluster\.(v1|v2)\.upstream_rq_total: (\d+)", line.strip())
        if m:
            per[m.group(1)] = int(m.group(2))
    total = sum(per.values())
    if not total:
        print("envoy: no cluster.*.upstream_rq_total")
        return
    parts = ", ".join(f"{c} {v:,} ({100 * v / total:.1f} %)" for c, v in sorted(per.items()))
    print(f"envoy: upstream_rq_total {total:,} (attempts, retries included) by cluster: {parts}")


def read_rows(path):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    rows.append(line.split(","))
    return rows


def fmt_us(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def report(work):
    # runs.csv: round,target,rps,p50_us,p99_us,requests,cpu_ticks
    # rss.csv: target,idle_kb,end_kb,hwm_kb
    # meta.txt: key=value lines; checks.txt, split.txt: lines
    meta = {}
    with open(os.path.join(work, "meta.txt")) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    targets = meta["targets"].split()
    proxies = [t for t in targets if t != "direct"]
    tick_us = 1e6 / float(meta["clk_tck"])

    run = {}  # (target, round) -> (rps, p50, p99, requests, ticks)
    for rnd, target, rps, p50, p99, reqs, ticks in read_rows(os.path.join(work, "runs.csv")):
        run[(target, rnd)] = (float(rps), float(p50), float(p99), int(reqs), int(ticks))
    rounds = sorted({r for _, r in run}, key=int)

    def values(target, i):
        return [run[(target, r)][i] for r in rounds if (target, r) in run]

    def med(target, i):
        v = values(target, i)
        return statistics.median(v) if v else None

    def round_ratios(a, b, i):
        return [run[(a, r)][i] / run[(b, r)][i] for r in rounds if (a, r) in run and (b, r) in run and run[(b, r)][i]]

    def ratio_cell(a, b, i):
        ma, mb = med(a, i), med(b, i)
        if ma is None or not mb:
            return "–"
        rr = round_ratios(a, b, i)
        spread = f" ({min(rr):.2f}–{max(rr):.2f})" if rr else ""
        return f"**{ma / mb:.2f}**{spread}"

    out = []
    out.append(f"Machine: {meta['machine']}")
    out.append(f"Versions: {meta['versions']}")
    out.append(f"Layout: {meta['layout']}")
    out.append(f"Machine load: {meta['load']} (other work on the machine shows up as noise)")
    out.append(f"Workload: `{meta['workload']}`, {len(rounds)} rounds, targets rotated each round")
    out.append(
        "Routes (both proxies): `end-user: jason` -> v2; everything else v1 80 / v2 20 per request; "
        "Istio's default retry policy (2 retries on connect-failure,refused-stream,unavailable,"
        "cancelled,retriable-status-codes with 503); no timeout; LEAST_REQUEST. The load carries no "
        "`end-user` header, so every request is checked against the header rule and then split 80/20."
    )
    out.append("")
    out.append("### Throughput and latency (medians over rounds; ratios to direct)")
    out.append("")
    out.append("| target | req/s | req/s vs direct | p50 | p50 vs direct | p99 | p99 vs direct |")
    out.append("|---|---|---|---|---|---|---|")
    for t in targets:
        if med(t, 0) is None:
            continue
        if t == "direct":
            out.append(f"| direct | {med(t, 0):,.0f} | 1 | {fmt_us(med(t, 1))} | 1 | {fmt_us(med(t, 2))} | 1 |")
        else:
            out.append(
                f"| {t} | {med(t, 0):,.0f} | {ratio_cell(t, 'direct', 0)} | {fmt_us(med(t, 1))} | "
                f"{ratio_cell(t, 'direct', 1)} | {fmt_us(med(t, 2))} | {ratio_cell(t, 'direct', 2)} |"
            )
    out.append("")
    out.append(
        "Ratios: target median / direct median, in parentheses the lowest and highest per-round ratio "
        "(each round's target against the same round's direct). Latency is wrk's, per request, "
        "closed loop (each connection sends its next request when the answer arrives); for "
        "latency a ratio above 1 is slower."
    )
    if "ferry" in targets and "envoy" in targets and med("ferry", 0) and med("envoy", 0):
        out.append("")
        out.append(
            f"**Ferry / Envoy**: req/s {ratio_cell('ferry', 'envoy', 0)}, p50 {ratio_cell('ferry', 'envoy', 1)}, "
            f"p99 {ratio_cell('ferry', 'envoy', 2)} (above 1: Ferry serves more requests / answers slower)."
        )

    rss = {r[0]: r[1:] for r in read_rows(os.path.join(work, "rss.csv"))}
    if proxies:
        out.append("")
        out.append("### Proxy cost (whole proxy process: all its threads, user + system)")
        out.append("")
        out.append("| proxy | CPU µs/request (all rounds) | per-round range | RSS idle | RSS at end | peak RSS (VmHWM) |")
        out.append("|---|---|---|---|---|---|")
        cpu = {}
        for t in proxies:
            ticks = sum(values(t, 4))
            reqs = sum(values(t, 3))
            per = [run[(t, r)][4] * tick_us / run[(t, r)][3] for r in rounds if (t, r) in run and run[(t, r)][3]]
            cells = [t]
            if reqs:
                cpu[t] = ticks * tick_us / reqs
                cells.append(f"{cpu[t]:.2f}")
                cells.append(f"{min(per):.2f}–{max(per):.2f}")
            else:
                cells += ["–", "–"]
            for kb in rss.get(t, ["", "", ""]):
                cells.append(f"{int(kb) / 1024:.1f} MB" if kb else "–")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        line = (
            "CPU: utime+stime from /proc/<pid>/stat (resolution 1/CLK_TCK = "
            f"{tick_us / 1000:.0f} ms) around each measured run, divided by the requests wrk completed "
            "in it. RSS: VmRSS from /proc/<pid>/status after the route checks (idle) and after the "
            "last round; MB = 1024 kB."
        )
        if "ferry" in cpu and "envoy" in cpu:
            line += f" Ferry / Envoy CPU per request: **{cpu['ferry'] / cpu['envoy']:.2f}x**."
        if rss.get("ferry") and rss.get("envoy") and rss["envoy"][2]:
            line += f" Ferry / Envoy peak RSS: **{int(rss['ferry'][2]) / int(rss['envoy'][2]):.2f}x**."
        out.append(line)

    checks = read_rows_lines(os.path.join(work, "checks.txt"))
    if checks:
        out.append("")
        out.append("### Route checks before measuring (the run fails if one is off)")
        out.append("")
        for c in checks:
            out.append(f"- {c}")
    splits = read_rows_lines(os.path.join(work, "split.txt"))
    if splits:
        out.append("")
        out.append("Split over the whole run, as each proxy counted it:")
        out.append("")
        for s in splits:
            out.append(f"- {s}")
    print("\n".join(out))


def read_rows_lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "split" and len(sys.argv) in (6, 7):
        split(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6] if len(sys.argv) == 7 else None)
    elif cmd == "wrk" and len(sys.argv) == 3:
        wrk(sys.argv[2])
    elif cmd == "ferry-split" and len(sys.argv) == 3:
        ferry_split(sys.argv[2])
    elif cmd == "envoy-split" and len(sys.argv) == 3:
        envoy_split(sys.argv[2])
    elif cmd == "report" and len(sys.argv) == 3:
        report(sys.argv[2])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
