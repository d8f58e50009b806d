// ProcessGroupNCCL (see the header): communicator setup through the store with a non-blocking
// NCCL config (so that setup has a timeout), and the collectives, on a dedicated stream ordered
// against the caller's stream with events. The watchdog thread that completes their Works and
// aborts the communicator when an op overruns the timeout is in nccl_watchdog.cpp.
#include "weft/distributed/nccl/process_group_nccl.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>

#include "cuda/cuda_check.h"
#include "distributed/collectives.h"
#include "distributed/nccl/nccl_impl.h"
#include "weft/autograd.h"
#include "weft/cuda.h"
#include "weft/ops.h"

namespace weft::dist {

using detail::nccl_message;
using detail::WorkNCCL;

namespace {
using Clock = std::chrono::steady_clock;
}  // namespace

ncclDataType_t detail::nccl_dtype(DType t) {
  switch (t) {
    case DType::Float32:
      return ncclFloat32;
    case DType::Int64:
      return ncclInt64;
    case DType::Float16:
      return ncclHalf;
    case DType::BFloat16:
      return ncclBfloat16;
  }
  return ncclFloat32;
}

ncclRedOp_t detail::nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::SUM:
      return ncclSum;
    case ReduceOp::AVG:
      return ncclAvg;
    case ReduceOp::MAX:
      return ncclMax;
    case ReduceOp::MIN:
      return ncclMin;
    case ReduceOp::PRODUCT:
      return ncclProd;
    case ReduceOp::BAND:
    case ReduceOp::BOR:
    case ReduceOp::BXOR:
      break;  // refused at the call (check_nccl_op)
  }
  return ncclSum;
}

ProcessGroupNCCL::ProcessGroupNCCL(std::shared_ptr<Store> store, int rank, int size,
                                   NCCLOptions options)
    : ProcessGroup(rank, size), impl_(std::make_shared<Impl>()) {
  timeout_ = options.timeout;
  Impl& m = *impl_;
  m.rank = rank;
  m.size = size;
  m.timeout = options.timeout;
  const std::string who = "rank " + std::to_string(rank) + " of " + std::to_string(size);
  WEFT_CHECK_DIST(size >= 1 && rank >= 0 && rank < size, "ProcessGroupNCCL: rank ", rank,
                  " is outside a group of size ", size);
  WEFT_CHECK(store, "ProcessGroupNCCL: null store");
  const int ndev = cuda::device_count();
  WEFT_CHECK_DIST(ndev != 0, "ProcessGroupNCCL: ", who, ": no CUDA device is available");
  int dev = options.device;
  if (dev < 0) {
    const Device cur = current_device();
    if (cur.is_cuda()) {
      dev = cur.index;
    } else {
      const char* lr = std::getenv("LOCAL_RANK");
      dev = (lr ? std::atoi(lr) : 0) % ndev;
    }
  }
  WEFT_CHECK_DIST(dev < ndev, "ProcessGroupNCCL: ", who, " asks for cuda:", dev, " but only ", ndev,
                  " devices exist");
  m.device = dev;
  m.where = who + " (cuda:" + std::to_string(dev) + ")";

  // The unique id travels through the store: rank 0 creates it, the others wait for it.
  ncclUniqueId id;
  if (rank == 0) {
    const ncclResult_t r = ncclGetUniqueId(&id);
    WEFT_CHECK_DIST(r == ncclSuccess, "ProcessGroupNCCL: ", m.where,
                    ": ncclGetUniqueId failed: ", nccl_message(r, nullptr));
    store->set("nccl/unique_id", std::vector<uint8_t>(reinterpret_cast<uint8_t*>(&id),
                                                      reinterpret_cast<uint8_t*>(&id) + sizeof id));
  } else {
    const std::vector<uint8_t> v = store->get("nccl/unique_id");
    WEFT_CHECK_DIST(v.size() == sizeof id, "ProcessGroupNCCL: ", m.where,
                    ": the store's NCCL id has ", v.size(), " bytes, expected ", sizeof id);
    std::memcpy(&id, v.data(), sizeof id);
  }

  cuda::detail::DeviceScope scope(dev);
  WEFT_CUDA_CHECK(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
  // Non-blocking communicator: setup (which waits for every rank) can be given up on.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclResult_t r = ncclCommInitRankConfig(&m.comm, size, id, rank, &config);
  const auto deadline = Clock::now() + options.timeout;
  while (r == ncclInProgress && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ncclCommGetAsyncError(m.comm, &r);
  }
  if (r != ncclSuccess) {
    const std::string why =
        r == ncclInProgress
            ? "not every rank joined within " + std::to_string(options.timeout.count()) + " ms"
            : nccl_message(r, m.comm);
    if (m.comm) ncclCommAbort(m.comm);
    cudaStreamDestroy(m.stream);
    WEFT_DIST_ERROR("ProcessGroupNCCL: ", m.where, " could not set up its communicator: ", why);
  }
  impl_->watchdog = std::thread([impl = impl_.get()] { impl->watch(); });
}

ProcessGroupNCCL::~ProcessGroupNCCL() {
  Impl& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    m.stop = true;
  }
  m.cv.notify_all();
  if (m.watchdog.joinable()) m.watchdog.join();  // returns once no op is pending (or all failed)
  // Not a DeviceScope, which throws: a destructor may run after CUDA's own teardown at exit
  // (a default group never destroyed), where every call fails; errors are ignored then.
  int prev = -1;
  const bool switched = cudaGetDevice(&prev) == cudaSuccess && prev != m.device &&
                        cudaSetDevice(m.device) == cudaSuccess;
  // A Work still held elsewhere may call wait(timeout) and abort: the comm goes under the locks.
  std::lock_guard<std::mutex> issue_lock(m.issue_mu);
  std::lock_guard<std::mutex> lock(m.mu);
  if (m.comm) {
    // A non-blocking communicator is finalized (flushing its ops) before it is destroyed.
    ncclResult_t r = ncclCommFinalize(m.comm);
    const auto deadline = Clock::now() + m.timeout;
    while (r == ncclInProgress && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      ncclCommGetAsyncError(m.comm, &r);
    }
    if (r == ncclSuccess)
      ncclCommDestroy(m.comm);
    else
      ncclCommAbort(m.comm);
    m.comm = nullptr;
    m.broken = "the process group was destroyed";
  }
  // m.stream is kept, not destroyed: tensors the collectives used may outlive the group, and
  // when freed the caching allocator records an event on every stream that used them.
  if (switched && cuda::detail::entered(prev)) cudaSetDevice(prev);
}

