// oneDNN convolutions (NHWC activations, HWIO kernels, float32) and training-mode batch norms as
// XLA FFI custom calls for XLA:CPU. Built and loaded by jax_resnets/cpu/onednn.py; see that
// file and docs/performance.md for why: XLA:CPU's Eigen kernel-gradient and
// strided input-gradient convs are 1.35-1.6x slower than oneDNN's.
//
// Three handlers, one per conv of a training step: forward y = conv(x, w), input gradient
// dx = conv_bwd_data(dy, w), kernel gradient dw = conv_bwd_weights(x, dy). Attributes:
// strides [sh, sw], padding [lo_h, hi_h, lo_w, hi_w], algorithm (0 direct, 1 Winograd: 2x
// faster on 3x3 stride-1 convs). Shapes come from the buffers.
// Buffers may have leading dims before the four conv dims: `jax.vmap` over a population of models
// (vmap_method "expand_dims") makes one call for all models, which runs one conv per model on
// its block of each buffer (a size-1 leading dim: the operand is shared), with no copies, and
// the models in parallel, one core each (docs/performance.md, populations).
// Two more handlers compute a batch norm (+ ReLU) with the batch's statistics and its gradients
// (one op each way instead of XLA's ~10 passes), with the same leading dims.
// Primitives are created once per shape and kept (mutex-guarded map); scratchpads and the
// blocked copies of operands oneDNN's kernels want are per calling thread.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <omp.h>
#include <sys/mman.h>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = memory::format_tag;

