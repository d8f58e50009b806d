// ProcessGroupNCCL's collectives beyond allreduce/broadcast/allgather/reduce_scatter/barrier:
// ncclReduce, ncclAllGather and ncclReduceScatter on whole tensors, and gather, scatter, the
// all-to-alls and point-to-point ops as ncclSend/ncclRecv (grouped where there are several), all
// on the group's stream through nccl_run_op (nccl_impl.h).
#include <cuda_runtime.h>
#include <nccl.h>

#include "distributed/collectives.h"
#include "distributed/nccl/nccl_impl.h"

namespace weft::dist {

using detail::nccl_check_tensor;
using detail::nccl_dtype;
using detail::nccl_op;
using detail::nccl_run_op;

namespace {

std::string pre(const ProcessGroupNCCL::Impl& m, const std::string& op) {
  return "nccl " + op + " on " + m.where;
}

void check_op(const ProcessGroupNCCL::Impl& m, const std::string& op, ReduceOp rop) {
  WEFT_CHECK_DIST(!is_bitwise(rop), pre(m, op), ": NCCL has no ReduceOp ", to_string(rop),
                  " (as in PyTorch); use gloo or mpi");
}

char* at(const Tensor& t, int64_t elements) {
  return static_cast<char*>(t.device_ptr()) + elements * static_cast<int64_t>(itemsize(t.dtype()));
}

// Fails fast on the first call NCCL refuses (ncclInProgress is a non-blocking comm's success).
#define WEFT_NCCL_TRY(call)                                                  \
  do {                                                                       \
    const ncclResult_t weft_r_ = (call);                                     \
    if (weft_r_ != ncclSuccess && weft_r_ != ncclInProgress) return weft_r_; \
  } while (0)

}  // namespace

std::shared_ptr<Work> ProcessGroupNCCL::reduce(std::vector<Tensor> tensors, int root, ReduceOp op) {
  const std::string name = detail::rooted_name("reduce", root, op);
  WEFT_CHECK_DIST(tensors.size() == 1, pre(*impl_, name), ": takes one tensor, got ",
                  tensors.size());
  check_op(*impl_, name, op);
  nccl_check_tensor(*impl_, name, tensors[0], "tensor");
  detail::check_rank(pre(*impl_, name), root, size_, "root");
  const Tensor t = tensors[0];
  auto impl = impl_;
  return nccl_run_op(impl_, name, false, tensors, [&](ncclComm_t comm, cudaStream_t s) {
    impl->settle(ncclReduce(t.device_ptr(), t.device_ptr(), (size_t)t.numel(),
                            nccl_dtype(t.dtype()), nccl_op(op), root, comm, s),
                 name);
  });
}

std::shared_ptr<Work> ProcessGroupNCCL::gather(std::vector<Tensor> outputs, Tensor input,
                                               int root) {
  const std::string name = detail::rooted_name("gather", root);
  detail::check_rank(pre(*impl_, name), root, size_, "root");
  nccl_check_tensor(*impl_, name, input, "input");
  const bool is_root = rank_ == root;
  WEFT_CHECK_DIST(static_cast<int>(outputs.size()) == (is_root ? size_ : 0), pre(*impl_, name),
                  ": ", outputs.size(), " outputs; the root takes one per rank, others none");
  for (size_t i = 0; i < outputs.size(); ++i) {
    nccl_check_tensor(*impl_, name, outputs[i], "output " + std::to_string(i));
    detail::check_like(pre(*impl_, name), input, "the input", outputs[i],
                       "output " + std::to_string(i));
  }
  std::vector<Tensor> keep = outputs;
  keep.push_back(input);
  auto impl = impl_;
  const int size = size_;
  return nccl_run_op(impl_, name, false, keep, [&](ncclComm_t comm, cudaStream_t s) {
    impl->group(name, [&] {
      const size_t n = (size_t)input.numel();
      const auto dt = nccl_dtype(input.dtype());
      if (is_root)
        for (int r = 0; r < size; ++r)
          WEFT_NCCL_TRY(ncclRecv(outputs[r].device_ptr(), n, dt, r, comm, s));
      WEFT_NCCL_TRY(ncclSend(input.device_ptr(), n, dt, root, comm, s));
      return ncclSuccess;
    });
  });
}

std::shared_ptr<Work> ProcessGroupNCCL::scatter(Tensor output, std::vector<Tensor> inputs,
                                                int root) {
  const std::string name = detail::rooted_name("scatter", root);
  detail::check_rank(pre(*impl_, name), root, size_, "root");
  nccl_check_tensor(*impl_, name, output, "output");
  const bool is_root = rank_ == root;
  WEFT_CHECK_DIST(static_cast<int>(inputs.size()) == (is_root ? size_ : 0), pre(*impl_, name), ": ",
                  inputs.size(), " inputs; the root takes one per rank, others none");
  for (size_t i = 0; i < inputs.size(); ++i) {
    nccl_check_tensor(*impl_, name, inputs[i], "input " + std::to_string(i));
    detail::check_like(pre(*impl_, name), output, "the output", inputs[i],
                       "input " + std::to_string(i));
  }
  std::vector<Tensor> keep = inputs;
  keep.push_back(output);
  auto impl = impl_;
  const int size = size_;
  return nccl_run_op(impl_, name, false, keep, [&](ncclComm_t comm, cudaStream_t s) {
    impl->group(name, [&] {
      const size_t n = (size_t)output.numel();
      const auto dt = nccl_dtype(output.dtype());
      if (is_root)
        for (int r = 0; r < size; ++r)
          WEFT_NCCL_TRY(ncclSend(inputs[r].device_ptr(), n, dt, r, comm, s));
      WEFT_NCCL_TRY(ncclRecv(output.device_ptr(), n, dt, root, comm, s));
      return ncclSuccess;
    });
  });
}

std::shared_ptr<Work> ProcessGroupNCCL::allgather_into_tensor(Tensor output, Tensor input) {
  const std::string name = "allgather_into_tensor";
  nccl_check_tensor(*impl_, name, output, "output");
  nccl_check_tensor(*impl_, name, input, "input");
  detail::check_base_args(pre(*impl_, name), output, "output", input, "input", size_, false);
  auto impl = impl_;
  return nccl_run_op(impl_, name, false, {output, input}, [&](ncclComm_t comm, cudaStream_t s) {
    impl->settle(ncclAllGather(input.device_ptr(), output.device_ptr(), (size_t)input.numel(),
                               nccl_dtype(input.dtype()), comm, s),
                 name);
  });
}

std::shared_ptr<Work> ProcessGroupNCCL::reduce_scatter_tensor(Tensor output, Tensor input,
                                                              ReduceOp op) {
  const std::string name = "reduce_scatter_tensor(" + to_string(op) + ")";
  check_op(*impl_, name, op);
  nccl_check_tensor(*impl_, name, output, "output");
  nccl_check_tensor(*impl_, name, input, "input");
  detail::check_base_args(pre(*impl_, name), input, "input", output, "output", size_, false);
  auto impl = impl_;
  return nccl_run_op(impl_, name, false, {output, input}, [&](ncclComm_t comm, cudaStream_t s) {
    impl->settle(ncclReduceScatter(input.device_ptr(), output.device_ptr(), (size_t)output.numel(),
                                   nccl_dtype(output.dtype()), nccl_op(op), comm, s),
                 name);
  });
}

std::shared_ptr<Work> ProcessGroupNCCL::alltoall_base(Tensor output, Tensor input,
                                                      std::vector<int64_t> output_split_sizes,
                                                      std::vector<int64_t> input_split_sizes) {
  const std::string name = "alltoall_base";
  nccl_check_tensor(*impl_, name, output, "output");
  nccl_check_tensor(*impl_, name, input, "input");
  const auto c = detail::alltoall_counts(pre(*impl_, name), output, input, output_split_sizes,
                                         input_split_sizes, size_, false);
  auto impl = impl_;
  const int size = size_;
  return nccl_run_op(impl_, name, false, {output, input}, [&](ncclComm_t comm, cudaStream_t s) {
    impl->group(name, [&] {
      const auto dt = nccl_dtype(input.dtype());
      for (int r = 0; r < size; ++r) {
        if (c.send[r] > 0)
          WEFT_NCCL_TRY(ncclSend(at(input, c.send_offsets[r]), (size_t)c.send[r], dt, r, comm, s));
        if (c.recv[r] > 0)
          WEFT_NCCL_TRY(ncclRecv(at(output, c.recv_offsets[r]), (size_t)c.recv[r], dt, r, comm, s));
      }
      return ncclSuccess;
    });
  });
}

std::shared_ptr<Work> ProcessGroupNCCL::alltoall(std::vector<Tensor> outputs,
                                                 std::vector<Tensor> inputs) {
  const std::string name = "alltoall";
  WEFT_CHECK_DIST(
      static_cast<int>(outputs.size()) == size_ && static_cast<int>(inputs.size()) == size_,
      pre(*impl_, name), ": ", outputs.size(), " outputs and ", inputs.size(),
      " inputs for a group of size ", size_, " (one per rank each)");
  for (int r = 0; r < size_; ++r) {
    nccl_check_tensor(*impl_, name, outputs[r], "output " + std::to_string(r));
    nccl_check_tensor(*impl_, name, inputs[r], "input " + std::to_string(r));
    WEFT_CHECK_DIST(
        outputs[r].dtype() == inputs[0].dtype() && inputs[r].dtype() == inputs[0].dtype(),
        pre(*impl_, name), ": every tensor must have input 0's dtype");
  }
  std::vector<Tensor> keep = outputs;
  keep.insert(keep.end(), inputs.begin(), inputs.end());
  auto impl = impl_;
  const int size = size_;
  return nccl_run_op(impl_, name, false, keep, [&](ncclComm_t comm, cudaStream_t s) {
    impl->group(name, [&] {
      const auto dt = nccl_dtype(inputs[0].dtype());
      for (int r = 0; r < size; ++r) {
        if (inputs[r].numel() > 0)
          WEFT_NCCL_TRY(
              ncclSend(inputs[r].device_ptr(), (size_t)inputs[r].numel(), dt, r, comm, s));
        if (outputs[r].numel() > 0)
          WEFT_NCCL_TRY(
              ncclRecv(outputs[r].device_ptr(), (size_t)outputs[r].numel(), dt, r, comm, s));
      }
      return ncclSuccess;
    });
  });
}

namespace {

std::shared_ptr<Work> p2p(const std::shared_ptr<ProcessGroupNCCL::Impl>& impl, bool is_send,
                          const std::vector<Tensor>& tensors, int peer, int tag) {
  std::string name = is_send ? "send(to rank " : "recv(from rank ";
  name.append(std::to_string(peer)).append(", tag ").append(std::to_string(tag)).append(")");
  WEFT_CHECK_DIST(tensors.size() == 1, pre(*impl, name), ": takes exactly one tensor, got ",
                  tensors.size());
  nccl_check_tensor(*impl, name, tensors[0], "tensor");
  detail::check_rank(pre(*impl, name), peer, impl->size, "peer");
  WEFT_CHECK_DIST(peer != impl->rank, pre(*impl, name), ": peer ", peer, " is this rank itself");
  const Tensor t = tensors[0];
  return nccl_run_op(impl, name, false, {t}, [&](ncclComm_t comm, cudaStream_t s) {
    impl->group(name, [&] {
      const size_t n = (size_t)t.numel();
      return is_send ? ncclSend(t.device_ptr(), n, nccl_dtype(t.dtype()), peer, comm, s)
                     : ncclRecv(t.device_ptr(), n, nccl_dtype(t.dtype()), peer, comm, s);
    });
  });
}

}  // namespace

std::shared_ptr<Work> ProcessGroupNCCL::send(std::vector<Tensor> tensors, int dst, int tag) {
  return p2p(impl_, true, tensors, dst, tag);
}

std::shared_ptr<Work> ProcessGroupNCCL::recv(std::vector<Tensor> tensors, int src, int tag) {
  return p2p(impl_, false, tensors, src, tag);
}

}  // namespace weft::dist
