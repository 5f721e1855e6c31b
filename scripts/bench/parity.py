#!/usr/bin/env python3
"""Parity over a whole run: attn's trainer against the PyTorch reference, step by step.

Both sides start from the same weights and train on the same batches in the same order with
the same Adam (betas, eps, weight decay), learning-rate schedule, label smoothing and
gradient clipping, on the CPU in f32:

  attn      `attn train` itself (the trainer, StepEngine, batcher, schedule), started from
            init.safetensors (train.init_weights), logging every step (log_every 1 ->
            metrics.jsonl) and writing the batches it trains on (--dump-batches: padded token
            ids and the learning rate of every step); its final checkpoint holds the weights.
  PyTorch   reference_model.Transformer loaded from init.safetensors, trained on the dumped
            batches: loss = label-smoothed cross-entropy summed over the step's targets / their
            count, backward, torch.nn.utils.clip_grad_norm_, torch.optim.Adam (AdamW with
            weight decay), the learning rate computed here from the config (and checked
            against the rate attn logged for the step).

Compared: the per-step training loss (relative difference at every step) and the final
weights (over all weights ||a - t|| / ||t - init||, the difference against the distance
travelled, and per tensor max|a - t| / max|t|; the key projections' biases, whose gradient is
zero in exact arithmetic, are left out: see noise_only).

The floor, how far f32 training carries differences of the size of its own rounding: PyTorch
f32 from the initial weights times (1 + 1e-7 N(0, 1)) against PyTorch f32, and (always for the
fixture, with --f64 for the long form) PyTorch in f64 on the same batches.

Then the same run with dropout 0.1 on both sides: the masks differ (attn's Philox, PyTorch's
generator), so the curves can only agree statistically; reported is the relative difference
of their moving averages, next to that of two PyTorch runs with different dropout seeds.

  # long form: 500 steps of configs/small.yaml's model and schedule (warm-up 100) on every
  # 8th of the first 400,000 Ding pairs (50,000), a 4000-piece vocabulary, batches of <= 600
  # tokens (docs/PARITY.md); exit status 1 when the comparison fails (see judge())
  python3 scripts/bench/parity.py --attn build/attn --data data/ding
  # short form: rewrites the fixture of tests/test_parity.cc (tiny model, 50 steps)
  python3 scripts/bench/parity.py --attn build/attn --make-fixture
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train import REPO, apply_overrides, read_yaml_section  # noqa: E402
from reference_model import (PAD, ModelConfig, Transformer,  # noqa: E402
                             label_smoothed_loss, load_attn_safetensors, read_safetensors,
                             save_attn_safetensors, write_safetensors)

FIXTURE_DIR = os.path.join(REPO, "tests", "data", "parity")

# attn's defaults (src/train/config.h) for the train keys this script reads.
TRAIN_DEFAULTS = {"label_smoothing": 0.1, "adam_beta1": 0.9, "adam_beta2": 0.98,
                  "adam_eps": 1e-9, "weight_decay": 0.0, "lr_schedule": "noam",
                  "lr_factor": 1.0, "lr": 5e-4, "warmup_steps": 4000, "clip_norm": 0.0,
                  "update_freq": 1, "seed": 1, "cooldown": 0.0}


def cooldown_factor(fraction: float, progress: float) -> float:
    """src/optim/schedule.h's cooldown_factor (train.cooldown)."""
    if fraction == 0:
        return 1.0
    return min(1.0, (1.0 - min(max(progress, 0.0), 1.0)) / fraction)


def learning_rate(train: dict, d_model: int, step: int, progress: float = 0.0) -> float:
    """src/optim/schedule.h, step counted from 1; progress: the part of the run done before
    this step (the trainer's: steps done / max_steps, or time / max_time when further)."""
    kind, w, s = train["lr_schedule"], float(train["warmup_steps"]), float(step)
    if kind == "noam":
        lr = float(train["lr_factor"]) * d_model ** -0.5 * min(s ** -0.5, s * w ** -1.5)
    elif kind == "inverse_sqrt":
        peak = float(train["lr"])
        lr = peak * s / w if step <= w else peak * math.sqrt(w / s)
    elif kind == "constant":
        lr = float(train["lr"])
    else:
        raise SystemExit(f"unknown train.lr_schedule '{kind}'")
    return lr * cooldown_factor(float(train["cooldown"]), progress)


