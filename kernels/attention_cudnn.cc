// cuDNN's fused scaled-dot-product attention (the `cudnn` attention backend): contract in
// kernels/attention.h. Built only with ATTN_WITH_CUDNN (CMake found the cuDNN frontend
// headers); compiled by the host compiler, since the frontend is a header-only C++ library
// over cuDNN's backend API.
//
// Contents:
//   library()          libcudnn.so.9 loaded with dlopen on first use (the frontend's dynamic
//                      loading): attn starts, and trains with `fused`, where cuDNN is missing;
//                      asking for `cudnn` there is a one-line error naming the library.
//   handle_for()       one cudnnHandle_t per device, made on first use and never destroyed
//                      (like cuda::DeviceContext: destructors at exit race the runtime's).
//   GraphKey / graph() the graph cache: one built frontend graph (validated, lowered,
//                      execution plan chosen and built) per shape, dtype, direction and masks.
//                      Building costs milliseconds to seconds; executing a cached one costs
//                      a map lookup. A graph cuDNN refuses is remembered as refused (with its
//                      message) so the caller's fallback does not rebuild it every call.
//   build_forward / build_backward   the two graphs; tensor UIDs tie them to the pointers.
//
// Layout: attn's q/k/v/out are contiguous [B, H, T, D], which cuDNN takes as they are
// (dims {B, H, T, D}, strides {H*T*D, T*D, D, 1}); lse is [B, H, Tq] f32 = cuDNN's Stats
// {B, H, Tq, 1}. No copies either way.
#define NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING  // dlopen libcudnn.so.9 (library() below)
#define CUDNN_FRONTEND_SKIP_JSON_LIB           // no graph serialisation: keep the frontend's
                                               // bundled nlohmann/json out of attn's
#include <cudnn_frontend.h>                    // graph API (SDPA nodes, plans, execute)
#include <cuda_runtime.h>                      // cudaGetDevice, cudaMemsetAsync

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "base/cuda_check.h"
#include "base/error.h"
#include "kernels/attention.h"

// The frontend's dynamic loading reads cuDNN's symbols through this handle; attn sets it.
namespace cudnn_frontend {
void* cudnn_dlhandle = nullptr;
}  // namespace cudnn_frontend

