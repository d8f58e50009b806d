#include "weft/nn/parallel/parallel_apply.h"

#include <exception>
#include <thread>

#include "nn/parallel/replica_output.h"
#include "weft/amp/autocast.h"
#include "weft/autograd.h"
#include "weft/cuda.h"
#include "weft/ops.h"

namespace weft::nn::parallel {

std::vector<std::vector<Tensor>> parallel_apply(
    const std::vector<std::shared_ptr<Module>>& replicas,
    const std::vector<std::vector<Tensor>>& inputs, const std::vector<Device>& devices,
    int threads_per_replica) {
  const size_t n = inputs.size();
  WEFT_CHECK(replicas.size() >= n && devices.size() >= n, "parallel_apply: ", n, " inputs but ",
             replicas.size(), " replicas and ", devices.size(), " devices");
  std::vector<std::vector<Tensor>> results(n);
  std::vector<std::exception_ptr> errors(n);
  const bool grad_mode = GradMode::is_enabled();
  // Replicas run under the caller's autocast regions, as PyTorch's parallel_apply re-enters them.
  const amp::AutocastState autocast = amp::autocast_state();
  const int caller_threads = get_num_threads();
  // Each replica queues its kernels on the caller's current stream of its device, as PyTorch's
  // parallel_apply does: a fresh thread would start on the default streams, unordered with a
  // caller's non-blocking stream that scattered the inputs (and will gather the outputs).
  const std::vector<cuda::Stream> streams = cuda::current_streams();
  auto run = [&](size_t i) {
    // Its prints reach std::cout/std::cerr in whole lines (Note [Replica output]).
    detail::ReplicaOutputScope output;
    try {
      cuda::set_current_streams(streams);
      GradMode::set_enabled(grad_mode);
      amp::set_autocast_state(autocast);
      DeviceGuard dg(devices[i]);
      set_num_threads(threads_per_replica);
      results[i] = replicas[i]->forward_multi(inputs[i]);
    } catch (...) {
      errors[i] = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  for (size_t i = 1; i < n; ++i) threads.emplace_back(run, i);
  run(0);
  for (auto& t : threads) t.join();
  GradMode::set_enabled(grad_mode);
  set_num_threads(caller_threads);
  for (size_t i = 0; i < n; ++i) {
    if (!errors[i]) continue;
    try {
      std::rethrow_exception(errors[i]);
    } catch (const std::exception& e) {
      WEFT_ERROR("in replica ", i, " on device ", devices[i], ": ", e.what());
    }
  }
  return results;
}

}  // namespace weft::nn::parallel