def config_values(config: str, sets: List[str]) -> Dict[str, Dict[str, object]]:
    values = {sec: read_yaml_section(config, sec) for sec in ("model", "data", "train")}
    apply_overrides(values, sets)
    values["train"] = {**TRAIN_DEFAULTS, **values["train"]}
    return values


# --- attn ----------------------------------------------------------------------------------

def run_attn(attn: str, config: str, sets: List[str], out_dir: str, dump: Optional[str],
             log_path: str) -> float:
    cmd = [attn, "train", "-c", config, "--fresh"]
    if dump:
        cmd += ["--dump-batches", dump]
    for s in sets + [f"train.output_dir={out_dir}"]:
        cmd += ["--set", s]
    print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.perf_counter()
    # Spinning OpenMP threads starve each other on a busy machine (a 50x slowdown seen on 2
    # shared cores); passive waiting costs little when the machine is idle.
    env = {"OMP_WAIT_POLICY": "passive", **os.environ}
    with open(log_path, "w") as log:
        p = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        with open(log_path) as fh:
            sys.stderr.write("".join(fh.readlines()[-20:]))
        raise SystemExit(f"attn train failed with exit code {p.returncode} (log: {log_path})")
    return seconds


def attn_losses(out_dir: str) -> Dict[int, Tuple[float, float]]:
    """step -> (loss per target token, lr) from metrics.jsonl (log_every 1)."""
    out = {}
    with open(os.path.join(out_dir, "metrics.jsonl")) as fh:
        for line in fh:
            j = json.loads(line)
            if j["type"] == "train":
                out[int(j["step"])] = (float(j["loss"]), float(j["lr"]))
    return out


def attn_final_weights(out_dir: str) -> Dict[str, torch.Tensor]:
    tensors, _ = read_safetensors(os.path.join(out_dir, "checkpoints", "latest",
                                               "model.safetensors"))
    return tensors


def read_dump(path: str) -> List[dict]:
    """--dump-batches: per step {"step", "lr", "batches": [(src, src_len, tgt_in, tgt_out)]}."""
    steps = []
    with open(path) as fh:
        for line in fh:
            j = json.loads(line)
            batches = [tuple(torch.tensor(b[k], dtype=torch.int64)
                             for k in ("src", "src_lengths", "tgt_in", "tgt_out"))
                       for b in j["batches"]]
            steps.append({"step": int(j["step"]), "lr": float(j["lr"]), "batches": batches})
    for i, s in enumerate(steps):
        assert s["step"] == i + 1, f"{path}: line {i + 1} is step {s['step']}"
    return steps


# --- PyTorch -------------------------------------------------------------------------------

def make_adam(params: list, train: dict, foreach: Optional[bool] = None):
    """attn's optimizer as torch's: Adam, AdamW when weight_decay > 0, the config's betas/eps."""
    adam = torch.optim.AdamW if float(train["weight_decay"]) > 0 else torch.optim.Adam
    return adam(params, lr=0.0, betas=(float(train["adam_beta1"]), float(train["adam_beta2"])),
                eps=float(train["adam_eps"]), weight_decay=float(train["weight_decay"]),
                foreach=foreach)


def reference_step(model, params: list, opt, batches: list, train: dict, lr: float):
    """One update of the reference on a step's batches as attn makes it: label-smoothed loss
    summed over the step's targets / their count, clipping, Adam. Returns (loss summed over
    the targets, target count, gradient norm before clipping)."""
    for g in opt.param_groups:
        g["lr"] = lr
    ntok = sum(int((b[3] != PAD).sum()) for b in batches)
    total = 0.0
    for src, src_len, tgt_in, tgt_out in batches:
        logits = model(src, src_len, tgt_in)
        loss, _, _ = label_smoothed_loss(logits, tgt_out, float(train["label_smoothing"]), PAD,
                                         stats=False)
        (loss / ntok).backward()
        total += float(loss.detach())
    clip = float(train["clip_norm"])
    norm = (torch.nn.utils.clip_grad_norm_(params, clip) if clip > 0 else
            torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])))
    opt.step()
    opt.zero_grad(set_to_none=True)
    return total, ntok, float(norm)