namespace attn::kernels {
namespace {

namespace fe = cudnn_frontend;
using TensorPtr = std::shared_ptr<fe::graph::Tensor_attributes>;

// ---- the library ----------------------------------------------------------------------

struct Library {
  bool loaded = false;
  std::string error;  // why not, when !loaded
};

Library load_library() {
  // The frontend calls the CUDA runtime through dlopen too, trying libcudart.so.12 then .13;
  // where both are on the path it would take the first. Pin it to the one attn links.
  const std::string cudart = "libcudart.so." + std::to_string(CUDART_VERSION / 1000);
  setenv("CUDNN_FRONTEND_CUDART_LIB_NAME", cudart.c_str(), /*overwrite=*/0);
  dlerror();
  void* h = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = dlerror();
    return {false, detail::str_cat("cannot load libcudnn.so.9 (", e ? e : "unknown error",
                                   "); put cuDNN 9's lib directory on LD_LIBRARY_PATH (PyTorch's "
                                   "is site-packages/nvidia/cudnn/lib)")};
  }
  fe::cudnn_dlhandle = h;
  try {
    const size_t v = fe::detail::get_backend_version();
    if (v < 90000) return {false, detail::str_cat("libcudnn.so.9 reports version ", v, ", not 9.x")};
  } catch (const std::exception& e) {
    return {false, detail::str_cat("libcudnn.so.9 is not a usable cuDNN: ", e.what())};
  }
  return {true, ""};
}

const Library& library() {
  static const Library lib = load_library();
  return lib;
}

void require_library() {
  const Library& lib = library();
  ATTN_CHECK(lib.loaded, "attention (cudnn): ", lib.error);
}

std::string version_string(size_t v) {
  return std::to_string(v / 10000) + "." + std::to_string(v % 10000 / 100) + "." +
         std::to_string(v % 100);
}

// ---- handles --------------------------------------------------------------------------

int current_device() {
  int d = 0;
  CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

cudnnHandle_t handle_for(int device) {
  static std::mutex mu;
  static std::map<int, cudnnHandle_t>& handles = *new std::map<int, cudnnHandle_t>;
  std::lock_guard<std::mutex> lock(mu);
  auto it = handles.find(device);
  if (it != handles.end()) return it->second;
  cudnnHandle_t h = nullptr;
  const cudnnStatus_t s = fe::detail::create_handle(&h);
  ATTN_CHECK(s == CUDNN_STATUS_SUCCESS, "attention (cudnn): cudnnCreate failed on cuda:", device,
             ": ", fe::detail::get_error_string(s));
  handles.emplace(device, h);
  return h;
}

// ---- the graph cache ------------------------------------------------------------------

enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV, kSeqQ, kSeqKV, kSeed, kOffset };

struct GraphKey {
  int device = 0;
  int dtype = 0;  // 0 bf16, 1 f16
  bool backward = false;
  int64_t batch = 0, heads = 0, q_len = 0, k_len = 0, head_dim = 0;
  bool padding = false, causal = false;
  float dropout_p = 0.0f;  // baked into the graph
  double scale = 0.0;      // baked into the graph
  auto operator<=>(const GraphKey&) const = default;
};

struct Graph {
  std::shared_ptr<fe::graph::Graph> graph;  // null when refused
  int64_t workspace = 0;
  std::string error;  // cuDNN's reason, when refused
};

template <class T>
constexpr int dtype_id() {
  static_assert(std::is_same_v<T, bf16> || std::is_same_v<T, f16>,
                "cuDNN attention: bf16 or f16 only");
  return std::is_same_v<T, bf16> ? 0 : 1;
}

GraphKey make_key(const AttentionArgs& a, int dtype, bool backward) {
  ATTN_CHECK(a.batch > 0 && a.heads > 0 && a.q_len > 0 && a.k_len > 0 && a.head_dim > 0,
             "attention (cudnn): empty shape B ", a.batch, ", H ", a.heads, ", Tq ", a.q_len,
             ", Tk ", a.k_len, ", D ", a.head_dim);
  GraphKey k;
  k.device = current_device();
  k.dtype = dtype;
  k.backward = backward;
  k.batch = a.batch;
  k.heads = a.heads;
  k.q_len = a.q_len;
  k.k_len = a.k_len;
  k.head_dim = a.head_dim;
  k.padding = a.key_lengths != nullptr;
  k.causal = a.causal;
  k.dropout_p = a.dropout_p;
  k.scale = a.scale;
  return k;
}

// Q, K, V, O, dO, dQ, dK, dV: contiguous [B, H, T, D].
TensorPtr bhtd(fe::graph::Graph& g, const GraphKey& k, const char* name, int64_t uid, int64_t t) {
  return g.tensor(fe::graph::Tensor_attributes()
                      .set_name(name)
                      .set_uid(uid)
                      .set_dim({k.batch, k.heads, t, k.head_dim})
                      .set_stride({k.heads * t * k.head_dim, t * k.head_dim, k.head_dim, 1}));
}

void set_bhtd_output(const TensorPtr& t, const GraphKey& k, int64_t uid, int64_t len) {
  t->set_output(true).set_uid(uid).set_dim({k.batch, k.heads, len, k.head_dim}).set_stride(
      {k.heads * len * k.head_dim, len * k.head_dim, k.head_dim, 1});
}

TensorPtr stats_tensor_dims(const TensorPtr& t, const GraphKey& k) {
  t->set_uid(kStats)
      .set_data_type(fe::DataType_t::FLOAT)
      .set_dim({k.batch, k.heads, k.q_len, 1})
      .set_stride({k.heads * k.q_len, k.q_len, 1, 1});
  return t;
}

// Scale, masks and dropout: identical in the forward and backward graphs (the backward
// regenerates the forward's dropout mask from the same seed and offset).
template <class Attributes>
void set_masks(fe::graph::Graph& g, Attributes& at, const GraphKey& k) {
  at.set_attn_scale(static_cast<float>(k.scale));
  if (k.padding) {
    auto lengths = [&](const char* name, int64_t uid) {
      return g.tensor(fe::graph::Tensor_attributes()
                          .set_name(name)
                          .set_uid(uid)
                          .set_dim({k.batch, 1, 1, 1})
                          .set_stride({1, 1, 1, 1})
                          .set_data_type(fe::DataType_t::INT32));
    };
    at.set_padding_mask(true)
        .set_seq_len_q(lengths("seq_len_q", kSeqQ))
        .set_seq_len_kv(lengths("seq_len_kv", kSeqKV));
  }
  if (k.causal) {
    // attn's causal mask is aligned to the end of the padded keys (j <= i + Tk - Tq) whatever
    // the key lengths, which is cuDNN's top-left band shifted right by Tk - Tq (its
    // bottom-right alignment would follow each row's seq_len_kv instead).
    at.set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT)
        .set_diagonal_band_right_bound(static_cast<int>(k.k_len - k.q_len));
  }
  if (k.dropout_p > 0.0f) {
    auto scalar = [&](const char* name, int64_t uid) {
      return g.tensor(fe::graph::Tensor_attributes()
                          .set_name(name)
                          .set_uid(uid)
                          .set_dim({1, 1, 1, 1})
                          .set_stride({1, 1, 1, 1})
                          .set_data_type(fe::DataType_t::INT64));
    };
    at.set_dropout(k.dropout_p, scalar("seed", kSeed), scalar("offset", kOffset));
  }
}

