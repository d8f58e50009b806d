#include "resume.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "training.h"
#include "weft/distributed/distributed.h"

namespace weft_train {

using namespace weft;
namespace fs = std::filesystem;

namespace {

// What a rank holds: its newest usable checkpoint's epoch (0: none), the XXH64 of that file,
// how many files it skipped as unusable, and where its directory is ("host:/abs/dir").
struct Holding {
  int64_t epoch = 0, digest = 0, unusable = 0;
  std::string where;
};

constexpr size_t kWhereBytes = 512;  // as much of `where` as travels
constexpr int64_t kWords = 3 + kWhereBytes / 8;

std::string where_of(const std::string& dir) {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "?");
  std::error_code ec;
  const fs::path abs = fs::absolute(dir, ec);
  return std::string(host) + ":" + (ec ? dir : abs.lexically_normal().string());
}

// Every rank's Holding, in rank order: one allgather of fixed-size int64 rows.
std::vector<Holding> gather(const Holding& mine, Device dev) {
  const int world = dist::get_world_size();
  if (world == 1) return {mine};
  std::vector<int64_t> row(kWords, 0);
  row[0] = mine.epoch, row[1] = mine.digest, row[2] = mine.unusable;
  std::memcpy(&row[3], mine.where.data(), std::min(mine.where.size(), kWhereBytes - 1));
  Tensor in = tensor(row, {kWords}).to(dev);
  std::vector<Tensor> out;
  for (int r = 0; r < world; ++r) out.push_back(make_empty({kWords}, kInt64, dev));
  dist::default_group()->allgather(out, in)->wait();
  std::vector<Holding> all;
  for (const Tensor& t : out) {
    const std::vector<int64_t> v = t.to(Device::CPU()).to_vector_int64();
    Holding h{v[0], v[1], v[2], {}};
    const char* s = reinterpret_cast<const char*>(&v[3]);
    h.where.assign(s, strnlen(s, kWhereBytes));
    all.push_back(std::move(h));
  }
  return all;
}

// The rank whose checkpoint everyone resumes from (-1: none); throws when checkpoints exist but
// none is usable, or when two ranks hold different files of the newest epoch.
int pick_source(const std::vector<Holding>& all, const Config& c) {
  int src = -1;
  for (int r = 0; r < (int)all.size(); ++r)
    if (all[r].epoch > 0 && (src < 0 || all[r].epoch > all[src].epoch)) src = r;
  if (src < 0) {
    std::string bad;
    for (int r = 0; r < (int)all.size(); ++r)
      if (all[r].unusable > 0)
        bad += "; rank " + std::to_string(r) + "'s " + all[r].where + " holds " +
               std::to_string(all[r].unusable) + " unusable checkpoint(s)";
    WEFT_CHECK(bad.empty(), "--resume: no usable checkpoint", bad,
               " (the messages above say why). Not starting from scratch over them, which would "
               "overwrite ",
               c.metrics, ": move them away to start afresh");
    return -1;
  }
  for (int r = 0; r < (int)all.size(); ++r)
    WEFT_CHECK(all[r].epoch != all[src].epoch || all[r].digest == all[src].digest,
               "--resume: ranks disagree on epoch ", all[src].epoch, ": rank ", src, "'s ",
               checkpoint_path(all[src].where, (int)all[src].epoch), " and rank ", r, "'s ",
               checkpoint_path(all[r].where, (int)all[r].epoch),
               " differ (checkpoints of different runs?); remove the one that does not belong");
  return src;
}

// `bytes` on rank `src` becomes `bytes` on every rank (size first, then the data as int64s).
void broadcast_bytes(std::vector<uint8_t>& bytes, int src, Device dev) {
  auto group = dist::default_group();
  Tensor size = tensor(std::vector<int64_t>{(int64_t)bytes.size()}, {1}).to(dev);
  group->broadcast({size}, src)->wait();
  const int64_t n = size.to(Device::CPU()).to_vector_int64()[0];
  const int64_t words = (n + 7) / 8;
  Tensor data = make_empty({words}, kInt64, Device::CPU());
  if (dist::get_rank() == src && n > 0) std::memcpy(data.raw_data(), bytes.data(), (size_t)n);
  data = data.to(dev);
  group->broadcast({data}, src)->wait();
  data = data.to(Device::CPU());
  bytes.assign(static_cast<const uint8_t*>(data.raw_data()),
               static_cast<const uint8_t*>(data.raw_data()) + n);
}

// Rank 0's account of the decision: who lacked the checkpoint and got it from `src`.
void tell(const std::vector<Holding>& all, int src) {
  const Holding& s = all[src];
  for (int r = 0; r < (int)all.size(); ++r) {
    if (all[r].epoch == s.epoch) continue;
    const std::string has =
        all[r].epoch > 0 ? "only epoch " + std::to_string(all[r].epoch) : "no usable checkpoint";
    std::printf("rank %d's %s has %s: it receives epoch %lld's checkpoint from rank %d\n", r,
                all[r].where.c_str(), has.c_str(), (long long)s.epoch, src);
  }
}

}  // namespace

std::optional<Checkpoint> agree_on_checkpoint(const Config& c, Device dev, bool report, bool lead) {
  NewestCheckpoint mine = find_newest_checkpoint(c, report);
  Holding h{mine.epoch, 0, mine.unusable, where_of(c.checkpoint_dir)};
  if (mine.epoch > 0)
    h.digest = static_cast<int64_t>(serialize::xxh64(mine.bytes.data(), mine.bytes.size()));
  const std::vector<Holding> all = gather(h, dev);
  const int src = pick_source(all, c);
  if (src < 0) {
    if (lead) std::printf("no checkpoint in %s: starting from scratch\n", c.checkpoint_dir.c_str());
    return std::nullopt;
  }
  const int epoch = (int)all[src].epoch;
  bool everyone_has_it = true;
  for (const Holding& o : all) everyone_has_it = everyone_has_it && o.epoch == epoch;
  std::string name = checkpoint_path(c.checkpoint_dir, epoch);
  if (!everyone_has_it) {
    if (lead) tell(all, src);
    broadcast_bytes(mine.bytes, src, dev);
    if (dist::get_rank() != src)
      name = "rank " + std::to_string(src) + "'s " + checkpoint_path(all[src].where, epoch);
  }
  Checkpoint ck = decode_checkpoint(std::move(mine.bytes), name, c, epoch);
  if (lead)
    std::printf("resuming after epoch %d from %s\n", epoch,
                src == 0 ? c.checkpoint_dir.c_str() : name.c_str());
  return ck;
}

int apply_checkpoint(const Checkpoint& ck, const Config& c, nn::Module& model,
                     optim::Optimizer& opt, amp::GradScaler& scaler, optim::LRScheduler* sched,
                     int64_t steps_per_epoch) {
  // --strategy fsdp loaded the model's shards already (agree_on_sharded_checkpoint).
  if (c.strategy != "fsdp") model.load_state_dict(ck.model);
  opt.load_state_dict(ck.optim);
  if (scaler.is_enabled() && !ck.scaler.empty()) scaler.load_state_dict(ck.scaler);
  if (sched) sched->set_last_epoch(scheduler_count(c, ck.epoch, steps_per_epoch));
  return ck.epoch;
}

}  // namespace weft_train