namespace {

using Buf = ffi::Buffer<ffi::F32>;  // [models..., 4 conv dims]
using Ret = ffi::ResultBuffer<ffi::F32>;
using Ints = ffi::Span<const int64_t>;

enum Kind : int64_t { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };
enum Algorithm : int64_t { kDirect = 0, kWinograd = 1 };

// kind, N, H, W, C, F, kh, kw, Ho, Wo, sh, sw, lo_h, hi_h, lo_w, hi_w, algorithm, one thread
// (1: the plan runs inside ForEachModel's parallel loop, where oneDNN gets one thread per conv)
using Key = std::array<int64_t, 18>;

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

memory::desc Desc(const memory::dims& dims, Tag tag) {
  return memory::desc(dims, memory::data_type::f32, tag);
}

// One operand of the conv: its layout in XLA's buffer (NHWC / HWIO) and the one the primitive
// wants; where they differ, the reorder that copies it in (operands) or out (results).
struct Operand {
  memory::desc user, conv;
  dnnl::reorder copy;
  bool reorders = false, is_result = false;
};

Operand MakeOperand(const memory::desc& user, const memory::desc& conv, bool is_result) {
  Operand op{user, conv};
  op.reorders = conv != user, op.is_result = is_result;
  if (op.reorders) {
    auto& eng = Engine();
    op.copy = dnnl::reorder(is_result ? dnnl::reorder::primitive_desc(eng, conv, eng, user)
                                      : dnnl::reorder::primitive_desc(eng, user, eng, conv));
  }
  return op;
}

struct Plan {
  dnnl::primitive conv;
  Operand x, w, y;  // src / diff_src, weights / diff_weights, dst / diff_dst
  memory::desc scratchpad;
};

// Winograd (F(4x4, 3x3), oneDNN <= 3.1, AVX-512) wants blocked activations: its src and dst
// layouts are left to oneDNN (`any`) and reordered from / to NHWC in every call.
std::unique_ptr<Plan> MakePlan(const Key& k) {
  const memory::dims src{k[1], k[4], k[2], k[3]}, wei{k[5], k[4], k[6], k[7]}, dst{k[1], k[5], k[8], k[9]};
  const memory::dims strides{k[10], k[11]}, pad_l{k[12], k[14]}, pad_r{k[13], k[15]};
  const auto alg = k[16] == kWinograd ? dnnl::algorithm::convolution_winograd : dnnl::algorithm::convolution_direct;
  const Tag act = k[16] == kWinograd ? Tag::any : Tag::nhwc;
  const auto xd = Desc(src, act), wd = Desc(wei, Tag::any), yd = Desc(dst, act);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto& eng = Engine();
  auto plan = std::make_unique<Plan>();
  auto fwd = dnnl::convolution_forward::primitive_desc(eng, dnnl::prop_kind::forward_training, alg, xd, wd, yd,
                                                       strides, pad_l, pad_r, attr);
  memory::desc x, w, y;
  if (k[0] == kForward) {
    plan->conv = dnnl::convolution_forward(fwd);
    x = fwd.src_desc(), w = fwd.weights_desc(), y = fwd.dst_desc(), plan->scratchpad = fwd.scratchpad_desc();
  } else if (k[0] == kBackwardData) {
    auto pd = dnnl::convolution_backward_data::primitive_desc(eng, alg, xd, wd, yd, strides, pad_l, pad_r, fwd, attr);
    plan->conv = dnnl::convolution_backward_data(pd);
    x = pd.diff_src_desc(), w = pd.weights_desc(), y = pd.diff_dst_desc(), plan->scratchpad = pd.scratchpad_desc();
  } else {
    auto pd = dnnl::convolution_backward_weights::primitive_desc(eng, alg, xd, wd, yd, strides, pad_l, pad_r, fwd,
                                                                 attr);
    plan->conv = dnnl::convolution_backward_weights(pd);
    x = pd.src_desc(), w = pd.diff_weights_desc(), y = pd.diff_dst_desc(), plan->scratchpad = pd.scratchpad_desc();
  }
  plan->x = MakeOperand(Desc(src, Tag::nhwc), x, k[0] == kBackwardData);
  plan->w = MakeOperand(Desc(wei, Tag::hwio), w, k[0] == kBackwardWeights);
  plan->y = MakeOperand(Desc(dst, Tag::nhwc), y, k[0] == kForward);
  return plan;
}

// The plan for `key`, made on first use and kept (one mutex-guarded map per plan type).
template <typename P, typename K>
const P& Cached(const K& key, std::unique_ptr<P> (*make)(const K&)) {
  static std::mutex mu;
  static std::map<K, std::unique_ptr<P>> plans;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = plans[key];
  if (!slot) slot = make(key);
  return *slot;
}

const Plan& GetPlan(const Key& key) { return Cached(key, MakePlan); }

// Per-thread scratch: index 0 = oneDNN scratchpad, 1-3 = x, w, y in the conv's layouts. Mapped
// outside malloc's heap (blocks of up to ~100 MB that grow a few times in the first steps would
// fragment it: xla_flags.tune_malloc keeps everything freed there) and page-aligned (the Winograd
// kernels' aligned stores need 64 bytes).
void* Scratch(int index, size_t bytes) {
  struct Block {
    void* data = nullptr;
    size_t size = 0;
    ~Block() {
      if (data) munmap(data, size);
    }
  };
  thread_local std::array<Block, 4> blocks;
  auto& b = blocks[index];
  if (b.size < bytes) {
    if (b.data) munmap(b.data, b.size);
    b.data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b.data == MAP_FAILED) {
      b.data = nullptr, b.size = 0;
      throw std::bad_alloc();
    }
    b.size = bytes;
  }
  return b.data;
}

// The operand's memory in the conv's layout: XLA's buffer itself, or a scratch copy (filled from
// XLA's buffer for operands; results are copied back by Finish, which skips the others).
memory Stage(const Operand& op, float* data, int index, dnnl::stream& stream) {
  auto& eng = Engine();
  memory user(op.user, eng, data);
  if (!op.reorders) return user;
  memory conv(op.conv, eng, Scratch(index, op.conv.get_size()));
  if (!op.is_result) op.copy.execute(stream, user, conv);
  return conv;
}

void Finish(const Operand& op, memory& conv, float* data, dnnl::stream& stream) {
  if (!op.reorders || !op.is_result) return;
  memory user(op.user, Engine(), data);
  op.copy.execute(stream, conv, user);
}