std::shared_ptr<fe::graph::Graph> new_graph(const GraphKey& k) {
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(k.dtype == 0 ? fe::DataType_t::BFLOAT16 : fe::DataType_t::HALF)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  return g;
}

// The graph's Q, K and V inputs (forward and backward alike).
struct QkvInputs {
  TensorPtr q, k, v;
};
QkvInputs qkv_inputs(fe::graph::Graph& g, const GraphKey& k) {
  return {bhtd(g, k, "Q", kQ, k.q_len), bhtd(g, k, "K", kK, k.k_len),
          bhtd(g, k, "V", kV, k.k_len)};
}

std::shared_ptr<fe::graph::Graph> build_forward(const GraphKey& k) {
  auto g = new_graph(k);
  const auto [q, kk, v] = qkv_inputs(*g, k);
  auto at = fe::graph::SDPA_attributes().set_name("attn_sdpa").set_generate_stats(true);
  set_masks(*g, at, k);
  auto [o, stats] = g->sdpa(q, kk, v, at);
  set_bhtd_output(o, k, kO, k.q_len);
  stats_tensor_dims(stats, k)->set_output(true);
  return g;
}

std::shared_ptr<fe::graph::Graph> build_backward(const GraphKey& k) {
  auto g = new_graph(k);
  const auto [q, kk, v] = qkv_inputs(*g, k);
  TensorPtr o = bhtd(*g, k, "O", kO, k.q_len);
  TensorPtr d_o = bhtd(*g, k, "dO", kDO, k.q_len);
  TensorPtr stats = stats_tensor_dims(g->tensor(fe::graph::Tensor_attributes().set_name("Stats")), k);
  auto at = fe::graph::SDPA_backward_attributes().set_name("attn_sdpa_backward");
  set_masks(*g, at, k);
  auto [dq, dk, dv] = g->sdpa_backward(q, kk, v, o, d_o, stats, at);
  set_bhtd_output(dq, k, kDQ, k.q_len);
  set_bhtd_output(dk, k, kDK, k.k_len);
  set_bhtd_output(dv, k, kDV, k.k_len);
  return g;
}

