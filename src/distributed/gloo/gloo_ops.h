// Internal to ProcessGroupGloo: what its group and its intra-host path (intra_host.h) share of
// Gloo. GlooStore lets Gloo's rendezvous use a weft Store (every wait bounded, errors naming the
// keys); gloo_allreduce reduces one tensor over a Gloo context with the arithmetic the group
// promises (fp16/bf16 combined in float and rounded back; AVG = SUM, then divided by the size);
// the other collectives and point-to-point ops for the group (gloo_collectives.cpp, gloo_p2p.cpp).
#pragma once

#include <gloo/allreduce.h>
#include <gloo/context.h>
#include <gloo/rendezvous/store.h>

#include <memory>

#include "distributed/collectives.h"
#include "weft/distributed/process_group.h"
#include "weft/distributed/store.h"

namespace weft::dist::detail {

using Ctx = std::shared_ptr<gloo::Context>;

// Gloo's rendezvous reads and writes through this: our Store (TCPStore, FileStore, PrefixStore),
// whose every blocking call has a timeout and throws DistError naming the keys.
class GlooStore : public gloo::rendezvous::Store {
 public:
  explicit GlooStore(std::shared_ptr<dist::Store> s) : s_(std::move(s)) {}
  void set(const std::string& key, const std::vector<char>& data) override {
    s_->set(key, std::vector<uint8_t>(data.begin(), data.end()));
  }
  std::vector<char> get(const std::string& key) override {
    auto v = s_->get(key);
    return std::vector<char>(v.begin(), v.end());
  }
  void wait(const std::vector<std::string>& keys) override { s_->wait(keys); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& t) override {
    s_->wait(keys, t);
  }

 private:
  std::shared_ptr<dist::Store> s_;
};

// The elementwise combiner Gloo's collectives call for a float32/int64 tensor (SUM for AVG).
gloo::AllreduceOptions::Func gloo_reduce_fn(DType dtype, ReduceOp op);

// In place over ctx's ranks; `tag` keeps concurrent ops apart, `timeout` bounds it.
void gloo_allreduce(const std::shared_ptr<gloo::Context>& ctx, const Tensor& t, ReduceOp op,
                    uint32_t tag, Duration timeout);

// The ops below run on the group's communication thread (gloo_collectives.cpp); each is one
// Gloo collective over ctx, arguments already checked (collectives.h), bounded by `timeout`.
// Roots are ranks of ctx. AVG is SUM then a division, where the result lands.
void gloo_reduce(const Ctx& ctx, const Tensor& t, int root, ReduceOp op, uint32_t tag,
                 Duration timeout);
void gloo_gather(const Ctx& ctx, const std::vector<Tensor>& outputs, const Tensor& input, int root,
                 uint32_t tag, Duration timeout);
void gloo_scatter(const Ctx& ctx, const Tensor& output, const std::vector<Tensor>& inputs, int root,
                  uint32_t tag, Duration timeout);
void gloo_allgather_into(const Ctx& ctx, const Tensor& output, const Tensor& input, uint32_t tag,
                         Duration timeout);
// Gloo's ReduceScatterHalvingDoubling (its legacy API: bounded by the timeout the context was
// connected with, counts in int): each rank sends and receives about the input's bytes once.
void gloo_reduce_scatter(const Ctx& ctx, const Tensor& output, const Tensor& input, ReduceOp op);
// Rank j's counts.send[j] elements at counts.send_offsets[j] of input land in its output.
void gloo_alltoallv(const Ctx& ctx, const Tensor& output, const Tensor& input,
                    const AlltoallCounts& counts, uint32_t tag, Duration timeout);
// Posts a send (or recv) of t's bytes to (from) `peer` at once; the Work's wait() waits for it.
// `what` names it in errors ("gloo send(to rank 1, tag 0) on rank 0 of 2").
std::shared_ptr<Work> gloo_p2p(const Ctx& ctx, bool is_send, const Tensor& t, int peer, int tag,
                               Duration timeout, std::string what);

}  // namespace weft::dist::detail
