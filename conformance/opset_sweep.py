"""Audits Onyx against every schema version of every ai.onnx operator.

For each operator of onnx.defs and each of its schema versions, the ONNX
backend node cases of that operator are re-stamped to the opset where the
version begins. A re-stamped model is kept when onnx's checker (full check)
accepts it there. Its expected outputs come from the case's own data when the
operators resolve to the same schema versions as at the case's own opset, and
otherwise from onnx.reference, provided the reference reproduces the shipped
outputs at the case's own opset (else the case has "no oracle" there).
Synthetic single-node cases (synthetic_cases.py) cover versions no backend
case fits. The cases are written as a conformance data tree and run by the
conformance runner (same comparison rule as the suite).

    .venv/bin/python conformance/opset_sweep.py            # check against the expected list
    .venv/bin/python conformance/opset_sweep.py --update   # rewrite OPSETS.md and the list
"""

from __future__ import annotations

import argparse
import collections
import copy
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.checker
import onnx.defs
import onnx.helper
import onnx.numpy_helper
import onnx.reference

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import synthetic_cases  # noqa: E402

RTOL, ATOL = 1e-3, 1e-7
REPORT = HERE / "OPSETS.md"
EXPECTED = HERE / "opset-sweep-expected.txt"
ORACLE_NOTES = HERE / "opset-sweep-notes.md"


def schema_versions() -> dict[str, list[int]]:
    """Every ai.onnx operator and the opsets where its schema versions begin."""
    ops: dict[str, set[int]] = collections.defaultdict(set)
    for s in onnx.defs.get_all_schemas_with_history():
        if s.domain in ("", "ai.onnx"):
            ops[s.name].add(s.since_version)
    return {k: sorted(v) for k, v in sorted(ops.items())}


def resolve(versions: list[int], opset: int) -> int | None:
    """The schema version an opset selects (None before the operator exists)."""
    found = [v for v in versions if v <= opset]
    return found[-1] if found else None


