"""Side-by-side latency of Onyx and ONNX Runtime on small generated models.

Usage (after bench/setup.sh and `cargo build --release -p onyx-cli`):

    bench/.venv/bin/python bench/compare.py [--threads 1 2] [--runs 30] [--rounds 3]
                                            [--write BENCHMARKS.md]

The models are built here with onnx.helper from fixed seeds (opset 17), so
the comparison needs no downloads beyond the pinned packages. For each model
the script first checks that both runtimes agree on one input (max relative
error), then times them in alternating rounds: one `onyx bench --json`
process, then the same number of ONNX Runtime runs in a fresh Python process (so
neither runtime's idle threads linger into the other's turn). Each
round's median is kept and the median of those is reported.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONYX = os.path.join(ROOT, "target", "release", "onyx")


def linear_stack(name, batch, width, layers, rng):
    """`layers` torch-style Linear layers (Gemm, transB=1) with ReLU between."""
    nodes, inits = [], []
    cur = "x"
    for i in range(layers):
        w = rng.standard_normal((width, width), dtype=np.float32) / np.sqrt(width)
        b = rng.standard_normal(width, dtype=np.float32) * 0.1
        inits += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"), numpy_helper.from_array(b.astype(np.float32), f"b{i}")]
        out = f"h{i}" if i + 1 < layers else "y"
        nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"], [out + "_g" if i + 1 < layers else out], transB=1))
        if i + 1 < layers:
            nodes.append(helper.make_node("Relu", [out + "_g"], [out]))
        cur = out
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, width])],
        inits,
    )
    return graph, {"x": (batch, width)}


def ffn(name, seq, hidden, inner, rng):
    """A transformer feed-forward block: MatMul+Add, Relu, MatMul+Add."""
    w1 = rng.standard_normal((hidden, inner), dtype=np.float32) / np.sqrt(hidden)
    w2 = rng.standard_normal((inner, hidden), dtype=np.float32) / np.sqrt(inner)
    b1 = rng.standard_normal(inner, dtype=np.float32) * 0.1
    b2 = rng.standard_normal(hidden, dtype=np.float32) * 0.1
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["m2"]),
        helper.make_node("Add", ["m2", "b2"], ["y"]),
    ]
    inits = [numpy_helper.from_array(v.astype(np.float32), n) for v, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, hidden])],
        inits,
    )
    return graph, {"x": (1, seq, hidden)}


def convnet(name, rng):
    """Three convolutions (3x3, 3x3, 1x1) with ReLU, on a 32x56x56 input."""
    shapes = [(64, 32, 3, 3), (64, 64, 3, 3), (128, 64, 1, 1)]
    nodes, inits = [], []
    cur = "x"
    for i, s in enumerate(shapes):
        fan_in = s[1] * s[2] * s[3]
        w = rng.standard_normal(s, dtype=np.float32) / np.sqrt(fan_in)
        b = rng.standard_normal(s[0], dtype=np.float32) * 0.1
        inits += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"), numpy_helper.from_array(b.astype(np.float32), f"b{i}")]
        pad = s[2] // 2
        last = i + 1 == len(shapes)
        conv_out = "y" if last else f"c{i}"
        nodes.append(helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [conv_out], pads=[pad] * 4))
        if not last:
            nodes.append(helper.make_node("Relu", [conv_out], [f"r{i}"]))
            cur = f"r{i}"
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 56, 56])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128, 56, 56])],
        inits,
    )
    return graph, {"x": (1, 32, 56, 56)}


def models(outdir):
    rng = np.random.default_rng(0)
    specs = [
        ("MLP 3x Linear(256), batch 1", "mlp256", linear_stack("mlp256", 1, 256, 3, rng)),
        ("MLP 3x Linear(1024), batch 64", "mlp1024", linear_stack("mlp1024", 64, 1024, 3, rng)),
        ("FFN 768-3072-768, seq 128", "ffn", ffn("ffn", 128, 768, 3072, rng)),
        ("Conv 3x3/3x3/1x1, 32x56x56", "convnet", convnet("convnet", rng)),
    ]
    out = []
    for title, stem, (graph, inputs) in specs:
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        path = os.path.join(outdir, stem + ".onnx")
        onnx.save(model, path)
        out.append((title, path, inputs))
    return out


def ort_session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def agreement(path, inputs, workdir):
    """Max relative error between Onyx and ONNX Runtime on one random input."""
    rng = np.random.default_rng(1)
    feeds = {n: rng.uniform(-1, 1, s).astype(np.float32) for n, s in inputs.items()}
    args = [ONYX, "run", path]
    for n, v in feeds.items():
        f = os.path.join(workdir, n + ".npy")
        np.save(f, v)
        args += ["--input", f"{n}={f}"]
    outdir = os.path.join(workdir, "out")
    subprocess.run(args + ["--output-dir", outdir], check=True, capture_output=True)
    want = ort_session(path, 1).run(None, feeds)
    worst = 0.0
    for k, w in enumerate(want):
        got = np.load(os.path.join(outdir, f"output_{k}.npy"))
        err = np.abs(got - w) / np.maximum(np.abs(w), 1e-3)
        worst = max(worst, float(err.max()))
    return worst


def time_ort(path, inputs, threads, runs, warmup):
    """ONNX Runtime's median in a fresh process, as Onyx's is: its idle
    worker threads spin after a run, and must not linger into Onyx's turn."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--ort-worker", path, json.dumps(inputs),
         str(threads), str(runs), str(warmup)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def ort_worker(path, inputs, threads, runs, warmup):
    import time

    start = time.perf_counter()
    sess = ort_session(path, threads)
    load_ms = (time.perf_counter() - start) * 1e3
    rng = np.random.default_rng(2)
    feeds = {n: rng.uniform(-1, 1, s).astype(np.float32) for n, s in inputs.items()}
    for _ in range(warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({"median_ms": float(np.median(times)), "load_ms": load_ms}))


