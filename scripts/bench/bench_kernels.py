#!/usr/bin/env python3
"""attn's kernels against PyTorch's on the same device in the same run.

    python3 scripts/bench/bench_kernels.py build/attn --device cuda:0 --out bench_kernels.md
    python3 scripts/bench/bench_kernels.py build/attn --dry-run      # CPU, tiny shapes

Runs `attn bench kernels --device D --json FILE` first, then times PyTorch's equivalent of every
row of that JSON at exactly its shapes and dtype (the attention rows reuse its per-sentence
lengths), and writes a markdown table (for docs/PERFORMANCE.md) plus a JSON with both sides.

PyTorch rows (median of --reps timed calls after --warmup, torch.cuda.Event on a GPU):
  copy                      dst.copy_(src)
  matmul                    a @ b
  attention.enc_self.*      F.scaled_dot_product_attention(q, k, v, attn_mask=bool [B,1,1,T]
                            key-padding mask from the lengths), whatever backend PyTorch picks;
                            second column: the flash backend with no mask
                            (sdpa_kernel(SDPBackend.FLASH_ATTENTION)) at the same shapes;
                            third column: PyTorch's cuDNN SDPA
                            (sdpa_kernel(SDPBackend.CUDNN_ATTENTION)) with the same mask as
                            the first (an error is recorded where it refuses the mask)
  attention.dec_causal.*    the same with is_causal=True (no padding mask in any column)
  attention.*.cudnn.*       attn's cudnn backend on the same shapes: the same PyTorch columns,
                            so attn's fused and cudnn rows both sit beside PyTorch's cuDNN
  layer_norm.*              F.layer_norm(x, (C,), weight, bias, eps=1e-5)
  cross_entropy.*           F.cross_entropy(logits, targets, label_smoothing=0.1,
                            ignore_index=0, reduction="sum")
  *.bwd                     torch.autograd.grad of the forward's output with a fixed upstream
                            gradient (retain_graph; nothing accumulates into .grad)
The ratio column is PyTorch's time / attn's time: above 1 means attn is faster.
--dry-run runs attn with --device cpu --quick and PyTorch on the CPU (checks the plumbing, not
speed).
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16,
          "f64": torch.float64}


def run_attn(binary, device, quick, warmup, reps, json_path):
    cmd = [binary, "bench", "kernels", "--device", device, "--json", json_path]
    if quick:
        cmd.append("--quick")
    if warmup is not None:
        cmd += ["--warmup", str(warmup)]
    if reps is not None:
        cmd += ["--reps", str(reps)]
    print("+", " ".join(cmd), flush=True)
    rc = subprocess.run(cmd).returncode
    # A failed row still writes the JSON (rc 1); anything else is fatal.
    if rc not in (0, 1) or not os.path.exists(json_path):
        sys.exit(f"bench_kernels.py: attn bench kernels failed with exit status {rc}")
    if rc == 1:
        print("bench_kernels.py: some attn rows failed (see above); continuing", flush=True)
    with open(json_path) as f:
        return json.load(f), cmd


class Timer:
    def __init__(self, device, warmup, reps):
        self.device, self.warmup, self.reps = device, warmup, reps

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, fn):
        """(median ms, min ms) of fn."""
        for _ in range(self.warmup):
            fn()
        self.sync()
        ms = []
        if self.device.type == "cuda":
            pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                     for _ in range(self.reps)]
            for start, end in pairs:
                start.record()
                fn()
                end.record()
            torch.cuda.synchronize(self.device)
            ms = [start.elapsed_time(end) for start, end in pairs]
        else:
            for _ in range(self.reps):
                t0 = time.perf_counter()
                fn()
                ms.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(ms), min(ms)


def randn(shape, dtype, device, requires_grad=False):
    return torch.randn(shape, device=device, dtype=torch.float32).to(dtype).requires_grad_(
        requires_grad)


def attention_fns(row, dtype, device, backend=None):
    """(forward fn, backward fn) for an attention row. backend: None (PyTorch's choice, with
    the key-padding mask), "flash" (no mask) or "cudnn" (cuDNN SDPA, with the mask)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    B, H, T, D = row["shape"]
    causal = row["causal"]
    q, k, v = (randn((B, H, T, D), dtype, device, True) for _ in range(3))
    dout = randn((B, H, T, D), dtype, device)
    mask = None
    if not causal and backend != "flash":
        lengths = torch.tensor(row["lengths"], device=device)
        mask = (torch.arange(T, device=device)[None, :] < lengths[:, None])[:, None, None, :]
    kernel = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}

    def fwd():
        if backend is not None:
            with sdpa_kernel(kernel[backend]):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)

    out = fwd()

    def bwd():
        return torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)

    return fwd, bwd