int ProcessGroupNCCL::device() const { return impl_->device; }

// Checks an argument tensor: defined, on the group's device, contiguous, a dtype NCCL reduces.
void detail::nccl_check_tensor(const ProcessGroupNCCL::Impl& m, const std::string& op,
                               const Tensor& t, const std::string& which) {
  const std::string pre = "nccl " + op + " on " + m.where + ": " + which;
  WEFT_CHECK_DIST(t.defined(), pre, " is an undefined tensor");
  WEFT_CHECK_DIST(t.device() == Device::CUDA(m.device), pre, " (", t.str(), ") is on ",
                  t.device().str(), "; this group's tensors live on cuda:", m.device);
  WEFT_CHECK_DIST(t.is_contiguous(), pre, " (", detail::shape_dtype_str(t), ", strides ",
                  shape_str(t.strides()), ") is not contiguous; call .contiguous() first");
}

static void check_like(const ProcessGroupNCCL::Impl& m, const std::string& op, const Tensor& ref,
                       const Tensor& t, const std::string& which) {
  WEFT_CHECK_DIST(t.dtype() == ref.dtype() && t.numel() == ref.numel(), "nccl ", op, " on ",
                  m.where, ": ", which, " (", detail::shape_dtype_str(t), ") does not match (",
                  detail::shape_dtype_str(ref), "): dtype and size must agree");
}

