// conv2d's oneDNN backend (see ops/cpu/conv.h). Each convolution shape gets its primitives
// once (creating a primitive descriptor costs far more than a small convolution), kept in a
// cache keyed by shape. The primitives pick their own (blocked) layouts; weft's plain NCHW
// tensors are reordered into them and back around each call, into buffers from weft's caching
// allocator. Scratchpads are ours too (scratchpad_mode::user), so that a primitive may run on
// any thread, and on several at once. bf16 convolutions (g.bf16) take bf16 data and weights,
// accumulate in float32 and return float32 weight and bias gradients; they are used only where
// oneDNN has a native (jit) kernel for them: its reference kernels are far slower than widening.
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ops/cpu/conv.h"
#include "weft/tensor.h"

namespace weft::cpu {

namespace {

using dnnl::memory;
using tag = memory::format_tag;

std::atomic<int> g_backend{-1};

const dnnl::engine& engine() {
  static const dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::stream& stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

// One primitive and how to feed it: per argument, the user's plain layout, the primitive's
// layout, and the reorder between them when they differ.
struct Arg {
  int arg;
  bool input;
  memory::desc user, inner;
  std::optional<dnnl::reorder> reo;
};

struct Op {
  dnnl::primitive prim;
  std::vector<Arg> args;
  memory::desc scratch;
};

Arg make_arg(int arg, bool input, const memory::desc& user, const memory::desc& inner) {
  Arg a{arg, input, user, inner, std::nullopt};
  if (user != inner)
    a.reo = input ? dnnl::reorder(dnnl::reorder::primitive_desc(engine(), user, engine(), inner))
                  : dnnl::reorder(dnnl::reorder::primitive_desc(engine(), inner, engine(), user));
  return a;
}

Op finish(const dnnl::primitive& prim, std::vector<Arg> args, const memory::desc& scratch) {
  return Op{prim, std::move(args), scratch};
}

// The plain memory descriptors of one convolution shape.
// Data, weights and outputs are in g's type; bias and the weight gradient (dwei) in float32.
struct Plain {
  memory::desc src, wei, dwei, bias, dst;
  memory::dims strides, dilates, pad_l, pad_r;
  explicit Plain(const ConvGeom& g) {
    const auto dt = g.bf16 ? memory::data_type::bf16 : memory::data_type::f32;
    src = memory::desc({g.N, g.C, g.H, g.W}, dt, tag::nchw);
    dst = memory::desc({g.N, g.K, g.Ho, g.Wo}, dt, tag::nchw);
    const memory::dims wdims = g.G == 1 ? memory::dims{g.K, g.C, g.kh, g.kw}
                                        : memory::dims{g.G, g.Kg(), g.Cg(), g.kh, g.kw};
    const tag wtag = g.G == 1 ? tag::oihw : tag::goihw;
    wei = memory::desc(wdims, dt, wtag);
    dwei = memory::desc(wdims, memory::data_type::f32, wtag);
    bias = memory::desc({g.K}, memory::data_type::f32, tag::x);
    strides = {g.sh, g.sw};
    dilates = {g.dh - 1, g.dw - 1};
    pad_l = {g.ph, g.pw};
    // The right/bottom padding that gives exactly Ho x Wo (PyTorch floors the division).
    pad_r = {(g.Ho - 1) * g.sh + (g.kh - 1) * g.dh + 1 - g.H - g.ph,
             (g.Wo - 1) * g.sw + (g.kw - 1) * g.dw + 1 - g.W - g.pw};
  }
  static memory::desc any(const memory::desc& d) {
    return memory::desc(d.dims(), d.data_type(), tag::any);
  }
};

// The last training forward's src in its primitive's layout, kept for the backward-weights
// primitive, which takes the same layout and would reorder the same tensor again. The plain
// tensor's storage is held too (detached: no autograd graph kept alive): while kept, no other
// tensor can have its address, so the address and the version counter identify the data.
struct KeptSrc {
  Tensor x;
  uint32_t version;
  memory::desc desc;
  Tensor inner;
};

// A shape's primitives, each made on first use; an empty slot after a failed attempt means
// oneDNN can't run it.
struct Entry {
  dnnl::algorithm alg = dnnl::algorithm::convolution_direct;
  std::optional<KeptSrc> kept;                                         // under g_mutex
  std::optional<dnnl::convolution_forward::primitive_desc> fwd_pd[2];  // [has bias]
  std::optional<Op> fwd[2], bwd_data, bwd_w[2];
  bool tried_fwd[2] = {false, false}, tried_bwd_data = false, tried_bwd_w[2] = {false, false};
};

using Key = std::array<int64_t, 16>;

Key key_of(const ConvGeom& g, bool wino) {
  return {g.N,  g.C,  g.H,  g.W,  g.K,  g.kh, g.kw, g.sh,
          g.sw, g.ph, g.pw, g.dh, g.dw, g.G,  wino, g.bf16};
}

// A bf16 primitive that oneDNN could only give as a reference kernel is refused (see above).
template <class PD>
void require_native(const ConvGeom& g, const PD& pd) {
  if (g.bf16 && std::string(pd.impl_info_str()).find("ref") != std::string::npos)
    throw dnnl::error(dnnl_unimplemented, "no native bf16 kernel");
}

std::mutex g_mutex;
std::map<Key, std::shared_ptr<Entry>> g_cache;

std::shared_ptr<Entry> entry_for(const ConvGeom& g, bool wino) {
  // Held by the caller's g_mutex.
  if (g_cache.size() > 256) g_cache.clear();  // shapes that keep changing: start over
  auto& e = g_cache[key_of(g, wino)];
  if (!e) {
    e = std::make_shared<Entry>();
    if (wino) e->alg = dnnl::algorithm::convolution_winograd;
  }
  return e;
}

const dnnl::convolution_forward::primitive_desc* fwd_pd(Entry& e, const ConvGeom& g, bool bias) {
  if (!e.fwd_pd[bias]) {
    Plain p(g);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_training, e.alg, Plain::any(p.src),
                                      Plain::any(p.wei), bias ? p.bias : memory::desc(),
                                      Plain::any(p.dst), p.strides, p.dilates, p.pad_l, p.pad_r);
    e.fwd_pd[bias].emplace(d, attr, engine());
  }
  return &*e.fwd_pd[bias];
}

const Op* get_fwd(Entry& e, const ConvGeom& g, bool bias) {
  if (!e.tried_fwd[bias]) {
    e.tried_fwd[bias] = true;
    try {
      Plain p(g);
      const auto& pd = *fwd_pd(e, g, bias);
      require_native(g, pd);
      std::vector<Arg> args{make_arg(DNNL_ARG_SRC, true, p.src, pd.src_desc()),
                            make_arg(DNNL_ARG_WEIGHTS, true, p.wei, pd.weights_desc()),
                            make_arg(DNNL_ARG_DST, false, p.dst, pd.dst_desc())};
      if (bias) args.push_back(make_arg(DNNL_ARG_BIAS, true, p.bias, pd.bias_desc()));
      e.fwd[bias] = finish(dnnl::convolution_forward(pd), std::move(args), pd.scratchpad_desc());
    } catch (const dnnl::error&) {
    }
  }
  return e.fwd[bias] ? &*e.fwd[bias] : nullptr;
}

const Op* get_bwd_data(Entry& e, const ConvGeom& g) {
  if (!e.tried_bwd_data) {
    e.tried_bwd_data = true;
    try {
      Plain p(g);
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      dnnl::convolution_backward_data::desc d(e.alg, Plain::any(p.src), Plain::any(p.wei),
                                              Plain::any(p.dst), p.strides, p.dilates, p.pad_l,
                                              p.pad_r);
      dnnl::convolution_backward_data::primitive_desc pd(d, attr, engine(), *fwd_pd(e, g, false));
      require_native(g, pd);
      std::vector<Arg> args{make_arg(DNNL_ARG_DIFF_DST, true, p.dst, pd.diff_dst_desc()),
                            make_arg(DNNL_ARG_WEIGHTS, true, p.wei, pd.weights_desc()),
                            make_arg(DNNL_ARG_DIFF_SRC, false, p.src, pd.diff_src_desc())};
      e.bwd_data =
          finish(dnnl::convolution_backward_data(pd), std::move(args), pd.scratchpad_desc());
    } catch (const dnnl::error&) {
    }
  }
  return e.bwd_data ? &*e.bwd_data : nullptr;
}

const Op* get_bwd_w(Entry& e, const ConvGeom& g, bool bias) {
  if (!e.tried_bwd_w[bias]) {
    e.tried_bwd_w[bias] = true;
    try {
      Plain p(g);
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      dnnl::convolution_backward_weights::desc d(e.alg, Plain::any(p.src), Plain::any(p.dwei),
                                                 bias ? p.bias : memory::desc(), Plain::any(p.dst),
                                                 p.strides, p.dilates, p.pad_l, p.pad_r);
      dnnl::convolution_backward_weights::primitive_desc pd(d, attr, engine(), *fwd_pd(e, g, bias));
      require_native(g, pd);
      std::vector<Arg> args{make_arg(DNNL_ARG_DIFF_DST, true, p.dst, pd.diff_dst_desc()),
                            make_arg(DNNL_ARG_SRC, true, p.src, pd.src_desc()),
                            make_arg(DNNL_ARG_DIFF_WEIGHTS, false, p.dwei, pd.diff_weights_desc())};
      if (bias) args.push_back(make_arg(DNNL_ARG_DIFF_BIAS, false, p.bias, pd.diff_bias_desc()));
      e.bwd_w[bias] =
          finish(dnnl::convolution_backward_weights(pd), std::move(args), pd.scratchpad_desc());
    } catch (const dnnl::error&) {
    }
  }
  return e.bwd_w[bias] ? &*e.bwd_w[bias] : nullptr;
}

// Runs ops one after another on the user's buffers (ptrs[i][arg]), plain unless `others` names
// an argument held in another layout (a blocked one, Note [Conv-BatchNorm-ReLU fusion]). Inputs
// are reordered into the primitive's layout once per (buffer, layout) and shared between the ops.
struct OtherLayout {
  int arg;
  memory::desc desc;
};
using OtherLayouts = std::vector<OtherLayout>;

class Runner {
 public:
  void run(const Op& op, const std::map<int, void*>& ptrs, const OtherLayouts& others = {}) {
    std::unordered_map<int, memory> margs;
    struct Out {
      int arg;
      dnnl::reorder reo;
      memory user;
    };
    std::vector<Out> outs;
    for (const Arg& a : op.args) {
      void* user = ptrs.at(a.arg);
      const memory::desc* ud_p = &a.user;
      for (const OtherLayout& o : others)
        if (o.arg == a.arg) ud_p = &o.desc;
      const memory::desc& ud = *ud_p;
      if (ud == a.inner) {
        margs.emplace(a.arg, memory(a.inner, engine(), user));
        continue;
      }
      // The op's own reorder for a plain buffer; one made here for another layout (rare: the
      // fusion takes the layout the primitives chose).
      auto reo = [&] {
        if (ud == a.user) return *a.reo;
        return a.input
                   ? dnnl::reorder(dnnl::reorder::primitive_desc(engine(), ud, engine(), a.inner))
                   : dnnl::reorder(dnnl::reorder::primitive_desc(engine(), a.inner, engine(), ud));
      };
      if (a.input) {
        margs.emplace(a.arg, converted(a, ud, user, reo));
      } else {
        memory inner = scratch(a.inner);
        margs.emplace(a.arg, inner);
        outs.push_back({a.arg, reo(), memory(ud, engine(), user)});
      }
    }
    if (op.scratch.get_size() > 0) margs.emplace(DNNL_ARG_SCRATCHPAD, scratch(op.scratch));
    op.prim.execute(stream(), margs);
    for (Out& o : outs) o.reo.execute(stream(), margs.at(o.arg), o.user);
    stream().wait();
  }

