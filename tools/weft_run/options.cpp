#include "options.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>

namespace weft_run {

namespace {

constexpr const char* kUsage = R"(usage: weft-run [options] PROGRAM [ARGS...]

Starts nproc-per-node copies of PROGRAM on this node with torchrun's environment:
MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK,
GROUP_WORLD_SIZE, ROLE_RANK, ROLE_WORLD_SIZE, TORCHELASTIC_RESTART_COUNT, WEFT_RESTART_COUNT,
TORCHELASTIC_MAX_RESTARTS (and WEFT_RDZV_TIMEOUT, OMP_NUM_THREADS; see below).
Node 0's weft-run binds the store's port before starting the ranks and hands it to rank 0, so
a port in use fails at once. Each job has a run id and a token (WEFT_RUN_ID, WEFT_STORE_TOKEN)
that the store checks, so that no other process can join, read or write it; on several nodes
give every node the same --rdzv-id and WEFT_STORE_TOKEN (unset: not checked).
Every line a rank writes is prefixed "[rankR]: " (R = global rank) on the same stream. When
weft-run's stdout is a terminal, rank 0 gets WEFT_STDOUT_IS_TTY=1 and its '\r' redraws (progress
bars) pass through at once.
If a rank exits non-zero or dies of a signal, the others get SIGTERM, then SIGKILL after the
grace period, and weft-run exits with that rank's code (128+N for signal N). Each rank gets
WEFT_ERROR_FILE, a file for its fatal error; where a failed rank's names another as stalled
(a timed-out collective's desync report), weft-run reports that rank as the cause.

options (torchrun's underscore spellings and --opt=value also work):
  --nproc-per-node N   processes on this node (default 1; "auto"/"cpu": one per CPU)
  --nnodes M           number of nodes (default 1; "M:M" accepted, elastic ranges are not)
  --node-rank R        this node's rank, 0 <= R < M (default 0)
  --master-addr A      rank 0's host (default 127.0.0.1)
  --master-port P      rank 0's port (default: a free one on a single node, else 29500)
  --rdzv-endpoint A:P  same as --master-addr A --master-port P
  --standalone         single node on 127.0.0.1 with a free port
  --rdzv-id ID         the job's run id (also --run-id; default: WEFT_RUN_ID, else random on
                       one node); a rank that reaches another job's store is refused, naming it
  --max-restarts K     restart the local group up to K times after a failure (default 0)
  --rdzv-timeout S     exported as WEFT_RDZV_TIMEOUT (seconds) for init_process_group
  --collective-timeout S  exported as WEFT_COLLECTIVE_TIMEOUT (seconds): the collectives' timeout
                       where the program leaves init_process_group's at its default
  --grace-period S     seconds between SIGTERM and SIGKILL when stopping ranks (default 5)
  --no-prefix          do not prefix output lines (lines are still kept whole)
  --no-store-handoff   rank 0 binds the store's port itself (a program that is not weft's,
                       e.g. a PyTorch script): weft-run picks the port, then lets it go. The
                       default when PROGRAM is a Python interpreter (python, python3, ...)
  -h, --help           show this help
OMP_NUM_THREADS, if unset and N > 1, is set to max(1, CPUs / N) so ranks do not oversubscribe.
SIGINT, SIGTERM and SIGHUP are forwarded to every rank's process group; a second one kills.
)";

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr, "weft-run: error: %s\n(see weft-run --help)\n", msg.c_str());
  std::exit(2);
}

long parse_int(const std::string& opt, const std::string& v, long lo, long hi) {
  errno = 0;
  char* end = nullptr;
  long x = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE)
    usage_error(opt + " expects an integer, got '" + v + "'");
  if (x < lo || x > hi)
    usage_error(opt + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                v);
  return x;
}

double parse_seconds(const std::string& opt, const std::string& v) {
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(x) || x < 0)
    usage_error(opt + " expects a non-negative number of seconds, got '" + v + "'");
  return x;
}

