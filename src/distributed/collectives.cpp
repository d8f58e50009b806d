#include "distributed/collectives.h"

namespace weft::dist::detail {

std::string shape_dtype_str(const Tensor& t) {
  return std::string(dtype_name(t.dtype())) + " " + shape_str(t.sizes());
}

std::string allreduce_name(ReduceOp op) { return "allreduce(" + to_string(op) + ")"; }

std::string allreduce_name(ReduceOp op, const std::vector<Tensor>& tensors) {
  return "allreduce(" + to_string(op) + ", " + shape_dtype_str(tensors[0]) +
         (tensors.size() > 1 ? ", ..." : "") + ")";
}

std::string broadcast_name(int root) { return "broadcast(root " + std::to_string(root) + ")"; }

std::string allgather_name(const Tensor& input) {
  return "allgather(" + shape_dtype_str(input) + ")";
}

std::string reduce_scatter_name(ReduceOp op) { return "reduce_scatter(" + to_string(op) + ")"; }

std::string reduce_scatter_name(ReduceOp op, const Tensor& output) {
  return "reduce_scatter(" + to_string(op) + ", " + shape_dtype_str(output) + ")";
}

void check_cpu_tensor(const std::string& op, const Tensor& t, const std::string& which) {
  WEFT_CHECK_DIST(t.defined(), op, ": ", which, " is an undefined tensor");
  WEFT_CHECK_DIST(t.device().is_cpu(), op, ": ", which, " (", t.str(), ") is on ", t.device().str(),
                  "; this backend takes CPU tensors");
  WEFT_CHECK_DIST(t.dtype() == kFloat32 || t.dtype() == kInt64, op, ": ", which, " has dtype ",
                  dtype_name(t.dtype()), "; supported: float32, int64");
  WEFT_CHECK_DIST(t.is_contiguous(), op, ": ", which, " (", shape_dtype_str(t), ", strides ",
                  shape_str(t.strides()), ") is not contiguous; call .contiguous() first");
}

void check_allreduce_into(const std::string& op, const Tensor& out, const Tensor& in) {
  WEFT_CHECK_DIST(out.defined() && in.defined(), op, ": undefined output or input");
  WEFT_CHECK_DIST(out.dtype() == in.dtype() && out.numel() == in.numel(), op, ": output (",
                  out.str(), ") does not match input (", in.str(), "): dtype and size must agree");
  WEFT_CHECK_DIST(out.is_contiguous() && in.is_contiguous(), op,
                  ": output and input must be "
                  "contiguous");
  const auto* o = static_cast<const char*>(out.raw_data());
  const auto* i = static_cast<const char*>(in.raw_data());
  WEFT_CHECK_DIST(o + out.nbytes() <= i || i + in.nbytes() <= o || in.numel() == 0, op,
                  ": output and input overlap");
}

void check_like(const std::string& op, const Tensor& ref, const std::string& ref_name,
                const Tensor& t, const std::string& which) {
  WEFT_CHECK_DIST(t.dtype() == ref.dtype() && t.numel() == ref.numel(), op, ": ", which, " (",
                  shape_dtype_str(t), ") does not match ", ref_name, " (", shape_dtype_str(ref),
                  "): dtype and size must agree");
}

void check_allgather_args(const std::string& op, const std::vector<Tensor>& outputs,
                          const Tensor& input, int group_size) {
  check_cpu_tensor(op, input, "input");
  WEFT_CHECK_DIST(static_cast<int>(outputs.size()) == group_size, op, ": ", outputs.size(),
                  " output tensors for a group of size ", group_size);
  for (size_t i = 0; i < outputs.size(); ++i) {
    const std::string which = "output " + std::to_string(i);
    check_cpu_tensor(op, outputs[i], which);
    check_like(op, input, "the input", outputs[i], which);
  }
}

void check_reduce_scatter_args(const std::string& op, const Tensor& output,
                               const std::vector<Tensor>& inputs, int group_size) {
  check_cpu_tensor(op, output, "output");
  WEFT_CHECK_DIST(static_cast<int>(inputs.size()) == group_size, op, ": ", inputs.size(),
                  " input tensors for a group of size ", group_size);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::string which = "input " + std::to_string(i);
    check_cpu_tensor(op, inputs[i], which);
    check_like(op, output, "the output", inputs[i], which);
  }
}