def layer_norm_fns(row, dtype, device):
    R, C = row["shape"]
    x = randn((R, C), dtype, device, True)
    w = randn((C,), dtype, device, True)
    b = randn((C,), dtype, device, True)
    dy = randn((R, C), dtype, device)
    fwd = lambda: F.layer_norm(x, (C,), w, b, eps=1e-5)  # noqa: E731
    y = fwd()
    bwd = lambda: torch.autograd.grad(y, (x, w, b), dy, retain_graph=True)  # noqa: E731
    return fwd, bwd


def cross_entropy_fns(row, dtype, device, seed):
    R, V = row["shape"]
    logits = (torch.rand((R, V), device=device, dtype=torch.float32) * 8 - 4).to(
        dtype).requires_grad_(True)
    # attn's targets: 4 + hash_u64({seed, 61, i}) % (V - 4); any valid ids time the same, but
    # keep them identical.
    targets = torch.tensor([4 + hash_u64(seed, 61, i) % (V - 4) for i in range(R)],
                           device=device, dtype=torch.long)

    def fwd():
        return F.cross_entropy(logits, targets, label_smoothing=0.1, ignore_index=0,
                               reduction="sum")

    loss = fwd()
    bwd = lambda: torch.autograd.grad(loss, logits, retain_graph=True)  # noqa: E731
    return fwd, bwd


M64 = (1 << 64) - 1


