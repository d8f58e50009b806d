#include "weft/distributed/distributed.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "distributed/store_util.h"
#include "weft/data/distributed_sampler.h"
#include "weft/distributed/file_store.h"
#include "weft/distributed/gloo/process_group_gloo.h"
#include "weft/distributed/mpi/process_group_mpi.h"
#include "weft/distributed/nccl/process_group_nccl.h"
#include "weft/distributed/tcp_store.h"

namespace weft::dist {

namespace {

struct State {
  std::mutex mu;
  std::shared_ptr<ProcessGroup> group;
  std::shared_ptr<Store> store;  // null under MPI
  std::string master_addr;       // where peers are: picks the address Gloo listens on
  Duration timeout = kDefaultTimeout;
  int groups_created = 0;  // same on every rank, since every rank calls new_group
};
State g_state;  // namespace scope: outlives the MPI runtime's static holder (see mpi backend)

const char* kEnvHint =
    " (weft-run, torchrun and mpirun set MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE; "
    "or pass InitOptions::rank/world_size)";

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v) return std::nullopt;
  return std::string(v);
}

int64_t parse_int(const std::string& what, const std::string& s, int64_t lo, int64_t hi) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(s, &used);
  } catch (...) {
    used = 0;
  }
  WEFT_CHECK_DIST(!s.empty() && used == s.size(), "init_process_group: ", what, "='", s,
                  "' is not an integer");
  WEFT_CHECK_DIST(v >= lo && v <= hi, "init_process_group: ", what, "=", s, " is out of range [",
                  lo, ", ", hi, "]");
  return v;
}

int env_int(const char* name, int64_t lo, int64_t hi) {
  auto v = env(name);
  WEFT_CHECK_DIST(v, "init_process_group(env://): environment variable ", name, " is not set",
                  kEnvHint);
  return static_cast<int>(parse_int(std::string("environment variable ") + name, *v, lo, hi));
}

std::string describe(int world_size, const std::string& backend) {
  return "world_size=" + std::to_string(world_size) + " backend=" + backend;
}

// Waits for `k` until `deadline`, saying every progress interval which ranks have not joined.
template <typename KeyOf>
void wait_reporting(Store& store, const std::string& k, int rank, int world_size,
                    std::chrono::steady_clock::time_point deadline, Duration timeout,
                    const std::string& where, const KeyOf& key) {
  const auto start = deadline - timeout;
  const Duration every = detail::progress_interval(timeout);
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    const auto left = std::chrono::duration_cast<Duration>(deadline - now);
    try {
      return store.wait({k}, std::clamp(left, Duration(1), every));
    } catch (const DistError&) {
      if (left <= every) throw;
    }
    std::string missing;
    for (int q = 0; q < world_size; ++q)
      if (!store.check({key(q)})) missing += (missing.empty() ? "" : ", ") + std::to_string(q);
    detail::report_waiting("rank " + std::to_string(rank),
                           "for rank(s) " + missing + " to join at " + where,
                           std::chrono::steady_clock::now() - start, timeout);
  }
}