// The kind of graph without its sizes: refusals are logged once per kind, not per shape.
std::string describe_kind(const GraphKey& k) {
  return detail::str_cat("the ", k.backward ? "backward" : "forward", " ",
                         k.dtype == 0 ? "bf16" : "f16", " graph with head dim ", k.head_dim,
                         k.padding ? ", padding" : "", k.causal ? ", causal" : "",
                         k.dropout_p > 0 ? ", dropout" : "");
}

std::string describe(const GraphKey& k) {
  return detail::str_cat(describe_kind(k), " (B ", k.batch, ", H ", k.heads, ", Tq ", k.q_len,
                         ", Tk ", k.k_len, ")");
}

Graph build(const GraphKey& k) {
  Graph out;
  try {
    std::shared_ptr<fe::graph::Graph> g = k.backward ? build_backward(k) : build_forward(k);
    const cudnnHandle_t h = handle_for(k.device);
    fe::error_t e = g->validate();
    if (e.is_good()) e = g->build_operation_graph(h);
    if (e.is_good()) e = g->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK});
    if (e.is_good()) e = g->check_support(h);
    if (e.is_good()) e = g->build_plans(h);
    int64_t ws = 0;
    if (e.is_good()) e = g->get_workspace_size(ws);
    if (!e.is_good()) {
      out.error = e.get_message();
      return out;
    }
    out.graph = std::move(g);
    out.workspace = ws;
  } catch (const Error&) {
    throw;  // attn's own (cudnnCreate, CUDA): not a property of the graph
  } catch (const std::exception& e) {
    out.error = e.what();
  }
  if (out.error.empty() && !out.graph) out.error = "unknown";
  return out;
}

// Never destroyed (see handle_for); entries are never removed, so references stay valid.
std::mutex g_cache_mu;
std::map<GraphKey, Graph>& g_cache = *new std::map<GraphKey, Graph>;

const Graph& graph(const GraphKey& k) {
  std::lock_guard<std::mutex> lock(g_cache_mu);
  std::map<GraphKey, Graph>& cache = g_cache;
  auto it = cache.find(k);
  if (it == cache.end()) it = cache.emplace(k, build(k)).first;
  return it->second;
}

int64_t workspace_or_refusal(const GraphKey& k, std::string* why_not) {
  const Graph& g = graph(k);
  if (!g.graph) {
    if (why_not) *why_not = describe_kind(k) + " (cuDNN: " + g.error + ")";
    return -1;
  }
  return g.workspace;
}

void execute(const GraphKey& k, std::unordered_map<int64_t, void*>& pack, const AttentionArgs& a,
             const int32_t* aux, void* workspace, cudaStream_t stream) {
  const Graph& g = graph(k);
  ATTN_CHECK(g.graph, "attention (cudnn): cuDNN cannot run ", describe(k), ": ", g.error,
             " (ask attention_*_cudnn_workspace first)");
  if (k.padding) {
    pack[kSeqQ] = const_cast<int32_t*>(aux + 4);
    pack[kSeqKV] = const_cast<int32_t*>(a.key_lengths);
  }
  if (k.dropout_p > 0.0f) {
    pack[kSeed] = const_cast<int32_t*>(aux);
    pack[kOffset] = const_cast<int32_t*>(aux + 2);
  }
  const cudnnHandle_t h = handle_for(k.device);
  const cudnnStatus_t s = fe::detail::set_stream(h, stream);
  ATTN_CHECK(s == CUDNN_STATUS_SUCCESS, "attention (cudnn): cudnnSetStream failed: ",
             fe::detail::get_error_string(s));
  fe::error_t e = g.graph->execute(h, pack, workspace);
  ATTN_CHECK(e.is_good(), "attention (cudnn): executing ", describe(k),
             " failed: ", e.get_message());
}

}  // namespace

bool attention_cudnn_available(std::string* why_not) {
  const Library& lib = library();
  if (!lib.loaded && why_not) *why_not = lib.error;
  return lib.loaded;
}

