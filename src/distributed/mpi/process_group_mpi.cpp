#include "weft/distributed/mpi/process_group_mpi.h"

// Only the C API: skip Open MPI's deprecated C++ bindings.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <mutex>
#include <thread>

#include "distributed/collectives.h"
#include "distributed/work.h"

namespace weft::dist {

namespace {

// MPI for the whole process: initialised on first use, finalised when the last user lets go
// (the static holder below at exit, or the last group after it). A group whose thread is stuck
// in an MPI call keeps it alive forever, so exit then skips MPI_Finalize rather than hang.
struct MpiRuntime {
  bool multiple = false;  // MPI_THREAD_MULTIPLE: groups' threads may call MPI concurrently
  bool we_initialised = false;
  std::mutex serial;  // otherwise every MPI call holds this

  MpiRuntime() {
    int initialised = 0, provided = 0;
    MPI_Initialized(&initialised);
    if (initialised) {
      MPI_Query_thread(&provided);
    } else {
      const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
      WEFT_CHECK_DIST(rc == MPI_SUCCESS, "ProcessGroupMPI: MPI_Init_thread failed");
      we_initialised = true;
    }
    WEFT_CHECK_DIST(provided >= MPI_THREAD_SERIALIZED,
                    "ProcessGroupMPI: MPI provides thread level ", provided,
                    "; weft needs at least MPI_THREAD_SERIALIZED (one communication thread "
                    "per group)");
    multiple = provided >= MPI_THREAD_MULTIPLE;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  ~MpiRuntime() {
    int finalised = 0;
    MPI_Finalized(&finalised);
    if (we_initialised && !finalised) MPI_Finalize();
  }
  std::unique_lock<std::mutex> lock() {
    return multiple ? std::unique_lock<std::mutex>() : std::unique_lock<std::mutex>(serial);
  }
};

std::shared_ptr<MpiRuntime> runtime() {
  static std::mutex mu;
  static std::shared_ptr<MpiRuntime> holder;  // dropped at exit; groups hold their own refs
  std::lock_guard<std::mutex> lock(mu);
  if (!holder) holder = std::make_shared<MpiRuntime>();
  return holder;
}

// "<function> returned error <rc>: <MPI's error string>"; `call` is the call's source text, of
// which the function name is kept. The Work's message around it names the op and the rank.
std::string mpi_error(int rc, const char* call) {
  char buf[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(rc, buf, &len);
  const std::string text = call;
  return text.substr(0, text.find('(')) + " returned error " + std::to_string(rc) + ": " +
         std::string(buf, static_cast<size_t>(len));
}

// An MPI call whose failure (the communicators return errors: MPI_ERRORS_RETURN) becomes a
// DistError.
#define WEFT_MPI_CHECK(call)                                                      \
  do {                                                                            \
    const int weft_mpi_rc_ = (call);                                              \
    WEFT_CHECK_DIST(weft_mpi_rc_ == MPI_SUCCESS, mpi_error(weft_mpi_rc_, #call)); \
  } while (0)

MPI_Datatype mpi_type(DType t) { return t == kFloat32 ? MPI_FLOAT : MPI_INT64_T; }

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::MAX:
      return MPI_MAX;
    case ReduceOp::MIN:
      return MPI_MIN;
    case ReduceOp::PRODUCT:
      return MPI_PROD;
    case ReduceOp::BAND:
      return MPI_BAND;
    case ReduceOp::BOR:
      return MPI_BOR;
    case ReduceOp::BXOR:
      return MPI_BXOR;
    case ReduceOp::SUM:
    case ReduceOp::AVG:
      break;
  }
  return MPI_SUM;
}

int count_of(const std::string& what, const Tensor& t, int64_t multiple = 1) {
  WEFT_CHECK_DIST(t.numel() * multiple <= INT_MAX, what, ": ", shape_str(t.sizes()),
                  " has more elements than MPI's int counts");
  return static_cast<int>(t.numel());
}

}  // namespace

// Shared with the ops' closures: a group's thread stuck in MPI keeps its communicator and the
// runtime alive even after the group object is gone.
struct MpiComm {
  std::shared_ptr<MpiRuntime> rt;
  MPI_Comm comm = MPI_COMM_NULL;
  ~MpiComm() {
    int finalised = 0;
    MPI_Finalized(&finalised);
    if (comm != MPI_COMM_NULL && !finalised) {
      auto lock = rt->lock();
      MPI_Comm_free(&comm);
    }
  }
};

struct ProcessGroupMPI::Impl {
  std::shared_ptr<MpiComm> c;
  std::string where;
  std::unique_ptr<detail::OpQueue> queue;  // last: stopped first
  std::string what(const std::string& op) const { return "mpi " + op + " on " + where; }
};

int ProcessGroupMPI::world_rank() {
  auto rt = runtime();
  auto lock = rt->lock();
  int r = 0;
  WEFT_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &r));
  return r;
}

int ProcessGroupMPI::world_size() {
  auto rt = runtime();
  auto lock = rt->lock();
  int s = 0;
  WEFT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &s));
  return s;
}