// Runs `issue` (the NCCL calls, on m.stream) after the caller's queued work, records the end
// event and hands the Work to the watchdog.
std::shared_ptr<Work> detail::nccl_run_op(
    const std::shared_ptr<ProcessGroupNCCL::Impl>& impl, const std::string& what,
    bool host_blocking, std::vector<Tensor> keep,
    const std::function<void(ncclComm_t, cudaStream_t)>& issue) {
  ProcessGroupNCCL::Impl& m = *impl;
  std::lock_guard<std::mutex> issue_lock(m.issue_mu);
  {
    std::lock_guard<std::mutex> lock(m.mu);
    WEFT_CHECK_DIST(m.broken.empty(), "weft.dist: nccl ", what, " on ", m.where,
                    " refused: the communicator was aborted earlier: ", m.broken);
  }
  cuda::detail::DeviceScope scope(m.device);
  const cuda::Stream nccl(m.device, m.stream);
  cuda::Event ready;
  ready.record(cuda::current_stream(m.device));
  ready.block(nccl);
  // The caching allocator must not hand these blocks out again before the NCCL stream is done.
  for (const Tensor& t : keep)
    if (t.defined() && t.numel() > 0) cuda::record_stream(t, nccl);
  auto work = std::make_shared<WorkNCCL>(impl, what, host_blocking, std::move(keep));
  issue(m.comm, m.stream);
  work->record_end();
  {
    std::lock_guard<std::mutex> lock(m.mu);
    m.pending.push_back(work);
  }
  m.cv.notify_all();
  return work;
}

std::shared_ptr<Work> ProcessGroupNCCL::allreduce(std::vector<Tensor> tensors, ReduceOp op) {
  const std::string name = detail::allreduce_name(op);
  WEFT_CHECK_DIST(!tensors.empty(), "weft.dist: ", name, " on ", impl_->where, ": no tensors");
  WEFT_CHECK_DIST(!is_bitwise(op), "weft.dist: nccl ", name, " on ", impl_->where,
                  ": NCCL has no bitwise reductions (as in PyTorch); use gloo or mpi");
  for (size_t i = 0; i < tensors.size(); ++i)
    detail::nccl_check_tensor(*impl_, name, tensors[i], "tensor " + std::to_string(i));
  const std::string what = detail::allreduce_name(op, tensors);
  auto impl = impl_;
  return detail::nccl_run_op(impl_, what, false, tensors, [&](ncclComm_t comm, cudaStream_t s) {
    impl->group(what, [&] {
      for (const Tensor& t : tensors) {
        const ncclResult_t r =
            ncclAllReduce(t.device_ptr(), t.device_ptr(), (size_t)t.numel(),
                          detail::nccl_dtype(t.dtype()), detail::nccl_op(op), comm, s);
        if (r != ncclSuccess && r != ncclInProgress) return r;
      }
      return ncclSuccess;
    });
  });
}

std::shared_ptr<Work> ProcessGroupNCCL::broadcast(std::vector<Tensor> tensors, int root) {
  const std::string name = detail::broadcast_name(root);
  WEFT_CHECK_DIST(!tensors.empty(), "weft.dist: ", name, " on ", impl_->where, ": no tensors");
  WEFT_CHECK_DIST(root >= 0 && root < size_, "weft.dist: ", name, " on ", impl_->where,
                  ": root is not a rank of the group");
  for (size_t i = 0; i < tensors.size(); ++i)
    detail::nccl_check_tensor(*impl_, name, tensors[i], "tensor " + std::to_string(i));
  auto impl = impl_;
  return detail::nccl_run_op(impl_, name, false, tensors, [&](ncclComm_t comm, cudaStream_t s) {
    impl->group(name, [&] {
      for (const Tensor& t : tensors) {
        const ncclResult_t r = ncclBroadcast(t.device_ptr(), t.device_ptr(), (size_t)t.numel(),
                                             detail::nccl_dtype(t.dtype()), root, comm, s);
        if (r != ncclSuccess && r != ncclInProgress) return r;
      }
      return ncclSuccess;
    });
  });
}