// Runs `kind` with x/w/y pointers in user layouts (NHWC, HWIO, NHWC); which are inputs depends
// on kind: fwd reads x, w writes y; bwd data reads y (=dy), w writes x (=dx); bwd weights reads
// x, y (=dy) writes w (=dw).
ffi::Error Run(const Key& key, float* x, float* w, float* y) {
  try {
    const Plan& plan = GetPlan(key);
    thread_local dnnl::stream stream(Engine());
    const Kind kind = static_cast<Kind>(key[0]);
    memory xm = Stage(plan.x, x, 1, stream);
    memory wm = Stage(plan.w, w, 2, stream);
    memory ym = Stage(plan.y, y, 3, stream);
    memory pad(plan.scratchpad, Engine(), Scratch(0, plan.scratchpad.get_size()));
    if (kind == kForward) {
      plan.conv.execute(stream, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, ym},
                                 {DNNL_ARG_SCRATCHPAD, pad}});
    } else if (kind == kBackwardData) {
      plan.conv.execute(stream, {{DNNL_ARG_DIFF_DST, ym}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DIFF_SRC, xm},
                                 {DNNL_ARG_SCRATCHPAD, pad}});
    } else {
      plan.conv.execute(stream, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_DIFF_DST, ym}, {DNNL_ARG_DIFF_WEIGHTS, wm},
                                 {DNNL_ARG_SCRATCHPAD, pad}});
    }
    Finish(plan.x, xm, x, stream);  // only the result is copied back
    Finish(plan.w, wm, w, stream);
    Finish(plan.y, ym, y, stream);
    stream.wait();
  } catch (const std::exception& e) {  // dnnl::error, or bad_alloc from Scratch
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN conv: ") + e.what());
  }
  return ffi::Error::Success();
}

Key MakeKey(Kind kind, Ints x, Ints w, Ints y, Ints strides, Ints padding, int64_t algorithm, bool one_thread) {
  return {kind, x[0], x[1], x[2], x[3], w[3], w[0], w[1], y[1], y[2],
          strides[0], strides[1], padding[0], padding[1], padding[2], padding[3], algorithm, one_thread};
}

// An operand as [models..., `block` dims of one model]; a leading dim of 1 is broadcast over the
// models.
struct Models {
  void* data;
  Ints dims;
  size_t block = 4;
  size_t element = sizeof(float);
  size_t lead() const { return dims.size() - block; }
  // The block of the model at `index` (over the leading dims of the result).
  template <typename T = float>
  T* At(const std::vector<int64_t>& index) const {
    int64_t offset = 0, stride = 1;
    for (size_t i = dims.size(); i-- > 0;) {
      if (i < lead() && dims[i] != 1) offset += index[i] * stride;
      stride *= dims[i];
    }
    return reinterpret_cast<T*>(static_cast<char*>(data) + offset * element);
  }
};

// The models' shape: the leading dims, the largest of each over the operands; none where an
// operand has fewer dims than its block or the operands differ in their number of leading dims.
std::optional<std::vector<int64_t>> LeadShape(std::initializer_list<Models> operands) {
  const Models& first = *operands.begin();
  if (first.dims.size() < first.block) return std::nullopt;
  std::vector<int64_t> shape(first.lead(), 1);
  for (const Models& op : operands) {
    if (op.dims.size() < op.block || op.lead() != shape.size()) return std::nullopt;
    for (size_t i = 0; i < shape.size(); ++i) shape[i] = std::max(shape[i], op.dims[i]);
  }
  return shape;
}

ffi::Error LeadDimsError(const char* op) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, std::string("oneDNN ") + op +
                    ": operands need the same leading dims");
}

int64_t Count(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// fn(index) for the model at every index of `shape`: one model directly (oneDNN on all cores),
// several in parallel, one core each: faster in the whole population step than each op on all
// cores (K=8 step: 415 ms all sequential, 331 ms all parallel). fn must build its primitives
// for one thread then.
template <typename Fn>
ffi::Error ForEachModel(const std::vector<int64_t>& shape, Fn fn) {
  const int64_t models = Count(shape);
  if (models == 1) return fn(std::vector<int64_t>(shape.size(), 0));
  std::vector<ffi::Error> errors(models);
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < models; ++m) {
    omp_set_num_threads(1);  // oneDNN sizes primitives by this thread's max threads: one
    std::vector<int64_t> index(shape.size());
    for (size_t i = shape.size(), rest = m; i-- > 0; rest /= shape[i]) index[i] = rest % shape[i];
    errors[m] = fn(index);
  }
  for (const ffi::Error& error : errors) {
    if (error.failure()) return error;
  }
  return ffi::Error::Success();
}