def train_reference(cfg: ModelConfig, init_path: str, steps: List[dict], train: dict,
                    dtype: torch.dtype = torch.float32, seed: int = 1) -> dict:
    """The PyTorch side of one run; returns per-step losses, learning rates, gradient norms
    and the final parameters."""
    torch.manual_seed(seed)  # dropout masks (only with dropout > 0)
    model = Transformer(cfg).to(dtype)
    load_attn_safetensors(model, init_path)
    model.train()
    params = [p for _, p in model.named_parameters()]
    opt = make_adam(params, train, foreach=False)
    losses, lrs, norms = [], [], []
    t0 = time.perf_counter()
    for i, s in enumerate(steps):
        lr = learning_rate(train, cfg.d_model, i + 1, i / len(steps))  # a step-bound run
        if not math.isclose(lr, s["lr"], rel_tol=1e-12):
            raise SystemExit(f"step {i + 1}: attn's learning rate {s['lr']!r} is not the "
                             f"schedule's {lr!r}")
        total, ntok, norm = reference_step(model, params, opt, s["batches"], train, lr)
        losses.append(total / ntok)
        lrs.append(lr)
        norms.append(norm)
        if (i + 1) % 100 == 0:
            print(f"  step {i + 1}/{len(steps)}, loss {losses[-1]:.4f}, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    return {"losses": losses, "lrs": lrs, "grad_norms": norms,
            "seconds": time.perf_counter() - t0,
            "weights": {n: p.detach().clone() for n, p in model.named_parameters()}}


# --- comparisons ---------------------------------------------------------------------------

def loss_difference(a: List[float], b: List[float]) -> dict:
    """|a - b| / |b| per step: max (and where), mean, and at the last step."""
    assert len(a) == len(b), (len(a), len(b))
    rel = [abs(x - y) / abs(y) for x, y in zip(a, b)]
    worst = max(range(len(rel)), key=lambda i: rel[i])
    return {"max": rel[worst], "max_step": worst + 1, "mean": sum(rel) / len(rel),
            "first": rel[0], "last": rel[-1]}


def noise_only(name: str) -> bool:
    """The key projections' biases have a zero gradient in exact arithmetic (they add q . b_k to
    every score of a query row, and softmax ignores a shift shared by the row; see
    tests/test_golden.cc). Their gradients are rounding noise, which Adam normalises into steps
    of up to lr: their values are noise of each implementation and do not change the model's
    function, so they are left out of the weight comparison."""
    return name.endswith(".k_proj.bias")


def weight_difference(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor],
                      init: Dict[str, torch.Tensor]) -> dict:
    """Over all weights but noise_only(): ||a - b|| / ||b|| and ||a - b|| / ||b - init|| (the
    difference against the distance travelled), and per tensor max|a - b| / max|b| (the golden
    tests' measure): the worst tensor."""
    assert set(a) == set(b), sorted(set(a) ^ set(b))
    worst, worst_name, diff2, ref2, moved2 = 0.0, "", 0.0, 0.0, 0.0
    for name in sorted(b):
        if noise_only(name):
            continue
        x, y, y0 = (t.detach().double() for t in (a[name], b[name], init[name]))
        e = float((x - y).abs().max() / y.abs().max().clamp_min(1e-300))
        if e >= worst:
            worst, worst_name = e, name
        diff2 += float(((x - y) ** 2).sum())
        ref2 += float((y ** 2).sum())
        moved2 += float(((y - y0) ** 2).sum())
    return {"max_tensor": worst, "max_tensor_name": worst_name,
            "global": math.sqrt(diff2 / ref2), "vs_update": math.sqrt(diff2 / moved2)}