// Every rank publishes what it joined with, then reads everyone's in rank order: a rank that
// never comes or disagrees is named, rather than surfacing later as a hang or a garbled
// collective. The store's host (rank 0 over TCP) lingers briefly on failure, so that the
// others can still read the store and print their own diagnosis.
void check_joined(Store& store, int rank, int world_size, const std::string& backend,
                  Duration timeout, const std::string& where, bool hosts_store) {
  const std::string prefix = "weft/init/";
  const auto key = [&](int r) { return prefix + "info/" + std::to_string(r); };
  WEFT_CHECK_DIST(store.add(prefix + "count/" + std::to_string(rank), 1) <= 1,
                  "init_process_group: two processes joined as rank ", rank, " of ", world_size,
                  " at ", where, " (duplicate RANK, or a stale store file from an earlier job)");
  const std::string mine = describe(world_size, backend);
  store.set(key(rank), mine);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string error;
  for (int r = 0; r < world_size && error.empty(); ++r) {
    try {
      wait_reporting(store, key(r), rank, world_size, deadline, timeout, where, key);
    } catch (const DistError& e) {
      std::string missing = std::to_string(r);
      try {
        for (int q = r + 1; q < world_size; ++q) {
          if (!store.check({key(q)})) missing += ", " + std::to_string(q);
        }
      } catch (...) {
      }
      error = "init_process_group: rank " + std::to_string(rank) + " of " +
              std::to_string(world_size) + " waited " + std::to_string(timeout.count()) +
              " ms at " + where + " but rank(s) " + missing + " did not join (" + e.what() + ")";
      break;
    }
    const std::string theirs = store.get_string(key(r));
    if (theirs != mine) {
      error = "init_process_group: rank " + std::to_string(r) + " joined with " + theirs +
              ", but rank " + std::to_string(rank) + " has " + mine + " (at " + where +
              "); every rank must agree";
    }
  }
  if (error.empty()) return;
  try {
    store.add(prefix + "failed", 1);
    if (hosts_store) {
      const auto linger =
          std::chrono::steady_clock::now() + std::min<Duration>(timeout, std::chrono::seconds(2));
      while (std::chrono::steady_clock::now() < linger) {
        int64_t joined = 0;
        for (int r = 0; r < world_size; ++r) joined += store.check({key(r)}) ? 1 : 0;
        if (store.add(prefix + "failed", 0) >= joined) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
  } catch (...) {
  }
  WEFT_DIST_ERROR(error);
}

// Explicit choice first; under mpirun MPI; then, as PyTorch, NCCL when the thread's current
// device is a CUDA device; else Gloo.
std::string pick_backend(const std::string& b) {
  if (!b.empty()) {
    if (b == "gloo" || b == "mpi" || b == "nccl") return b;
    WEFT_DIST_ERROR("init_process_group: unknown backend '", b, "' (known: gloo, mpi, nccl)");
  }
  if (env("OMPI_COMM_WORLD_SIZE") || env("PMI_SIZE")) return "mpi";
  if (current_device().is_cuda()) return "nccl";
  return "gloo";
}

// A group of `size` ranks over `store` (prefixed for this group) with the chosen backend.
std::shared_ptr<ProcessGroup> make_group(const std::string& backend, std::shared_ptr<Store> store,
                                         int rank, int size, Duration timeout,
                                         const std::string& master_addr) {
  // Without the CUDA backend ProcessGroupNCCL is the stub of src/distributed/nccl/no_nccl.cpp,
  // whose constructor says so.
  if (backend == "nccl")
    return std::make_shared<ProcessGroupNCCL>(store, rank, size, NCCLOptions{.timeout = timeout});
  GlooOptions go;
  go.timeout = timeout;
  go = resolve_gloo_options(go, master_addr);
  return std::make_shared<ProcessGroupGloo>(std::move(store), rank, size, go);
}

std::vector<int> checked_ranks(std::vector<int> ranks, int world) {
  if (ranks.empty()) {
    for (int r = 0; r < world; ++r) ranks.push_back(r);
  }
  std::sort(ranks.begin(), ranks.end());  // as PyTorch: group ranks follow global order
  for (size_t i = 0; i < ranks.size(); ++i) {
    WEFT_CHECK_DIST(ranks[i] >= 0 && ranks[i] < world, "new_group: rank ", ranks[i],
                    " is not in the default group of size ", world);
    WEFT_CHECK_DIST(i == 0 || ranks[i] != ranks[i - 1], "new_group: rank ", ranks[i],
                    " is listed twice");
  }
  return ranks;
}

// Where the ranks meet: a shared file, or rank 0's TCPStore at master_addr:port.
struct Rendezvous {
  std::string file_path, master_addr;
  int port = 0;
};

// The rendezvous init_method names; env:// reads MASTER_ADDR and MASTER_PORT.
Rendezvous parse_init_method(const std::string& m) {
  Rendezvous r;
  if (m.rfind("file://", 0) == 0) {
    r.file_path = m.substr(7);
    WEFT_CHECK_DIST(!r.file_path.empty(), "init_process_group: '", m, "' names no file");
  } else if (m.rfind("tcp://", 0) == 0) {
    const std::string hp = m.substr(6);
    const size_t colon = hp.rfind(':');
    WEFT_CHECK_DIST(colon != std::string::npos && colon != 0, "init_process_group: '", m,
                    "' is not tcp://host:port");
    r.master_addr = hp.substr(0, colon);
    if (r.master_addr.size() > 2 && r.master_addr.front() == '[') {
      r.master_addr = r.master_addr.substr(1, r.master_addr.size() - 2);  // [v6 address]
    }
    r.port = static_cast<int>(parse_int("port in " + m, hp.substr(colon + 1), 1, 65535));
  } else if (m == "env://") {
    auto a = env("MASTER_ADDR");
    WEFT_CHECK_DIST(a && !a->empty(),
                    "init_process_group(env://): environment variable MASTER_ADDR is not set",
                    kEnvHint);
    r.master_addr = *a;
    r.port = env_int("MASTER_PORT", 1, 65535);
  } else {
    WEFT_DIST_ERROR("init_process_group: unsupported init_method '", m,
                    "' (use env://, tcp://host:port or file:///path)");
  }
  return r;
}

// weft-run --rdzv-timeout S exports WEFT_RDZV_TIMEOUT: how long joining may take (reaching the
// store, every rank checking in), as torchrun's rendezvous timeout; the collectives keep
// InitOptions::timeout, which is also the default here.
Duration rdzv_timeout(Duration fallback) {
  auto v = env("WEFT_RDZV_TIMEOUT");
  if (!v || v->empty()) return fallback;
  char* end = nullptr;
  const double s = std::strtod(v->c_str(), &end);
  WEFT_CHECK_DIST(end != v->c_str() && *end == '\0' && s > 0 && s <= 1e7,
                  "init_process_group: WEFT_RDZV_TIMEOUT='", *v,
                  "' is not a positive number of seconds");
  return Duration(static_cast<int64_t>(s * 1000.0 + 0.5));
}

// What weft-run tells its ranks about their store (Note [Store admission]): the job's run id and
// token, and to rank 0 the listening socket weft-run bound for it.
TCPStoreOptions store_options(int rank) {
  TCPStoreOptions so;
  so.run_id = env("WEFT_RUN_ID").value_or("");
  so.token = env("WEFT_STORE_TOKEN").value_or("");
  so.label = "rank " + std::to_string(rank);
  if (auto fd = env("WEFT_STORE_LISTEN_FD"); fd && rank == 0)
    so.listen_fd =
        static_cast<int>(parse_int("environment variable WEFT_STORE_LISTEN_FD", *fd, 0, 1 << 20));
  return so;
}

// Under mpirun: rank and size come from MPI; InitOptions may only agree with them.
void init_mpi(const InitOptions& o) {
  const int wrank = ProcessGroupMPI::world_rank(), wsize = ProcessGroupMPI::world_size();
  WEFT_CHECK_DIST((o.rank < 0 || o.rank == wrank) && (o.world_size <= 0 || o.world_size == wsize),
                  "init_process_group(mpi): InitOptions asks for rank ", o.rank, " of ",
                  o.world_size, ", but MPI says rank ", wrank, " of ", wsize);
  g_state.group = ProcessGroupMPI::create({}, o.timeout);
  g_state.timeout = o.timeout;
  g_state.groups_created = 0;
}

// init_process_group with g_state.mu held.
void init_locked(const InitOptions& o) {
  WEFT_CHECK_DIST(!g_state.group,
                  "init_process_group: already initialized (call destroy_process_group first)");
  const std::string backend = pick_backend(o.backend);
  if (backend == "mpi") return init_mpi(o);

  // Rendezvous settings first, so that a bad one fails before anything waits.
  const Rendezvous rv = parse_init_method(o.init_method);
  const int world = o.world_size > 0 ? o.world_size : env_int("WORLD_SIZE", 1, 1 << 20);
  const int rank = o.rank >= 0 ? o.rank : env_int("RANK", 0, 1 << 20);
  WEFT_CHECK_DIST(rank < world, "init_process_group: RANK=", rank,
                  " is not below WORLD_SIZE=", world);
  const Duration rdzv = rdzv_timeout(o.timeout);

  std::shared_ptr<Store> store;
  std::string where;
  if (!rv.file_path.empty()) {
    store = std::make_shared<FileStore>(rv.file_path, world, rdzv);
    where = "file " + rv.file_path;
  } else {
    where = rv.master_addr + ":" + std::to_string(rv.port);
    store = std::make_shared<TCPStore>(rv.master_addr, static_cast<uint16_t>(rv.port), world,
                                       /*is_server=*/rank == 0, rdzv,
                                       /*wait_for_workers=*/false, store_options(rank));
  }
  check_joined(*store, rank, world, backend, rdzv, where,
               /*hosts_store=*/rv.file_path.empty() && rank == 0);
  g_state.group = make_group(backend, std::make_shared<PrefixStore>("weft/pg/0", store), rank,
                             world, o.timeout, rv.master_addr);
  g_state.store = std::move(store);
  g_state.master_addr = rv.master_addr;
  g_state.timeout = o.timeout;
  g_state.groups_created = 0;
}

}  // namespace

void init_process_group(InitOptions o) {
  {
    std::lock_guard<std::mutex> lock(g_state.mu);
    init_locked(o);
  }
  // DistributedSampler's defaults come from the default group (the data layer does not
  // depend on this one, so it is told).
  data::set_default_replica_provider([] {
    return std::pair<int, int>{get_world_size(), get_rank()};
  });
}

bool is_initialized() {
  std::lock_guard<std::mutex> lock(g_state.mu);
  return g_state.group != nullptr;
}

void destroy_process_group() {
  std::shared_ptr<ProcessGroup> group;
  std::shared_ptr<Store> store;
  {
    std::lock_guard<std::mutex> lock(g_state.mu);
    group = std::move(g_state.group);
    store = std::move(g_state.store);
    g_state.group = nullptr;
    g_state.store = nullptr;
    g_state.groups_created = 0;
  }
  // Outside the lock: the group waits for its running op. Subgroups the user still holds keep
  // their own connections and stay usable.
  group.reset();
  store.reset();
}

std::shared_ptr<ProcessGroup> default_group() {
  std::lock_guard<std::mutex> lock(g_state.mu);
  WEFT_CHECK_DIST(g_state.group,
                  "weft::dist: the default process group is not initialized; call "
                  "init_process_group() first");
  return g_state.group;
}

int get_rank() {
  std::lock_guard<std::mutex> lock(g_state.mu);
  return g_state.group ? g_state.group->rank() : 0;
}

int get_world_size() {
  std::lock_guard<std::mutex> lock(g_state.mu);
  return g_state.group ? g_state.group->size() : 1;
}

int get_local_rank() {
  for (const char* name : {"LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID"}) {
    if (auto v = env(name)) {
      return static_cast<int>(
          parse_int(std::string("environment variable ") + name, *v, 0, 1 << 20));
    }
  }
  return 0;
}

std::shared_ptr<ProcessGroup> new_group(const std::vector<int>& ranks_in,
                                        std::optional<Duration> timeout) {
  std::shared_ptr<ProcessGroup> parent;
  std::shared_ptr<Store> store;
  std::string master_addr;
  int id = 0;
  Duration t;
  {
    std::lock_guard<std::mutex> lock(g_state.mu);
    WEFT_CHECK_DIST(g_state.group, "new_group: call init_process_group() first");
    parent = g_state.group;
    store = g_state.store;
    master_addr = g_state.master_addr;
    id = ++g_state.groups_created;
    t = timeout.value_or(g_state.timeout);
  }
  const std::vector<int> ranks = checked_ranks(ranks_in, parent->size());
  if (parent->backend_name() == "mpi") return ProcessGroupMPI::create(ranks, t);

  auto it = std::find(ranks.begin(), ranks.end(), parent->rank());
  if (it == ranks.end()) return nullptr;
  return make_group(
      parent->backend_name(), std::make_shared<PrefixStore>("weft/pg/" + std::to_string(id), store),
      static_cast<int>(it - ranks.begin()), static_cast<int>(ranks.size()), t, master_addr);
}

}  // namespace weft::dist
