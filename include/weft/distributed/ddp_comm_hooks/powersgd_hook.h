// PowerSGD gradient compression as a DDP communication hook (PyTorch's
// torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook): each large gradient matrix M is
// all-reduced as a rank-r product P Q^T (one power iteration per step, P orthogonalized), with
// error feedback and warm-started Q, after `start_powerSGD_iter` steps of plain all-reduce.
// Vectors and matrices too small to gain are all-reduced as they are. Every rank draws the
// same initial Q (one seed), so the approximation is the same everywhere.
#pragma once

#include <cstdint>
#include <map>
#include <memory>

#include "weft/distributed/reducer.h"
#include "weft/generator.h"

namespace weft::dist {

struct PowerSGDOptions {
  int matrix_approximation_rank = 1;
  // Plain all-reduce for this many steps first (PyTorch's default is 1,000): compressing the
  // noisy first gradients loses accuracy that error feedback does not win back.
  int64_t start_powerSGD_iter = 1000;
  // A matrix is compressed only when (n + m) * rank * min_compression_rate < n * m.
  double min_compression_rate = 2.0;
  bool use_error_feedback = true;
  bool warm_start = true;  // reuse last step's Q as the start of this step's power iteration
  double orthogonalization_epsilon = 0.0;
  uint64_t random_seed = 0;
};

// The hook's state across steps (per bucket: error, P, Q), and what it has done.
class PowerSGDState {
 public:
  explicit PowerSGDState(PowerSGDOptions options = {})
      : options(options), rng(options.random_seed) {}
  const PowerSGDOptions options;
  int64_t iter = 0;  // steps done (counted at each step's last bucket)
  // Elements all-reduced with the hook active: as sent, and as they would have been uncompressed.
  int64_t elements_sent = 0, elements_uncompressed = 0;

  struct BucketMemory {
    Tensor error, p, q;
  };
  std::map<size_t, BucketMemory> buckets;
  Generator rng;
};

// A hook over `state`, to pass to DistributedDataParallel::register_comm_hook.
CommHook powerSGD_hook(std::shared_ptr<PowerSGDState> state);

}  // namespace weft::dist