int64_t attention_cudnn_cached_graphs() {
  std::lock_guard<std::mutex> lock(g_cache_mu);
  return static_cast<int64_t>(g_cache.size());
}

std::string attention_cudnn_version() {
  require_library();
  return version_string(fe::detail::get_backend_version());
}

std::string attention_cudnn_frontend_version() {
  return std::to_string(CUDNN_FRONTEND_MAJOR_VERSION) + "." +
         std::to_string(CUDNN_FRONTEND_MINOR_VERSION) + "." +
         std::to_string(CUDNN_FRONTEND_PATCH_VERSION);
}

template <class T>
int64_t attention_forward_cudnn_workspace(const AttentionArgs& a, std::string* why_not) {
  require_library();
  return workspace_or_refusal(make_key(a, dtype_id<T>(), false), why_not);
}

template <class T>
int64_t attention_backward_cudnn_workspace(const AttentionArgs& a, std::string* why_not) {
  require_library();
  return workspace_or_refusal(make_key(a, dtype_id<T>(), true), why_not);
}

template <class T>
void attention_forward_cudnn(const AttentionArgs& a, const T* q, const T* k, const T* v, T* out,
                             float* lse, const int32_t* aux, void* workspace, cudaStream_t stream) {
  require_library();
  const GraphKey key = make_key(a, dtype_id<T>(), false);
  std::unordered_map<int64_t, void*> pack = {{kQ, const_cast<T*>(q)},
                                             {kK, const_cast<T*>(k)},
                                             {kV, const_cast<T*>(v)},
                                             {kO, out},
                                             {kStats, lse}};
  execute(key, pack, a, aux, workspace, stream);
}

template <class T>
void attention_backward_cudnn(const AttentionArgs& a, const T* q, const T* k, const T* v,
                              const T* out, const float* lse, const T* grad_out, T* grad_q,
                              T* grad_k, T* grad_v, const int32_t* aux, void* workspace,
                              cudaStream_t stream) {
  require_library();
  const GraphKey key = make_key(a, dtype_id<T>(), true);
  if (key.padding) {
    // Keys past seq_len_kv get no gradient from cuDNN, and attn's contract writes them as 0.
    const size_t bytes = static_cast<size_t>(a.batch * a.heads * a.k_len * a.head_dim) * sizeof(T);
    CUDA_CHECK(cudaMemsetAsync(grad_k, 0, bytes, stream));
    CUDA_CHECK(cudaMemsetAsync(grad_v, 0, bytes, stream));
  }
  std::unordered_map<int64_t, void*> pack = {
      {kQ, const_cast<T*>(q)},        {kK, const_cast<T*>(k)},   {kV, const_cast<T*>(v)},
      {kO, const_cast<T*>(out)},      {kDO, const_cast<T*>(grad_out)},
      {kStats, const_cast<float*>(lse)}, {kDQ, grad_q},          {kDK, grad_k},
      {kDV, grad_v}};
  execute(key, pack, a, aux, workspace, stream);
}

#define ATTN_CUDNN_INSTANTIATE(T)                                                              \
  template int64_t attention_forward_cudnn_workspace<T>(const AttentionArgs&, std::string*);   \
  template int64_t attention_backward_cudnn_workspace<T>(const AttentionArgs&, std::string*);  \
  template void attention_forward_cudnn<T>(const AttentionArgs&, const T*, const T*, const T*, \
                                           T*, float*, const int32_t*, void*, cudaStream_t);   \
  template void attention_backward_cudnn<T>(const AttentionArgs&, const T*, const T*,          \
                                            const T*, const T*, const float*, const T*, T*,    \
                                            T*, T*, const int32_t*, void*, cudaStream_t);
ATTN_CUDNN_INSTANTIATE(bf16)
ATTN_CUDNN_INSTANTIATE(f16)
#undef ATTN_CUDNN_INSTANTIATE

}  // namespace attn::kernels
