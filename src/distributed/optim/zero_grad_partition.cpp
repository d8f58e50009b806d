// ZeRO-2's gradient partition (distributed/optim/zero_grad_partition.h); see
// Note [ZeRO-2 gradient partition] in docs/ARCHITECTURE.md.
#include "distributed/optim/zero_grad_partition.h"

#include <algorithm>

#include "weft/autograd.h"
#include "weft/ops.h"

namespace weft::dist::detail {

GradPartition::GradPartition(Reducer& reducer, std::vector<Tensor> flat,
                             std::vector<size_t> group_of)
    : reducer_(reducer),
      world_(reducer.process_group().size()),
      rank_(reducer.process_group().rank()),
      flat_(std::move(flat)),
      group_of_(std::move(group_of)) {
  const auto& params = reducer_.parameters();
  flat_of_.assign(params.size(), 0);
  reducer_of_.assign(flat_.size(), 0);
  for (size_t f = 0; f < flat_.size(); ++f)
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i].is_same(flat_[f])) {
        flat_of_[i] = f;
        reducer_of_[f] = i;
      }
}

CommHook GradPartition::hook(std::shared_ptr<GradPartition> self) {
  return [self](ProcessGroup& pg, GradBucket& bucket) { return self->on_bucket(pg, bucket); };
}

// Bucket i (final layout) is reduce-scattered from the reducer's padded buffer: rank r receives
// elements [r * slice, (r + 1) * slice) of the sum of the ranks' pre-divided gradients, that is
// the average. Before the layout is final (the first synchronised backward: DDP rebuilds its
// buckets after it) the bucket is all-reduced whole, as DDP would, and the first step takes
// this rank's pieces out of it.
std::shared_ptr<Work> GradPartition::on_bucket(ProcessGroup& pg, GradBucket& bucket) {
  NoGradGuard ng;
  if (!reducer_.buckets_rebuilt()) {
    const std::vector<size_t> idx = reducer_.bucket_indices().at(bucket.index);
    whole_.resize(flat_of_.size());
    int64_t at = 0;
    for (size_t p : idx) {
      const int64_t n = reducer_.parameters()[p].numel();
      whole_[p] = bucket.buffer.narrow(0, at, n);
      at += n;
    }
    reduced_ = Reduced::Whole;
    return pg.allreduce({bucket.buffer});
  }
  if (!built_) build();
  WEFT_CHECK(bucket.index < buckets_.size() &&
                 bucket.padded.impl()->storage == buckets_[bucket.index].padded.impl()->storage,
             "ZeroRedundancyOptimizer (reduce_scatter_grads): DDP's bucket ", bucket.index,
             " is not the one the gradient partition was built from; the bucket layout changed "
             "after it became final");
  whole_.clear();
  reduced_ = Reduced::Slices;
  const Bucket& b = buckets_[bucket.index];
  return pg.reduce_scatter_tensor(b.reduced, b.padded);
}

void GradPartition::build() {
  WEFT_CHECK(reducer_.buckets_rebuilt(),
             "ZeroRedundancyOptimizer (reduce_scatter_grads): DDP's buckets are not final yet; "
             "run a synchronised backward before the first step");
  const auto layout = reducer_.bucket_indices();
  buckets_.clear();
  for (size_t bi = 0; bi < layout.size(); ++bi) {
    Bucket b;
    b.params = layout[bi];
    for (size_t p : b.params) {
      b.offsets.push_back(b.numel);
      b.numel += reducer_.parameters()[p].numel();
    }
    b.padded = reducer_.padded_bucket(bi);
    b.slice = b.padded.numel() / world_;
    WEFT_CHECK(b.slice * world_ == b.padded.numel() && b.padded.numel() >= b.numel,
               "ZeroRedundancyOptimizer: DDP's bucket ", bi, " holds ", b.padded.numel(),
               " elements, not a multiple of the group size ", world_, " covering ", b.numel);
    b.reduced = zeros({b.slice}, {.device = b.padded.device()});
    buckets_.push_back(std::move(b));
  }
  mine_ = pieces_of(rank_);
  piece_tensors_.clear();
  NoGradGuard ng;
  for (const Piece& pc : mine_) {
    const Tensor& p = flat_[pc.flat];
    piece_tensors_.push_back(p.view({p.numel()}).narrow(0, pc.offset, pc.numel));
  }
  built_ = true;
}