def moving_average(x: List[float], window: int) -> List[float]:
    """Trailing mean over `window` steps, from step `window` on."""
    out, acc = [], 0.0
    for i, v in enumerate(x):
        acc += v
        if i >= window:
            acc -= x[i - window]
        if i >= window - 1:
            out.append(acc / window)
    return out


def smoothed_difference(a: List[float], b: List[float], window: int) -> dict:
    sa, sb = moving_average(a, window), moving_average(b, window)
    rel = [abs(x - y) / abs(y) for x, y in zip(sa, sb)]
    return {"window": window, "max": max(rel), "mean": sum(rel) / len(rel),
            "final_a": sa[-1], "final_b": sb[-1]}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# --- one comparison run --------------------------------------------------------------------

def _train_task(task: tuple) -> dict:
    """train_reference in a worker process (spawned: the parent's thread pools are not
    inherited) with its share of the CPU threads."""
    threads, *rest = task
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    return train_reference(*rest)


def train_many(tasks: List[tuple], jobs: int) -> List[dict]:
    """train_reference(*task) for every task; with jobs > 1 that many at a time, each in its
    own process with threads / jobs threads (the runs are independent, and on a busy machine
    several processes get more of it than one)."""
    if jobs <= 1 or len(tasks) <= 1:
        return [train_reference(*t) for t in tasks]
    import concurrent.futures
    import multiprocessing
    threads = max(1, torch.get_num_threads() // jobs)
    with concurrent.futures.ProcessPoolExecutor(
            max_workers=min(jobs, len(tasks)),
            mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_train_task, [(threads, *t) for t in tasks]))


def parity_run(args, name: str, config: str, sets: List[str], values: dict, cfg: ModelConfig,
               init_path: str, work: str, extra_torch_seeds: List[int] = (),
               with_floor: bool = False, with_f64: bool = True) -> dict:
    out_dir = os.path.join(work, f"attn-{name}")
    dump = os.path.join(work, f"batches-{name}.jsonl")
    attn_s = run_attn(args.attn, config, sets, out_dir, dump, os.path.join(work, f"{name}.log"))
    steps = read_dump(dump)
    logged = attn_losses(out_dir)
    n = len(steps)
    assert sorted(logged) == list(range(1, n + 1)), "metrics.jsonl must log every step"
    res = {"steps": n, "attn_seconds": attn_s, "attn_losses": [logged[i][0] for i in
                                                               range(1, n + 1)]}
    train = values["train"]
    seed = train["seed"]
    init, _ = read_safetensors(init_path)
    # The PyTorch runs: f32 from the same weights; the floor (f32 from the initial weights
    # times (1 + 1e-7 N(0, 1)), about one rounding of every weight, and f64); other dropout
    # seeds.
    tasks = {"f32": (cfg, init_path, steps, train, torch.float32, seed)}
    if with_floor:
        g = torch.Generator().manual_seed(12345)
        perturbed_path = os.path.join(work, "init_perturbed.safetensors")
        write_safetensors(perturbed_path, [
            (k, (t.double() * (1 + 1e-7 * torch.randn(t.shape, generator=g,
                                                       dtype=torch.float64))).float())
            for k, t in init.items()])
        tasks["perturbed"] = (cfg, perturbed_path, steps, train, torch.float32, seed)
        if with_f64:
            tasks["f64"] = (cfg, init_path, steps, train, torch.float64, seed)
    for other_seed in extra_torch_seeds:
        tasks[f"seed{other_seed}"] = (cfg, init_path, steps, train, torch.float32, other_seed)
    print(f"[{name}] attn: {n} steps in {attn_s:.0f} s; PyTorch: {', '.join(tasks)} "
          f"({args.jobs} at a time) ...", flush=True)
    runs = dict(zip(tasks, train_many(list(tasks.values()), args.jobs)))

    ref = runs["f32"]
    res["torch_seconds"] = ref["seconds"]
    res["torch_losses"] = ref["losses"]
    res["lrs"] = ref["lrs"]
    res["torch_grad_norms"] = ref["grad_norms"]
    res["clipped_steps"] = (sum(g > float(train["clip_norm"]) for g in ref["grad_norms"])
                            if float(train["clip_norm"]) > 0 else 0)
    res["tgt_tokens"] = [sum(int((b[3] != PAD).sum()) for b in s["batches"]) for s in steps]
    attn_w = attn_final_weights(out_dir)
    res["loss_attn_vs_torch"] = loss_difference(res["attn_losses"], ref["losses"])
    res["weights_attn_vs_torch"] = weight_difference(attn_w, ref["weights"], init)
    res["_torch_weights"] = ref["weights"]
    res["_attn_weights"] = attn_w
    res["_steps"] = steps
    if "f64" in runs:
        exact = runs["f64"]
        res["torch64_seconds"] = exact["seconds"]
        res["torch64_losses"] = exact["losses"]
        res["loss_attn_vs_torch64"] = loss_difference(res["attn_losses"], exact["losses"])
        res["loss_torch_vs_torch64"] = loss_difference(ref["losses"], exact["losses"])
        res["weights_attn_vs_torch64"] = weight_difference(attn_w, exact["weights"], init)
        res["weights_torch_vs_torch64"] = weight_difference(ref["weights"], exact["weights"],
                                                            init)
    if "perturbed" in runs:
        pert = runs["perturbed"]
        res["perturbed_losses"] = pert["losses"]
        res["loss_perturbed_vs_torch"] = loss_difference(pert["losses"], ref["losses"])
        res["weights_perturbed_vs_torch"] = weight_difference(pert["weights"], ref["weights"],
                                                              init)
    for other_seed in extra_torch_seeds:
        res.setdefault("torch_other_seeds", {})[other_seed] = runs[f"seed{other_seed}"]["losses"]
    return res


