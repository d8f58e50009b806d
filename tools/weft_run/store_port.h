// The job's store, as seen from its launcher (Note [Store admission] in docs/ARCHITECTURE.md):
// node 0's weft-run binds the store's port before any rank starts and hands the listening socket
// to local rank 0 (WEFT_STORE_LISTEN_FD), so no other process can take the port in between and a
// second job on a busy port fails at once, naming the port. Also the job's run id and token.
#pragma once

#include <string>

#include "options.h"

namespace weft_run {

// Binds and listens on master_addr:master_port (with --standalone, or on one node without
// --master-port: a port the kernel picks, written back into o.master_port). Returns the descriptor
// (close-on-exec), or -1 when master_addr is not an address of this host (rank 0 then binds it
// itself, as before). A port in use ends weft-run with status 1 and a message naming it.
int hold_store_port(Options& o);

// Fills o.run_id and o.token where they were not given: random for a single node; for several
// nodes they must be given alike on every node (--rdzv-id, WEFT_STORE_TOKEN), else not checked.
void choose_job_identity(Options& o);

}  // namespace weft_run