std::vector<Piece> GradPartition::pieces_of(int r) const {
  std::vector<Piece> out;
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    const Bucket& b = buckets_[bi];
    const int64_t lo = r * b.slice, hi = std::min(lo + b.slice, b.numel);
    for (size_t j = 0; j < b.params.size() && lo < hi; ++j) {
      const int64_t start = b.offsets[j], end = start + reducer_.parameters()[b.params[j]].numel();
      const int64_t a = std::max(lo, start), e = std::min(hi, end);
      if (a < e) out.push_back(Piece{flat_of_[b.params[j]], a - start, e - a, bi, a - lo});
    }
  }
  std::stable_sort(out.begin(), out.end(), [&](const Piece& x, const Piece& y) {
    return group_of_[x.flat] < group_of_[y.flat];
  });
  return out;
}

void GradPartition::check_reduced() const {
  WEFT_CHECK(reduced_ != Reduced::None,
             "ZeroRedundancyOptimizer (reduce_scatter_grads): step() without a synchronised DDP "
             "backward since the last step; the reduced gradients come from DDP's backward "
             "(under no_sync() they are only accumulated)");
}

void GradPartition::take_grads() {
  check_reduced();
  NoGradGuard ng;
  for (size_t k = 0; k < mine_.size(); ++k) {
    const Piece& pc = mine_[k];
    piece_tensors_[k].mutable_grad() =
        reduced_ == Reduced::Slices
            ? buckets_[pc.bucket].reduced.narrow(0, pc.slice_offset, pc.numel)
            : whole_.at(reducer_of_[pc.flat]).narrow(0, pc.offset, pc.numel);
  }
}

void GradPartition::release_grads() {
  for (Tensor& t : piece_tensors_) t.mutable_grad() = Tensor();
  whole_.clear();
  reduced_ = Reduced::None;
}

// The updated pieces are packed into each bucket's slice buffer (the reduced gradients are
// spent), the buckets all-gathered into the reducer's buffers (idle until the next backward
// copies gradients in), and every parameter copied out of its bucket. All all-gathers are
// issued before the first wait, so copying bucket i out overlaps moving the later ones.
void GradPartition::sync_parameters(ProcessGroup& group) {
  if (world_ == 1) return;  // the pieces are the whole parameters
  NoGradGuard ng;
  for (size_t k = 0; k < mine_.size(); ++k) {
    const Piece& pc = mine_[k];
    buckets_[pc.bucket].reduced.narrow(0, pc.slice_offset, pc.numel).copy_(piece_tensors_[k]);
  }
  std::vector<std::shared_ptr<Work>> works;
  for (Bucket& b : buckets_) {
    const int64_t mine = std::clamp<int64_t>(b.numel - rank_ * b.slice, 0, b.slice);
    if (mine < b.slice) b.reduced.narrow(0, mine, b.slice - mine).zero_();  // the padding
    works.push_back(group.allgather_into_tensor(b.padded, b.reduced));
  }
  for (size_t bi = 0; bi < buckets_.size(); ++bi) {
    works[bi]->wait();
    const Bucket& b = buckets_[bi];
    for (size_t j = 0; j < b.params.size(); ++j) {
      Tensor p = reducer_.parameters()[b.params[j]];
      p.view({p.numel()}).copy_(b.padded.narrow(0, b.offsets[j], p.numel()));
    }
  }
}

}  // namespace weft::dist::detail