std::shared_ptr<Work> ProcessGroupNCCL::allgather(std::vector<Tensor> outputs, Tensor input) {
  const std::string name = "allgather";
  detail::nccl_check_tensor(*impl_, name, input, "input");
  WEFT_CHECK_DIST((int)outputs.size() == size_, "weft.dist: ", name, " on ", impl_->where, ": ",
                  outputs.size(), " output tensors for a group of size ", size_);
  for (size_t i = 0; i < outputs.size(); ++i) {
    detail::nccl_check_tensor(*impl_, name, outputs[i], "output " + std::to_string(i));
    check_like(*impl_, name, input, outputs[i], "output " + std::to_string(i));
  }
  const std::string what = detail::allgather_name(input);
  const int64_t n = input.numel();
  // NCCL gathers into one buffer; the slices are then copied out on the NCCL stream.
  Tensor flat;
  {
    cuda::StreamGuard g(cuda::Stream(impl_->device, impl_->stream));
    flat = make_empty({(int64_t)outputs.size() * n}, input.dtype(), input.device());
  }
  std::vector<Tensor> keep = outputs;
  keep.push_back(input);
  keep.push_back(flat);
  auto impl = impl_;
  return detail::nccl_run_op(impl_, what, false, keep, [&](ncclComm_t comm, cudaStream_t s) {
    impl->settle(ncclAllGather(input.device_ptr(), flat.device_ptr(), (size_t)n,
                               detail::nccl_dtype(input.dtype()), comm, s),
                 what);
    cuda::StreamGuard g(cuda::Stream(impl->device, s));
    NoGradGuard ng;
    for (size_t i = 0; i < outputs.size(); ++i)
      outputs[i].copy_(flat.narrow(0, (int64_t)i * n, n).view(outputs[i].sizes()));
  });
}

std::shared_ptr<Work> ProcessGroupNCCL::reduce_scatter(Tensor output, std::vector<Tensor> inputs,
                                                       ReduceOp op) {
  const std::string name = detail::reduce_scatter_name(op);
  WEFT_CHECK_DIST(!is_bitwise(op), "weft.dist: nccl ", name, " on ", impl_->where,
                  ": NCCL has no bitwise reductions (as in PyTorch); use gloo or mpi");
  detail::nccl_check_tensor(*impl_, name, output, "output");
  WEFT_CHECK_DIST((int)inputs.size() == size_, "weft.dist: ", name, " on ", impl_->where, ": ",
                  inputs.size(), " input tensors for a group of size ", size_);
  for (size_t i = 0; i < inputs.size(); ++i) {
    detail::nccl_check_tensor(*impl_, name, inputs[i], "input " + std::to_string(i));
    check_like(*impl_, name, output, inputs[i], "input " + std::to_string(i));
  }
  const std::string what = detail::reduce_scatter_name(op, output);
  const int64_t n = output.numel();
  Tensor flat;
  {
    cuda::StreamGuard g(cuda::Stream(impl_->device, impl_->stream));
    flat = make_empty({(int64_t)inputs.size() * n}, output.dtype(), output.device());
  }
  std::vector<Tensor> keep = inputs;
  keep.push_back(output);
  keep.push_back(flat);
  auto impl = impl_;
  return detail::nccl_run_op(impl_, what, false, keep, [&](ncclComm_t comm, cudaStream_t s) {
    {
      // The inputs side by side, on the NCCL stream (after the caller's work, see run_op).
      cuda::StreamGuard g(cuda::Stream(impl->device, s));
      NoGradGuard ng;
      for (size_t i = 0; i < inputs.size(); ++i)
        flat.narrow(0, (int64_t)i * n, n).copy_(inputs[i].reshape({n}));
    }
    impl->settle(
        ncclReduceScatter(flat.device_ptr(), output.device_ptr(), (size_t)n,
                          detail::nccl_dtype(output.dtype()), detail::nccl_op(op), comm, s),
        what);
  });
}

std::shared_ptr<Work> ProcessGroupNCCL::barrier() {
  Tensor one;
  {
    cuda::StreamGuard g(cuda::Stream(impl_->device, impl_->stream));
    one = zeros({1}, {.device = Device::CUDA(impl_->device)});
  }
  auto impl = impl_;
  return detail::nccl_run_op(impl_, "barrier", true, {one}, [&](ncclComm_t comm, cudaStream_t s) {
    impl->settle(
        ncclAllReduce(one.device_ptr(), one.device_ptr(), 1, ncclFloat32, ncclSum, comm, s),
        "barrier");
  });
}

}  // namespace weft::dist