  // The buffer that holds `user` reordered into `d`, if this runner made one.
  std::optional<Tensor> converted_buffer(const void* user, const memory::desc& d) const {
    for (size_t i = 0; i < converted_.size(); ++i)
      if (converted_[i].first == user && converted_[i].second.get_desc() == d) return conv_bufs_[i];
    return std::nullopt;
  }
  // Takes `inner` as `user` already reordered into `d`.
  void add_converted(void* user, const memory::desc& d, const Tensor& inner) {
    converted_.emplace_back(user, memory(d, engine(), inner.raw_data()));
    conv_bufs_.push_back(inner);
  }

 private:
  memory scratch(const memory::desc& d) {
    bufs_.push_back(make_empty({(int64_t)((d.get_size() + 3) / 4)}));
    return memory(d, engine(), bufs_.back().data_ptr<float>());
  }
  template <typename R>
  memory converted(const Arg& a, const memory::desc& ud, void* user, R reo) {
    for (auto& [p, m] : converted_)
      if (p == user && m.get_desc() == a.inner) return m;
    memory m = scratch(a.inner);
    memory src(ud, engine(), user);
    reo().execute(stream(), src, m);
    converted_.emplace_back(user, m);
    conv_bufs_.push_back(bufs_.back());
    return m;
  }
  std::vector<Tensor> bufs_;
  std::vector<std::pair<void*, memory>> converted_;
  std::vector<Tensor> conv_bufs_;  // converted_[i]'s memory
};

bool try_winograd(const ConvGeom& g) {
  const ConvBackend b = conv_backend();
  return (b == ConvBackend::kAuto || b == ConvBackend::kOneDnnWinograd) && !g.bf16 &&
         g.Cg() >= 16 && g.Kg() >= 16;
}

}  // namespace

void set_conv_backend(ConvBackend b) { g_backend.store((int)b); }

ConvBackend conv_backend() {
  int b = g_backend.load(std::memory_order_relaxed);
  if (b < 0) {
    const char* env = std::getenv("WEFT_CONV_BACKEND");
    ConvBackend v = ConvBackend::kAuto;
    if (env && std::strcmp(env, "im2col") == 0) v = ConvBackend::kIm2col;
    if (env && std::strcmp(env, "onednn") == 0) v = ConvBackend::kOneDnn;
    if (env && std::strcmp(env, "winograd") == 0) v = ConvBackend::kOneDnnWinograd;
    int expected = -1;
    g_backend.compare_exchange_strong(expected, (int)v);
    b = g_backend.load();
  }
  return (ConvBackend)b;
}

namespace {

// The forward primitive conv_forward runs for g (Winograd's where tried and offered), and its
// cache entry; null if oneDNN has none.
const Op* forward_op(const ConvGeom& g, bool bias, std::shared_ptr<Entry>* e) {
  // Held by the caller's g_mutex.
  const Op* op = nullptr;
  if (try_winograd(g)) {
    *e = entry_for(g, true);
    op = get_fwd(**e, g, bias);
  }
  if (!op) {
    *e = entry_for(g, false);
    op = get_fwd(**e, g, bias);
  }
  return op;
}

// [N, K, Ho, Wo] (a feature map's dims) in oneDNN's channel-blocked layout nChw{block}c.
memory::desc blocked(const memory::desc& plain, int block) {
  return memory::desc(plain.dims(), plain.data_type(), block == 16 ? tag::nChw16c : tag::nChw8c);
}

}  // namespace

int onednn_conv_output_block(const ConvGeom& g, bool bias) {
  if (g.bf16 || conv_backend() == ConvBackend::kIm2col) return 0;
  std::shared_ptr<Entry> e;
  std::lock_guard<std::mutex> lock(g_mutex);
  const Op* op = forward_op(g, bias, &e);
  if (!op) return 0;
  const memory::desc& dst = op->args[2].inner;  // DNNL_ARG_DST's
  for (int block : {16, 8})
    if (g.K % block == 0 && dst == blocked(Plain(g).dst, block)) return block;
  return 0;
}

bool onednn_conv_forward(const ConvGeom& g, const void* x, const void* w, const float* b, void* y,
                         const Tensor* keep, int y_block, int x_block) {
  std::shared_ptr<Entry> e;
  const Op* op = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    op = forward_op(g, b != nullptr, &e);
  }
  if (!op) return false;
  std::map<int, void*> ptrs{
      {DNNL_ARG_SRC, (void*)x}, {DNNL_ARG_WEIGHTS, (void*)w}, {DNNL_ARG_DST, y}};
  if (b) ptrs[DNNL_ARG_BIAS] = (void*)b;
  Runner r;
  OtherLayouts others;
  if (y_block) others.push_back({DNNL_ARG_DST, blocked(Plain(g).dst, y_block)});
  if (x_block) others.push_back({DNNL_ARG_SRC, blocked(Plain(g).src, x_block)});
  r.run(*op, ptrs, others);
  if (keep) {
    const memory::desc& d = op->args[0].inner;  // DNNL_ARG_SRC's
    std::optional<Tensor> inner = r.converted_buffer(x, d);
    std::lock_guard<std::mutex> lock(g_mutex);
    if (inner)
      e->kept = KeptSrc{keep->detach(), keep->_version(), d, *inner};
    else
      e->kept.reset();
  }
  return true;
}

