"""attn's encoder-decoder Transformer written as plain PyTorch, for golden tests and speed
comparisons. It is the same function as src/nn/transformer.{h,cc} with the same parameter
names, so `load_attn_safetensors(model, "model.safetensors")` loads an attn checkpoint and
`save_attn_safetensors(model, path)` writes one attn can load.

What it matches in attn (src/nn, kernels/):
  - Embedding: weight[ids] * sqrt(d_model) + pe[position], then dropout(P_drop). pe is the
    paper's table, pe[p, c] = sin(p / 10000^((c - c % 2) / d)) for even c, cos(...) for odd c
    (kernels/embedding.h sinusoidal_position_value), computed in float64.
  - Multi-head attention: q_proj/k_proj/v_proj/out_proj, Linear with bias, weight [out, in];
    softmax(q k^T / sqrt(d_head)) v; dropout on the probabilities (attention_dropout).
    Encoder self-attention and cross-attention mask padded source keys (src_lengths);
    decoder self-attention is causal only (padded target positions are ignored by the loss
    and, being at the end of their rows, are never seen by real positions).
  - Feed-forward: fc2(Dropout_relu(ReLU(fc1(x)))), both Linear with bias.
  - Post-norm (the paper, default): x = LN(x + Dropout(F(x))). Pre-norm: x = x +
    Dropout(F(LN(x))) and a final LayerNorm per stack ("encoder.norm", "decoder.norm").
  - LayerNorm eps = layer_norm_eps (1e-5), biased variance (torch.nn.LayerNorm).
  - share_embeddings: one table "src_embed.weight" for source, target and output
    (logits = h E^T, no bias). Otherwise "tgt_embed.weight" and "out_proj.weight"
    ([tgt_vocab, d_model], no bias).
  - Initialisation (used when no weights are loaded): Linear weights Xavier-uniform, biases
    zero, embeddings normal(0, d_model^-1/2), LayerNorm 1/0. The values differ from attn's
    (different RNG), the distributions do not.
  - Loss: label-smoothed cross-entropy summed over non-pad targets (pad id 0), PyTorch's
    F.cross_entropy(label_smoothing=eps, ignore_index=pad, reduction="sum"), which is what
    attn's cross_entropy computes (kernels/cross_entropy.h).

The safetensors reader/writer below needs only torch (the GPU machines may lack the
safetensors package). Written files carry no "attn.checksum" metadata; attn loads files
without one (it only checks the checksum when present).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import math
import struct
from typing import Dict, Iterable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

PAD, UNK, BOS, EOS = 0, 1, 2, 3  # attn's fixed special ids (src/data/vocab.h)


@dataclasses.dataclass
class ModelConfig:
    """src/nn/config.h TransformerConfig; field names are attn's config keys (model.*)."""

    src_vocab: int = 0
    tgt_vocab: int = 0
    d_model: int = 512
    heads: int = 8
    d_ff: int = 2048
    encoder_layers: int = 6
    decoder_layers: int = 6
    dropout: float = 0.1
    attention_dropout: float = 0.0
    relu_dropout: float = 0.0
    pre_norm: bool = False
    share_embeddings: bool = True
    layer_norm_eps: float = 1e-5

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """From attn's `model:` section (unknown keys are ignored; a joint `vocab` sets both)."""
        names = {f.name for f in dataclasses.fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in names})
        if "vocab" in d and not cfg.src_vocab:
            cfg.src_vocab = cfg.tgt_vocab = int(d["vocab"])
        return cfg

    def validate(self) -> None:
        assert self.src_vocab > 0 and self.tgt_vocab > 0, "vocabulary sizes must be positive"
        assert self.d_model % self.heads == 0, "d_model must be divisible by heads"
        assert self.d_model % 2 == 0, "d_model must be even (sinusoidal positions)"
        assert not self.share_embeddings or self.src_vocab == self.tgt_vocab, (
            "share_embeddings needs src_vocab == tgt_vocab")