def time_onyx(path, threads, runs, warmup):
    out = subprocess.run(
        [ONYX, "bench", path, "--json", "--threads", str(threads), "--runs", str(runs), "--warmup", str(warmup)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def progress(done, total, what):
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {what[:40]:<40}")
    sys.stderr.flush()


def main():
    if len(sys.argv) == 7 and sys.argv[1] == "--ort-worker":
        _, _, path, inputs, threads, runs, warmup = sys.argv
        shapes = {n: tuple(s) for n, s in json.loads(inputs).items()}
        ort_worker(path, shapes, int(threads), int(runs), int(warmup))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write", help="write the table as markdown to this file")
    args = ap.parse_args()
    if not os.path.exists(ONYX):
        sys.exit(f"compare.py: {ONYX} is missing; run `cargo build --release -p onyx-cli` first")
    work = tempfile.mkdtemp(prefix="onyx-bench-")
    specs = models(work)
    rows = []
    total = len(specs) * (1 + len(args.threads) * args.rounds)
    done = 0
    for title, path, inputs in specs:
        progress(done, total, title + ": agreement")
        err = agreement(path, inputs, work)
        done += 1
        for threads in args.threads:
            onyx_meds, ort_meds, load, ort_load = [], [], [], []
            for _ in range(args.rounds):
                progress(done, total, f"{title}: {threads} thread(s)")
                r = time_onyx(path, threads, args.runs, args.warmup)
                onyx_meds.append(r["median_ms"])
                load.append(r["load_ms"])
                r = time_ort(path, inputs, threads, args.runs, args.warmup)
                ort_meds.append(r["median_ms"])
                ort_load.append(r["load_ms"])
                done += 1
            o, r = float(np.median(onyx_meds)), float(np.median(ort_meds))
            rows.append(
                (title, threads, o, r, o / r, float(np.median(load)), float(np.median(ort_load)), err)
            )
    progress(total, total, "done")
    sys.stderr.write("\n")
    lines = [
        "| model | threads | Onyx median ms | ORT median ms | Onyx/ORT | Onyx load ms | ORT load ms | max rel err |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for title, threads, o, r, ratio, load, oload, err in rows:
        lines.append(
            f"| {title} | {threads} | {o:.3f} | {r:.3f} | {ratio:.2f} | {load:.1f} | {oload:.1f} | {err:.1e} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.write:
        with open(args.write, "w") as f:
            f.write(
                "# Benchmarks\n\n"
                "Onyx against ONNX Runtime "
                + ort.__version__
                + " (CPU provider, sequential execution, each timed in its own process) on models that `bench/compare.py`"
                " builds from fixed seeds. Each cell is the median of "
                f"{args.rounds} alternating rounds of {args.runs} runs after {args.warmup} warm-up runs;"
                " batch and shapes are in the model's name. The error column compares one"
                " random input's outputs (|onyx - ort| / max(|ort|, 1e-3)).\n\n"
                "Made with:\n\n"
                "```sh\nbench/setup.sh\ncargo build --release -p onyx-cli\n"
                f"bench/.venv/bin/python bench/compare.py --threads {' '.join(map(str, args.threads))}"
                f" --runs {args.runs} --rounds {args.rounds} --write BENCHMARKS.md\n```\n\n"
                + table
                + "\n"
            )


if __name__ == "__main__":
    main()
