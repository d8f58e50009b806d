// Internal to the process-group backends (Gloo, MPI, NCCL): what they share about a collective.
// Its name in messages, one spelling for every backend ("allreduce(SUM)" while the arguments are
// checked, "allreduce(SUM, float32 [4], ...)" once they name the data); the CPU backends'
// argument checks, which throw DistError naming the op and the offending tensor; AVG as SUM then
// a division.
#pragma once

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
// Throws DistError unless t has ref's dtype and number of elements.
void check_like(const std::string& op, const Tensor& ref, const std::string& ref_name,
                const Tensor& t, const std::string& which);
// allgather's arguments: a valid input and one output like it per rank of the group.
void check_allgather_args(const std::string& op, const std::vector<Tensor>& outputs,
                          const Tensor& input, int group_size);
// reduce_scatter's arguments: a valid output and one input like it per rank of the group.
void check_reduce_scatter_args(const std::string& op, const Tensor& output,
                               const std::vector<Tensor>& inputs, int group_size);
// AVG as SUM then this: float32 divides, int64 divides with truncation (as NCCL's ncclAvg).
void divide_by(void* data, DType dtype, size_t n, int divisor);

}  // namespace weft::dist::detail
