"""onnx's own backend test suite, run through onyx.backend.

Cases on conformance/expected-pass.txt (what the Rust conformance runner
passes) must pass here too; the rest are marked xfail by conftest.py, and the
counts of both runners are printed at the end.
"""

import onnx.backend.test

import onyx.backend

backend_test = onnx.backend.test.BackendTest(onyx.backend, __name__)
# The "real" and "light" models download data or run onnx's reference
# evaluator to make it; the Rust runner records the light ones separately.
globals().update(
    {k: v for k, v in backend_test.test_cases.items() if k != "OnnxBackendRealModelTest"}
)
