// Internal: what a collective was, in a fixed-size form: the records a CollectiveLog keeps for
// desync reports, and the fingerprints (int64s: op, ReduceOp, root, dtype, tensor count, elements,
// bytes, first tensor's ndim and shape) ranks compare under WEFT_DISTRIBUTED_DEBUG=DETAIL.
// Guarantees: from_fingerprint(fingerprint()) describes the same op, and two records compare
// equal exactly when their fingerprints do.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "weft/distributed/process_group.h"

namespace weft::dist::detail {

enum class OpKind : int8_t {
  NONE,
  ALLREDUCE,
  BROADCAST,
  ALLGATHER,
  REDUCE_SCATTER,
  BARRIER,
  REDUCE,
  GATHER,
  SCATTER,
  ALLGATHER_INTO_TENSOR,
  REDUCE_SCATTER_TENSOR,
  ALLTOALL_BASE,
  ALLTOALL
};

struct OpRecord {
  static constexpr int kMaxDims = 6;
  static constexpr int kFingerprintLen = 9 + kMaxDims;

  OpKind kind = OpKind::NONE;
  int8_t reduce = -1;  // ReduceOp, or -1
  int8_t dtype = -1;   // DType of the first tensor, or -1 (none, undefined)
  int8_t ndim = 0;     // of the first tensor
  int32_t root = -1;   // broadcast's, reduce's, gather's or scatter's root, or -1
  int32_t ntensors = 0;
  int64_t numel = 0;  // elements over all the op's tensors on this rank's side (see of())
  int64_t bytes = 0;
  std::array<int64_t, kMaxDims> shape{};  // first kMaxDims sizes of the first tensor

  // `tensors` are the data the op reduces or sends: allreduce's and broadcast's list,
  // allgather's input, reduce_scatter's output; what every rank has alike for the others
  // (reduce's tensor, gather's input, scatter's output, the *_tensor ops' smaller tensor;
  // alltoall's dtype only, since ranks' splits differ).
  static OpRecord of(OpKind kind, const std::vector<Tensor>& tensors, int reduce = -1,
                     int root = -1);

  // "allreduce(SUM, float32 (4, 3))", "broadcast(root 1, int64 (2,), 2 tensors)", "barrier".
  std::string describe() const;
  // describe() and the payload: "allreduce(SUM, float32 (1000,)), 3.9 KiB".
  std::string describe_with_size() const;

  std::array<int64_t, kFingerprintLen> fingerprint(int64_t seq) const;
  static OpRecord from_fingerprint(const int64_t* fp);  // fp[1] is the sequence number
  bool operator==(const OpRecord& o) const { return fingerprint(0) == o.fingerprint(0); }
};

std::string format_bytes(int64_t bytes);  // "512 B", "3.9 KiB", "84.0 MiB"

}  // namespace weft::dist::detail
