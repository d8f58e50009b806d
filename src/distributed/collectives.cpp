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