std::shared_ptr<ProcessGroupMPI> ProcessGroupMPI::create(const std::vector<int>& ranks,
                                                         Duration timeout) {
  auto c = std::make_shared<MpiComm>();
  c->rt = runtime();
  const int wrank = world_rank(), wsize = world_size();
  {
    auto lock = c->rt->lock();
    if (ranks.empty()) {
      WEFT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &c->comm));
    } else {
      std::vector<int> sorted = ranks;
      std::sort(sorted.begin(), sorted.end());
      for (size_t i = 0; i < sorted.size(); ++i) {
        WEFT_CHECK_DIST(
            sorted[i] >= 0 && sorted[i] < wsize && (i == 0 || sorted[i] != sorted[i - 1]),
            "ProcessGroupMPI: subgroup ranks must be distinct world ranks in [0, ", wsize,
            "); got ", sorted[i]);
      }
      auto it = std::find(sorted.begin(), sorted.end(), wrank);
      const bool member = it != sorted.end();
      WEFT_MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, member ? 0 : MPI_UNDEFINED,
                                    member ? static_cast<int>(it - sorted.begin()) : 0, &c->comm));
      if (!member) return nullptr;
    }
    MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN);
  }
  int rank = 0, size = 0;
  MPI_Comm_rank(c->comm, &rank);
  MPI_Comm_size(c->comm, &size);
  auto impl = std::make_unique<Impl>();
  impl->c = std::move(c);
  impl->where = "rank " + std::to_string(rank) + " of " + std::to_string(size);
  impl->queue = std::make_unique<detail::OpQueue>("weft-mpi-" + std::to_string(rank));
  // A healthy MPI op ends quickly; a stuck one never does, so do not hold up exit long.
  impl->queue->set_shutdown_grace(std::chrono::seconds(2));
  auto pg = std::make_shared<ProcessGroupMPI>(rank, size, std::move(impl));
  pg->set_timeout(timeout);
  return pg;
}

ProcessGroupMPI::ProcessGroupMPI(int rank, int size, std::unique_ptr<Impl> impl)
    : ProcessGroup(rank, size), impl_(std::move(impl)) {}

ProcessGroupMPI::~ProcessGroupMPI() = default;

std::shared_ptr<Work> ProcessGroupMPI::allreduce(std::vector<Tensor> tensors, ReduceOp op) {
  const std::string name = detail::allreduce_name(op);
  WEFT_CHECK_DIST(!tensors.empty(), impl_->what(name), ": no tensors");
  for (size_t i = 0; i < tensors.size(); ++i) {
    detail::check_cpu_tensor(impl_->what(name), tensors[i], "tensor " + std::to_string(i));
    detail::check_reduce_dtype(impl_->what(name), op, tensors[i]);
    count_of(impl_->what(name), tensors[i]);
  }
  auto c = impl_->c;
  const int size = size_;
  return impl_->queue->enqueue(
      impl_->what(detail::allreduce_name(op, tensors)), timeout_, [c, tensors, op, size] {
        for (const Tensor& t : tensors) {
          const int n = static_cast<int>(t.numel());
          if (n == 0) continue;
          {
            auto lock = c->rt->lock();
            WEFT_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, t.raw_data(), n, mpi_type(t.dtype()),
                                         mpi_op(op), c->comm));
          }
          if (op == ReduceOp::AVG) detail::divide_by(t.raw_data(), t.dtype(), n, size);
        }
      });
}

