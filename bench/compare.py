"""Side-by-side latency of Onyx and ONNX Runtime.

Usage (after bench/setup.sh [--torch] and `cargo build --release -p onyx-cli`):

    bench/.venv/bin/python bench/compare.py [--threads 1 2] [--runs 30] [--rounds 3]
                                            [--only NAME ...] [--write BENCHMARKS.md]

Two sets of models: small ones built here with onnx.helper from fixed seeds
(opset 17), and the reference models that bench/export_models.py exports
from torch into bench/models (MLP, MobileNetV2, ResNet-50, BERT-base,
GPT-2, ViT-B/16; `bench/setup.sh --torch` makes them). For each model the
script first checks that both runtimes agree on one input (max relative
error), then times them in alternating rounds: one `onyx bench --json`
process, then the same number of ONNX Runtime runs in a fresh Python
process (so neither runtime's idle threads linger into the other's turn).
Each round's median is kept and the median of those is reported. Load time
and peak resident memory come from separate processes that load the model
and run it once.
"""

import argparse
import glob
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
MODELS_DIR = os.path.join(ROOT, "bench", "models")
# titles of the models export_models.py writes, in the order of the table
EXPORTED = {
    "mlp": "MLP 3x Linear(256), torch, batch 1",
    "mobilenetv2": "MobileNetV2 224, batch 1",
    "resnet50": "ResNet-50 224, batch 1",
    "bert": "BERT-base, seq 128",
    "gpt2": "GPT-2 small, seq 128, no cache",
    "vit": "ViT-B/16 224",
}


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
    return graph


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
    return graph


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
    return graph


def models(outdir, only):
    """(title, name, path) of every model to compare: the generated ones,
    then those export_models.py wrote."""
    rng = np.random.default_rng(0)
    specs = [
        ("MLP 3x Linear(256), batch 1", "mlp256", lambda: linear_stack("mlp256", 1, 256, 3, rng)),
        ("MLP 3x Linear(1024), batch 64", "mlp1024", lambda: linear_stack("mlp1024", 64, 1024, 3, rng)),
        ("FFN 768-3072-768, seq 128", "ffn", lambda: ffn("ffn", 128, 768, 3072, rng)),
        ("Conv 3x3/3x3/1x1, 32x56x56", "convnet", lambda: convnet("convnet", rng)),
    ]
    out = []
    for title, stem, make in specs:
        if only and stem not in only:
            continue
        graph = make()
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        path = os.path.join(outdir, stem + ".onnx")
        onnx.save(model, path)
        out.append((title, stem, path))
    for stem, title in EXPORTED.items():
        path = os.path.join(MODELS_DIR, stem + ".onnx")
        if os.path.exists(path) and (not only or stem in only):
            out.append((title, stem, path))
    return out


NP_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def make_feeds(sess, seed):
    """One input per graph input of ONNX Runtime session `sess`: floats
    uniform in [-1, 1); integer ids below 1000; masks all ones."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in arg.shape]
        dtype = NP_TYPES[arg.type]
        if dtype == np.float32:
            feeds[arg.name] = rng.uniform(-1, 1, shape).astype(dtype)
        elif "mask" in arg.name.lower():
            feeds[arg.name] = np.ones(shape, dtype)
        else:
            feeds[arg.name] = rng.integers(0, 1000, shape).astype(dtype)
    return feeds


def save_feeds(feeds, workdir, tag):
    paths = {}
    for n, v in feeds.items():
        f = os.path.join(workdir, f"{tag}_{n}.npy")
        np.save(f, v)
        paths[n] = f
    return paths


def ort_session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def agreement(path, sess, feed_paths, workdir):
    """Max relative error between Onyx and ONNX Runtime (`sess`) on one input."""
    feeds = {n: np.load(f) for n, f in feed_paths.items()}
    args = [ONYX, "run", path]
    for n, f in feed_paths.items():
        args += ["--input", f"{n}={f}"]
    outdir = os.path.join(workdir, "out")
    subprocess.run(args + ["--output-dir", outdir], check=True, capture_output=True)
    want = sess.run(None, feeds)
    worst = 0.0
    for k, w in enumerate(want):
        got = np.load(os.path.join(outdir, f"output_{k}.npy"))
        if got.shape != w.shape:
            return float("inf")
        # relative to the output's scale: random weights can leave outputs
        # near 1e-9, where an elementwise ratio would measure nothing
        scale = float(np.abs(w).max()) if w.size else 0.0
        err = float(np.abs(got - w).max()) / scale if scale > 0 else float(np.abs(got - w).max())
        worst = max(worst, err)
    return worst


def peak_rss_mib():
    """This process's peak resident memory (Linux's VmHWM). Each process
    reports its own: a parent cannot read it from the child's rusage, which
    counts the parent's own peak from before the exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return None


