// Internal to the process-group backends (Gloo, MPI, NCCL): what they share about a collective.
// Its name in messages, one spelling for every backend ("allreduce(SUM)" while the arguments are
// checked, "allreduce(SUM, float32 [4], ...)" once they name the data); the CPU backends'
// argument checks, which throw DistError naming the op and the offending tensor; AVG as SUM then
// a division.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "weft/distributed/process_group.h"

namespace weft::dist::detail {

std::string shape_dtype_str(const Tensor& t);  // "float32 [2, 3]"

std::string allreduce_name(ReduceOp op);  // "allreduce(SUM)"
// "allreduce(SUM, float32 [4])", ", ..." added when there are several tensors.
std::string allreduce_name(ReduceOp op, const std::vector<Tensor>& tensors);
std::string broadcast_name(int root);             // "broadcast(root 0)"
std::string allgather_name(const Tensor& input);  // "allgather(float32 [4])"; plain: "allgather"
std::string reduce_scatter_name(ReduceOp op);     // "reduce_scatter(SUM)"
std::string reduce_scatter_name(ReduceOp op, const Tensor& output);  // "reduce_scatter(SUM, ...)"

// Throws DistError "<op>: <which> ..." unless t is a defined, contiguous CPU float32/int64 tensor.
void check_cpu_tensor(const std::string& op, const Tensor& t, const std::string& which);
// allreduce_into's tensors: defined, contiguous, one dtype and size, not overlapping.
void check_allreduce_into(const std::string& op, const Tensor& out, const Tensor& in);
// Throws DistError unless t has ref's dtype and number of elements.
void check_like(const std::string& op, const Tensor& ref, const std::string& ref_name,
                const Tensor& t, const std::string& which);
// allgather's arguments: a valid input and one output like it per rank of the group.
void check_allgather_args(const std::string& op, const std::vector<Tensor>& outputs,
                          const Tensor& input, int group_size);
// reduce_scatter's arguments: a valid output and one input like it per rank of the group.
void check_reduce_scatter_args(const std::string& op, const Tensor& output,
                               const std::vector<Tensor>& inputs, int group_size);
// "<op>(root 1)", "<op>(SUM, root 1)": reduce, gather and scatter as messages name them.
std::string rooted_name(const std::string& op, int root, std::optional<ReduceOp> rop = {});
// Throws DistError "<op>: <which> is not a rank of the group of size N" unless 0 <= r < size.
void check_rank(const std::string& op, int r, int group_size, const std::string& which);
// BAND/BOR/BXOR on a floating dtype: DistError naming the op and the dtype (as PyTorch refuses).
void check_reduce_dtype(const std::string& op, ReduceOp rop, const Tensor& t);
// allgather_into_tensor / reduce_scatter_tensor: valid tensors of one dtype, and the big one
// holding exactly group_size times the small one's elements.
// `cpu`: also check_cpu_tensor both (NCCL checks its device tensors itself).
void check_base_args(const std::string& op, const Tensor& big, const std::string& big_name,
                     const Tensor& small, const std::string& small_name, int group_size,
                     bool cpu = true);
// alltoall_base's element counts per rank, checked: input rows to each rank and output rows
// from each (an empty list splits dim 0 evenly); DistError naming the list that does not fit.
struct AlltoallCounts {
  std::vector<int64_t> send, recv;  // elements, per rank
  std::vector<int64_t> send_offsets, recv_offsets;
};
AlltoallCounts alltoall_counts(const std::string& op, const Tensor& output, const Tensor& input,
                               const std::vector<int64_t>& output_splits,
                               const std::vector<int64_t>& input_splits, int group_size,
                               bool cpu = true);
// alltoall's lists: group_size valid tensors each, one dtype throughout.
void check_alltoall_args(const std::string& op, const std::vector<Tensor>& outputs,
                         const std::vector<Tensor>& inputs, int group_size);
// gather's/scatter's lists: on root group_size tensors like `one`, elsewhere none.
void check_rooted_list(const std::string& op, const std::vector<Tensor>& list,
                       const std::string& list_name, const Tensor& one, const std::string& one_name,
                       bool is_root, int group_size);
// send/recv: exactly one valid tensor, a peer that is another rank of the group, tag >= 0.
void check_p2p_args(const std::string& op, const std::vector<Tensor>& tensors, int peer, int tag,
                    int rank, int group_size);

// AVG as SUM then this: float32 divides, int64 divides with truncation (as NCCL's ncclAvg).
void divide_by(void* data, DType dtype, size_t n, int divisor);

}  // namespace weft::dist::detail
