#include "weft/nn/parallel/distributed_data_parallel.h"

#include <cstring>
#include <map>

#include "weft/autograd.h"
#include "weft/distributed/coalesced.h"
#include "weft/distributed/distributed.h"
#include "weft/ops.h"

namespace weft::nn {

namespace {

// FNV-1a: a hash that is the same in every process (std::hash need not be).
int64_t stable_hash(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return (int64_t)(h >> 1);
}

}  // namespace

DistributedDataParallelImpl::DistributedDataParallelImpl(std::shared_ptr<Module> module,
                                                         DistributedDataParallelOptions options)
    : Module("DistributedDataParallel"), module_(std::move(module)), options_(std::move(options)) {
  WEFT_CHECK(module_, "DistributedDataParallel: null module");
  group_ = options_.process_group ? options_.process_group : dist::default_group();
  WEFT_CHECK(options_.bucket_cap_mb > 0, "DistributedDataParallel: bucket_cap_mb must be positive");
  register_module("module", module_);
  std::vector<std::pair<std::string, Tensor>> named;
  for (auto& [n, p] : module_->named_parameters())
    if (p.requires_grad()) named.emplace_back(n, p);
  check_same_parameters(named);
  std::vector<Tensor> state;
  for (auto& [n, p] : module_->named_parameters()) state.push_back(p);
  for (auto& [n, b] : module_->named_buffers()) state.push_back(b);
  if (group_->size() > 1) dist::broadcast_coalesced(*group_, state);
  std::vector<Tensor> params;
  std::vector<std::string> names;
  for (auto& [n, p] : named) {
    params.push_back(p);
    names.push_back(n);
  }
  dist::ReducerOptions ro;
  ro.bucket_bytes = (size_t)(options_.bucket_cap_mb * 1024 * 1024);
  ro.find_unused_parameters = options_.find_unused_parameters;
  ro.gradient_as_bucket_view = options_.gradient_as_bucket_view;
  ro.static_graph = options_.static_graph;
  reducer_ = std::make_unique<dist::Reducer>(params, names, group_, ro);
}

void DistributedDataParallelImpl::check_same_parameters(
    const std::vector<std::pair<std::string, Tensor>>& named) {
  // Every rank describes its parameters as int64s: count, then per parameter the hash of
  // its name, dtype, ndim and sizes. Lengths first (they may differ), then the contents.
  std::vector<int64_t> desc{(int64_t)named.size()};
  for (auto& [n, p] : named) {
    desc.push_back(stable_hash(n));
    desc.push_back((int64_t)p.dtype());
    desc.push_back(p.dim());
    for (int64_t s : p.sizes()) desc.push_back(s);
  }
  const int world = group_->size();
  if (world == 1) return;
  // The descriptions travel on the parameters' device (NCCL moves device memory only) and
  // are read back on the host.
  const Device dev = named.empty() ? Device::CPU() : named[0].second.device();
  auto on_host = [](std::vector<Tensor>& ts) {
    for (Tensor& t : ts) t = t.to(Device::CPU());
  };
  std::vector<Tensor> lens;
  for (int r = 0; r < world; ++r) lens.push_back(zeros({2}, {.dtype = kInt64, .device = dev}));
  group_
      ->allgather(
          lens,
          tensor(std::vector<int64_t>{(int64_t)desc.size(), (int64_t)named.size()}, {2}).to(dev))
      ->wait();
  on_host(lens);
  int64_t max_len = 0;
  for (auto& l : lens) max_len = std::max(max_len, l.data_ptr<int64_t>()[0]);
  for (int r = 0; r < world; ++r)
    WEFT_CHECK(lens[r].data_ptr<int64_t>()[1] == (int64_t)named.size(),
               "DistributedDataParallel: rank ", group_->rank(), " has ", named.size(),
               " parameters but rank ", r, " has ", lens[r].data_ptr<int64_t>()[1],
               "; every rank must construct the same model");
  desc.resize(max_len, -1);
  std::vector<Tensor> all;
  for (int r = 0; r < world; ++r) all.push_back(zeros({max_len}, {.dtype = kInt64, .device = dev}));
  group_->allgather(all, tensor(desc, {max_len}).to(dev))->wait();
  on_host(all);
  for (int r = 0; r < world; ++r) {
    const int64_t* other = all[r].data_ptr<int64_t>();
    size_t pos = 1;
    for (size_t i = 0; i < named.size(); ++i) {
      const Tensor& p = named[i].second;
      const size_t len = 3 + (size_t)p.dim();
      bool same = std::memcmp(other + pos, desc.data() + pos, len * sizeof(int64_t)) == 0;
      if (!same) {
        std::string theirs = "(";
        int64_t nd = other[pos + 2];
        for (int64_t d = 0; d < nd && (int64_t)pos + 3 + d < max_len; ++d)
          theirs += (d ? ", " : "") + std::to_string(other[pos + 3 + d]);
        theirs += nd == 1 ? ",)" : ")";
        WEFT_ERROR("DistributedDataParallel: models differ across ranks: parameter ", i, " ('",
                   named[i].first, "') is ", shape_str(p.sizes()), " ", p.dtype(), " on rank ",
                   group_->rank(), " but ",
                   other[pos] != desc[pos] ? "has a different name" : "is " + theirs, " on rank ",
                   r, "; every rank must construct the same model");
      }
      pos += len;
    }
  }
}

void DistributedDataParallelImpl::sync_buffers() {
  auto bufs = module_->buffers();
  if (!bufs.empty()) dist::broadcast_coalesced(*group_, bufs);
}

Tensor DistributedDataParallelImpl::forward(const Tensor& input) {
  auto out = forward_multi({input});
  WEFT_CHECK(out.size() == 1, "DistributedDataParallel: module returned ", out.size(),
             " outputs; use forward_multi()");
  return out[0];
}

std::vector<Tensor> DistributedDataParallelImpl::forward_multi(const std::vector<Tensor>& inputs) {
  if (join_mode_) {
    Tensor active = ones({1}, {.dtype = kInt64, .device = reducer_->device()});
    group_->allreduce({active})->wait();
  }
  if (options_.broadcast_buffers && group_->size() > 1 && is_training()) sync_buffers();
  auto out = module_->forward_multi(inputs);
  if (GradMode::is_enabled() && sync_) reducer_->prepare_for_backward(out);
  return out;
}

void DistributedDataParallelImpl::join(const std::function<void()>& loop) {
  WEFT_CHECK(!join_mode_, "DistributedDataParallel::join is not reentrant");
  // A rank out of data all-reduces zeros; a hook that owns the gradients (ZeRO-2) expects its
  // own collective from every rank.
  WEFT_CHECK(!reducer_->hook_owns_grads(),
             "DistributedDataParallel::join is not supported with a communication hook that owns "
             "the gradients (ZeroRedundancyOptimizer with reduce_scatter_grads)");
  join_mode_ = true;
  struct Reset {
    bool& flag;
    ~Reset() { flag = false; }
  } reset{join_mode_};
  loop();
  // This rank is out of data: shadow the others' iterations until all are done.
  int64_t shadowed = 0;
  while (true) {
    Tensor active = zeros({1}, {.dtype = kInt64, .device = reducer_->device()});
    group_->allreduce({active})->wait();
    if (active.to(Device::CPU()).item<int64_t>() == 0) break;
    if (options_.broadcast_buffers && group_->size() > 1 && is_training()) sync_buffers();
    reducer_->reduce_zeros_as_joined();
    ++shadowed;
  }
  // Ranks that joined early skipped optimizer steps; as PyTorch does, every rank ends with
  // the model of the (highest) rank that joined last.
  Tensor last = tensor(std::vector<int64_t>{shadowed == 0 ? (int64_t)group_->rank() : -1}, {1})
                    .to(reducer_->device());
  group_->allreduce({last}, dist::ReduceOp::MAX)->wait();
  last = last.to(Device::CPU());
  std::vector<Tensor> state = module_->parameters();
  for (Tensor& b : module_->buffers()) state.push_back(b);
  dist::broadcast_coalesced(*group_, state, (int)last.item<int64_t>());
}

void DistributedDataParallelImpl::register_comm_hook(dist::CommHook hook) {
  reducer_->set_comm_hook(std::move(hook));
}

}  // namespace weft::nn

