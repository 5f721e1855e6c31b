"""Writes the golden fixtures of tests/test_golden.cc: a tiny Transformer in float64 with
fixed random weights, run forward + label-smoothed loss + backward by PyTorch on a fixed
padded batch. Each tests/data/golden/<name>.safetensors holds

  <parameter name>        every parameter under attn's name (F64)
  src, src_lengths        I32 [B, S], [B] (rows padded with 0 on the right, end in eos 3)
  tgt_in, tgt_out         I32 [B, T] (<bos> y.. / y.. <eos>, padded with 0)
  logits                  F64 [B, T, tgt_vocab]
  loss, nll               F64 scalars: summed label-smoothed loss and summed -log p(target)
  ntokens                 I32 scalar: non-pad targets
  grad.<parameter name>   F64 d loss / d parameter (loss summed, not normalised)

and metadata "config" (JSON: the model config, label_smoothing, pad id) and "torch".

    /tmp/torchenv/bin/python scripts/golden/make_golden.py [--out tests/data/golden]

Deterministic: the same torch version writes the same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from reference_model import (BOS, EOS, PAD, ModelConfig, Transformer,  # noqa: E402
                             label_smoothed_loss, write_safetensors)

LABEL_SMOOTHING = 0.1

FIXTURES = {
    # The paper's model: post-norm, one shared table for source, target and output.
    "post_norm_shared": dict(
        cfg=ModelConfig(src_vocab=23, tgt_vocab=23, d_model=16, heads=2, d_ff=24,
                        encoder_layers=2, decoder_layers=2, dropout=0.0,
                        pre_norm=False, share_embeddings=True),
        src_lengths=[7, 4, 1, 5], tgt_lengths=[5, 1, 6, 3], seed=1),
    # Pre-norm with final norms, separate tables and output projection, unequal vocabularies.
    "pre_norm_unshared": dict(
        cfg=ModelConfig(src_vocab=19, tgt_vocab=17, d_model=16, heads=2, d_ff=24,
                        encoder_layers=2, decoder_layers=2, dropout=0.0,
                        pre_norm=True, share_embeddings=False),
        src_lengths=[3, 7, 1, 6], tgt_lengths=[6, 2, 4, 1], seed=2),
}


def randomize(model: Transformer, gen: torch.Generator) -> None:
    """Fixed random values everywhere; biases and norm parameters away from 0/1 so that a
    bias or gain applied wrongly shows in the outputs."""
    d = model.cfg.d_model
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("_embed.weight"):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * d ** -0.5)
            elif "norm" in name.split(".")[-2]:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            elif name.endswith(".weight"):
                a = (6.0 / (p.shape[0] + p.shape[1])) ** 0.5
                p.copy_((torch.rand(p.shape, generator=gen, dtype=p.dtype) * 2 - 1) * a)
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def make_batch(src_lengths, tgt_lengths, src_vocab, tgt_vocab, gen):
    """src rows: words then eos; tgt_in <bos> y; tgt_out y <eos>; lengths count bos/eos."""
    b = len(src_lengths)
    s, t = max(src_lengths), max(tgt_lengths)
    src = torch.full((b, s), PAD, dtype=torch.int32)
    tgt_in = torch.full((b, t), PAD, dtype=torch.int32)
    tgt_out = torch.full((b, t), PAD, dtype=torch.int32)
    for i, (ls, lt) in enumerate(zip(src_lengths, tgt_lengths)):
        words = torch.randint(4, src_vocab, (ls - 1,), generator=gen, dtype=torch.int32)
        src[i, :ls] = torch.cat([words, torch.tensor([EOS], dtype=torch.int32)])
        y = torch.randint(4, tgt_vocab, (lt - 1,), generator=gen, dtype=torch.int32)
        tgt_in[i, :lt] = torch.cat([torch.tensor([BOS], dtype=torch.int32), y])
        tgt_out[i, :lt] = torch.cat([y, torch.tensor([EOS], dtype=torch.int32)])
    return src, torch.tensor(src_lengths, dtype=torch.int32), tgt_in, tgt_out


def make_fixture(name: str, spec: dict, out_dir: str) -> str:
    cfg: ModelConfig = spec["cfg"]
    gen = torch.Generator().manual_seed(spec["seed"])
    model = Transformer(cfg, max_positions=64).double()
    randomize(model, gen)
    model.train()  # every dropout probability is 0: training mode must still be exact
    src, src_lengths, tgt_in, tgt_out = make_batch(spec["src_lengths"], spec["tgt_lengths"],
                                                   cfg.src_vocab, cfg.tgt_vocab, gen)
    logits = model(src.long(), src_lengths.long(), tgt_in.long())
    loss, nll, ntokens = label_smoothed_loss(logits, tgt_out, LABEL_SMOOTHING, PAD)
    loss.backward()

    params = list(model.named_parameters())
    tensors = [(n, p.detach()) for n, p in params]
    tensors += [("src", src), ("src_lengths", src_lengths), ("tgt_in", tgt_in),
                ("tgt_out", tgt_out), ("logits", logits.detach()), ("loss", loss.detach()),
                ("nll", nll), ("ntokens", ntokens.to(torch.int32))]
    for n, p in params:
        assert p.grad is not None, f"{name}: parameter {n} got no gradient"
        tensors.append(("grad." + n, p.grad))
    meta = {"config": json.dumps({**dataclasses.asdict(cfg), "label_smoothing": LABEL_SMOOTHING,
                                  "pad": PAD}, sort_keys=True),
            "torch": torch.__version__,
            "script": "scripts/golden/make_golden.py"}
    path = os.path.join(out_dir, name + ".safetensors")
    write_safetensors(path, tensors, meta)
    return path


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "tests", "data", "golden"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    for name, spec in FIXTURES.items():
        path = make_fixture(name, spec, args.out)
        print(f"{os.path.relpath(path)}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
