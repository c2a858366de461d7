#!/usr/bin/env python3
"""Prints a markdown table of `bitrobust eval --json` results: one row per model, clean error and
mean ± std RErr per rate. Usage: rerr_table.py DIR SUFFIX MODEL... (reads DIR/MODEL + SUFFIX)."""
import json
import os
import sys


def main():
    out, suffix, models = sys.argv[1], sys.argv[2], sys.argv[3:]
    rows = [(n, json.load(open(os.path.join(out, n + suffix)))) for n in models]
    rates = [r["rate"] for r in rows[0][1]["results"]]
    print("| model | scheme | clean % | " + " | ".join(f"RErr {100*p:g}% (mean ± std)" for p in rates) + " |")
    print("|---|---|---|" + "---|" * len(rates))
    for n, e in rows:
        cells = " | ".join(f"{100*r['rerr_mean']:.2f} ± {100*r['rerr_std']:.2f}" for r in e["results"])
        print(f"| {n} | {e['scheme']} | {100*e['clean_error']:.2f} | {cells} |")


if __name__ == "__main__":
    main()