std::shared_ptr<Work> ProcessGroupMPI::broadcast(std::vector<Tensor> tensors, int root) {
  const std::string name = detail::broadcast_name(root);
  WEFT_CHECK_DIST(!tensors.empty(), impl_->what(name), ": no tensors");
  WEFT_CHECK_DIST(root >= 0 && root < size_, impl_->what(name),
                  ": root is not a rank of the group");
  for (size_t i = 0; i < tensors.size(); ++i) {
    detail::check_cpu_tensor(impl_->what(name), tensors[i], "tensor " + std::to_string(i));
    count_of(impl_->what(name), tensors[i]);
  }
  auto c = impl_->c;
  return impl_->queue->enqueue(impl_->what(name), timeout_, [c, tensors, root] {
    for (const Tensor& t : tensors) {
      const int n = static_cast<int>(t.numel());
      if (n == 0) continue;
      auto lock = c->rt->lock();
      WEFT_MPI_CHECK(MPI_Bcast(t.raw_data(), n, mpi_type(t.dtype()), root, c->comm));
    }
  });
}

std::shared_ptr<Work> ProcessGroupMPI::allgather(std::vector<Tensor> outputs, Tensor input) {
  const std::string name = "allgather";
  detail::check_allgather_args(impl_->what(name), outputs, input, size_);
  count_of(impl_->what(name), input, size_);
  auto c = impl_->c;
  return impl_->queue->enqueue(
      impl_->what(detail::allgather_name(input)), timeout_, [c, outputs, input] {
        const int n = static_cast<int>(input.numel());
        const size_t bytes = input.nbytes();
        if (n == 0) return;
        std::vector<uint8_t> all(bytes * outputs.size());
        {
          auto lock = c->rt->lock();
          WEFT_MPI_CHECK(MPI_Allgather(input.raw_data(), n, mpi_type(input.dtype()), all.data(), n,
                                       mpi_type(input.dtype()), c->comm));
        }
        for (size_t i = 0; i < outputs.size(); ++i) {
          std::memcpy(outputs[i].raw_data(), all.data() + i * bytes, bytes);
        }
      });
}

std::shared_ptr<Work> ProcessGroupMPI::reduce_scatter(Tensor output, std::vector<Tensor> inputs,
                                                      ReduceOp op) {
  const std::string name = detail::reduce_scatter_name(op);
  detail::check_reduce_scatter_args(impl_->what(name), output, inputs, size_);
  detail::check_reduce_dtype(impl_->what(name), op, output);
  count_of(impl_->what(name), output, size_);
  auto c = impl_->c;
  const int size = size_;
  return impl_->queue->enqueue(
      impl_->what(detail::reduce_scatter_name(op, output)), timeout_,
      [c, output, inputs, op, size] {
        const int n = static_cast<int>(output.numel());
        const size_t bytes = output.nbytes();
        if (n == 0) return;
        std::vector<uint8_t> all(bytes * inputs.size());
        for (size_t i = 0; i < inputs.size(); ++i) {
          std::memcpy(all.data() + i * bytes, inputs[i].raw_data(), bytes);
        }
        {
          auto lock = c->rt->lock();
          WEFT_MPI_CHECK(MPI_Reduce_scatter_block(all.data(), output.raw_data(), n,
                                                  mpi_type(output.dtype()), mpi_op(op), c->comm));
        }
        if (op == ReduceOp::AVG) detail::divide_by(output.raw_data(), output.dtype(), n, size);
      });
}

std::shared_ptr<Work> ProcessGroupMPI::barrier() {
  auto c = impl_->c;
  return impl_->queue->enqueue(impl_->what("barrier"), timeout_, [c] {
    auto lock = c->rt->lock();
    WEFT_MPI_CHECK(MPI_Barrier(c->comm));
  });
}

}  // namespace weft::dist

