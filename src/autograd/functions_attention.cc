// Differentiable dropout, embedding and attention. Dropout masks are never saved: the nodes
// keep the Philox (seed, offset) of the forward and regenerate the mask in backward. Attention
// saves q, k, v, its output and the per-row log-sum-exp, and recomputes the probabilities.
#include "autograd/functions.h"
#include "autograd/node.h"
#include "ops/attention.h"
#include "ops/check.h"
#include "ops/dropout.h"
#include "ops/embedding.h"

namespace attn {

using autograd::OpId;
using autograd::record_fn;

namespace {
Tensor saved(const Tensor& t) {
  return t.defined() ? t.detach() : t;
}
}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  ops::check_float("dropout", "x", x);
  ops::check_dropout_p("dropout", p);
  if (!training || p == 0.0) return x;
  const uint64_t seed = gen.seed();
  const uint64_t offset = gen.reserve(static_cast<uint64_t>(x.numel()));
  Tensor out = ops::dropout_forward(x, p, seed, offset);
  record_fn(out, OpId::dropout, {x}, [p, seed, offset](const Tensor& g) {
    return std::vector<Tensor>{ops::dropout_backward(g, p, seed, offset)};
  });
  return out;
}

Tensor embedding(const Tensor& ids, const Tensor& weight, double scale, bool add_positions,
                 int64_t position_offset) {
  Tensor out = ops::embedding_forward(ids, weight, scale, add_positions, position_offset);
  if (!autograd::needs_grad({&weight})) return out;
  // Positions are constants: only the table lookup has a gradient.
  record_fn(out, OpId::embedding, {ids, weight},
            [sids = saved(ids), vocab = weight.size(0), scale](const Tensor& g) {
              return std::vector<Tensor>{Tensor(), ops::embedding_backward(sids, g, vocab, scale)};
            });
  return out;
}

Tensor sinusoidal_positions(int64_t length, int64_t dim, int64_t offset, DType dtype,
                            Device device) {
  return ops::sinusoidal_positions(length, dim, offset, dtype, device);
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_lengths,
                 bool causal, double dropout_p, Generator* gen, ops::AttentionBackend backend) {
  ops::AttentionOptions opt;
  opt.key_lengths = key_lengths;
  opt.causal = causal;
  opt.dropout_p = dropout_p;
  opt.backend = backend;
  ops::check_attention_args(q, k, v, opt);
  if (dropout_p > 0.0) {
    Generator& g = gen ? *gen : default_generator();
    opt.seed = g.seed();
    // One value per (b, h, i, j): the kernels index the mask by ((b*H + h)*Tq + i)*Tk + j.
    const int64_t n = q.size(0) * q.size(1) * q.size(2) * k.size(2);
    opt.offset = g.reserve(static_cast<uint64_t>(n));
  }
  ops::AttentionResult r = ops::attention_forward(q, k, v, opt);
  Tensor out = r.out;
  if (!autograd::needs_grad({&q, &k, &v})) return out;
  ops::AttentionOptions sopt = opt;
  sopt.key_lengths = saved(key_lengths);
  sopt.backend = r.backend;  // the backward regenerates the dropout mask of the one that ran
  record_fn(out, OpId::attention, {q, k, v, key_lengths},
            [sq = saved(q), sk = saved(k), sv = saved(v), so = saved(out), lse = r.lse,
             sopt](const Tensor& g) {
              ops::AttentionGrads d = ops::attention_backward(g, sq, sk, sv, so, lse, sopt);
              return std::vector<Tensor>{d.q, d.k, d.v, Tensor()};
            });
  return out;
}

}  // namespace attn