def graph_nodes(graph: onnx.GraphProto):
    """Every node of a graph and of its subgraphs."""
    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from graph_nodes(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from graph_nodes(g)


def main_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def restamp(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    m = copy.deepcopy(model)
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = opset
    m.ir_version = max(m.ir_version, min_ir_version(opset))
    return m


def min_ir_version(opset: int) -> int:
    """The IR version of the first onnx release whose ai.onnx opset reaches this one."""
    return min(row[1] for row in onnx.helper.VERSION_TABLE if row[2] >= opset)


def accepted(model: onnx.ModelProto) -> bool:
    try:
        onnx.checker.check_model(model, full_check=True)
        return True
    except Exception:
        return False


# ---- values: protobuf files <-> what onnx.reference takes ----


def read_value(path: Path, type_proto: onnx.TypeProto):
    kind = type_proto.WhichOneof("value")
    data = path.read_bytes()
    if kind == "sequence_type":
        p = onnx.SequenceProto()
        p.ParseFromString(data)
        return onnx.numpy_helper.to_list(p)
    if kind == "optional_type":
        p = onnx.OptionalProto()
        p.ParseFromString(data)
        return onnx.numpy_helper.to_optional(p)
    if kind == "map_type":
        p = onnx.MapProto()
        p.ParseFromString(data)
        return onnx.numpy_helper.to_dict(p)
    p = onnx.TensorProto()
    p.ParseFromString(data)
    return onnx.numpy_helper.to_array(p)


def tensor_proto(value, type_proto: onnx.TypeProto, name: str) -> onnx.TensorProto:
    elem = type_proto.tensor_type.elem_type if type_proto.HasField("tensor_type") else 0
    arr = np.asarray(value)
    if elem:
        np_type = onnx.helper.tensor_dtype_to_np_dtype(elem)
        if arr.dtype != np_type:
            arr = arr.astype(np_type)
    return onnx.numpy_helper.from_array(arr, name)


def write_value(path: Path, value, type_proto: onnx.TypeProto, name: str) -> None:
    kind = type_proto.WhichOneof("value")
    if kind == "sequence_type":
        elem = type_proto.sequence_type.elem_type
        items = [tensor_proto(v, elem, "") for v in value]
        p = onnx.helper.make_sequence(name, onnx.SequenceProto.TENSOR, items)
    elif kind == "optional_type":
        elem = type_proto.optional_type.elem_type
        inner = elem.WhichOneof("value")
        if value is None:
            p = onnx.helper.make_optional(name, onnx.OptionalProto.UNDEFINED, None)
        elif inner == "sequence_type":
            items = [tensor_proto(v, elem.sequence_type.elem_type, "") for v in value]
            seq = onnx.helper.make_sequence("", onnx.SequenceProto.TENSOR, items)
            p = onnx.helper.make_optional(name, onnx.OptionalProto.SEQUENCE, seq)
        else:
            p = onnx.helper.make_optional(
                name, onnx.OptionalProto.TENSOR, tensor_proto(value, elem, "")
            )
    else:
        p = tensor_proto(value, type_proto, name)
    path.write_bytes(p.SerializeToString())


def close(expected, actual) -> bool:
    """The conformance runner's rule, for checking the oracle against shipped data."""
    if expected is None or actual is None:
        return expected is None and actual is None
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(close(e, a) for e, a in zip(expected, actual))
        )
    e, a = np.asarray(expected), np.asarray(actual)
    if e.shape != a.shape:
        return False
    if e.dtype.kind in "fc" or str(e.dtype).startswith(("bfloat", "float")):
        e64, a64 = e.astype(np.float64), a.astype(np.float64)
        with np.errstate(invalid="ignore"):
            ok = (np.isnan(e64) & np.isnan(a64)) | (e64 == a64) | (
                np.abs(a64 - e64) <= ATOL + RTOL * np.abs(e64)
            )
        return bool(ok.all())
    return bool((e == a).all())


# ---- where onnx.reference is not a usable oracle ----

# Versions whose semantics, for the backend cases the checker accepts there,
# are those the cases' shipped outputs were made for; onnx.reference lacks
# the version or gets it wrong (the reason is shown in the report).
SHIPPED_HOLDS = {
    ("AveragePool", 1): "v1 divides each window by the count of elements excluding pads, "
    "as later versions do with count_include_pad=0; onnx.reference's AveragePool_1 includes "
    "the pads",
    ("BatchNormalization", 7): "with Y as the only output it runs in test mode (v7 doc, "
    "output case #2), the same formula as training_mode=0 later; onnx.reference fails on v7",
    ("BatchNormalization", 9): "with Y as the only output it runs in test mode (v9 doc, "
    "output case #2); onnx.reference uses the batch statistics whenever momentum is set",
    ("DequantizeLinear", 10): "per-tensor scale and zero point, same formula as v19; "
    "onnx.reference has no v10",
    ("DequantizeLinear", 13): "per-tensor scale and zero point, same formula as v19; "
    "onnx.reference has no v13",
    ("Gemm", 1): "v1's doc and attributes equal v6's (broadcast=0 needs C of Y's shape, "
    "which the cases that check at v1 have or Onyx broadcasts); onnx.reference has no v1",
    ("RNN", 1): "v1 differs from v7 by the output_sequence attribute (unset in the cases) "
    "and a doc typo (Ri for Ri^T); onnx.reference has no v1",
    ("Split", 1): "without the optional split input, v1 splits as v2 does (equal parts or "
    "the split attribute); onnx.reference has no v1",
}


def coerced_2d(fn):
    """Softmax-family semantics before opset 13: the input as a 2-D matrix
    (dims before axis x dims from axis), the function along its rows."""

    def oracle(node: onnx.NodeProto, inputs: list) -> list:
        x = np.asarray(inputs[0])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        axis = axis + x.ndim if axis < 0 else axis
        rows = int(np.prod(x.shape[:axis], dtype=np.int64))
        m = x.reshape(rows, -1).astype(np.float64)
        return [fn(m).reshape(x.shape).astype(x.dtype)]

    return oracle


def _softmax(m):
    e = np.exp(m - m.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax(m):
    shifted = m - m.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _hardmax(m):
    out = np.zeros_like(m)
    out[np.arange(m.shape[0]), m.argmax(axis=1)] = 1
    return out


# Versions where onnx.reference applies later semantics; these compute the
# version's own. (Softmax, LogSoftmax and Hardmax before 13 flatten to 2-D.)
ORACLE_FUNCS = {
    (op, v): (coerced_2d(fn), f"{op} v{v} works on the input coerced to 2-D at axis; onnx.reference "
              "applies v13's single-axis semantics")
    for op, fn in [("Softmax", _softmax), ("LogSoftmax", _log_softmax), ("Hardmax", _hardmax)]
    for v in (1, 11)
}


def oracle_notes() -> str:
    lines = ["Where onnx.reference is not the oracle:", ""]
    for (op, v), why in sorted(SHIPPED_HOLDS.items()):
        lines.append(f"- {op} v{v}: shipped outputs hold: {why}.")
    for (op, v), (_, why) in sorted(ORACLE_FUNCS.items()):
        lines.append(f"- {op} v{v}: computed in the script: {why}.")
    return "\n".join(lines)


# Why a version has no case, where the reason is known.
RANDOM = "random output: no oracle fixes the draws (Onyx checks distributions in its unit tests)"
DEPRECATED = "deprecated at this version: onnx's checker refuses a model using it"
NO_CASE_REASONS = {
    **{(op, v): RANDOM for op, vs in [
        ("Bernoulli", (15, 22)), ("Multinomial", (7, 22)), ("RandomNormal", (1, 22)),
        ("RandomNormalLike", (1, 22)), ("RandomUniform", (1, 22)),
        ("RandomUniformLike", (1, 22))] for v in vs},
    ("Scatter", 11): DEPRECATED,
    ("Upsample", 10): DEPRECATED,
    ("GroupNormalization", 18): DEPRECATED,
}


# ---- cases ----


@dataclass
class DataSet:
    inputs: list  # values in graph-input order
    input_files: list[Path]
    outputs: list | None  # expected values: shipped, or from synthetic_cases; None: the oracle


@dataclass
class Case:
    name: str
    op: str
    model: onnx.ModelProto
    sets: list[DataSet]
    shipped: bool  # outputs come with the case (backend data) rather than from the oracle
    passes_at_own_opset: bool = True
    reference_checked: bool | None = None  # onnx.reference reproduces shipped outputs

    def own_opset(self) -> int:
        return main_opset(self.model)


def load_backend_cases(data: Path, passing: set[str]) -> list[Case]:
    cases = []
    for d in sorted((data / "node").iterdir()):
        if "_expanded" in d.name or not (d / "model.onnx").is_file():
            continue  # function bodies: they test other operators
        model = onnx.load(str(d / "model.onnx"))
        ops = sorted({n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")})
        if len(ops) != len({(n.domain, n.op_type) for n in model.graph.node}):
            continue  # a node of another domain
        inits = {i.name for i in model.graph.initializer}
        graph_inputs = [i for i in model.graph.input if i.name not in inits]
        sets = []
        for s in sorted(p for p in d.iterdir() if p.is_dir()):
            files = [s / f"input_{k}.pb" for k in range(len(graph_inputs))]
            inputs = [read_value(f, i.type) for f, i in zip(files, graph_inputs)]
            outputs = [
                read_value(s / f"output_{k}.pb", o.type) for k, o in enumerate(model.graph.output)
            ]
            sets.append(DataSet(inputs, files, outputs))
        # a case of several nodes counts for each of its operators
        cases.extend(
            Case(
                d.name,
                op,
                model,
                sets,
                shipped=True,
                passes_at_own_opset=f"node/{d.name}" in passing,
            )
            for op in ops
        )
    return cases


def reference_outputs(model: onnx.ModelProto, inputs: list) -> list:
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sess = onnx.reference.ReferenceEvaluator(model)
        outs = sess.run(None, dict(zip(names, inputs)))
    return list(outs)


def reference_agrees(case: Case) -> bool:
    """Whether onnx.reference reproduces the case's shipped outputs at its own opset."""
    if case.reference_checked is None:
        try:
            case.reference_checked = all(
                len(got) == len(s.outputs) and all(close(e, g) for e, g in zip(s.outputs, got))
                for s in case.sets
                for got in [reference_outputs(case.model, s.inputs)]
            )
        except Exception:
            case.reference_checked = False
    return case.reference_checked


def same_schemas(model: onnx.ModelProto, a: int, b: int, versions: dict[str, list[int]]) -> bool:
    """Whether every operator of the model resolves to the same schema at opsets a and b."""
    for node in graph_nodes(model.graph):
        if node.domain not in ("", "ai.onnx"):
            continue
        vs = versions.get(node.op_type, [])
        if resolve(vs, a) != resolve(vs, b):
            return False
    return True


@dataclass
class Planned:
    """One case at one schema version, as written for the runner."""

    op: str
    version: int
    case: str
    dir_name: str


@dataclass
class VersionStatus:
    planned: list[Planned] = field(default_factory=list)
    no_oracle: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)


def plan_case(
    case: Case, version: int, versions: dict[str, list[int]], out: Path, status: VersionStatus
) -> None:
    model = restamp(case.model, version) if case.shipped else case.model
    if not accepted(model):
        if not case.shipped:
            sys.exit(f"opset_sweep: onnx's checker refuses the synthetic case {case.name}")
        return
    if not case.passes_at_own_opset:
        status.excluded.append(case.name)
        return
    if not case.shipped and case.sets[0].outputs is not None:
        expected = [s.outputs for s in case.sets]
    elif (case.op, version) in ORACLE_FUNCS and len(model.graph.node) == 1:
        fn = ORACLE_FUNCS[(case.op, version)][0]
        expected = [fn(model.graph.node[0], s.inputs) for s in case.sets]
    elif case.shipped and (
        ((case.op, version) in SHIPPED_HOLDS and len(model.graph.node) == 1)
        or same_schemas(case.model, case.own_opset(), version, versions)
    ):
        expected = [s.outputs for s in case.sets]
    elif case.shipped and not reference_agrees(case):
        status.no_oracle.append(case.name)
        return
    else:
        try:
            expected = [reference_outputs(model, s.inputs) for s in case.sets]
        except Exception:
            status.no_oracle.append(case.name)
            return
    dir_name = f"{case.op}_v{version}__{case.name}"
    d = out / "node" / dir_name
    d.mkdir(parents=True)
    onnx.save(model, str(d / "model.onnx"))
    inits = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in inits]
    for k, (s, outs) in enumerate(zip(case.sets, expected)):
        sd = d / f"test_data_set_{k}"
        sd.mkdir()
        for j, (value, gi) in enumerate(zip(s.inputs, graph_inputs)):
            if s.input_files:
                shutil.copyfile(s.input_files[j], sd / f"input_{j}.pb")
            else:
                write_value(sd / f"input_{j}.pb", value, gi.type, gi.name)
        for j, (value, go) in enumerate(zip(outs, model.graph.output)):
            write_value(sd / f"output_{j}.pb", value, go.type, go.name)
    status.planned.append(Planned(case.op, version, case.name, dir_name))


def run_onyx(runner: Path, data: Path) -> dict[str, str]:
    """Runs the written cases; returns the failing ones with their message."""
    proc = subprocess.run(
        [str(runner), "--data", str(data), "--suite", "node", "--failures"],
        capture_output=True,
        text=True,
    )
    failures = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^(FAIL|ERROR) +node/([^:]+): (.*)$", line)
        if m:
            failures[m.group(2)] = f"{m.group(1).lower()}: {m.group(3)}"
    if proc.returncode not in (0, 1) or "conformance:" not in proc.stdout:
        sys.exit(f"opset_sweep: the runner failed: {proc.stderr.strip()}")
    return failures


# ---- report ----


def version_cell(
    st: VersionStatus, failures: dict[str, str], reason: str = ""
) -> tuple[str, str]:
    failed = [p for p in st.planned if p.dir_name in failures]
    passed = len(st.planned) - len(failed)
    if failed:
        first = failures[failed[0].dir_name].replace("|", "\\|")
        if len(first) > 140:
            first = first[:140] + "..."
        return "FAIL", f"{len(failed)} of {len(st.planned)} fail; {failed[0].case}: {first}"
    if passed:
        return "pass", f"{passed} case{'s' if passed != 1 else ''}"
    notes = [reason] if reason else []
    if st.no_oracle:
        notes.append(f"{len(st.no_oracle)} without an oracle")
    if st.excluded:
        notes.append(f"{len(st.excluded)} failing at their own opset (see RESULTS.md)")
    return "no case", "; ".join(notes)


def write_report(versions, statuses, failures, notes: str) -> dict[str, int]:
    rows = []
    totals = collections.Counter()
    per_op = []
    for op, vs in versions.items():
        cells = []
        for v in vs:
            state, detail = version_cell(
                statuses[(op, v)], failures, NO_CASE_REASONS.get((op, v), "")
            )
            totals[state] += 1
            cells.append((v, state, detail))
        per_op.append((op, cells))
    lines = [
        "# Operator versions",
        "",
        "Every schema version (1 to 28) of every ai.onnx operator of onnx 1.23.2, run",
        "through Onyx. Generated by `.venv/bin/python conformance/opset_sweep.py --update`",
        "(it builds the conformance runner in release mode and needs `conformance/data`",
        "from `conformance/make-data.sh`).",
        "",
        "How a version is tested: each backend node case of the operator is re-stamped",
        "to the opset where that schema version begins and kept if onnx's checker",
        "(full check) accepts it there. Expected outputs are the case's own when the",
        "re-stamped model's operators resolve to the same schema versions as at the",
        "case's own opset; otherwise onnx.reference at the new opset gives them, used",
        "only where it reproduces the case's shipped outputs at its own opset.",
        "Synthetic single-node cases (`conformance/synthetic_cases.py`, fixed seeds;",
        "oracle onnx.reference or numpy from the schema doc) cover versions no backend",
        "case fits. Comparison as",
        "in the conformance suite (rtol 1e-3, atol 1e-7, exact type and shape).",
        "",
        f"{len(versions)} operators, {sum(totals.values())} schema versions: "
        f"**{totals['pass']} pass, {totals['FAIL']} fail, {totals['no case']} no case**.",
        "",
    ]
    if notes:
        lines += [notes.strip(), ""]
    lines += ["| operator | version | status | cases |", "|---|---:|---|---|"]
    for op, cells in per_op:
        for i, (v, state, detail) in enumerate(cells):
            shown = state if state != "FAIL" else "**FAIL**"
            lines.append(f"| {op if i == 0 else ''} | {v} | {shown} | {detail} |")
    REPORT.write_text("\n".join(lines) + "\n")
    return totals


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=HERE / "data")
    ap.add_argument("--runner", type=Path, help="a built onyx-conformance binary")
    ap.add_argument("--op", action="append", help="only these operators")
    ap.add_argument("--keep", type=Path, help="write the generated cases here and keep them")
    ap.add_argument("--update", action="store_true", help="rewrite OPSETS.md and the list")
    args = ap.parse_args()

    if not (args.data / "node").is_dir():
        sys.exit(f"opset_sweep: no data in {args.data}; run conformance/make-data.sh")
    runner = args.runner
    if runner is None:
        subprocess.run(
            ["cargo", "build", "--release", "--quiet", "-p", "onyx-conformance"],
            cwd=ROOT,
            check=True,
        )
        runner = ROOT / "target" / "release" / "onyx-conformance"

    versions = schema_versions()
    if args.op:
        versions = {k: v for k, v in versions.items() if k in args.op}
    passing = set((HERE / "expected-pass.txt").read_text().split())
    by_op: dict[str, list[Case]] = collections.defaultdict(list)
    for case in load_backend_cases(args.data, passing):
        by_op[case.op].append(case)
    for case in synthetic_cases.cases():
        by_op[case.op].append(
            Case(case.name, case.op, case.model, [DataSet(case.inputs, [], case.expected)], shipped=False)
        )

    out = args.keep or Path(tempfile.mkdtemp(prefix="onyx-opset-sweep-"))
    if args.keep and out.exists():
        shutil.rmtree(out)
    statuses = {}
    for op, vs in versions.items():
        for v in vs:
            st = VersionStatus()
            for case in by_op.get(op, []):
                own = resolve(vs, case.own_opset())
                if case.shipped or own == v:
                    plan_case(case, v, versions, out, st)
            statuses[(op, v)] = st
    failures = run_onyx(runner, out) if (out / "node").is_dir() else {}
    if not args.keep:
        shutil.rmtree(out)

    passing_now = {
        f"{op} {v}"
        for (op, v), st in statuses.items()
        if version_cell(st, failures)[0] == "pass"
    }
    if args.update:
        notes = ORACLE_NOTES.read_text() if ORACLE_NOTES.is_file() else ""
        notes = notes + "\n" + oracle_notes()
        totals = write_report(versions, statuses, failures, notes)
        EXPECTED.write_text("".join(f"{p}\n" for p in sorted(passing_now)))
        print(
            f"opset sweep: {totals['pass']} pass, {totals['FAIL']} fail, "
            f"{totals['no case']} no case; wrote {REPORT.name} and {EXPECTED.name}"
        )
        return 0
    for (op, v), st in sorted(statuses.items()):
        for p in st.planned:
            if p.dir_name in failures:
                print(f"FAIL {op} v{v} {p.case}: {failures[p.dir_name]}")
    expected = set(EXPECTED.read_text().splitlines()) if EXPECTED.is_file() else set()
    if args.op:
        expected = {e for e in expected if e.split()[0] in args.op}
    lost = sorted(expected - passing_now)
    for p in lost:
        print(f"REGRESSION {p}")
    print(
        f"opset sweep: {len(passing_now)} of {len(statuses)} versions pass, "
        f"{len(lost)} expected versions regressed"
    )
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