namespace weft::dist {

namespace {

std::vector<int> int_counts(const std::string& what, const std::vector<int64_t>& v) {
  std::vector<int> out;
  for (int64_t x : v) {
    WEFT_CHECK_DIST(x <= INT_MAX, what, ": ", x, " elements exceed MPI's int counts");
    out.push_back(static_cast<int>(x));
  }
  return out;
}

// A posted MPI_Isend/MPI_Irecv; wait() polls MPI_Test until done or the timeout.
class MpiP2PWork : public Work {
 public:
  MpiP2PWork(std::shared_ptr<MpiComm> c, MPI_Request req, Tensor t, std::string what,
             Duration timeout)
      : c_(std::move(c)), req_(req), t_(std::move(t)), what_(std::move(what)), timeout_(timeout) {}
  ~MpiP2PWork() override {
    int finalised = 0;
    MPI_Finalized(&finalised);
    if (req_ == MPI_REQUEST_NULL || finalised) return;
    auto lock = c_->rt->lock();
    MPI_Cancel(&req_);
    MPI_Request_free(&req_);
  }
  void wait(std::optional<Duration> timeout) override {
    std::unique_lock<std::mutex> lock(mu_);
    const Duration t = timeout.value_or(timeout_);
    const auto end = std::chrono::steady_clock::now() + t;
    while (!done_) {
      if (test(lock)) break;
      if (std::chrono::steady_clock::now() > end)
        WEFT_DIST_ERROR(what_, " timed out after ", t.count(), " ms");
      std::this_thread::sleep_for(std::chrono::microseconds(200));  // polling, not sync
    }
    if (error_) std::rethrow_exception(error_);
  }
  bool is_completed() override {
    std::unique_lock<std::mutex> lock(mu_);
    return done_ || test(lock);
  }
  void then(std::function<void(std::exception_ptr)> fn) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!done_) return callbacks_.push_back(std::move(fn));
    auto e = error_;
    lock.unlock();
    fn(e);
  }

 private:
  bool test(std::unique_lock<std::mutex>& lock) {
    int flag = 0, rc = 0;
    {
      auto mpi = c_->rt->lock();
      rc = MPI_Test(&req_, &flag, MPI_STATUS_IGNORE);
    }
    if (rc != MPI_SUCCESS) {
      error_ = std::make_exception_ptr(DistError(what_ + " failed: " + mpi_error(rc, "MPI_Test")));
    } else if (!flag) {
      return false;
    }
    done_ = true;
    auto cbs = std::move(callbacks_);
    lock.unlock();
    for (auto& fn : cbs) fn(error_);
    lock.lock();
    return true;
  }

  std::shared_ptr<MpiComm> c_;
  MPI_Request req_;
  Tensor t_;
  const std::string what_;
  const Duration timeout_;
  std::mutex mu_;
  bool done_ = false;
  std::exception_ptr error_;
  std::vector<std::function<void(std::exception_ptr)>> callbacks_;
};

}  // namespace

std::shared_ptr<Work> ProcessGroupMPI::reduce(std::vector<Tensor> tensors, int root, ReduceOp op) {
  const std::string name = impl_->what(detail::rooted_name("reduce", root, op));
  WEFT_CHECK_DIST(tensors.size() == 1, name, ": takes one tensor, got ", tensors.size());
  detail::check_cpu_tensor(name, tensors[0], "tensor");
  detail::check_reduce_dtype(name, op, tensors[0]);
  detail::check_rank(name, root, size_, "root");
  count_of(name, tensors[0]);
  auto c = impl_->c;
  const int rank = rank_, size = size_;
  return impl_->queue->enqueue(name, timeout_, [c, t = tensors[0], root, op, rank, size] {
    const int n = static_cast<int>(t.numel());
    if (n == 0) return;
    {
      auto lock = c->rt->lock();
      WEFT_MPI_CHECK(MPI_Reduce(rank == root ? MPI_IN_PLACE : t.raw_data(), t.raw_data(), n,
                                mpi_type(t.dtype()), mpi_op(op), root, c->comm));
    }
    if (op == ReduceOp::AVG && rank == root) detail::divide_by(t.raw_data(), t.dtype(), n, size);
  });
}