def mix64(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def hash_u64(*values):
    acc = 0
    for v in values:
        acc = mix64(acc ^ (v & M64))
    return acc


def torch_row(row, device, timer, seed):
    """{'ms', 'ms_min', 'flash_ms', 'error'} for one attn row."""
    name, dtype = row["name"], DTYPES[row["dtype"]]
    out = {}
    try:
        if name == "copy":
            (n,) = row["shape"]
            src = torch.zeros(n, dtype=dtype, device=device)
            dst = torch.empty_like(src)
            out["ms"], out["ms_min"] = timer(lambda: dst.copy_(src))
        elif name == "matmul":
            n = row["shape"][0]
            a, b = randn((n, n), dtype, device), randn((n, n), dtype, device)
            out["ms"], out["ms_min"] = timer(lambda: a @ b)
        elif name.startswith("attention."):
            fwd, bwd = attention_fns(row, dtype, device)
            out["ms"], out["ms_min"] = timer(fwd if name.endswith(".fwd") else bwd)
            del fwd, bwd
            for backend in ("flash", "cudnn"):
                try:
                    bfwd, bbwd = attention_fns(row, dtype, device, backend)
                    out[f"{backend}_ms"], _ = timer(bfwd if name.endswith(".fwd") else bbwd)
                    del bfwd, bbwd
                except RuntimeError as e:  # no such kernel for this device/dtype/mask
                    out[f"{backend}_error"] = str(e).splitlines()[0][:200]
        elif name.startswith("layer_norm."):
            fwd, bwd = layer_norm_fns(row, dtype, device)
            out["ms"], out["ms_min"] = timer(fwd if name.endswith(".fwd") else bwd)
        elif name.startswith("cross_entropy."):
            fwd, bwd = cross_entropy_fns(row, dtype, device, seed)
            out["ms"], out["ms_min"] = timer(fwd if name.endswith(".fwd") else bwd)
        else:
            out["error"] = "no PyTorch equivalent"
    except RuntimeError as e:  # e.g. out of memory: report and go on
        out["error"] = str(e).splitlines()[0][:200]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def fmt_ms(v):
    return "–" if v is None else (f"{v:.4f}" if v < 1 else f"{v:.3f}")


def fmt_ratio(torch_ms, attn_ms):
    if torch_ms is None or not attn_ms:
        return "–"
    return f"{torch_ms / attn_ms:.2f}"


def markdown(attn, rows, meta):
    lines = [
        f"Kernels: attn vs PyTorch, {meta['date']}, {meta['device_name']} ({meta['device']}), "
        f"PyTorch {meta['torch']}{', dry run (CPU, tiny shapes)' if meta['dry_run'] else ''}.",
        "",
        f"Command: `{meta['command']}` (attn side: `{meta['attn_command']}`). Median of {attn['reps']} timed calls after "
        f"{attn['warmup']} warm-up (attn) / {meta['reps']} after {meta['warmup']} (PyTorch).",
        f"Copy bandwidth: attn {attn['copy_gbps']:.1f} GB/s, PyTorch "
        f"{meta.get('torch_copy_gbps', 0):.1f} GB/s. Matmul: attn {attn['matmul_tflops']:.3g} "
        f"TFLOP/s, PyTorch {meta.get('torch_matmul_tflops', 0):.3g} TFLOP/s.",
        "PyTorch/attn > 1: attn is faster. Attention (mask): SDPA with a boolean key-padding "
        "mask, backend of PyTorch's choice; flash: SDPA flash backend without a mask; cuDNN: "
        "SDPA's cuDNN backend with the mask. `.cudnn` rows are attn's cudnn backend.",
        "",
        "| kernel | shape | dtype | attn ms | attn GB/s (% copy) | PyTorch ms | PyTorch/attn "
        "| PyTorch flash ms | flash/attn | PyTorch cuDNN ms | cuDNN/attn |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a, t in rows:
        shape = "×".join(str(s) for s in a["shape"])
        if a.get("error"):
            ours = f"error: {a['error'][:60]}"
            gb = "–"
            a_ms = None
        else:
            a_ms = a["ms"]
            ours = fmt_ms(a_ms)
            gb = f"{a['gbps']:.1f} ({100 * a['copy_ratio']:.0f}%)"
        t_ms = t.get("ms")
        theirs = fmt_ms(t_ms) if "error" not in t else f"error: {t['error'][:60]}"
        is_attention = a["name"].startswith("attention")
        extra = ""
        for backend in ("flash", "cudnn"):
            b_ms = t.get(f"{backend}_ms")
            extra += (f" {fmt_ms(b_ms)} | {fmt_ratio(b_ms, a_ms)} |" if is_attention else "  |  |")
        lines.append(
            f"| {a['name']} | {shape} | {a['dtype']} | {ours} | {gb} | {theirs} | "
            f"{fmt_ratio(t_ms, a_ms)} |{extra}")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("attn", help="path to the attn binary")
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--out", default="bench_kernels.md", help="markdown table")
    ap.add_argument("--json-out", default=None, help="both sides as JSON (default: OUT.json)")
    ap.add_argument("--attn-json", default=None,
                    help="reuse this `attn bench kernels --json` output instead of running attn")
    ap.add_argument("--warmup", type=int, default=None, help="default 5 (dry run 1)")
    ap.add_argument("--reps", type=int, default=None, help="default 20 (dry run 3)")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU, tiny shapes (attn --quick, PyTorch on the CPU)")
    args = ap.parse_args()

    device_name = "cpu" if args.dry_run else args.device
    warmup = args.warmup if args.warmup is not None else (1 if args.dry_run else 5)
    reps = args.reps if args.reps is not None else (3 if args.dry_run else 20)
    if args.attn_json:
        with open(args.attn_json) as f:
            attn = json.load(f)
        attn_command = f"(results read from {args.attn_json})"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            attn, cmd = run_attn(args.attn, device_name, args.dry_run, args.warmup, args.reps,
                                 os.path.join(tmp, "attn.json"))
        attn_command = " ".join(["attn"] + cmd[1:])
    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        name = torch.cuda.get_device_name(device)
    else:
        name = "CPU"
    torch.manual_seed(0)
    timer = Timer(device, warmup, reps)
    rows = []
    meta = {"date": datetime.date.today().isoformat(), "device": device_name, "device_name": name,
            "torch": torch.__version__, "dry_run": args.dry_run, "warmup": warmup, "reps": reps,
            "command": f"python3 scripts/bench/bench_kernels.py {' '.join(sys.argv[1:])}",
            "attn_command": attn_command}
    for a in attn["results"]:
        t = torch_row(a, device, timer, attn["seed"])
        rows.append((a, t))
        if a["name"] == "copy" and "ms" in t:
            meta["torch_copy_gbps"] = a["bytes"] / (t["ms"] * 1e-3) / 1e9
        if a["name"] == "matmul" and "ms" in t:
            meta["torch_matmul_tflops"] = a["flops"] / (t["ms"] * 1e-3) / 1e12
        print(f"{a['name']:34s} {str(a['shape']):22s} attn {fmt_ms(a.get('ms') or None):>9s} ms"
              f"  torch {fmt_ms(t.get('ms')):>9s} ms  flash {fmt_ms(t.get('flash_ms')):>9s} ms"
              f"  cudnn {fmt_ms(t.get('cudnn_ms')):>9s} ms"
              f"{'  ' + t['error'] if 'error' in t else ''}", flush=True)
    md = markdown(attn, rows, meta)
    with open(args.out, "w") as f:
        f.write(md)
    json_out = args.json_out or os.path.splitext(args.out)[0] + ".json"
    with open(json_out, "w") as f:
        json.dump({"meta": meta, "attn": attn,
                   "torch": [dict(t, name=a["name"], shape=a["shape"], dtype=a["dtype"])
                             for a, t in rows]}, f, indent=1)
    print()
    print(md)
    print(f"wrote {args.out} and {json_out}")


if __name__ == "__main__":
    main()
