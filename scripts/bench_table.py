#!/usr/bin/env python3
"""Prints issue 7's table from bench_end_to_end's JSON (--benchmark_out_format=json): each figure next
to its baseline measured in the same run, and the ratio. Usage: bench_table.py BENCH.json [SUITE.json...]
(the suite runs in its own process, see scripts/gpu_check.sh). A missing or cut-off file (a run
stopped at its time limit) is reported and skipped: the rows it would fill show '-'."""
import json
import sys

SWEEP_GOAL = 100_000  # images x patterns / s (issue 7, SimpleNet on one H100)
SUITE_GOAL_S = 60.0  # 13 rates x 50 patterns x 9000 images (issue 7)
REFERENCE_SWEEP = 10_600  # the reference implementation's images x patterns / s (issue 7)


def parse_cut(text):
    """The benchmarks a run stopped at its limit had finished: Google Benchmark writes its JSON as it
    goes, so the text is whole up to the last complete benchmark object."""
    end = len(text)
    while True:
        end = text.rfind("}", 0, end)
        if end < 0:
            return None
        try:
            return json.loads(text[:end + 1] + "]}")
        except ValueError:
            pass


def load(paths):
    rows, context = {}, {}
    for path in paths:
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            print(f"({path}: not read, {e})")
            continue
        try:
            data = json.loads(text)
        except ValueError:
            data = parse_cut(text)
            if data is None:
                print(f"({path}: no complete benchmark in it)")
                continue
            print(f"({path}: cut off, {len(data.get('benchmarks', []))} complete benchmarks read)")
        context = context or data.get("context", {})
        for b in data.get("benchmarks", []):
            if b.get("error_occurred"):
                continue
            name = b["name"]
            for suffix in ("/min_time", "/iterations", "/real_time"):
                name = name.split(suffix)[0]
            rows[name] = b
    return rows, context