std::shared_ptr<Work> ProcessGroupMPI::gather(std::vector<Tensor> outputs, Tensor input, int root) {
  const std::string name = impl_->what(detail::rooted_name("gather", root));
  detail::check_rank(name, root, size_, "root");
  detail::check_rooted_list(name, outputs, "output", input, "input", rank_ == root, size_);
  count_of(name, input, size_);
  auto c = impl_->c;
  const int rank = rank_;
  return impl_->queue->enqueue(name, timeout_, [c, outputs, input, root, rank] {
    const int n = static_cast<int>(input.numel());
    const size_t bytes = input.nbytes();
    if (n == 0) return;
    std::vector<uint8_t> all(rank == root ? bytes * outputs.size() : 0);
    {
      auto lock = c->rt->lock();
      WEFT_MPI_CHECK(MPI_Gather(input.raw_data(), n, mpi_type(input.dtype()), all.data(), n,
                                mpi_type(input.dtype()), root, c->comm));
    }
    for (size_t i = 0; i < outputs.size(); ++i)
      std::memcpy(outputs[i].raw_data(), all.data() + i * bytes, bytes);
  });
}

std::shared_ptr<Work> ProcessGroupMPI::scatter(Tensor output, std::vector<Tensor> inputs,
                                               int root) {
  const std::string name = impl_->what(detail::rooted_name("scatter", root));
  detail::check_rank(name, root, size_, "root");
  detail::check_rooted_list(name, inputs, "input", output, "output", rank_ == root, size_);
  count_of(name, output, size_);
  auto c = impl_->c;
  return impl_->queue->enqueue(name, timeout_, [c, output, inputs, root] {
    const int n = static_cast<int>(output.numel());
    const size_t bytes = output.nbytes();
    if (n == 0) return;
    std::vector<uint8_t> all(bytes * inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i)
      std::memcpy(all.data() + i * bytes, inputs[i].raw_data(), bytes);
    auto lock = c->rt->lock();
    WEFT_MPI_CHECK(MPI_Scatter(all.data(), n, mpi_type(output.dtype()), output.raw_data(), n,
                               mpi_type(output.dtype()), root, c->comm));
  });
}

std::shared_ptr<Work> ProcessGroupMPI::allgather_into_tensor(Tensor output, Tensor input) {
  const std::string name = impl_->what("allgather_into_tensor");
  detail::check_base_args(name, output, "output", input, "input", size_);
  count_of(name, output);
  auto c = impl_->c;
  return impl_->queue->enqueue(name, timeout_, [c, output, input] {
    const int n = static_cast<int>(input.numel());
    if (n == 0) return;
    auto lock = c->rt->lock();
    WEFT_MPI_CHECK(MPI_Allgather(input.raw_data(), n, mpi_type(input.dtype()), output.raw_data(), n,
                                 mpi_type(input.dtype()), c->comm));
  });
}

std::shared_ptr<Work> ProcessGroupMPI::reduce_scatter_tensor(Tensor output, Tensor input,
                                                             ReduceOp op) {
  const std::string name = impl_->what("reduce_scatter_tensor(" + to_string(op) + ")");
  detail::check_base_args(name, input, "input", output, "output", size_);
  detail::check_reduce_dtype(name, op, output);
  count_of(name, input);
  auto c = impl_->c;
  const int size = size_;
  return impl_->queue->enqueue(name, timeout_, [c, output, input, op, size] {
    const int n = static_cast<int>(output.numel());
    if (n == 0) return;
    {
      auto lock = c->rt->lock();
      WEFT_MPI_CHECK(MPI_Reduce_scatter_block(input.raw_data(), output.raw_data(), n,
                                              mpi_type(output.dtype()), mpi_op(op), c->comm));
    }
    if (op == ReduceOp::AVG) detail::divide_by(output.raw_data(), output.dtype(), n, size);
  });
}