def sinusoidal_positions(length: int, dim: int, offset: int = 0,
                         dtype: torch.dtype = torch.float64,
                         device: Optional[torch.device] = None) -> torch.Tensor:
    """[length, dim] table, computed in float64 as kernels/embedding.h does."""
    pos = torch.arange(offset, offset + length, dtype=torch.float64, device=device)[:, None]
    col = torch.arange(dim, device=device)
    expo = (col - col % 2).to(torch.float64) / dim
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64, device=device), expo)
    pe = torch.where(col % 2 == 0, torch.sin(angle), torch.cos(angle))
    return pe.to(dtype)


def key_padding_mask(lengths: torch.Tensor, key_len: int) -> torch.Tensor:
    """Boolean [B, 1, 1, key_len], True where the key is visible (j < lengths[b])."""
    j = torch.arange(key_len, device=lengths.device)
    return (j[None, :] < lengths[:, None].to(j.dtype))[:, None, None, :]


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, attention_dropout: float):
        super().__init__()
        self.heads = heads
        self.attention_dropout = attention_dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=True)
        self.k_proj = nn.Linear(d_model, d_model, bias=True)
        self.v_proj = nn.Linear(d_model, d_model, bias=True)
        self.out_proj = nn.Linear(d_model, d_model, bias=True)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, H*D] -> [B, H, T, D]
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor,
                mask: Optional[torch.Tensor] = None, causal: bool = False) -> torch.Tensor:
        q = self._split(self.q_proj(query))
        k = self._split(self.k_proj(key_value))
        v = self._split(self.v_proj(key_value))
        # attn aligns the causal mask to the end of the keys; training always has Tq == Tk,
        # where that equals SDPA's is_causal.
        assert not causal or query.shape[1] == key_value.shape[1]
        p = self.attention_dropout if self.training else 0.0
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                           is_causal=causal)
        b, h, t, dh = o.shape
        return self.out_proj(o.transpose(1, 2).reshape(b, t, h * dh))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, relu_dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff, bias=True)
        self.fc2 = nn.Linear(d_ff, d_model, bias=True)
        self.relu_dropout = relu_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x))
        h = F.dropout(h, self.relu_dropout, self.training)
        return self.fc2(h)