def time_ort(path, feed_paths, threads, runs, warmup):
    """ONNX Runtime's median in a fresh process, as Onyx's is: its idle
    worker threads spin after a run, and must not linger into Onyx's turn."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--ort-worker", path, json.dumps(feed_paths),
         str(threads), str(runs), str(warmup)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def ort_worker(path, feed_paths, threads, runs, warmup):
    import time

    feeds = {n: np.load(f) for n, f in feed_paths.items()}
    start = time.perf_counter()
    sess = ort_session(path, threads)
    load_ms = (time.perf_counter() - start) * 1e3
    for _ in range(warmup):
        sess.run(None, feeds)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({"median_ms": float(np.median(times)) if times else 0.0, "load_ms": load_ms,
                      "peak_rss_mib": peak_rss_mib()}))


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
        _, _, path, feed_paths, threads, runs, warmup = sys.argv
        ort_worker(path, json.loads(feed_paths), int(threads), int(runs), int(warmup))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="model names (mlp256, ffn, resnet50, ...)")
    ap.add_argument("--write", help="write the table as markdown to this file")
    args = ap.parse_args()
    if not os.path.exists(ONYX):
        sys.exit(f"compare.py: {ONYX} is missing; run `cargo build --release -p onyx-cli` first")
    work = tempfile.mkdtemp(prefix="onyx-bench-")
    specs = models(work, args.only)
    rows, memory = [], []
    total = len(specs) * (2 + len(args.threads) * args.rounds)
    done = 0
    for title, stem, path in specs:
        progress(done, total, title + ": agreement")
        sess = ort_session(path, 1)
        feed_paths = save_feeds(make_feeds(sess, 1), work, stem)
        err = agreement(path, sess, feed_paths, work)
        del sess
        done += 1
        progress(done, total, title + ": load and memory")
        # one load and one run each, in fresh processes: load time and peak memory
        o = time_onyx(path, 1, 1, 0)
        r = time_ort(path, feed_paths, 1, 1, 0)
        memory.append((title, o["load_ms"], r["load_ms"], o["peak_rss_mib"], r["peak_rss_mib"]))
        done += 1
        for threads in args.threads:
            onyx_meds, ort_meds = [], []
            for _ in range(args.rounds):
                progress(done, total, f"{title}: {threads} thread(s)")
                onyx_meds.append(time_onyx(path, threads, args.runs, args.warmup)["median_ms"])
                ort_meds.append(time_ort(path, feed_paths, threads, args.runs, args.warmup)["median_ms"])
                done += 1
            o, r = float(np.median(onyx_meds)), float(np.median(ort_meds))
            rows.append((title, stem, threads, o, r, o / r, err))
    progress(total, total, "done")
    sys.stderr.write("\n")
    table = latency_table(rows) + "\n\n" + geomean_table(rows, args.threads) + "\n\n" + memory_table(memory)
    print(table)
    if args.write:
        with open(args.write, "w") as f:
            f.write(
                "# Benchmarks\n\n"
                "Onyx against ONNX Runtime "
                + ort.__version__
                + " (CPU provider, sequential execution, each timed in its own process) on the models"
                " that `bench/compare.py` builds from fixed seeds and those `bench/export_models.py`"
                " exports from torch with random weights. Each latency is the median of "
                f"{args.rounds} alternating rounds of {args.runs} runs after {args.warmup} warm-up runs."
                " The error column compares one input's outputs: max |onyx - ort| / max |ort| over each output."
                " Load time and peak resident memory come from a separate process per runtime that"
                " loads the model and runs it once (ONNX Runtime's process includes the Python"
                " interpreter and numpy).\n\n"
                "Made with:\n\n"
                "```sh\nbench/setup.sh --torch\ncargo build --release -p onyx-cli\n"
                f"bench/.venv/bin/python bench/compare.py --threads {' '.join(map(str, args.threads))}"
                f" --runs {args.runs} --rounds {args.rounds} --write BENCHMARKS.md\n```\n\n"
                + table
                + "\n"
            )


def latency_table(rows):
    lines = [
        "| model | threads | Onyx median ms | ORT median ms | Onyx/ORT | max rel err |",
        "|---|---|---|---|---|---|",
    ]
    for title, _stem, threads, o, r, ratio, err in rows:
        lines.append(f"| {title} | {threads} | {o:.3f} | {r:.3f} | {ratio:.2f} | {err:.1e} |")
    return "\n".join(lines)


def geomean_table(rows, threads_list):
    """The geometric mean of Onyx/ORT over the torch-exported models."""
    lines = ["| threads | geometric mean Onyx/ORT (exported models) | slowest |", "|---|---|---|"]
    for threads in threads_list:
        picked = [r for r in rows if r[2] == threads and r[1] in EXPORTED]
        if not picked:
            continue
        ratios = np.array([r[5] for r in picked])
        worst = max(picked, key=lambda r: r[5])
        lines.append(f"| {threads} | {float(np.exp(np.log(ratios).mean())):.2f} | {worst[0]} ({worst[5]:.2f}) |")
    return "\n".join(lines)


def memory_table(memory):
    lines = [
        "| model | Onyx load ms | ORT load ms | Onyx peak RSS MiB | ORT peak RSS MiB |",
        "|---|---|---|---|---|",
    ]
    for title, ol, rl, om, rm in memory:
        lines.append(f"| {title} | {ol:.1f} | {rl:.1f} | {om:.0f} | {rm:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