void divide_by(void* data, DType dtype, size_t n, int divisor) {
  if (dtype == kFloat32) {
    float* p = static_cast<float*>(data);
    const float d = static_cast<float>(divisor);
    for (size_t i = 0; i < n; ++i) p[i] /= d;
  } else {
    int64_t* p = static_cast<int64_t*>(data);
    for (size_t i = 0; i < n; ++i) p[i] /= divisor;
  }
}

}  // namespace weft::dist::detail

namespace weft::dist::detail {

std::string rooted_name(const std::string& op, int root, std::optional<ReduceOp> rop) {
  std::string s = op + "(";
  if (rop) s.append(to_string(*rop)).append(", ");
  return s.append("root ").append(std::to_string(root)).append(")");
}

void check_rank(const std::string& op, int r, int group_size, const std::string& which) {
  WEFT_CHECK_DIST(r >= 0 && r < group_size, op, ": ", which, " ", r,
                  " is not a rank of the group of size ", group_size);
}

void check_reduce_dtype(const std::string& op, ReduceOp rop, const Tensor& t) {
  WEFT_CHECK_DIST(!is_bitwise(rop) || !t.defined() || !is_floating_point(t.dtype()), op,
                  ": ReduceOp ", to_string(rop), " needs an integer tensor, got ",
                  dtype_name(t.dtype()), " (bitwise ops are undefined on floating point)");
}

void check_base_args(const std::string& op, const Tensor& big, const std::string& big_name,
                     const Tensor& small, const std::string& small_name, int group_size, bool cpu) {
  if (cpu) {
    check_cpu_tensor(op, big, big_name);
    check_cpu_tensor(op, small, small_name);
  }
  WEFT_CHECK_DIST(big.dtype() == small.dtype(), op, ": ", big_name, " (", shape_dtype_str(big),
                  ") and ", small_name, " (", shape_dtype_str(small), ") differ in dtype");
  WEFT_CHECK_DIST(big.numel() == small.numel() * group_size, op, ": ", big_name, " (",
                  shape_dtype_str(big), ") must hold world size (", group_size, ") times the ",
                  small_name, "'s ", small.numel(), " elements, i.e. ", small.numel() * group_size,
                  "; it has ", big.numel());
}

namespace {

// Elements per rank from row splits of t's dim 0 (even when splits is empty).
std::vector<int64_t> split_counts(const std::string& op, const Tensor& t, const std::string& name,
                                  const std::vector<int64_t>& splits, int group_size) {
  const int64_t rows = t.dim() == 0 ? 1 : t.sizes()[0];
  const int64_t row = rows == 0 ? 0 : t.numel() / rows;
  std::vector<int64_t> counts(static_cast<size_t>(group_size));
  if (splits.empty()) {
    WEFT_CHECK_DIST(rows % group_size == 0, op, ": ", name, " (", shape_dtype_str(t), ") has ",
                    rows, " rows, not divisible by the group size ", group_size,
                    "; pass split sizes");
    for (auto& c : counts) c = rows / group_size * row;
    return counts;
  }
  WEFT_CHECK_DIST(static_cast<int>(splits.size()) == group_size, op, ": ", name,
                  "_split_sizes has ", splits.size(), " entries for a group of size ", group_size);
  int64_t total = 0;
  for (size_t j = 0; j < splits.size(); ++j) {
    WEFT_CHECK_DIST(splits[j] >= 0, op, ": ", name, "_split_sizes[", j, "] is negative (",
                    splits[j], ")");
    total += splits[j];
    counts[j] = splits[j] * row;
  }
  WEFT_CHECK_DIST(total == rows, op, ": ", name, "_split_sizes sum to ", total, " but ", name, " (",
                  shape_dtype_str(t), ") has ", rows, " rows");
  return counts;
}

std::vector<int64_t> offsets_of(const std::vector<int64_t>& counts) {
  std::vector<int64_t> o(counts.size(), 0);
  for (size_t j = 1; j < counts.size(); ++j) o[j] = o[j - 1] + counts[j - 1];
  return o;
}

}  // namespace

AlltoallCounts alltoall_counts(const std::string& op, const Tensor& output, const Tensor& input,
                               const std::vector<int64_t>& output_splits,
                               const std::vector<int64_t>& input_splits, int group_size, bool cpu) {
  if (cpu) {
    check_cpu_tensor(op, output, "output");
    check_cpu_tensor(op, input, "input");
  }
  WEFT_CHECK_DIST(output.dtype() == input.dtype(), op, ": output (", shape_dtype_str(output),
                  ") and input (", shape_dtype_str(input), ") differ in dtype");
  AlltoallCounts c;
  c.send = split_counts(op, input, "input", input_splits, group_size);
  c.recv = split_counts(op, output, "output", output_splits, group_size);
  c.send_offsets = offsets_of(c.send);
  c.recv_offsets = offsets_of(c.recv);
  return c;
}

void check_alltoall_args(const std::string& op, const std::vector<Tensor>& outputs,
                         const std::vector<Tensor>& inputs, int group_size) {
  WEFT_CHECK_DIST(static_cast<int>(outputs.size()) == group_size &&
                      static_cast<int>(inputs.size()) == group_size,
                  op, ": ", outputs.size(), " output and ", inputs.size(),
                  " input tensors for a group of size ", group_size, " (one per rank each)");
  for (int j = 0; j < group_size; ++j) {
    check_cpu_tensor(op, outputs[j], "output " + std::to_string(j));
    check_cpu_tensor(op, inputs[j], "input " + std::to_string(j));
    WEFT_CHECK_DIST(
        outputs[j].dtype() == inputs[0].dtype() && inputs[j].dtype() == inputs[0].dtype(), op,
        ": every tensor must have input 0's dtype ", dtype_name(inputs[0].dtype()), "; output ", j,
        " is ", dtype_name(outputs[j].dtype()), ", input ", j, " is ",
        dtype_name(inputs[j].dtype()));
  }
}

void check_rooted_list(const std::string& op, const std::vector<Tensor>& list,
                       const std::string& list_name, const Tensor& one, const std::string& one_name,
                       bool is_root, int group_size) {
  check_cpu_tensor(op, one, one_name);
  if (!is_root) {
    WEFT_CHECK_DIST(list.empty(), op, ": ", list_name, " must be empty on a non-root rank (it has ",
                    list.size(), " tensors)");
    return;
  }
  WEFT_CHECK_DIST(static_cast<int>(list.size()) == group_size, op, ": ", list_name, " has ",
                  list.size(), " tensors on the root; the group has ", group_size, " ranks");
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string which = list_name + " " + std::to_string(i);
    check_cpu_tensor(op, list[i], which);
    check_like(op, one, "the " + one_name, list[i], which);
  }
}

void check_p2p_args(const std::string& op, const std::vector<Tensor>& tensors, int peer, int tag,
                    int rank, int group_size) {
  WEFT_CHECK_DIST(tensors.size() == 1, op, ": takes exactly one tensor, got ", tensors.size());
  check_cpu_tensor(op, tensors[0], "tensor");
  check_rank(op, peer, group_size, "peer");
  WEFT_CHECK_DIST(peer != rank, op, ": peer ", peer, " is this rank itself");
  WEFT_CHECK_DIST(tag >= 0, op, ": tag ", tag, " is negative");
}

}  // namespace weft::dist::detail
