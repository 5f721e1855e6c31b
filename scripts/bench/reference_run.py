#!/usr/bin/env python3
"""The PyTorch reference trained on the same recipe as an attn run, for the same wall time.

Separates "the recipe cannot do better in this time" from "attn is too slow": the reference
model (reference_model.py, the same function as attn's Transformer) is trained on the very
batches an attn run trained on, in the same order (the run's --dump-batches file), with the
run's optimizer, learning-rate schedule, label smoothing, clipping and dropout, for a given
number of minutes of wall time on the same machine. If it gets through every dumped step
before the time is up it starts over from the first one (the learning rate keeps following
the schedule) and says so.

The result is written as an attn run next to the original, so attn's own tools judge it:
  <out>/metrics.jsonl                   training loss, learning rate and tokens/s per
                                        --log-every steps (`attn plot RUN <out>` overlays)
  <out>/checkpoints/final/              config.yaml, spm.model, trainer_state.json of the
                                        attn run's checkpoint, model.safetensors from PyTorch
                                        (`attn translate -m <out>/checkpoints/final`)

  ./build-cpu/attn train -c configs/demo.yaml --dump-batches runs/demo/batches.jsonl ...
  python3 scripts/bench/reference_run.py --run runs/demo --minutes 12 --out runs/demo-torch
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from parity import (TRAIN_DEFAULTS, learning_rate, make_adam, read_dump,  # noqa: E402
                    reference_step)
from bench_train import read_yaml_section  # noqa: E402
from reference_model import (ModelConfig, Transformer, read_safetensors,  # noqa: E402
                             save_attn_safetensors, write_safetensors)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="the attn run directory")
    ap.add_argument("--batches", help="its --dump-batches file (default: <run>/batches.jsonl)")
    ap.add_argument("--checkpoint", help="attn checkpoint whose config and vocabulary to use "
                    "(default: <run>/checkpoints/latest)")
    ap.add_argument("--minutes", type=float, required=True, help="wall-time limit")
    ap.add_argument("--out", required=True, help="output run directory")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    ck = args.checkpoint or os.path.join(args.run, "checkpoints", "latest")
    config = os.path.join(ck, "config.yaml")
    model_values = read_yaml_section(config, "model")
    train = {**TRAIN_DEFAULTS, **read_yaml_section(config, "train")}
    shapes, _ = read_safetensors(os.path.join(ck, "model.safetensors"))
    cfg = ModelConfig.from_dict(model_values)
    cfg.src_vocab = int(shapes["src_embed.weight"].shape[0])
    cfg.tgt_vocab = int(shapes["tgt_embed.weight"].shape[0]) if "tgt_embed.weight" in shapes \
        else cfg.src_vocab
    cfg.validate()
    steps = read_dump(args.batches or os.path.join(args.run, "batches.jsonl"))
    if not steps:
        raise SystemExit(f"{args.run}: the batch dump holds no step")

    torch.manual_seed(args.seed)  # initial weights and dropout masks
    model = Transformer(cfg)
    model.train()
    params = [p for _, p in model.named_parameters()]
    opt = make_adam(params, train)

    os.makedirs(args.out, exist_ok=True)
    metrics = open(os.path.join(args.out, "metrics.jsonl"), "w")
    if not args.minutes > 0:
        raise SystemExit(f"--minutes {args.minutes}: must be > 0")
    limit = args.minutes * 60
    t0 = time.perf_counter()
    step, window_loss, window_tok, window_t0, passes = 0, 0.0, 0, t0, 1
    while time.perf_counter() - t0 < limit:
        s = steps[step % len(steps)]
        if step > 0 and step % len(steps) == 0:
            passes += 1
        step += 1
        # train.cooldown follows this run's own clock against --minutes (attn's, max_time).
        lr = learning_rate(train, cfg.d_model, step, (time.perf_counter() - t0) / limit)
        total, ntok, _ = reference_step(model, params, opt, s["batches"], train, lr)
        window_loss += total
        window_tok += ntok
        if step % args.log_every == 0:
            now = time.perf_counter()
            rec = {"type": "train", "step": step, "loss": window_loss / window_tok, "lr": lr,
                   "tgt_tokens_per_s": window_tok / (now - window_t0), "elapsed_s": now - t0}
            metrics.write(json.dumps(rec) + "\n")
            metrics.flush()
            print(f"step {step} | loss {rec['loss']:.4f} | lr {lr:.3e} | "
                  f"{rec['tgt_tokens_per_s']:.0f} tgt tok/s | {now - t0:.0f} s", flush=True)
            window_loss, window_tok, window_t0 = 0.0, 0, now
    seconds = time.perf_counter() - t0
    metrics.close()

    final = os.path.join(args.out, "checkpoints", "final")
    os.makedirs(final, exist_ok=True)
    for name in ("config.yaml", "spm.model"):
        if os.path.exists(os.path.join(ck, name)):
            shutil.copyfile(os.path.join(ck, name), os.path.join(final, name))
    model.eval()
    save_attn_safetensors(model, os.path.join(final, "model.safetensors"))
    # Adam's moments under attn's names, and the state of a finished run at this step, so
    # that every attn command loads the directory as a checkpoint.
    moments = []
    for n, p in model.named_parameters():
        st = opt.state[p]
        moments += [(n + ".exp_avg", st["exp_avg"]), (n + ".exp_avg_sq", st["exp_avg_sq"])]
    write_safetensors(os.path.join(final, "optimizer.safetensors"), moments,
                      {"attn.kind": "optimizer"})
    with open(os.path.join(ck, "trainer_state.json")) as fh:
        state = json.load(fh)
    elapsed = time.perf_counter() - t0
    state.update({"step": step, "adam_step": step, "elapsed_seconds": elapsed, "finished": True,
                  "lr": lr})
    with open(os.path.join(final, "trainer_state.json"), "w") as fh:
        json.dump(state, fh, indent=2)
    summary = {"steps": step, "seconds": seconds, "dumped_steps": len(steps),
               "passes_over_dump": passes, "torch": torch.__version__,
               "threads": torch.get_num_threads()}
    with open(os.path.join(args.out, "reference_run.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    print(f"PyTorch reference: {step} steps in {seconds:.0f} s "
          f"(attn's dump has {len(steps)} steps{'; started over ' + str(passes - 1) + ' time(s)' if passes > 1 else ''}); "
          f"checkpoint {final}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
