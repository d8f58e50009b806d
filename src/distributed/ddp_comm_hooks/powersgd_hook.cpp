// PowerSGD (Vogels et al., 2019) as PyTorch's powerSGD_hook does it, on weft's pre-divided
// buckets (Note [The gradient's path]: the bucket already holds grad / world_size, so the sums
// below are means and nothing is divided afterwards).
#include "weft/distributed/ddp_comm_hooks/powersgd_hook.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "weft/autograd.h"
#include "weft/ops.h"

namespace weft::dist {

namespace {

// Orthonormalizes the columns of m (n x r) in place: modified Gram-Schmidt, run twice ("twice is
// enough") in double precision, so that even ill-conditioned gradients give P with P^T P = I to
// float32 accuracy (one float32 pass, as PyTorch's, loses orthogonality as r grows). eps guards a
// zero column, as PyTorch's orthogonalization_epsilon.
void orthogonalize(Tensor& m, double eps) {
  Tensor h = m.to(Device::CPU()).contiguous();
  const int64_t n = h.size(0), r = h.size(1);
  const float* in = h.data_ptr<float>();
  std::vector<double> buf(in, in + n * r);
  double* a = buf.data();
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t i = 0; i < r; ++i) {
      double norm = 0;
      for (int64_t k = 0; k < n; ++k) norm += a[k * r + i] * a[k * r + i];
      norm = std::sqrt(norm) + eps;
      for (int64_t k = 0; k < n; ++k) a[k * r + i] = norm > 0 ? a[k * r + i] / norm : 0.0;
      for (int64_t j = i + 1; j < r; ++j) {
        double dot = 0;
        for (int64_t k = 0; k < n; ++k) dot += a[k * r + i] * a[k * r + j];
        for (int64_t k = 0; k < n; ++k) a[k * r + j] -= dot * a[k * r + i];
      }
    }
  }
  if (h.data_ptr<float>() == m.data_ptr<float>()) h = h.clone();  // never write into m twice
  float* out = h.data_ptr<float>();
  for (int64_t k = 0; k < n * r; ++k) out[k] = static_cast<float>(a[k]);
  m.copy_(h.to(m.device()));
}

// Which slices of the bucket are compressed (as n x m matrices) and which go as they are.
struct Split {
  std::vector<Tensor> matrices;  // views into the bucket, n x m
  std::vector<int64_t> ranks;    // min(n, m, rank), as PyTorch's
  std::vector<Tensor> plain;     // flat views into the bucket
  int64_t p_elems = 0, q_elems = 0, plain_elems = 0;
};

Split split_bucket(const GradBucket& bucket, const PowerSGDOptions& o) {
  Split s;
  int64_t offset = 0;
  for (const Tensor& param : bucket.params) {
    const int64_t numel = param.numel();
    Tensor flat = bucket.buffer.narrow(0, offset, numel);
    offset += numel;
    if (param.dim() > 1) {
      const int64_t n = param.size(0), m = numel / n;
      const int64_t r = std::min<int64_t>({n, m, o.matrix_approximation_rank});
      if (static_cast<double>((n + m) * r) * o.min_compression_rate < static_cast<double>(n * m)) {
        s.matrices.push_back(flat.view({n, m}));
        s.ranks.push_back(r);
        s.p_elems += n * r;
        s.q_elems += m * r;
        continue;
      }
    }
    s.plain.push_back(flat);
    s.plain_elems += numel;
  }
  return s;
}

// Runs the whole PowerSGD step for one bucket once the plain all-reduce has been started:
// P = M Q, all-reduce P, orthogonalize, Q = M^T P, all-reduce Q, M = P Q^T.
class PowerSGDWork : public Work {
 public:
  PowerSGDWork(ProcessGroup& pg, GradBucket bucket, std::shared_ptr<PowerSGDState> state)
      : pg_(pg), bucket_(std::move(bucket)), state_(std::move(state)) {
    run_first_half();
  }
  void wait(std::optional<Duration> timeout) override {
    if (done_) return;
    done_ = true;
    NoGradGuard ng;
    p_work_->wait(timeout);
    auto& mem = state_->buckets[bucket_.index];
    for (size_t i = 0; i < split_.matrices.size(); ++i) {
      Tensor p = p_of(mem, i);
      orthogonalize(p, state_->options.orthogonalization_epsilon);
    }
    int64_t pos = 0;
    for (size_t i = 0; i < split_.matrices.size(); ++i) {
      const Tensor& mat = split_.matrices[i];
      const int64_t m = mat.size(1), r = split_.ranks[i];
      Tensor q = mem.q.narrow(0, pos, m * r).view({m, r});
      q.copy_(mm(mat, p_of(mem, i), /*trans_a=*/true));
      pos += m * r;
    }
    pg_.allreduce({mem.q})->wait(timeout);
    if (plain_work_) plain_work_->wait(timeout);
    decompress(mem);
  }
  bool is_completed() override { return done_; }
  void then(std::function<void(std::exception_ptr)> fn) override {
    std::exception_ptr err;
    try {
      wait(std::nullopt);
    } catch (...) {
      err = std::current_exception();
    }
    fn(err);
  }

