// Internal: PyTorch's partial-overlap rule for in-place ops (ATen's assert_no_partial_overlap).
// An operand that is a different view of the very memory being written would be read while it
// is overwritten, in an order that differs between the CPU loops and the GPU's threads, so such
// calls are refused. As in PyTorch, only contiguous views are compared; the same view
// (x.mul_(x)) is fine, since each element is read before it is written.
#pragma once

#include "weft/error.h"
#include "weft/tensor.h"

namespace weft::detail {

inline void assert_no_partial_overlap(const Tensor& dst, const Tensor& src, const char* op) {
  if (!dst.defined() || !src.defined() || dst.impl()->storage != src.impl()->storage) return;
  if (!dst.is_contiguous() || !src.is_contiguous() || dst.numel() == 0 || src.numel() == 0) return;
  const int64_t d0 = dst.storage_offset() * (int64_t)itemsize(dst.dtype());
  const int64_t s0 = src.storage_offset() * (int64_t)itemsize(src.dtype());
  const int64_t d1 = d0 + (int64_t)dst.nbytes(), s1 = s0 + (int64_t)src.nbytes();
  const bool same = d0 == s0 && d1 == s1;
  WEFT_CHECK(same || d1 <= s0 || s1 <= d0, op,
             ": unsupported operation: some elements of the input ", src.str(),
             " and the written-to ", dst.str(),
             " refer to a single memory location. Please clone() the input first.");
}

}  // namespace weft::detail
