#!/usr/bin/env python3
"""Medians over several runs of benches/loadtest/run.py (issue 16).

    for i in 1 2 3; do python3 benches/loadtest/run.py --out target/loadtest/run-$i; done
    python3 benches/loadtest/combine.py target/loadtest/run-1 target/loadtest/run-2 target/loadtest/run-3

Reads each folder's results.json and prints one markdown report: per case
the median over the runs of the bare and governed throughput, of the
governed/bare ratio and of the CPU per request; the median latency, layer
costs and RSS growth; and every run's load average at start.
"""

import json
import os
import sys
from statistics import median

TARGETS = {"get_h1": 0.75, "get_h2c": 0.75, "post_h1": 0.60, "grpc_unary": 0.75,
           "grpc_bidi": 0.90, "get_h1_tls": 0.75}


def main():
    dirs = sys.argv[1:]
    if not dirs:
        sys.exit(__doc__)
    runs = [json.load(open(os.path.join(d, "results.json"))) for d in dirs]
    # Runs are combined only when they measured the same setup.
    setups = {(r.get("allocator", "glibc"), r.get("sample_ratio"), r.get("without")) for r in runs}
    if len(setups) > 1:
        sys.exit(f"runs of different setups (allocator, sample ratio, layers left out): {sorted(setups, key=str)}")
    allocator, sample_ratio, without = setups.pop()
    sampled = ("every span sampled" if sample_ratio is None or sample_ratio >= 1.0
               else f"spans sampled at {sample_ratio} (parent-based)")
    if without:
        sampled += f"; governed without {without}"
    # The targets assume every span sampled and every layer in.
    sampled_all = (sample_ratio is None or sample_ratio >= 1.0) and not without
    out = [f"Medians over {len(runs)} runs. Load average at start: "
           + "; ".join(" ".join(r["loadavg_start"]) for r in runs)
           + f". Server allocator: {allocator}; {sampled}.", "",
           "| case | bare /s | governed /s | governed / bare (target) | per run | CPU µs/req bare → governed (added) |",
           "|---|---:|---:|---:|---|---:|"]
    cases = [c for c in runs[0].get("summary", {}) if all(c in r.get("summary", {}) for r in runs)]
    for case in cases:
        rows = [r["summary"][case] for r in runs]
        bare = median(x["bare"]["rps"] for x in rows)
        gov = median(x["governed"]["rps"] for x in rows)
        ratios = [x["ratio"] for x in rows]
        ratio = median(ratios)
        cb = median(x["bare"]["cpu_us_per_req"] for x in rows)
        cg = median(x["governed"]["cpu_us_per_req"] for x in rows)
        t = TARGETS.get(case) if sampled_all else None
        mark = ("✅" if ratio >= t else "❌") if t else ""
        target = f" (≥ {t:.2f}) {mark}" if t else " (not the issue's setup)"
        out.append(f"| {case} | {bare:.0f} | {gov:.0f} | {ratio:.2f}{target} | "
                   f"{', '.join(f'{x:.2f}' for x in ratios)} | {cb:.2f} → {cg:.2f} (+{cg - cb:.2f}) |")
    out.append("")
    if "get_h1" in cases:
        added = median(r["summary"]["get_h1"]["cpu_added_us"] for r in runs)
        out.append(f"- Server CPU added per GET (HTTP/1.1, all threads): {added:.2f} µs "
                   + (f"(target ≤ 3) {'✅' if added <= 3 else '❌'}" if sampled_all
                      else "(not the issue's setup)"))
        wa = [r["summary"]["get_h1"].get("ratio_without_audit") for r in runs]
        if all(x is not None for x in wa):
            m = median(wa)
            out.append(f"- GET HTTP/1.1 with audit left out: {m:.2f} of bare (target ≥ 0.85) "
                       f"{'✅' if m >= 0.85 else '❌'}")
    lat = [r["latency"] for r in runs if "latency" in r]
    if lat:
        b99 = median(x["bare"]["p99_us"] for x in lat)
        g99 = median(x["governed"]["p99_us"] for x in lat)
        b50 = median(x["bare"]["p50_us"] for x in lat)
        g50 = median(x["governed"]["p50_us"] for x in lat)
        rates = ", ".join(str(x["rate"]) for x in lat)
        out.append(f"- Latency at half the bare saturation ({rates}/s): bare p50 {b50:.0f} µs p99 {b99:.0f} µs; "
                   f"governed p50 {g50:.0f} µs p99 {g99:.0f} µs (target p99 ≤ bare + 100 µs) "
                   f"{'✅' if g99 <= b99 + 100 else '❌'}")
    layers = [r["layers"] for r in runs if "layers" in r]
    if layers:
        out.append("- CPU per GET by layer left out, µs (median): "
                   + ", ".join(f"{k} {median(x[k] for x in layers):.2f}" for k in layers[0]))
    rss = [r["rss"] for r in runs if "rss" in r]
    if rss:
        g = median(x["growth"] for x in rss)
        errors = sum(x["errors"] for x in rss)
        out.append(f"- RSS over {rss[0]['requests']} governed GETs at 256 connections: "
                   f"{g * 100:+.1f} % (median; per run "
                   + ", ".join(f"{x['growth'] * 100:+.1f} %" for x in rss)
                   + f"), non-2xx {errors} (target ≤ 5 %, 0) {'✅' if g <= 0.05 and errors == 0 else '❌'}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
