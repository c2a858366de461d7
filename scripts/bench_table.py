#!/usr/bin/env python3
"""Prints issue 7's table from bench_end_to_end's JSON (--benchmark_format=json): each figure next to
its baseline measured in the same run, and the ratio."""
import json
import sys


def main(path):
    data = json.load(open(path))
    rows = {}
    for b in data["benchmarks"]:
        if b.get("error_occurred"):
            continue
        rows[b["name"].split("/min_time")[0].split("/iterations")[0].split("/real_time")[0]] = b

    def get(name, key):
        b = rows.get(name)
        return None if b is None else b.get(key)

    def us(name):
        b = rows.get(name)
        if b is None:
            return None
        scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[b["time_unit"]]
        return b["real_time"] * scale

    table = []
    eager = get("BM_Inference/0", "images_per_second")
    fused = get("BM_Inference/1", "images_per_second")
    table.append(("plain inference, images/s (fused GN+ReLU)", fused, "eager LibTorch", eager, "higher"))
    table.append(("eval sweep, images x patterns/s", get("BM_Sweep/10", "images_patterns_per_second"),
                  "our plain inference", fused, "higher (goal >= 0.9)"))
    copy = us("BM_CopyCodes")
    for rate_e4, label in ((1, "0.01%"), (10, "0.1%"), (100, "1%"), (1000, "10%")):
        inject = us(f"BM_InjectDequantize/p_e4:{rate_e4}")
        table.append((f"inject + dequantize {label}, ms/pattern", inject and inject / 1e3, "copy of the codes, ms",
                      copy and copy / 1e3, "lower"))
    deq = us("BM_DequantizeOnly")
    table.append(("dequantize only (no pattern), ms/pattern", deq and deq / 1e3, "copy of the codes, ms",
                  copy and copy / 1e3, "lower (the floor of the rows above)"))
    flt = get("BM_TrainStep/0", "train_images_per_second")
    table.append(("QAT training, images/s", get("BM_TrainStep/1", "train_images_per_second"), "float training", flt,
                  "higher (goal >= 1/1.1 = 0.91)"))
    table.append(("RandBET 1% training, images/s", get("BM_TrainStep/2", "train_images_per_second"), "float training",
                  flt, "higher (goal >= 1/2.2 = 0.45)"))
    suite = us("BM_ReferenceSuite")
    if suite is not None:
        table.append(("13 rates x 50 patterns x 9000 images, s", suite / 1e6, "goal", 60.0, "lower"))

    ctx = data.get("context", {})
    print(f"\nbitrobust end to end ({ctx.get('host_name', '?')}, {ctx.get('date', '?')})")
    print(f"{'measure':44s} {'bitrobust':>12s}   {'baseline':24s} {'value':>12s} {'ratio':>7s}  better")
    for name, value, base_name, base, better in table:
        if value is None or base is None:
            print(f"{name:44s} {'-':>12s}   {base_name:24s} {'-':>12s}")
            continue
        print(f"{name:44s} {value:12.4g}   {base_name:24s} {base:12.4g} {value / base:7.3f}  {better}")
    print("reference implementation (issue 5, H100, SimpleNet): about 10,600 images x patterns/s")


if __name__ == "__main__":
    main(sys.argv[1])