def _sublayer(pre_norm: bool, p: float, training: bool, x: torch.Tensor, norm: nn.LayerNorm,
              f) -> torch.Tensor:
    if pre_norm:
        return x + F.dropout(f(norm(x)), p, training)
    return norm(x + F.dropout(f(x), p, training))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.self_attn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, cfg.relu_dropout)
        self.ffn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = cfg.dropout
        self.pre_norm = cfg.pre_norm

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        pn, p, tr = self.pre_norm, self.dropout, self.training
        x = _sublayer(pn, p, tr, x, self.self_attn_norm,
                      lambda h: self.self_attn(h, h, src_mask, False))
        return _sublayer(pn, p, tr, x, self.ffn_norm, self.ffn)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.self_attn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.cross_attn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, cfg.relu_dropout)
        self.ffn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.dropout = cfg.dropout
        self.pre_norm = cfg.pre_norm

    def forward(self, y: torch.Tensor, memory: torch.Tensor,
                src_mask: torch.Tensor) -> torch.Tensor:
        pn, p, tr = self.pre_norm, self.dropout, self.training
        y = _sublayer(pn, p, tr, y, self.self_attn_norm,
                      lambda h: self.self_attn(h, h, None, True))
        y = _sublayer(pn, p, tr, y, self.cross_attn_norm,
                      lambda h: self.cross_attn(h, memory, src_mask, False))
        return _sublayer(pn, p, tr, y, self.ffn_norm, self.ffn)


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.pre_norm else None

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, src_mask)
        return self.norm(x) if self.norm is not None else x


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.pre_norm else None

    def forward(self, y: torch.Tensor, memory: torch.Tensor,
                src_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            y = layer(y, memory, src_mask)
        return self.norm(y) if self.norm is not None else y


class Transformer(nn.Module):
    """forward(src [B, S], src_lengths [B], tgt_in [B, T]) -> logits [B, T, tgt_vocab]."""

    def __init__(self, cfg: ModelConfig, max_positions: int = 1024):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed_scale = math.sqrt(cfg.d_model)
        self.src_embed = nn.Embedding(cfg.src_vocab, cfg.d_model)
        # With shared embeddings there is no "tgt_embed" module: the one table is registered
        # once, under attn's name, so state_dict() has attn's keys exactly.
        self.tgt_embed = (None if cfg.share_embeddings
                          else nn.Embedding(cfg.tgt_vocab, cfg.d_model))
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.out_proj = (None if cfg.share_embeddings
                         else nn.Linear(cfg.d_model, cfg.tgt_vocab, bias=False))
        self.register_buffer("pe", sinusoidal_positions(max_positions, cfg.d_model),
                             persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if name.endswith("_embed.weight"):
                nn.init.normal_(p, 0.0, self.cfg.d_model ** -0.5)
            elif "norm" in name.split(".")[-2]:
                nn.init.ones_(p) if name.endswith("weight") else nn.init.zeros_(p)
            elif name.endswith(".weight"):
                nn.init.xavier_uniform_(p)
            else:
                nn.init.zeros_(p)

    def _positions(self, length: int, dtype: torch.dtype) -> torch.Tensor:
        if length > self.pe.shape[0]:
            self.pe = sinusoidal_positions(max(length, 2 * self.pe.shape[0]), self.cfg.d_model,
                                           device=self.pe.device)
        return self.pe[:length].to(dtype)

    def _embed(self, table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        x = table(ids) * self.embed_scale
        x = x + self._positions(ids.shape[1], x.dtype)
        return F.dropout(x, self.cfg.dropout, self.training)

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> torch.Tensor:
        return self.encoder(self._embed(self.src_embed, src),
                            key_padding_mask(src_lengths, src.shape[1]))

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor,
               src_lengths: torch.Tensor) -> torch.Tensor:
        table = self.src_embed if self.tgt_embed is None else self.tgt_embed
        h = self.decoder(self._embed(table, tgt_in), memory,
                         key_padding_mask(src_lengths, memory.shape[1]))
        if self.out_proj is None:
            return h @ self.src_embed.weight.t()
        return self.out_proj(h)

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor,
                tgt_in: torch.Tensor) -> torch.Tensor:
        return self.decode(tgt_in, self.encode(src, src_lengths), src_lengths)


def label_smoothed_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float,
                        pad: int = PAD, stats: bool = True):
    """(loss, nll, ntokens): sums over non-pad targets, as attn's cross_entropy; nll and
    ntokens are None without `stats` (saves a second pass in benchmarks). The loss is computed
    in float32 at least (as autocast runs cross_entropy)."""
    flat = logits.reshape(-1, logits.shape[-1])
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    t = targets.reshape(-1).long()
    loss = F.cross_entropy(flat, t, label_smoothing=label_smoothing, ignore_index=pad,
                           reduction="sum")
    if not stats:
        return loss, None, None
    with torch.no_grad():
        nll = F.cross_entropy(flat, t, ignore_index=pad, reduction="sum")
        ntokens = (t != pad).sum()
    return loss, nll, ntokens


def matmul_parameter_count(cfg: ModelConfig) -> int:
    """Parameters that take part in matmuls (everything but embeddings gathers, norms and
    biases), counting a tied output projection once as a matmul."""
    d, f = cfg.d_model, cfg.d_ff
    enc = cfg.encoder_layers * (4 * d * d + 2 * d * f)
    dec = cfg.decoder_layers * (8 * d * d + 2 * d * f)
    return enc + dec + d * cfg.tgt_vocab


