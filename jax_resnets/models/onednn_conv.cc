// oneDNN convolutions (NHWC activations, HWIO kernels, float32) as XLA FFI custom calls for
// XLA:CPU. Built and loaded by jax_resnets/models/onednn_conv.py; see that file and BUILD_NOTES.md
// (Performance, attempt 20) for why: XLA:CPU's Eigen kernel-gradient and strided input-gradient
// convs are 1.35-1.6x slower than oneDNN's.
//
// Three handlers, one per conv of a training step: forward y = conv(x, w), input gradient
// dx = conv_bwd_data(dy, w), kernel gradient dw = conv_bwd_weights(x, dy). Attributes:
// strides [sh, sw], padding [lo_h, hi_h, lo_w, hi_w]. Shapes come from the buffers.
// Primitives are created once per shape and kept (mutex-guarded map); scratchpads and the
// blocked weight copies oneDNN's kernels want are per calling thread.
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = memory::format_tag;

namespace {

using Buf = ffi::Buffer<ffi::F32, 4>;
using Ret = ffi::ResultBuffer<ffi::F32, 4>;
using Ints = ffi::Span<const int64_t>;

enum Kind : int64_t { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

// kind, N, H, W, C, F, kh, kw, Ho, Wo, sh, sw, lo_h, hi_h, lo_w, hi_w
using Key = std::array<int64_t, 16>;

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

struct Plan {
  dnnl::primitive conv;
  memory::desc user_weights, conv_weights, scratchpad;
  dnnl::reorder weights_reorder;  // user -> conv layout (fwd, bwd data) or back (bwd weights)
  bool reorders = false;
};

memory::desc Desc(const memory::dims& dims, Tag tag) {
  return memory::desc(dims, memory::data_type::f32, tag);
}

std::unique_ptr<Plan> MakePlan(const Key& k) {
  const memory::dims src{k[1], k[4], k[2], k[3]}, wei{k[5], k[4], k[6], k[7]}, dst{k[1], k[5], k[8], k[9]};
  const memory::dims strides{k[10], k[11]}, pad_l{k[12], k[14]}, pad_r{k[13], k[15]};
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto& eng = Engine();
  auto plan = std::make_unique<Plan>();
  plan->user_weights = Desc(wei, Tag::hwio);
  auto fwd = dnnl::convolution_forward::primitive_desc(
      eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, Desc(src, Tag::nhwc),
      Desc(wei, Tag::any), Desc(dst, Tag::nhwc), strides, pad_l, pad_r, attr);
  if (k[0] == kForward) {
    plan->conv = dnnl::convolution_forward(fwd);
    plan->conv_weights = fwd.weights_desc();
    plan->scratchpad = fwd.scratchpad_desc();
  } else if (k[0] == kBackwardData) {
    auto pd = dnnl::convolution_backward_data::primitive_desc(
        eng, dnnl::algorithm::convolution_direct, Desc(src, Tag::nhwc), Desc(wei, Tag::any),
        Desc(dst, Tag::nhwc), strides, pad_l, pad_r, fwd, attr);
    plan->conv = dnnl::convolution_backward_data(pd);
    plan->conv_weights = pd.weights_desc();
    plan->scratchpad = pd.scratchpad_desc();
  } else {
    auto pd = dnnl::convolution_backward_weights::primitive_desc(
        eng, dnnl::algorithm::convolution_direct, Desc(src, Tag::nhwc), Desc(wei, Tag::any),
        Desc(dst, Tag::nhwc), strides, pad_l, pad_r, fwd, attr);
    plan->conv = dnnl::convolution_backward_weights(pd);
    plan->conv_weights = pd.diff_weights_desc();
    plan->scratchpad = pd.scratchpad_desc();
  }
  plan->reorders = plan->conv_weights != plan->user_weights;
  if (plan->reorders) {
    const bool to_user = k[0] == kBackwardWeights;
    const auto& from = to_user ? plan->conv_weights : plan->user_weights;
    const auto& to = to_user ? plan->user_weights : plan->conv_weights;
    plan->weights_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(eng, from, eng, to));
  }
  return plan;
}

const Plan& GetPlan(const Key& key) {
  static std::mutex mu;
  static std::map<Key, std::unique_ptr<Plan>> plans;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = plans[key];
  if (!slot) slot = MakePlan(key);
  return *slot;
}

// Per-thread scratch: index 0 = oneDNN scratchpad, 1 = weights in the conv's layout.
void* Scratch(int index, size_t bytes) {
  thread_local std::array<std::vector<char>, 2> buffers;
  auto& b = buffers[index];
  if (b.size() < bytes) b.resize(bytes);
  return b.data();
}

// Runs `kind` with x/w/y pointers in user layouts (NHWC, HWIO, NHWC); which are inputs depends
// on kind: fwd reads x, w writes y; bwd data reads y (=dy), w writes x (=dx); bwd weights reads
// x, y (=dy) writes w (=dw).
ffi::Error Run(const Key& key, float* x, float* w, float* y) {
  try {
    const Plan& plan = GetPlan(key);
    auto& eng = Engine();
    thread_local dnnl::stream stream(eng);
    memory xm(Desc({key[1], key[4], key[2], key[3]}, Tag::nhwc), eng, x);
    memory ym(Desc({key[1], key[5], key[8], key[9]}, Tag::nhwc), eng, y);
    memory wm(plan.user_weights, eng, w);
    memory cw = plan.reorders ? memory(plan.conv_weights, eng, Scratch(1, plan.conv_weights.get_size())) : wm;
    memory pad(plan.scratchpad, eng, Scratch(0, plan.scratchpad.get_size()));
    if (key[0] == kForward) {
      if (plan.reorders) plan.weights_reorder.execute(stream, wm, cw);
      plan.conv.execute(stream, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, cw}, {DNNL_ARG_DST, ym},
                                 {DNNL_ARG_SCRATCHPAD, pad}});
    } else if (key[0] == kBackwardData) {
      if (plan.reorders) plan.weights_reorder.execute(stream, wm, cw);
      plan.conv.execute(stream, {{DNNL_ARG_DIFF_DST, ym}, {DNNL_ARG_WEIGHTS, cw}, {DNNL_ARG_DIFF_SRC, xm},
                                 {DNNL_ARG_SCRATCHPAD, pad}});
    } else {
      plan.conv.execute(stream, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_DIFF_DST, ym}, {DNNL_ARG_DIFF_WEIGHTS, cw},
                                 {DNNL_ARG_SCRATCHPAD, pad}});
      if (plan.reorders) plan.weights_reorder.execute(stream, cw, wm);
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN conv: ") + e.what());
  }
  return ffi::Error::Success();
}