def main(paths):
    rows, ctx = load(paths)

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
    # (runs recorded up to 2026-12-04 named it BM_Sweep/10)
    sweep = get("BM_Sweep/10/500", "images_patterns_per_second") or get("BM_Sweep/10", "images_patterns_per_second")
    table.append(("plain inference, images/s (fused GN+ReLU)", fused, "eager LibTorch", eager, "higher"))
    table.append(("the same, conv biases added in the fused op", fused, "conv biases added by ATen",
                  get("BM_Inference/2", "images_per_second"), "higher (CUDA; 1 on the CPU)"))
    for batch in (1000, 2000):
        table.append((f"fused inference at batch {batch}, images/s", get(f"BM_InferenceBatch/{batch}", "images_per_second"),
                      "the same at batch 500", fused, "higher: eval --batch could be larger"))
    table.append(("eval sweep (1%, 10 patterns), images x patterns/s", sweep, "our plain inference", fused,
                  "higher (goal >= 0.9; at most 10/11 = 0.909)"))
    sweep50 = get("BM_Sweep/50/500", "images_patterns_per_second")
    table.append(("eval sweep (1%, 50 patterns), images x patterns/s", sweep50, "our plain inference", fused,
                  "higher (goal >= 0.9; at most 50/51 = 0.980)"))
    table.append(("eval sweep (50 patterns, batch 1000)", get("BM_Sweep/50/1000", "images_patterns_per_second"),
                  "the same at batch 500", sweep50, "higher: eval --batch could be larger"))
    label = "eval sweep (10 patterns), images x patterns/s"
    if sweep50 is not None:  # the reference's protocol: 50 patterns per rate
        sweep, label = sweep50, "eval sweep (50 patterns), images x patterns/s"
    table.append((label, sweep, "eager LibTorch inference", eager, "higher"))
    table.append((label, sweep, "goal", SWEEP_GOAL, "higher (goal >= 1)"))
    table.append((label, sweep, "reference implementation", REFERENCE_SWEEP, "higher (goal >= 9)"))
    copy = us("BM_CopyCodes")
    for rate_e4, label in ((1, "0.01%"), (10, "0.1%"), (100, "1%"), (1000, "10%")):
        inject = us(f"BM_InjectDequantize/p_e4:{rate_e4}")
        table.append((f"inject + dequantize {label}, ms/pattern", inject and inject / 1e3, "copy of the codes, ms",
                      copy and copy / 1e3, "lower"))
    deq = us("BM_DequantizeOnly")
    table.append(("dequantize only (no pattern), ms/pattern", deq and deq / 1e3, "copy of the codes, ms",
                  copy and copy / 1e3, "lower (the floor of the rows above)"))
    host, no_pattern = us("BM_InjectTasksHost"), us("BM_InjectDequantize/p_e4:0")
    table.append(("host task table of a pattern, ms", host and host / 1e3, "inject + dequantize, no pattern",
                  no_pattern and no_pattern / 1e3, "lower (the host's share)"))
    # (the path the injector took: a CUDA run that fell back to the two kernels says so)
    paths = {0: "incremental", 1: "fused", 2: "dense"}
    def path_of(name):
        path = get(name, "path")
        return "" if path is None else f" ({paths.get(int(path), path)})"
    for rate_e4, label in ((1, "0.01%"), (10, "0.1%"), (100, "1%"), (1000, "10%")):
        injector = us(f"BM_WeightInjector/p_e4:{rate_e4}")
        separate = us(f"BM_InjectDequantize/p_e4:{rate_e4}")
        table.append((f"the sweep's injector {label}{path_of(f'BM_WeightInjector/p_e4:{rate_e4}')}, ms/pattern",
                      injector and injector / 1e3,
                      "inject, then dequantize", separate and separate / 1e3,
                      "lower (CPU: incremental; CUDA: fused)"))
    # Issue 4's goal counts what the sweep does per pattern: the injector where it was run.
    inject1 = us("BM_WeightInjector/p_e4:100") or us("BM_InjectDequantize/p_e4:100")
    table.append((f"inject + dequantize 1%{path_of('BM_WeightInjector/p_e4:100')}, ms/pattern", inject1 and inject1 / 1e3,
                  "goal (issue 4, GPU)", 0.1,
                  "lower (goal <= 1)"))
    flt = get("BM_TrainStep/0", "train_images_per_second")
    qat = get("BM_TrainStep/1", "train_images_per_second")
    table.append(("QAT training, images/s", qat, "float training", flt, "higher (goal >= 1/1.1 = 0.91)"))
    table.append(("RandBET 1% training, images/s", get("BM_TrainStep/2", "train_images_per_second"), "float training",
                  flt, "higher (goal >= 1/2.2 = 0.45)"))
    table.append(("RandBET 1% training, images/s", get("BM_TrainStep/2", "train_images_per_second"), "QAT training",
                  qat, "higher (issue 6: >= 1/2.2 = 0.45)"))
    suite = us("BM_ReferenceSuite")
    table.append(("13 rates x 50 patterns x 9000 images, s", suite and suite / 1e6, "goal", SUITE_GOAL_S,
                  "lower (goal <= 1)"))
    table.append(("the same suite, images x patterns/s", get("BM_ReferenceSuite", "images_patterns_per_second"), "goal",
                  SWEEP_GOAL, "higher (goal >= 1)"))

    print(f"\nbitrobust end to end ({ctx.get('host_name', '?')}, {ctx.get('date', '?')}; "
          f"device {ctx.get('bitrobust_device', '?')}; {ctx.get('bitrobust_model', '?')}; "
          f"{ctx.get('bitrobust_precision', '?')})")
    if 'bitrobust_cpu' in ctx:
        print(f"CPU: {ctx['bitrobust_cpu']}")
    print(f"{'measure':52s} {'bitrobust':>12s}   {'baseline':26s} {'value':>12s} {'ratio':>7s}  better")
    for name, value, base_name, base, better in table:
        if value is None or base is None:  # (a figure whose baseline is missing is still shown)
            shown = '-' if value is None else f'{value:12.4g}'
            print(f"{name:52s} {shown:>12s}   {base_name:26s} {'-' if base is None else f'{base:12.4g}':>12s}")
            continue
        print(f"{name:52s} {value:12.4g}   {base_name:26s} {base:12.4g} {value / base:7.3f}  {better}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: bench_table.py BENCH.json [SUITE.json ...]")
    main(sys.argv[1:])