def training_flops(cfg: ModelConfig, batch: int, src_len: int, tgt_len: int) -> float:
    """Model FLOPs of one training step (forward + backward = 3 x forward) on a padded
    [batch, src_len] / [batch, tgt_len] batch:
      6 x sum over weight matrices (rows x cols x tokens that pass through it)
      + 3 x attention: 4 B S^2 d per encoder layer, 2 B T^2 d per decoder self-attention
        (causal: half of 4 B T^2 d), 4 B T S d per cross-attention.
    Embedding gathers, norms, softmax and element-wise work are not counted."""
    d, f, v = cfg.d_model, cfg.d_ff, cfg.tgt_vocab
    ns, nt = batch * src_len, batch * tgt_len
    weights = (cfg.encoder_layers * ns * (4 * d * d + 2 * d * f)
               + cfg.decoder_layers * (nt * (4 * d * d + 2 * d * f)  # self q,k,v,o + ffn
                                       + nt * 2 * d * d               # cross q, o
                                       + ns * 2 * d * d)              # cross k, v
               + nt * d * v)
    attn = (cfg.encoder_layers * 4 * batch * src_len * src_len * d
            + cfg.decoder_layers * (2 * batch * tgt_len * tgt_len * d
                                    + 4 * batch * tgt_len * src_len * d))
    return 6.0 * weights + 3.0 * attn


# --- safetensors, torch only -------------------------------------------------------------

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
           "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
           "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
_NAMES = {v: k for k, v in _DTYPES.items()}


def read_safetensors(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """All tensors (CPU, in file order) and the metadata of a safetensors file."""
    with open(path, "rb") as fh:
        blob = fh.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    data = memoryview(blob)[8 + n:]
    out: Dict[str, torch.Tensor] = {}
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, end = e["data_offsets"]
        dtype = _DTYPES[e["dtype"]]
        shape = list(e["shape"])
        if end == b:
            out[name] = torch.empty(shape, dtype=dtype)
        else:
            out[name] = torch.frombuffer(bytearray(data[b:end]), dtype=dtype).reshape(shape)
    return out, meta


def write_safetensors(path: str, tensors: Iterable[Tuple[str, torch.Tensor]],
                      metadata: Optional[Dict[str, str]] = None) -> None:
    """Tensors written back to back in the given order, header padded to 8 bytes."""
    items = [(name, t.detach().contiguous().cpu()) for name, t in tensors]
    header: Dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, t in items:
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for _, t in items:
            if t.numel():
                fh.write(ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()))


def load_attn_safetensors(model: Transformer, path: str, strict: bool = True) -> Dict[str, str]:
    """Copies attn's parameters (model.safetensors of a checkpoint, or a golden fixture)
    into `model`, converting dtypes. strict: every parameter must be present; keys that are
    not parameters are ignored either way (fixtures hold inputs and gradients too)."""
    tensors, meta = read_safetensors(path)
    params = dict(model.named_parameters())
    missing = [n for n in params if n not in tensors]
    if strict and missing:
        raise KeyError(f"{path}: no tensor for parameter(s) {missing[:5]}"
                       f"{' ...' if len(missing) > 5 else ''}")
    with torch.no_grad():
        for name, p in params.items():
            if name in tensors:
                t = tensors[name]
                if tuple(t.shape) != tuple(p.shape):
                    raise ValueError(f"{path}: '{name}' has shape {list(t.shape)}, the model "
                                     f"expects {list(p.shape)}")
                p.copy_(t.to(p.dtype))
    return meta


def save_attn_safetensors(model: Transformer, path: str,
                          dtype: Optional[torch.dtype] = torch.float32) -> None:
    """Writes the parameters under attn's names and metadata, as a checkpoint's
    model.safetensors (attn's checkpoints hold f32 weights)."""
    write_safetensors(path, [(n, p if dtype is None else p.to(dtype))
                             for n, p in model.named_parameters()],
                      {"format": "pt", "attn.kind": "model"})