// One conv per model (see Run for which of x, w, y are read and written).
ffi::Error RunModels(Kind kind, Models x, Models w, Models y, Ints strides, Ints padding, int64_t algorithm) {
  const auto shape = LeadShape({x, w, y});
  if (!shape) return LeadDimsError("conv");
  const Key key = MakeKey(kind, x.dims.last(4), w.dims.last(4), y.dims.last(4), strides, padding, algorithm,
                          Count(*shape) > 1);
  return ForEachModel(*shape, [&](const std::vector<int64_t>& index) {
    return Run(key, x.At(index), w.At(index), y.At(index));
  });
}

ffi::Error Forward(Buf x, Buf w, Ret y, Ints strides, Ints padding, int64_t algorithm) {
  return RunModels(kForward, {x.typed_data(), x.dimensions()}, {w.typed_data(), w.dimensions()},
                   {y->typed_data(), y->dimensions()}, strides, padding, algorithm);
}

// `after` (the kernel gradient of the same conv) is not read: it orders this call after that one,
// so the two never run at once and compete for the cores (each uses all of them).
ffi::Error BackwardData(Buf dy, Buf w, ffi::AnyBuffer after, Ret dx, Ints strides, Ints padding,
                        int64_t algorithm) {
  return RunModels(kBackwardData, {dx->typed_data(), dx->dimensions()}, {w.typed_data(), w.dimensions()},
                   {dy.typed_data(), dy.dimensions()}, strides, padding, algorithm);
}

ffi::Error BackwardWeights(Buf x, Buf dy, Ret dw, Ints strides, Ints padding, int64_t algorithm) {
  return RunModels(kBackwardWeights, {x.typed_data(), x.dimensions()}, {dw->typed_data(), dw->dimensions()},
                   {dy.typed_data(), dy.dimensions()}, strides, padding, algorithm);
}


// Batch norm with the batch's statistics (training): y = act((x - mean) / sqrt(var + eps) * scale +
// shift) over NHWC x, var biased; act: none or ReLU, whose mask the forward writes to a workspace
// for the backward. The backward's gradients go through the statistics. (oneDNN 3.1 has no CPU
// kernel for its fused add + ReLU.)
enum BnKind : int64_t { kBnForward = 0, kBnBackward = 1 };
enum BnAct : int64_t { kBnNone = 0, kBnRelu = 1 };
// kind, N, H, W, C, act, eps (float bits), one thread
using BnKey = std::array<int64_t, 8>;

struct BnPlan {
  dnnl::primitive prim;
  memory::desc data, stat, workspace, scratchpad;
};

std::unique_ptr<BnPlan> MakeBnPlan(const BnKey& k) {
  float eps;
  const int32_t bits = static_cast<int32_t>(k[6]);
  std::memcpy(&eps, &bits, sizeof eps);
  using dnnl::normalization_flags;
  auto flags = normalization_flags::use_scale | normalization_flags::use_shift;
  if (k[5] == kBnRelu) flags = flags | normalization_flags::fuse_norm_relu;
  const auto data = Desc({k[1], k[4], k[2], k[3]}, Tag::nhwc);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto& eng = Engine();
  auto plan = std::make_unique<BnPlan>();
  auto fwd = dnnl::batch_normalization_forward::primitive_desc(eng, dnnl::prop_kind::forward_training, data, data,
                                                               eps, flags, attr);
  plan->data = data, plan->stat = fwd.mean_desc(), plan->workspace = fwd.workspace_desc();
  if (k[0] == kBnForward) {
    plan->prim = dnnl::batch_normalization_forward(fwd), plan->scratchpad = fwd.scratchpad_desc();
  } else {
    auto pd = dnnl::batch_normalization_backward::primitive_desc(eng, dnnl::prop_kind::backward, data, data, data,
                                                                  eps, flags, fwd, attr);
    plan->prim = dnnl::batch_normalization_backward(pd), plan->scratchpad = pd.scratchpad_desc();
  }
  return plan;
}

const BnPlan& GetBnPlan(const BnKey& key) { return Cached(key, MakeBnPlan); }