Key MakeKey(Kind kind, Ints x, Ints w, Ints y,
            Ints strides, Ints padding) {
  return {kind, x[0], x[1], x[2], x[3], w[3], w[0], w[1], y[1], y[2],
          strides[0], strides[1], padding[0], padding[1], padding[2], padding[3]};
}

ffi::Error Forward(Buf x, Buf w, Ret y,
                   Ints strides, Ints padding) {
  return Run(MakeKey(kForward, x.dimensions(), w.dimensions(), y->dimensions(), strides, padding),
             x.typed_data(), w.typed_data(), y->typed_data());
}

// `after` (the kernel gradient of the same conv) is not read: it orders this call after that one,
// so the two never run at once and compete for the cores (each uses all of them).
ffi::Error BackwardData(Buf dy, Buf w, ffi::AnyBuffer after, Ret dx, Ints strides, Ints padding) {
  return Run(MakeKey(kBackwardData, dx->dimensions(), w.dimensions(), dy.dimensions(), strides, padding),
             dx->typed_data(), w.typed_data(), dy.typed_data());
}

ffi::Error BackwardWeights(Buf x, Buf dy,
                           Ret dw, Ints strides,
                           Ints padding) {
  return Run(MakeKey(kBackwardWeights, x.dimensions(), dw->dimensions(), dy.dimensions(), strides, padding),
             x.typed_data(), dw->typed_data(), dy.typed_data());
}

}  // namespace

#define BIND_CONV(name, fn)                                                                   \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, fn,                                                     \
                                ffi::Ffi::Bind()                                              \
                                    .Arg<Buf>()                          \
                                    .Arg<Buf>()                          \
                                    .Ret<Buf>()                          \
                                    .Attr<Ints>("strides")                \
                                    .Attr<Ints>("padding"));

BIND_CONV(OnednnConvForward, Forward)
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBackwardData, BackwardData,
                              ffi::Ffi::Bind()
                                  .Arg<Buf>()
                                  .Arg<Buf>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<Buf>()
                                  .Attr<Ints>("strides")
                                  .Attr<Ints>("padding"));
BIND_CONV(OnednnConvBackwardWeights, BackwardWeights)