bool onednn_conv_backward(const ConvGeom& g, const void* x, const void* w, const void* dy, void* dx,
                          float* dw, float* db, const Tensor* src, int dy_block, int x_block) {
  std::shared_ptr<Entry> e;
  const Op *bd = nullptr, *bw = nullptr;
  std::optional<KeptSrc> kept;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto get = [&](bool wino) {
      e = entry_for(g, wino);
      bd = dx ? get_bwd_data(*e, g) : nullptr;
      bw = dw ? get_bwd_w(*e, g, db != nullptr) : nullptr;
      return (!dx || bd) && (!dw || bw);
    };
    if (!(try_winograd(g) && get(true)) && !get(false)) return false;
    // The forward's reordered src, if it is this src's; taken (used once).
    if (bw && src && e->kept && e->kept->x.raw_data() == x && e->kept->version == src->_version() &&
        e->kept->desc == bw->args[1].inner)
      kept = std::move(e->kept);
    e->kept.reset();
  }
  Runner r;
  if (kept) r.add_converted((void*)x, kept->desc, kept->inner);
  OtherLayouts others;
  if (dy_block) others.push_back({DNNL_ARG_DIFF_DST, blocked(Plain(g).dst, dy_block)});
  if (x_block) {
    others.push_back({DNNL_ARG_SRC, blocked(Plain(g).src, x_block)});
    others.push_back({DNNL_ARG_DIFF_SRC, blocked(Plain(g).src, x_block)});
  }
  if (bd)
    r.run(*bd,
          {{DNNL_ARG_DIFF_DST, (void*)dy}, {DNNL_ARG_WEIGHTS, (void*)w}, {DNNL_ARG_DIFF_SRC, dx}},
          others);
  if (bw) {
    std::map<int, void*> ptrs{
        {DNNL_ARG_DIFF_DST, (void*)dy}, {DNNL_ARG_SRC, (void*)x}, {DNNL_ARG_DIFF_WEIGHTS, dw}};
    if (db) ptrs[DNNL_ARG_DIFF_BIAS] = db;
    r.run(*bw, ptrs, others);
  }
  return true;
}

}  // namespace weft::cpu