 private:
  void run_first_half();
  Tensor p_of(PowerSGDState::BucketMemory& mem, size_t i) const;
  void decompress(PowerSGDState::BucketMemory& mem);

  ProcessGroup& pg_;
  GradBucket bucket_;
  std::shared_ptr<PowerSGDState> state_;
  Split split_;
  Tensor input_copy_, plain_buf_;
  std::vector<int64_t> p_offsets_;
  std::shared_ptr<Work> p_work_, plain_work_;
  bool done_ = false;
};

// Error feedback, the plain part's all-reduce, P = M Q and P's all-reduce: all issued in the
// hook so that they overlap with the rest of backward.
void PowerSGDWork::run_first_half() {
  NoGradGuard ng;
  const auto& o = state_->options;
  auto& mem = state_->buckets[bucket_.index];
  Tensor& buf = bucket_.buffer;
  split_ = split_bucket(bucket_, o);
  // Memory from another bucket layout (DDP rebuilds its buckets after the first step) is void.
  if ((mem.error.defined() && mem.error.numel() != buf.numel()) ||
      (mem.p.defined() && mem.p.numel() != split_.p_elems))
    mem = {};
  if (o.use_error_feedback) {
    if (!mem.error.defined()) mem.error = zeros_like(buf);
    buf.add_(mem.error);
    input_copy_ = buf.clone();
  }
  if (split_.plain_elems > 0) {
    std::vector<Tensor> flat(split_.plain.begin(), split_.plain.end());
    plain_buf_ = cat(flat, 0);
    plain_work_ = pg_.allreduce({plain_buf_});
  }
  const bool fresh = !o.warm_start || !mem.q.defined();
  if (!mem.p.defined()) mem.p = zeros({split_.p_elems}, {.dtype = buf.dtype()});
  if (fresh) {
    // Every rank draws the same Q: the generator is seeded alike and advanced alike.
    mem.q = randn({split_.q_elems}, &state_->rng).to(buf.dtype());
  }
  int64_t qpos = 0, ppos = 0;
  for (size_t i = 0; i < split_.matrices.size(); ++i) {
    const Tensor& mat = split_.matrices[i];
    const int64_t n = mat.size(0), m = mat.size(1), r = split_.ranks[i];
    Tensor q = mem.q.narrow(0, qpos, m * r).view({m, r});
    if (fresh) orthogonalize(q, o.orthogonalization_epsilon);
    mem.p.narrow(0, ppos, n * r).view({n, r}).copy_(mm(mat, q));
    p_offsets_.push_back(ppos);
    qpos += m * r;
    ppos += n * r;
  }
  state_->elements_sent += split_.p_elems + split_.q_elems + split_.plain_elems;
  state_->elements_uncompressed += buf.numel();
  p_work_ = pg_.allreduce({mem.p});
}

Tensor PowerSGDWork::p_of(PowerSGDState::BucketMemory& mem, size_t i) const {
  const int64_t n = split_.matrices[i].size(0), r = split_.ranks[i];
  return mem.p.narrow(0, p_offsets_[i], n * r).view({n, r});
}

// M = P Q^T into the bucket, the plain part copied back, and the error kept for next step.
void PowerSGDWork::decompress(PowerSGDState::BucketMemory& mem) {
  int64_t qpos = 0;
  for (size_t i = 0; i < split_.matrices.size(); ++i) {
    Tensor mat = split_.matrices[i];
    const int64_t r = split_.ranks[i];
    Tensor q = mem.q.narrow(0, qpos, mat.size(1) * r).view({mat.size(1), r});
    mat.copy_(mm(p_of(mem, i), q, false, /*trans_b=*/true));
    qpos += mat.size(1) * r;
  }
  int64_t pos = 0;
  for (Tensor& t : split_.plain) {
    t.copy_(plain_buf_.narrow(0, pos, t.numel()));
    pos += t.numel();
  }
  // The local error, in the bucket's pre-divided units: what this rank put in minus its 1/W
  // share of the result. The errors then sum to zero over ranks, as PyTorch's (undivided) do.
  if (state_->options.use_error_feedback)
    mem.error = input_copy_ - bucket_.buffer * (1.0 / pg_.size());
  if (!state_->options.warm_start) {
    mem.p = Tensor();
    mem.q = Tensor();
  }
}

}  // namespace

CommHook powerSGD_hook(std::shared_ptr<PowerSGDState> state) {
  WEFT_CHECK(state && state->options.matrix_approximation_rank >= 1,
             "powerSGD_hook: matrix_approximation_rank must be at least 1");
  return [state](ProcessGroup& pg, GradBucket& bucket) -> std::shared_ptr<Work> {
    const bool active =
        state->iter >= state->options.start_powerSGD_iter && bucket.buffer.dtype() == kFloat32;
    if (bucket.is_last()) ++state->iter;
    if (!active) return pg.allreduce({bucket.buffer});
    return std::make_shared<PowerSGDWork>(pg, bucket, state);
  };
}

}  // namespace weft::dist