def public(res: dict) -> dict:
    return {k: v for k, v in res.items() if not k.startswith("_")}


def fmt_loss(d: dict) -> str:
    return (f"max {d['max']:.2e} (step {d['max_step']}), mean {d['mean']:.2e}, "
            f"step 1 {d['first']:.2e}, last {d['last']:.2e}")


def fmt_weights(d: dict) -> str:
    return (f"worst tensor {d['max_tensor']:.2e} ({d['max_tensor_name']}), all weights "
            f"{d['global']:.2e} of their norm, {d['vs_update']:.2e} of the distance travelled")


# --- the long form -------------------------------------------------------------------------

def judge(r0: dict, args) -> dict:
    """Pass or fail of the dropout-0 comparison. Step 1 must agree within --step1-tol (one
    step is the golden tests' case). After that, whether a per-step tolerance can hold depends
    on the run: at a high learning rate training is chaotic and PyTorch from weights perturbed
    by one rounding drifts as far from PyTorch as anything can (docs/PARITY.md). With that
    floor measured, the mean per-step loss difference and the final weights' difference must be
    within --floor-factor times the floor's; without it (--no-floor), within --loss-tol at every
    step and --weight-tol of the distance travelled."""
    la, wa = r0["loss_attn_vs_torch"], r0["weights_attn_vs_torch"]
    checks = [(f"step 1 loss {la['first']:.2e} <= {args.step1_tol:g}",
               la["first"] <= args.step1_tol)]
    if "loss_perturbed_vs_torch" in r0:
        lf, wf, k = r0["loss_perturbed_vs_torch"], r0["weights_perturbed_vs_torch"], \
            args.floor_factor
        checks += [(f"mean loss {la['mean']:.2e} <= {k:g} x floor {lf['mean']:.2e}",
                    la["mean"] <= k * lf["mean"]),
                   (f"weights {wa['vs_update']:.2e} <= {k:g} x floor {wf['vs_update']:.2e}",
                    wa["vs_update"] <= k * wf["vs_update"])]
    else:
        checks += [(f"every step's loss: max {la['max']:.2e} <= {args.loss_tol:g}",
                    la["max"] <= args.loss_tol),
                   (f"weights {wa['vs_update']:.2e} <= {args.weight_tol:g}",
                    wa["vs_update"] <= args.weight_tol)]
    return {"ok": all(ok for _, ok in checks),
            "text": "; ".join(f"{t}: {'ok' if ok else 'FAILED'}" for t, ok in checks)}