BnKey MakeBnKey(BnKind kind, Ints x, int64_t act, float eps, bool one_thread) {
  int32_t bits;
  std::memcpy(&bits, &eps, sizeof bits);
  return {kind, x[0], x[1], x[2], x[3], act, bits, one_thread};
}

// Runs one model's batch norm; `args` maps oneDNN argument ids to that model's buffers, whose
// workspace has `workspace_bytes`.
ffi::Error RunBn(const BnKey& key, const std::vector<std::pair<int, void*>>& args, int64_t workspace_bytes) {
  try {
    const BnPlan& plan = GetBnPlan(key);
    if (key[5] == kBnRelu && static_cast<int64_t>(plan.workspace.get_size()) != workspace_bytes) {
      return ffi::Error(ffi::ErrorCode::kInvalidArgument, "oneDNN batch norm: the workspace has " +
                        std::to_string(workspace_bytes) + " bytes, not " +
                        std::to_string(plan.workspace.get_size()));
    }
    thread_local dnnl::stream stream(Engine());
    auto& eng = Engine();
    std::unordered_map<int, memory> mems;
    for (const auto& [id, data] : args) {
      const bool stat = id == DNNL_ARG_MEAN || id == DNNL_ARG_VARIANCE || id == DNNL_ARG_SCALE ||
                        id == DNNL_ARG_SHIFT || id == DNNL_ARG_DIFF_SCALE || id == DNNL_ARG_DIFF_SHIFT;
      mems.emplace(id, memory(id == DNNL_ARG_WORKSPACE ? plan.workspace : stat ? plan.stat : plan.data, eng, data));
    }
    mems.emplace(DNNL_ARG_SCRATCHPAD, memory(plan.scratchpad, eng, Scratch(0, plan.scratchpad.get_size())));
    plan.prim.execute(stream, mems);
    stream.wait();
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN batch norm: ") + e.what());
  }
  return ffi::Error::Success();
}

Models Stat(ffi::Buffer<ffi::F32>& b) { return {b.typed_data(), b.dimensions(), 1}; }
Models Stat(Ret& b) { return {b->typed_data(), b->dimensions(), 1}; }
Models Bytes(ffi::AnyBuffer& b) { return {b.untyped_data(), b.dimensions(), 1, 1}; }
Models Bytes(ffi::Result<ffi::AnyBuffer>& b) { return {b->untyped_data(), b->dimensions(), 1, 1}; }

ffi::Error BnForward(Buf x, Buf scale, Buf shift, Ret y, Ret mean, Ret var, ffi::Result<ffi::AnyBuffer> workspace,
                     int64_t act, float eps) {
  Models mx{x.typed_data(), x.dimensions()}, my{y->typed_data(), y->dimensions()};
  Models sc = Stat(scale), sh = Stat(shift), mm = Stat(mean), mv = Stat(var), ws = Bytes(workspace);
  const auto shape = LeadShape({mx, my, sc, sh, mm, mv, ws});
  if (!shape) return LeadDimsError("batch norm");
  const BnKey key = MakeBnKey(kBnForward, mx.dims.last(4), act, eps, Count(*shape) > 1);
  return ForEachModel(*shape, [&](const std::vector<int64_t>& i) {
    std::vector<std::pair<int, void*>> args{{DNNL_ARG_SRC, mx.At(i)}, {DNNL_ARG_DST, my.At(i)},
        {DNNL_ARG_SCALE, sc.At(i)}, {DNNL_ARG_SHIFT, sh.At(i)}, {DNNL_ARG_MEAN, mm.At(i)},
        {DNNL_ARG_VARIANCE, mv.At(i)}};
    if (act == kBnRelu) args.push_back({DNNL_ARG_WORKSPACE, ws.At<uint8_t>(i)});
    return RunBn(key, args, ws.dims.back());
  });
}

