#include "weft/distributed/mpi/process_group_mpi.h"

// Only the C API: skip Open MPI's deprecated C++ bindings.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>

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