std::shared_ptr<Work> ProcessGroupMPI::alltoall_base(Tensor output, Tensor input,
                                                     std::vector<int64_t> output_split_sizes,
                                                     std::vector<int64_t> input_split_sizes) {
  const std::string name = impl_->what("alltoall_base");
  auto k =
      detail::alltoall_counts(name, output, input, output_split_sizes, input_split_sizes, size_);
  count_of(name, input);
  count_of(name, output);
  auto sc = int_counts(name, k.send), so = int_counts(name, k.send_offsets);
  auto rc = int_counts(name, k.recv), ro = int_counts(name, k.recv_offsets);
  auto c = impl_->c;
  return impl_->queue->enqueue(name, timeout_, [c, output, input, sc, so, rc, ro] {
    auto lock = c->rt->lock();
    WEFT_MPI_CHECK(MPI_Alltoallv(input.raw_data(), sc.data(), so.data(), mpi_type(input.dtype()),
                                 output.raw_data(), rc.data(), ro.data(), mpi_type(input.dtype()),
                                 c->comm));
  });
}

std::shared_ptr<Work> ProcessGroupMPI::alltoall(std::vector<Tensor> outputs,
                                                std::vector<Tensor> inputs) {
  const std::string name = impl_->what("alltoall");
  detail::check_alltoall_args(name, outputs, inputs, size_);
  std::vector<int64_t> sc, so, rc, ro;
  int64_t in_total = 0, out_total = 0;
  for (int j = 0; j < size_; ++j) {
    sc.push_back(inputs[j].numel());
    so.push_back(in_total);
    in_total += inputs[j].numel();
    rc.push_back(outputs[j].numel());
    ro.push_back(out_total);
    out_total += outputs[j].numel();
  }
  auto isc = int_counts(name, sc), iso = int_counts(name, so);
  auto irc = int_counts(name, rc), iro = int_counts(name, ro);
  int_counts(name, {in_total, out_total});
  auto c = impl_->c;
  return impl_->queue->enqueue(
      name, timeout_, [c, outputs, inputs, isc, iso, irc, iro, in_total, out_total] {
        const DType dt = inputs[0].dtype();
        const size_t es = itemsize(dt);
        std::vector<uint8_t> in(static_cast<size_t>(in_total) * es + 1);
        std::vector<uint8_t> out(static_cast<size_t>(out_total) * es + 1);
        for (size_t j = 0; j < inputs.size(); ++j)
          std::memcpy(in.data() + iso[j] * es, inputs[j].raw_data(), inputs[j].nbytes());
        {
          auto lock = c->rt->lock();
          WEFT_MPI_CHECK(MPI_Alltoallv(in.data(), isc.data(), iso.data(), mpi_type(dt), out.data(),
                                       irc.data(), iro.data(), mpi_type(dt), c->comm));
        }
        for (size_t j = 0; j < outputs.size(); ++j)
          std::memcpy(outputs[j].raw_data(), out.data() + iro[j] * es, outputs[j].nbytes());
      });
}

std::shared_ptr<Work> ProcessGroupMPI::send(std::vector<Tensor> tensors, int dst, int tag) {
  std::string name = "send(to rank ";
  name.append(std::to_string(dst)).append(", tag ").append(std::to_string(tag)).append(")");
  name = impl_->what(name);
  detail::check_p2p_args(name, tensors, dst, tag, rank_, size_);
  const Tensor& t = tensors[0];
  MPI_Request req = MPI_REQUEST_NULL;
  {
    auto lock = impl_->c->rt->lock();
    WEFT_MPI_CHECK(MPI_Isend(t.raw_data(), count_of(name, t), mpi_type(t.dtype()), dst, tag,
                             impl_->c->comm, &req));
  }
  return std::make_shared<MpiP2PWork>(impl_->c, req, t, name, timeout_);
}

std::shared_ptr<Work> ProcessGroupMPI::recv(std::vector<Tensor> tensors, int src, int tag) {
  std::string name = "recv(from rank ";
  name.append(std::to_string(src)).append(", tag ").append(std::to_string(tag)).append(")");
  name = impl_->what(name);
  detail::check_p2p_args(name, tensors, src, tag, rank_, size_);
  const Tensor& t = tensors[0];
  MPI_Request req = MPI_REQUEST_NULL;
  {
    auto lock = impl_->c->rt->lock();
    WEFT_MPI_CHECK(MPI_Irecv(t.raw_data(), count_of(name, t), mpi_type(t.dtype()), src, tag,
                             impl_->c->comm, &req));
  }
  return std::make_shared<MpiP2PWork>(impl_->c, req, t, name, timeout_);
}

}  // namespace weft::dist