ffi::Error BnBackward(Buf x, Buf scale, Buf mean, Buf var, ffi::AnyBuffer workspace, Buf dy, Ret dx,
                      Ret dscale, Ret dshift, int64_t act, float eps) {
  Models mx{x.typed_data(), x.dimensions()}, mdy{dy.typed_data(), dy.dimensions()};
  Models mdx{dx->typed_data(), dx->dimensions()};
  Models sc = Stat(scale), mm = Stat(mean), mv = Stat(var), ws = Bytes(workspace);
  Models dsc = Stat(dscale), dsh = Stat(dshift);
  const auto shape = LeadShape({mx, mdy, mdx, sc, mm, mv, ws, dsc, dsh});
  if (!shape) return LeadDimsError("batch norm");
  const BnKey key = MakeBnKey(kBnBackward, mx.dims.last(4), act, eps, Count(*shape) > 1);
  return ForEachModel(*shape, [&](const std::vector<int64_t>& i) {
    std::vector<std::pair<int, void*>> args{{DNNL_ARG_SRC, mx.At(i)}, {DNNL_ARG_DIFF_DST, mdy.At(i)},
        {DNNL_ARG_SCALE, sc.At(i)}, {DNNL_ARG_MEAN, mm.At(i)}, {DNNL_ARG_VARIANCE, mv.At(i)},
        {DNNL_ARG_DIFF_SRC, mdx.At(i)}, {DNNL_ARG_DIFF_SCALE, dsc.At(i)}, {DNNL_ARG_DIFF_SHIFT, dsh.At(i)}};
    if (act == kBnRelu) args.push_back({DNNL_ARG_WORKSPACE, ws.At<uint8_t>(i)});
    return RunBn(key, args, ws.dims.back());
  });
}

}  // namespace

#define BIND_CONV(name, fn)                                                                   \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, fn,                                                     \
                                ffi::Ffi::Bind()                                              \
                                    .Arg<Buf>()                          \
                                    .Arg<Buf>()                          \
                                    .Ret<Buf>()                          \
                                    .Attr<Ints>("strides")                \
                                    .Attr<Ints>("padding")                \
                                    .Attr<int64_t>("algorithm"));

BIND_CONV(OnednnConvForward, Forward)
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBackwardData, BackwardData,
                              ffi::Ffi::Bind()
                                  .Arg<Buf>()
                                  .Arg<Buf>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<Buf>()
                                  .Attr<Ints>("strides")
                                  .Attr<Ints>("padding")
                                  .Attr<int64_t>("algorithm"));
BIND_CONV(OnednnConvBackwardWeights, BackwardWeights)

// 1 when this oneDNN build has a Winograd forward conv for a 3x3 / stride 1 / 16-channel shape
// (oneDNN 3.0-3.1 on AVX-512; 3.2 dropped it), else 0. Called once by onednn.py (ctypes).
extern "C" int OnednnHasWinograd() {
  try {
    GetPlan({kForward, 1, 8, 8, 16, 16, 3, 3, 8, 8, 1, 1, 1, 1, 1, 1, kWinograd, 0});
    return 1;
  } catch (const dnnl::error&) {
    return 0;
  }
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnBatchNormForward, BnForward,
                              ffi::Ffi::Bind()
                                  .Arg<Buf>()
                                  .Arg<Buf>()
                                  .Arg<Buf>()
                                  .Ret<Buf>()
                                  .Ret<Buf>()
                                  .Ret<Buf>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("act")
                                  .Attr<float>("eps"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnBatchNormBackward, BnBackward,
                              ffi::Ffi::Bind()
                                  .Arg<Buf>()
                                  .Arg<Buf>()
                                  .Arg<Buf>()
                                  .Arg<Buf>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<Buf>()
                                  .Ret<Buf>()
                                  .Ret<Buf>()
                                  .Ret<Buf>()
                                  .Attr<int64_t>("act")
                                  .Attr<float>("eps"));

// Bytes of one model's batch-norm workspace (ReLU's mask) for an NHWC shape and act; -1 where
// oneDNN fails to make the primitive. Called by onednn.py (ctypes) when it traces one.
extern "C" int64_t OnednnBatchNormWorkspace(int64_t n, int64_t h, int64_t w, int64_t c, int64_t act) {
  try {
    const int64_t dims[4] = {n, h, w, c};
    return GetBnPlan(MakeBnKey(kBnForward, Ints(dims, 4), act, 1e-5f, false)).workspace.get_size();
  } catch (const dnnl::error&) {
    return -1;
  }
}