// Applies the option `name` (spelt with dashes; `arg` as given). `next` returns its value and
// `flag` refuses one; a name not known here is an error.
void apply_option(Options& o, const std::string& arg, const std::string& name,
                  const std::function<std::string()>& next, const std::function<void()>& flag,
                  bool* node_rank_set) {
  if (name == "--nproc-per-node") {
    std::string v = next();
    o.nproc = (v == "auto" || v == "cpu") ? cpu_count() : parse_int(name, v, 1, 4096);
  } else if (name == "--nnodes") {
    std::string v = next();
    if (auto c = v.find(':'); c != std::string::npos) {
      long lo = parse_int(name, v.substr(0, c), 1, 1 << 20);
      long hi = parse_int(name, v.substr(c + 1), 1, 1 << 20);
      if (lo != hi) usage_error("--nnodes " + v + ": elastic ranges are not supported");
      o.nnodes = static_cast<int>(lo);
    } else {
      o.nnodes = static_cast<int>(parse_int(name, v, 1, 1 << 20));
    }
  } else if (name == "--node-rank") {
    o.node_rank = static_cast<int>(parse_int(name, next(), 0, 1 << 20));
    *node_rank_set = true;
  } else if (name == "--master-addr") {
    o.master_addr = next();
    if (o.master_addr.empty()) usage_error("--master-addr is empty");
  } else if (name == "--master-port") {
    o.master_port = static_cast<int>(parse_int(name, next(), 1, 65535));
    o.port_given = true;
  } else if (name == "--rdzv-endpoint") {
    std::string v = next();
    auto c = v.rfind(':');
    if (c == std::string::npos || c == 0) usage_error("--rdzv-endpoint expects HOST:PORT");
    o.master_addr = v.substr(0, c);
    o.master_port = static_cast<int>(parse_int(name, v.substr(c + 1), 1, 65535));
    o.port_given = true;
  } else if (name == "--rdzv-id" || name == "--run-id") {
    o.run_id = next();
    if (o.run_id.empty() || o.run_id.size() > 256)
      usage_error(name + " must be 1 to 256 characters");
  } else if (name == "--standalone") {
    flag();
    o.standalone = true;
  } else if (name == "--max-restarts") {
    o.max_restarts = static_cast<int>(parse_int(name, next(), 0, 1 << 20));
  } else if (name == "--rdzv-timeout") {
    o.rdzv_timeout = parse_seconds(name, next());
  } else if (name == "--collective-timeout") {
    o.collective_timeout = parse_seconds(name, next());
    if (*o.collective_timeout <= 0) usage_error("--collective-timeout must be positive");
  } else if (name == "--grace-period") {
    o.grace = parse_seconds(name, next());
  } else if (name == "--no-prefix") {
    flag();
    o.prefix = false;
  } else if (name == "--no-store-handoff") {
    flag();
    o.store_handoff = false;
  } else {
    usage_error("unknown option '" + arg + "'");
  }
}

// The checks that need every option: a program to run, --standalone's single node (which then
// gets a free local port), the node rank below the node count, a world that fits.
void finish_options(Options& o, bool node_rank_set) {
  if (o.command.empty()) usage_error("missing PROGRAM to run");
  // torchrun's use: PyTorch's TCPStore on rank 0 binds MASTER_PORT and knows no handed socket.
  const std::string prog = o.command[0].substr(o.command[0].rfind('/') + 1);
  if (prog.rfind("python", 0) == 0) o.store_handoff = false;
  if (o.standalone) {
    if (o.nnodes != 1 || (node_rank_set && o.node_rank != 0))
      usage_error("--standalone runs a single node (--nnodes 1 --node-rank 0)");
    o.master_addr = "127.0.0.1";  // its port is picked when weft-run binds it (store_port.h)
  }
  if (o.node_rank >= o.nnodes)
    usage_error("--node-rank " + std::to_string(o.node_rank) + " must be less than --nnodes " +
                std::to_string(o.nnodes));
  if (static_cast<long long>(o.nnodes) * o.nproc > 1 << 24) usage_error("world size too large");
}

}  // namespace

int cpu_count() { return std::max(1u, std::thread::hardware_concurrency()); }

Options parse_args(int argc, char** argv) {
  Options o;
  bool node_rank_set = false;
  int i = 1;
  for (; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (arg.size() < 2 || arg[0] != '-') break;  // PROGRAM: the rest belongs to it
    if (arg[1] != '-') usage_error("unknown option '" + arg + "'");
    std::string name = arg, value;
    bool has_value = false;
    if (auto eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    std::replace(name.begin(), name.end(), '_', '-');  // torchrun accepts both spellings
    auto flag = [&] {
      if (has_value) usage_error(name + " takes no value");
    };
    auto next = [&]() -> std::string {
      if (has_value) return value;
      if (i + 1 >= argc) usage_error(name + " needs a value");
      return argv[++i];
    };
    apply_option(o, arg, name, next, flag, &node_rank_set);
  }
  for (; i < argc; ++i) o.command.emplace_back(argv[i]);
  finish_options(o, node_rank_set);
  return o;
}

}  // namespace weft_run
