"""Runs ONNX models through onnxruntime and through onyx with the same code
(only the module differs) and compares the outputs: same shapes, values
within a relative tolerance. Not part of the test command: it needs
onnxruntime, and torch, torchvision and transformers for --export.

    python compare_ort.py model.onnx [more.onnx ...]
    python compare_ort.py --export DIR     # ResNet-18 and BERT, random weights
"""

import argparse
import importlib
import os
import sys

import numpy as np


def export_models(out_dir):
    import torch
    import torchvision
    from transformers import BertConfig, BertModel

    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).eval()
    resnet_path = os.path.join(out_dir, "resnet18.onnx")
    torch.onnx.export(resnet, torch.randn(1, 3, 224, 224), resnet_path, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}}, opset_version=17, dynamo=False)
    class Bert(torch.nn.Module):
        """Passes the mask by keyword: forward's second parameter is not the
        mask in every transformers release."""

        def __init__(self):
            super().__init__()
            self.inner = BertModel(BertConfig(attn_implementation="eager"))

        def forward(self, input_ids, attention_mask):
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask)
            return out.last_hidden_state, out.pooler_output

    bert = Bert().eval()
    ids = torch.randint(0, 1000, (1, 16))
    bert_path = os.path.join(out_dir, "bert.onnx")
    torch.onnx.export(bert, (ids, torch.ones_like(ids)), bert_path,
                      input_names=["input_ids", "attention_mask"],
                      output_names=["last_hidden_state", "pooler_output"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}},
                      opset_version=17, dynamo=False)
    return [resnet_path, bert_path]


NP_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
            "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(float16)": np.float16}


def make_feed(session, rng, sym=2):
    feed = {}
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) else sym for d in arg.shape]
        dt = NP_TYPES[arg.type]
        if dt in (np.int64, np.int32):
            name = arg.name.lower()
            feed[arg.name] = (np.ones(shape) if "mask" in name else rng.integers(0, 1000, shape)).astype(dt)
        elif dt == np.bool_:
            feed[arg.name] = rng.random(shape) > 0.5
        else:
            feed[arg.name] = rng.standard_normal(shape).astype(dt)
    return feed


def run_with(module_name, path, feed):
    rt = importlib.import_module(module_name)
    sess = rt.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument("--export", metavar="DIR")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--atol", type=float, default=1e-5)
    args = ap.parse_args()
    models = list(args.models) + (export_models(args.export) if args.export else [])
    if not models:
        ap.error("give model files or --export DIR")
    failed = compared = 0
    for path in models:
        import onyx

        label = os.path.basename(path)
        if label == "model.onnx":
            label = os.path.basename(os.path.dirname(path))
        try:
            ref_feed = make_feed(onyx.InferenceSession(path), np.random.default_rng(0))
            ref = run_with("onnxruntime", path, ref_feed)
        except Exception as e:  # noqa: BLE001 - a model either side cannot take is reported
            print(f"{label}: skipped ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
            continue
        compared += 1
        try:
            got = run_with("onyx", path, ref_feed)
        except Exception as e:  # noqa: BLE001
            print(f"{label}: onyx failed: {type(e).__name__}: {e}")
            failed += 1
            continue
        for i, (r, g) in enumerate(zip(ref, got)):
            ok = r.shape == g.shape and np.allclose(g, r, rtol=args.rtol, atol=args.atol, equal_nan=True)
            if r.shape == g.shape and r.size:
                worst = float(np.nanmax(np.abs(g - r) / (np.abs(r) + args.atol)))
            else:
                worst = 0.0 if r.shape == g.shape else float("inf")
            print(f"{label} output {i}: shape {g.shape} vs {r.shape}, "
                  f"max relative difference {worst:.2e}: {'ok' if ok else 'MISMATCH'}")
            failed += not ok
    print(f"{compared} models compared, {failed} mismatches")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
