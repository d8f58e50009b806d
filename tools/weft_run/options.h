// weft-run's command line: torchrun's options (its underscore spellings and --opt=value work too)
// parsed into Options. A bad option ends the process with status 2 and a message naming it;
// --help prints the usage and exits 0. Standard library and POSIX only, like all of weft-run.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace weft_run {

struct Options {
  int nproc = 1;
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool port_given = false;  // --master-port or --rdzv-endpoint
  int max_restarts = 0;
  std::optional<double> rdzv_timeout;
  std::optional<double> collective_timeout;  // exported as WEFT_COLLECTIVE_TIMEOUT
  double grace = 5.0;
  bool prefix = true;
  bool standalone = false;
  // Hand the store's listening socket to rank 0 (store_port.h); off for programs that bind the
  // port themselves (--no-store-handoff, or a Python interpreter: PyTorch's TCPStore).
  bool store_handoff = true;
  std::string run_id;  // --rdzv-id; see choose_job_identity() in store_port.h
  std::string token;   // WEFT_STORE_TOKEN, or random for one node
  int store_fd = -1;   // the store's listening socket, for local rank 0 (store_port.h)
  std::vector<std::string> command;  // PROGRAM ARGS...
};

Options parse_args(int argc, char** argv);

int cpu_count();  // at least 1

}  // namespace weft_run