def subset(src: str, dst: str, count: int, every: int) -> None:
    with open(src, encoding="utf-8") as fi, open(dst, "w", encoding="utf-8") as fo:
        kept = 0
        for i, line in enumerate(fi):
            if i % every == 0:
                fo.write(line)
                kept += 1
                if kept == count:
                    break


def long_form(args) -> int:
    work = args.work or tempfile.mkdtemp(prefix="parity_")
    os.makedirs(work, exist_ok=True)
    data = os.path.abspath(args.data)
    n_train = sum(1 for _ in open(os.path.join(data, "train.en"), encoding="utf-8"))
    every = max(1, n_train // args.pairs)
    for side in ("en", "de"):  # every k-th pair: the corpus is sorted alphabetically
        subset(os.path.join(data, f"train.{side}"), os.path.join(work, f"train.{side}"),
               args.pairs, every)
        subset(os.path.join(data, f"valid.{side}"), os.path.join(work, f"valid.{side}"),
               args.valid_pairs, 1)
    sets = [f"data.train_src={work}/train.en", f"data.train_tgt={work}/train.de",
            f"data.valid_src={work}/valid.en", f"data.valid_tgt={work}/valid.de",
            f"data.spm_model={work}/spm.model", f"data.vocab_size={args.vocab}",
            f"data.max_tokens={args.max_tokens}",
            "train.device=cpu", "train.precision=fp32", f"train.max_steps={args.steps}",
            "train.log_every=1", f"train.valid_every={args.steps}",
            f"train.save_every={args.steps}", "train.keep_last=1", "train.average_last=0",
            "train.max_time=",  # step-bound, so that a train.cooldown follows the steps
            f"train.warmup_steps={args.warmup}"] + args.set
    # The vocabulary (and with it the embedding shape) comes from SentencePiece: one attn step
    # trains it into <work>/spm.model, which every later run loads.
    vocab_dir = os.path.join(work, "attn-vocab")
    run_attn(args.attn, args.config, sets + ["train.max_steps=1", "train.valid_every=1",
                                             "train.save_every=1"],
             vocab_dir, None, os.path.join(work, "vocab.log"))
    vocab = int(attn_final_weights(vocab_dir)["src_embed.weight"].shape[0])

    results = {"command": " ".join(shlex.quote(a) for a in sys.argv),
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": cpu_name(),
               "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
               "pairs": args.pairs, "vocab": vocab, "runs": {}}
    for name, dropout in (("dropout0", 0.0), ("dropout0.1", args.dropout)):
        run_sets = sets + [f"model.dropout={dropout}"]
        values = config_values(args.config, run_sets)
        cfg = ModelConfig.from_dict(values["model"])
        cfg.src_vocab = cfg.tgt_vocab = vocab
        init_path = os.path.join(work, "init.safetensors")
        if not os.path.exists(init_path):
            torch.manual_seed(args.init_seed)
            save_attn_safetensors(Transformer(cfg), init_path)
        run_sets += [f"train.init_weights={init_path}"]
        exact = dropout == 0
        res = parity_run(args, name, args.config, run_sets, values, cfg, init_path, work,
                         extra_torch_seeds=[] if exact else [values["train"]["seed"] + 1],
                         with_floor=exact and not args.no_floor, with_f64=args.f64)
        if not exact:
            w = args.window
            res["smoothed_attn_vs_torch"] = smoothed_difference(res["attn_losses"],
                                                                res["torch_losses"], w)
            for seed, other in res["torch_other_seeds"].items():
                res["smoothed_torch_vs_torch_seed"] = smoothed_difference(other,
                                                                          res["torch_losses"], w)
        results["runs"][name] = public(res)
        results["model"] = {k: getattr(cfg, k) for k in ("d_model", "heads", "d_ff",
                                                        "encoder_layers", "decoder_layers",
                                                        "share_embeddings", "pre_norm")}
        results["train"] = {k: values["train"][k] for k in TRAIN_DEFAULTS}
        results["max_tokens"] = args.max_tokens

    r0, r1 = results["runs"]["dropout0"], results["runs"]["dropout0.1"]
    verdict = judge(r0, args)
    print()
    print(f"{results['date']}, {results['cpu']}, torch {torch.__version__}")
    print(f"model {results['model']}, vocab {vocab}, {args.pairs} Ding pairs, "
          f"max_tokens {args.max_tokens}, {r0['steps']} steps, "
          f"{sum(r0['tgt_tokens']) / r0['steps']:.0f} target tokens/step, "
          f"clipping active on {r0['clipped_steps']} steps")
    print(f"time: attn {r0['attn_seconds']:.0f} s, PyTorch f32 {r0['torch_seconds']:.0f} s")
    print("dropout 0, per-step loss, relative difference:")
    print(f"  attn f32 vs PyTorch f32:    {fmt_loss(r0['loss_attn_vs_torch'])}")
    if "loss_attn_vs_torch64" in r0:
        print(f"  attn f32 vs PyTorch f64:    {fmt_loss(r0['loss_attn_vs_torch64'])}")
        print(f"  PyTorch f32 vs PyTorch f64: {fmt_loss(r0['loss_torch_vs_torch64'])}")
    if "loss_perturbed_vs_torch" in r0:
        print(f"  PyTorch f32, init x (1 + 1e-7 N(0,1)) vs PyTorch f32: "
              f"{fmt_loss(r0['loss_perturbed_vs_torch'])}")
    print("dropout 0, final weights:")
    print(f"  attn f32 vs PyTorch f32:    {fmt_weights(r0['weights_attn_vs_torch'])}")
    if "weights_attn_vs_torch64" in r0:
        print(f"  attn f32 vs PyTorch f64:    {fmt_weights(r0['weights_attn_vs_torch64'])}")
        print(f"  PyTorch f32 vs PyTorch f64: {fmt_weights(r0['weights_torch_vs_torch64'])}")
    if "weights_perturbed_vs_torch" in r0:
        print(f"  PyTorch f32, init x (1 + 1e-7 N(0,1)) vs PyTorch f32: "
              f"{fmt_weights(r0['weights_perturbed_vs_torch'])}")
    print(f"dropout {args.dropout}, loss over a trailing {args.window}-step window, "
          f"relative difference (steps {args.window}..{r1['steps']}):")
    for key, label in (("smoothed_attn_vs_torch", "attn vs PyTorch"),
                       ("smoothed_torch_vs_torch_seed", "PyTorch vs PyTorch (another seed)")):
        d = r1[key]
        print(f"  {label}: max {d['max']:.2e}, mean {d['mean']:.2e}; final smoothed loss "
              f"{d['final_a']:.4f} vs {d['final_b']:.4f}")
    print("\n" + verdict["text"])
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(results, fh, indent=1)
        print(f"wrote {args.json_out}")
    return 0 if verdict["ok"] else 1


# --- the short form: tests/test_parity.cc's fixture ----------------------------------------

def make_fixture(args) -> int:
    out = os.path.abspath(args.make_fixture)
    config = os.path.join(out, "config.yaml")
    values = config_values(config, [])
    d = values["data"]
    if not d.get("synthetic"):
        raise SystemExit(f"{config}: the fixture's config must use a synthetic task")
    cfg = ModelConfig.from_dict(values["model"])
    cfg.src_vocab = cfg.tgt_vocab = int(d["synthetic_vocab"])
    torch.manual_seed(args.init_seed)
    init_path = os.path.join(out, "init.safetensors")
    save_attn_safetensors(Transformer(cfg), init_path)
    work = args.work or tempfile.mkdtemp(prefix="parity_fixture_")
    os.makedirs(work, exist_ok=True)
    sets = [f"train.init_weights={init_path}"]
    res = parity_run(args, "fixture", config, sets, values, cfg, init_path, work,
                     with_floor=True)
    steps = res["_steps"]
    tid_sum = [sum(int(b[3].sum()) for b in s["batches"]) for s in steps]
    tensors = [("loss", torch.tensor(res["torch_losses"], dtype=torch.float64)),
               ("lr", torch.tensor(res["lrs"], dtype=torch.float64)),
               ("tgt_tokens", torch.tensor(res["tgt_tokens"], dtype=torch.int32)),
               ("tgt_id_sum", torch.tensor(tid_sum, dtype=torch.int32))]
    tensors += [("final." + n, t.float()) for n, t in res["_torch_weights"].items()]
    write_safetensors(os.path.join(out, "expected.safetensors"), tensors,
                      {"torch": torch.__version__, "script": "scripts/bench/parity.py",
                       "config": "tests/data/parity/config.yaml",
                       "init_seed": str(args.init_seed)})
    for f in ("init.safetensors", "expected.safetensors"):
        print(f"{os.path.relpath(os.path.join(out, f))}: "
              f"{os.path.getsize(os.path.join(out, f))} bytes")
    print(f"{res['steps']} steps, clipping active on {res['clipped_steps']}")
    for key in ("attn_vs_torch", "attn_vs_torch64", "torch_vs_torch64", "perturbed_vs_torch"):
        print(f"loss {key}: {fmt_loss(res['loss_' + key])}")
        print(f"weights {key}: {fmt_weights(res['weights_' + key])}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--attn", default=os.path.join(REPO, "build", "attn"), help="attn binary")
    ap.add_argument("--make-fixture", nargs="?", const=FIXTURE_DIR, metavar="DIR",
                    help="write the short form's fixture (DIR/config.yaml -> DIR/init and "
                         "DIR/expected.safetensors; default tests/data/parity) and exit")
    ap.add_argument("--config", default=os.path.join(REPO, "configs", "small.yaml"),
                    help="long form: the model, schedule, clipping and smoothing of both sides")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for both sides (after the script's own)")
    ap.add_argument("--data", default=os.path.join(REPO, "data", "ding"),
                    help="directory with train.{en,de} and valid.{en,de}")
    ap.add_argument("--pairs", type=int, default=50000, help="training pairs (every k-th)")
    ap.add_argument("--valid-pairs", type=int, default=200)
    ap.add_argument("--vocab", type=int, default=4000, help="SentencePiece vocabulary")
    ap.add_argument("--max-tokens", type=int, default=600)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--dropout", type=float, default=0.1, help="of the statistical comparison")
    ap.add_argument("--window", type=int, default=50, help="moving-average window (steps)")
    ap.add_argument("--init-seed", type=int, default=1)
    ap.add_argument("--step1-tol", type=float, default=1e-5,
                    help="largest relative loss difference accepted at step 1")
    ap.add_argument("--floor-factor", type=float, default=2.0,
                    help="attn may differ from PyTorch this many times as much as PyTorch "
                         "from perturbed weights does (mean loss, final weights)")
    ap.add_argument("--loss-tol", type=float, default=1e-4,
                    help="with --no-floor: largest relative loss difference at any step")
    ap.add_argument("--weight-tol", type=float, default=1e-3,
                    help="with --no-floor: largest ||attn - torch|| / ||torch - init||")
    ap.add_argument("--no-floor", action="store_true",
                    help="skip the PyTorch runs from perturbed weights (and in f64)")
    ap.add_argument("--f64", action="store_true",
                    help="long form: also train PyTorch in f64 (the fixture always does)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="PyTorch runs of one comparison trained at a time (processes)")
    ap.add_argument("--work", help="working directory (default: a new temporary one)")
    ap.add_argument("--json-out", help="write every number to this file")
    args = ap.parse_args()
    if not os.path.exists(args.attn):
        raise SystemExit(f"{args.attn}: no such attn binary (build it, or pass --attn)")
    torch.use_deterministic_algorithms(True)
    return make_fixture(args) if args.make_fixture else long_form(args)


if __name__ == "__main__":
    sys.exit(main())
