"""Exports the benchmark's reference models from torch with random weights.

Usage (after bench/setup.sh --torch):

    bench/.venv/bin/python bench/export_models.py [--out bench/models] [--only NAME ...]

Every model is built with fixed seeds and exported at batch 1 with the
classic TorchScript exporter at opset 17, so the same packages give the
same files. Weights are random: the benchmark measures speed and agreement
between runtimes, not accuracy. Transformer models use the eager attention
implementation, the plain MatMul/Softmax graph that exporters have long
emitted.
"""

import argparse
import os
import warnings

import torch

OPSET = 17
SEQ = 128


def mlp():
    torch.manual_seed(0)
    layers = []
    for i in range(3):
        layers.append(torch.nn.Linear(256, 256))
        if i < 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers), (torch.randn(1, 256),), ["x"], ["y"]


def vision(builder):
    def make():
        torch.manual_seed(0)
        return builder(weights=None), (torch.randn(1, 3, 224, 224),), ["image"], ["logits"]

    return make


def token_ids(vocab):
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab, (1, SEQ), generator=gen)


class HiddenStates(torch.nn.Module):
    """Wraps a transformers model so the export returns only the last hidden
    state, as a tensor rather than a ModelOutput."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)[0]


def bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(attn_implementation="eager")
    ids = token_ids(config.vocab_size)
    model = HiddenStates(BertModel(config, add_pooling_layer=False))
    return model, (ids, torch.ones_like(ids)), ["input_ids", "attention_mask"], ["last_hidden_state"]


def gpt2():
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    config = GPT2Config(attn_implementation="eager", use_cache=False)
    ids = token_ids(config.vocab_size)
    # an explicit mask keeps transformers off its packed-sequence detection,
    # which uses an operator the exporter lacks
    model = HiddenStates(GPT2Model(config))
    return model, (ids, torch.ones_like(ids)), ["input_ids", "attention_mask"], ["last_hidden_state"]


def models():
    import torchvision.models as tv

    return {
        "mlp": mlp,
        "mobilenetv2": vision(tv.mobilenet_v2),
        "resnet50": vision(tv.resnet50),
        "bert": bert,
        "gpt2": gpt2,
        "vit": vision(tv.vit_b_16),
    }


def export(name, make, out_dir):
    model, args, input_names, output_names = make()
    model.eval()
    path = os.path.join(out_dir, name + ".onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            args,
            path,
            input_names=input_names,
            output_names=output_names,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "models"))
    ap.add_argument("--only", nargs="*", help="export only these (default: all)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    # nn.MultiheadAttention's inference fast path (ViT) has no ONNX export
    torch.backends.mha.set_fastpath_enabled(False)
    for name, make in models().items():
        if args.only and name not in args.only:
            continue
        path = export(name, make, args.out)
        print(f"{name}: {path} ({os.path.getsize(path) / 2**20:.1f} MiB)", flush=True)


if __name__ == "__main__":
    main()