namespace weft::dist {

namespace {

// Completes when `inner` does, then runs `after` once on the waiting thread.
class ThenWork : public Work {
 public:
  ThenWork(std::shared_ptr<Work> inner, std::function<void()> after)
      : inner_(std::move(inner)), after_(std::move(after)) {}
  void wait(std::optional<Duration> timeout) override {
    inner_->wait(timeout);
    if (after_) {
      auto fn = std::move(after_);
      after_ = nullptr;
      fn();
    }
  }
  bool is_completed() override { return inner_->is_completed(); }
  void then(std::function<void(std::exception_ptr)> fn) override { inner_->then(std::move(fn)); }

 private:
  std::shared_ptr<Work> inner_;
  std::function<void()> after_;
};

// All-reduces a float32 bucket as `dtype` (fp16 or bf16): rounded to nearest even on the
// bucket's device, and the reduced values are copied back into the float32 buffer. On CPU the
// 16-bit copy of each bucket is a symmetric tensor made once (Note [Symmetric buffers]): every
// rank calls the hook for the same buckets in the same order, so its allocation is collective.
CommHook half_hook(DType dtype) {
  auto kept = std::make_shared<std::map<std::pair<const ProcessGroup*, size_t>, Tensor>>();
  return [dtype, kept](ProcessGroup& pg, GradBucket& bucket) -> std::shared_ptr<Work> {
    Tensor buf = bucket.buffer;
    Tensor half;
    if (buf.device().is_cpu()) {
      Tensor& k = (*kept)[{&pg, bucket.index}];
      if (!k.defined() || k.numel() != buf.numel()) k = pg.empty_symmetric({buf.numel()}, dtype);
      half = k;
      NoGradGuard ng;
      half.copy_(buf);
    } else {
      half = buf.to(dtype);
    }
    auto work = pg.allreduce({half});
    return std::make_shared<ThenWork>(work, [buf, half]() mutable {
      NoGradGuard ng;
      buf.copy_(half);
    });
  };
}

}  // namespace

CommHook fp16_compress_hook() { return half_hook(DType::Float16); }
CommHook bf16_compress_hook() { return half_hook(DType::BFloat16); }

}  // namespace weft::dist
