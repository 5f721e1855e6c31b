#!/usr/bin/env python3
"""End-to-end training speed, attn against PyTorch, on the same GPU in one run.

Both sides train the same model (scripts/bench/reference_model.py is attn's Transformer in
plain PyTorch) on the same batches: a file from `attn bench batches` holds the lengths, and
token ids follow its documented hash (src/bench/batches.h), so the tensors are identical.

  attn             `attn bench train -c CONFIG --batches FILE --json ...` (bf16 on CUDA)
  PyTorch eager    torch.autocast(bf16) + Adam(0.9, 0.98, 1e-9, fused on CUDA)
  torch.compile    the same step with model + loss compiled (inductor)

A step is what `attn bench train` times: host batch -> device, forward, label-smoothed loss
(summed, divided by the batch's target tokens), backward, Adam at a constant learning rate;
timed with a device synchronisation before and after each step. Step i (warm-up included)
uses batch i mod count, as attn does; torch.compile additionally runs one untimed step on
every batch first so that recompilations for new shapes fall outside the timing.

MFU = model FLOPs / time / measured bf16 matmul rate, with the FLOPs of
reference_model.training_flops on the padded batch shapes (= attn's flops_per_step):
  6 x (tokens through each weight matrix x its size) + 3 x attention score/value products
  (4 B S^2 d per encoder layer, 2 B T^2 d per causal self-attention, 4 B T S d per
  cross-attention); the bf16 matmul rate is the best of a few timed loops of
  [8192 x 8192] @ [8192 x 8192] in bf16, measured in this process (on a CPU: f32, 2048^3,
  the precision CPU training computes in).

  python scripts/bench/bench_train.py --attn build/attn --batches batches.json
  python scripts/bench/bench_train.py --dry-run          # CPU, tiny model, 2 steps
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_model import (BOS, EOS, PAD, ModelConfig, Transformer,  # noqa: E402
                             label_smoothed_loss, training_flops)

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MASK64 = (1 << 64) - 1


# --- batches: src/bench/batches.h ----------------------------------------------------------

def mix64(z: int) -> int:
    """SplitMix64's output function of z + golden gamma (src/bench/common.h)."""
    z = (z + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def hash_u64(*values: int) -> int:
    acc = 0
    for v in values:
        acc = mix64(acc ^ (v & MASK64))
    return acc


def synthetic_token(vocab: int, side: int, batch: int, row: int, pos: int) -> int:
    return 4 + hash_u64(side, batch, row, pos) % (vocab - 4)


def _row_tokens(vocab: int, side: int, batch: int, row: int, n: int) -> List[int]:
    prefix = mix64(mix64(mix64(side) ^ batch) ^ row)  # hash_u64(side, batch, row), reused
    return [4 + mix64(prefix ^ p) % (vocab - 4) for p in range(n)]


def make_batch(vocab: int, index: int, src_lengths: List[int], tgt_lengths: List[int]):
    """(src, src_lengths, tgt_in, tgt_out) as int32 CPU tensors, as bench::make_batch."""
    b, s, t = len(src_lengths), max(src_lengths), max(tgt_lengths)
    src = torch.full((b, s), PAD, dtype=torch.int32)
    tgt_in = torch.full((b, t), PAD, dtype=torch.int32)
    tgt_out = torch.full((b, t), PAD, dtype=torch.int32)
    for r, (ls, lt) in enumerate(zip(src_lengths, tgt_lengths)):
        x = _row_tokens(vocab, 0, index, r, ls - 1)
        y = _row_tokens(vocab, 1, index, r, lt - 1)
        src[r, :ls] = torch.tensor(x + [EOS], dtype=torch.int32)
        tgt_in[r, :lt] = torch.tensor([BOS] + y, dtype=torch.int32)
        tgt_out[r, :lt] = torch.tensor(y + [EOS], dtype=torch.int32)
    return src, torch.tensor(src_lengths, dtype=torch.int32), tgt_in, tgt_out


def read_batches(path: str) -> dict:
    with open(path) as fh:
        f = json.load(fh)
    for key in ("max_tokens", "vocab", "batches"):
        if key not in f:
            raise SystemExit(f"{path}: no '{key}' (not a file from `attn bench batches`?)")
    return f


def tiny_batches(vocab: int, count: int, max_tokens: int, seed: int = 1) -> dict:
    """A small batch file for --dry-run when the attn binary cannot write one."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        rows = int(torch.randint(2, 5, (1,), generator=g))
        t = [int(v) for v in torch.randint(1, max_tokens // rows, (rows,), generator=g)]
        s = [max(1, min(max_tokens // rows, int(v * 1.1))) for v in t]
        batches.append({"src_lengths": s, "tgt_lengths": t})
    return {"max_tokens": max_tokens, "vocab": vocab, "seed": seed, "batches": batches}


# --- config ------------------------------------------------------------------------------

def _yaml_scalar(text: str):
    text = text.split(" #", 1)[0].strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text.strip("'\"")


def read_yaml_section(path: str, section: str) -> Dict[str, object]:
    """The flat `section:` mapping of an attn config (attn's configs are two levels deep;
    this avoids needing PyYAML on the GPU machine)."""
    out: Dict[str, object] = {}
    inside = False
    with open(path) as fh:
        for line in fh:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if not line[0].isspace():
                inside = line.split(":", 1)[0].strip() == section
                continue
            if inside and ":" in line:
                k, v = line.split(":", 1)
                out[k.strip()] = _yaml_scalar(v)
    return out


def apply_overrides(values: Dict[str, Dict[str, object]], sets: List[str]) -> None:
    for s in sets:
        key, _, v = s.partition("=")
        section, _, name = key.partition(".")
        values.setdefault(section, {})[name] = _yaml_scalar(v)


# --- measurement ------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, n: int, reps: int) -> float:
    """Best of 3 timed loops of an n x n x n matmul, TFLOP/s: bf16 on a GPU; f32 (what CPU
    training computes in) at n <= 2048 on a CPU, where bf16 is emulated and 8192^3 takes
    minutes."""
    dtype = torch.bfloat16
    if device.type == "cpu":
        dtype, n, reps = torch.float32, min(n, 2048), min(reps, 5)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b, out=c)
    best = 0.0
    for _ in range(3):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b, out=c)
        sync(device)
        best = max(best, 2.0 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12)
    del a, b, c
    return best


@dataclasses.dataclass
class Result:
    name: str
    tokens_per_s: float = 0.0
    step_ms_median: float = 0.0
    step_ms: List[float] = dataclasses.field(default_factory=list)
    flops_per_s: float = 0.0
    peak_mem_bytes: Optional[int] = None
    last_loss: float = float("nan")
    note: str = ""


def median(v: List[float]) -> float:
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def run_torch(name: str, cfg: ModelConfig, batches: dict, args, device: torch.device,
              compile_model: bool) -> Result:
    torch.manual_seed(args.seed)
    model = Transformer(cfg).to(device)
    model.train()
    fused = device.type == "cuda" and args.adam == "fused"
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-9,
                           **({"fused": True} if fused else {"foreach": True}))
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[args.precision]
    if args.precision == "fp16":
        raise SystemExit("--precision fp16 is not implemented on the PyTorch side (loss scaling)")

    def loss_fn(src, src_len, tgt_in, tgt_out):
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            logits = model(src, src_len, tgt_in)
        loss, _, _ = label_smoothed_loss(logits, tgt_out, args.label_smoothing, PAD,
                                         stats=False)
        return loss

    step_fn = loss_fn
    if compile_model:
        dyn = {"auto": None, "true": True, "false": False}[args.compile_dynamic]
        step_fn = torch.compile(loss_fn, mode=args.compile_mode, dynamic=dyn)

    pin = device.type == "cuda"
    host = []
    for i, b in enumerate(batches["batches"]):
        tensors = make_batch(batches["vocab"], i, b["src_lengths"], b["tgt_lengths"])
        tensors = tuple(t.long().pin_memory() if pin else t.long() for t in tensors)
        host.append((tensors, sum(b["tgt_lengths"]),
                     training_flops(cfg, len(b["src_lengths"]), max(b["src_lengths"]),
                                    max(b["tgt_lengths"]))))
    count = len(host)

    def step(i: int) -> torch.Tensor:
        (src, src_len, tgt_in, tgt_out), ntok, _ = host[i % count]
        src, src_len, tgt_in, tgt_out = (t.to(device, non_blocking=True)
                                         for t in (src, src_len, tgt_in, tgt_out))
        loss = step_fn(src, src_len, tgt_in, tgt_out)
        (loss / ntok).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t_compile = time.perf_counter()
    if compile_model:  # every batch shape once, untimed: compilation stays out of the timing
        for i in range(count):
            step(i)
        sync(device)
    t_compile = time.perf_counter() - t_compile
    res = Result(name)
    total, tokens, flops, last = 0.0, 0, 0.0, None
    for i in range(args.warmup + args.steps):
        sync(device)
        t0 = time.perf_counter()
        loss = step(i)
        sync(device)
        ms = (time.perf_counter() - t0) * 1e3
        if i < args.warmup:
            continue
        _, ntok, fl = host[i % count]
        res.step_ms.append(ms)
        total += ms * 1e-3
        tokens += ntok
        flops += fl
        last = (loss, ntok)
    res.tokens_per_s = tokens / total
    res.flops_per_s = flops / total
    res.step_ms_median = median(res.step_ms)
    res.last_loss = float(last[0]) / last[1]
    if device.type == "cuda":
        res.peak_mem_bytes = int(torch.cuda.max_memory_allocated(device))
    if compile_model:
        res.note = f"compile warm-up {t_compile:.1f} s"
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def attn_supports_bench_train(binary: str) -> bool:
    try:
        p = subprocess.run([binary, "bench", "train", "--help"], capture_output=True, text=True,
                           timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0 and "--batches" in p.stdout


def run_attn(args, batches_path: str, out_dir: str) -> Optional[dict]:
    out = os.path.join(out_dir, "attn_bench_train.json")
    cmd = [args.attn, "bench", "train", "-c", args.config, "--batches", batches_path,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device,
           "--precision", args.precision if args.device.startswith("cuda") else "fp32",
           "--json", out]
    for s in args.set:
        cmd += ["--set", s]
    cmd += shlex.split(args.attn_args)
    print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    p = subprocess.run(cmd, text=True, capture_output=True)
    sys.stdout.write(p.stdout)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        print(f"attn bench train failed with exit code {p.returncode}", file=sys.stderr)
        return None
    with open(out) as fh:
        return json.load(fh)


def fmt_bytes(n: Optional[float]) -> str:
    if n is None:
        return "n/a"
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.1f} MiB"


def table(rows: List[Result], peak_tflops: float, attn_tps: Optional[float]) -> str:
    lines = ["| | target tokens/s | step ms (median) | MFU | peak memory | tokens/s vs attn |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        mfu = f"{100 * r.flops_per_s / 1e12 / peak_tflops:.1f}%" if peak_tflops > 0 else "n/a"
        ratio = f"{r.tokens_per_s / attn_tps:.2f}x" if attn_tps else "n/a"
        lines.append(f"| {r.name} | {r.tokens_per_s:,.0f} | {r.step_ms_median:.2f} | {mfu} | "
                     f"{fmt_bytes(r.peak_mem_bytes)} | {ratio} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--attn", default=os.path.join(REPO, "build", "attn"),
                    help="attn binary (skipped when it lacks `bench train`)")
    ap.add_argument("--config", default=os.path.join(REPO, "configs", "base.yaml"),
                    help="attn config: its model section is the model of both sides")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, given to attn and applied here (model.*, "
                         "train.label_smoothing, train.lr)")
    ap.add_argument("--attn-args", default="", help="extra arguments for `attn bench train`")
    ap.add_argument("--batches", help="batch file from `attn bench batches` (default: made "
                                      "with `attn bench batches --tokens 25000 --count 16`)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default=None, choices=["bf16", "fp32", "fp16"],
                    help="bf16 (default; --dry-run: fp32). attn runs fp32 on a CPU")
    ap.add_argument("--adam", default="fused", choices=["fused", "foreach"])
    ap.add_argument("--compile-mode", default="default",
                    help="torch.compile mode (default, reduce-overhead, max-autotune)")
    ap.add_argument("--compile-dynamic", default="auto", choices=["auto", "true", "false"])
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--no-attn", action="store_true", help="skip the attn side")
    ap.add_argument("--matmul-size", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json-out", help="write every number measured here to this file")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU, tiny model, 2 steps: checks the script end to end")
    args = ap.parse_args()

    if args.dry_run:
        args.device, args.steps, args.warmup = "cpu", 2, 1
        args.precision = "fp32" if args.precision in (None, "fp16") else args.precision
        args.matmul_size = 256
        if args.compile_dynamic == "auto":
            args.compile_dynamic = "true"  # one compilation for all shapes: CPU compiles are slow
        args.set = ["model.d_model=32", "model.heads=4", "model.d_ff=64",
                    "model.encoder_layers=2", "model.decoder_layers=2"] + args.set
    args.precision = args.precision or "bf16"
    device = torch.device(args.device)
    if device.type == "cuda":
        assert torch.cuda.is_available(), "no CUDA device (use --dry-run on a CPU)"
        torch.backends.cuda.matmul.allow_tf32 = False  # attn's default (train.allow_tf32)
        torch.backends.cudnn.allow_tf32 = False

    values: Dict[str, Dict[str, object]] = {
        "model": read_yaml_section(args.config, "model"),
        "train": read_yaml_section(args.config, "train")}
    apply_overrides(values, args.set)
    args.label_smoothing = float(values["train"].get("label_smoothing", 0.1))
    args.lr = float(values["train"].get("lr", 5e-4))

    work = tempfile.mkdtemp(prefix="bench_train_")
    have_attn = (not args.no_attn and os.path.exists(args.attn)
                 and attn_supports_bench_train(args.attn))
    if not args.no_attn and not have_attn:
        print(f"note: {args.attn} is missing or has no `bench train`; attn side skipped",
              file=sys.stderr)
    batches_path = args.batches
    if batches_path is None:
        batches_path = os.path.join(work, "batches.json")
        tokens, count, vocab = (256, 4, 64) if args.dry_run else (25000, 16, 32000)
        ok = have_attn and subprocess.run(
            [args.attn, "bench", "batches", "-o", batches_path, "--tokens", str(tokens),
             "--count", str(count), "--vocab", str(vocab)]).returncode == 0
        if not ok:
            if not args.dry_run:
                raise SystemExit("--batches is required without a working attn binary")
            with open(batches_path, "w") as fh:
                json.dump(tiny_batches(vocab, count, tokens), fh)
    batches = read_batches(batches_path)
    cfg = ModelConfig.from_dict(values["model"])
    cfg.src_vocab = cfg.tgt_vocab = int(batches["vocab"])

    print(f"model {cfg}\nbatches {batches_path}: {len(batches['batches'])} batches, "
          f"max_tokens {batches['max_tokens']}, vocab {batches['vocab']}", flush=True)
    print(f"torch {torch.__version__}, device "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}",
          flush=True)

    peak = matmul_tflops(device, args.matmul_size, 2 if args.dry_run else 20)
    rate_name = "f32 matmul 2048^3 (CPU)" if device.type == "cpu" else f"bf16 matmul {args.matmul_size}^3"
    print(f"{rate_name}: {peak:.3f} TFLOP/s", flush=True)

    rows: List[Result] = []
    attn_json = None
    if have_attn:
        attn_json = run_attn(args, batches_path, work)
        if attn_json is not None:
            m = attn_json.get("model", {})
            for k in ("d_model", "heads", "d_ff", "encoder_layers", "decoder_layers",
                      "share_embeddings", "pre_norm"):
                if k in m and m[k] != getattr(cfg, k):
                    raise SystemExit(f"model mismatch: attn built {k}={m[k]}, "
                                     f"PyTorch {getattr(cfg, k)}")
            rows.append(Result("attn", attn_json["tokens_per_s"], attn_json["step_ms_median"],
                               attn_json["step_ms"], attn_json["achieved_tflops"] * 1e12,
                               attn_json.get("peak_mem_bytes"), attn_json.get("last_loss")))
    eager = "PyTorch eager " + ("fp32" if args.precision == "fp32" else "AMP " + args.precision)
    rows.append(run_torch(eager, cfg, batches, args, device, False))
    print(f"{rows[-1].name}: {rows[-1].tokens_per_s:,.0f} tokens/s", flush=True)
    if not args.no_compile:
        rows.append(run_torch("torch.compile", cfg, batches, args, device, True))
        print(f"{rows[-1].name}: {rows[-1].tokens_per_s:,.0f} tokens/s ({rows[-1].note})",
              flush=True)

    attn_tps = rows[0].tokens_per_s if rows and rows[0].name == "attn" else None
    print()
    print(f"Training step, {cfg.d_model}/{cfg.d_ff}/{cfg.heads} heads, "
          f"{cfg.encoder_layers}+{cfg.decoder_layers} layers, vocab {cfg.tgt_vocab}, "
          f"{len(batches['batches'])} batches of <= {batches['max_tokens']} tokens, "
          f"{args.precision}, {args.steps} timed steps after {args.warmup}; "
          f"MFU against {peak:.3f} TFLOP/s {rate_name} measured here")
    print()
    print(table(rows, peak, attn_tps))
    print()
    print("MFU = model FLOPs on the padded batches (reference_model.training_flops = attn's "
          "flops_per_step: 6 x matmul weights x tokens through them + 3 x attention products) "
          "/ step time / the matmul rate above. tokens/s: non-pad target tokens.")
    for r in rows:
        print(f"  {r.name}: last loss {r.last_loss:.4f}/token"
              + (f", {r.note}" if r.note else ""))
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump({"torch": torch.__version__, "device": str(device),
                       "matmul_tflops": peak, "config": dataclasses.asdict(cfg),
                       "args": {k: v for k, v in vars(args).items()},
                       "attn": attn_json,
                       "rows": [dataclasses.asdict(r) for r in rows]}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
