#!/usr/bin/env python3
"""RandBET 1% against clipping alone on the CIFAR-10 CPU stand-in, over training seeds (docs/results.md)."""
import json, math, os, statistics
# per-seed paired differences (RandBET 1% minus clip, mean over the same 20 chips), then a t interval over seeds
# Run from the checkout's root. Seeds 1 and 2: clip from 2026-12-04, RandBET 1% trained again after the BatchNorm fix.
pairs = {1: ("docs/runs/2026-12-04-cifar10-cpu/clip.eval.json", "docs/runs/2026-12-05-cifar10-cpu-bnfix/clip_randbet1.eval.json"),
         2: ("docs/runs/2026-12-04-cifar10-cpu/seed2/clip.eval.json", "docs/runs/2026-12-05-cifar10-cpu-bnfix/seed2/clip_randbet1.eval.json")}
for s in (3, 4):
    pairs[s] = (f"docs/runs/2026-12-05-cifar10-cpu-seeds/seed{s}/clip.eval.json",
                f"docs/runs/2026-12-05-cifar10-cpu-seeds/seed{s}/clip_randbet1.eval.json")
t975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776}
rows = {}
for s, (a, b) in pairs.items():
    if not (os.path.exists(a) and os.path.exists(b)): continue
    A, B = json.load(open(a)), json.load(open(b))
    diffs = []
    for ra, rb in zip(A["results"], B["results"]):
        d = [y - x for x, y in zip(ra["per_pattern"], rb["per_pattern"])]
        diffs.append(100 * sum(d) / len(d))
    rows[s] = (100 * A["clean_error"], 100 * B["clean_error"], diffs)
    print(f"seed {s}: clean clip {rows[s][0]:.2f} randbet1 {rows[s][1]:.2f}; paired diffs " + " / ".join(f"{d:+.2f}" for d in diffs))
n = len(rows)
rates = [r["rate"] for r in json.load(open(pairs[1][0]))["results"]]
for i, p in enumerate(rates):
    v = [rows[s][2][i] for s in rows]
    m = statistics.mean(v); sd = statistics.stdev(v); h = t975[n - 1] * sd / math.sqrt(n)
    print(f"rate {100*p:g}%: mean over {n} seeds {m:+.2f} [{m-h:+.2f}, {m+h:+.2f}], sd {sd:.2f}, lower in {sum(x<0 for x in v)} of {n}")
c = [rows[s][0] for s in rows]; print("clip clean over seeds: " + ", ".join(f"{x:.2f}" for x in c) + f"; sd {statistics.stdev(c):.2f}")
