#include "distributed/shm/rendezvous.h"

#include <cstdio>
#include <sstream>

#include "distributed/shm/config.h"

namespace weft::dist::shm {

namespace {

std::string key(const char* what, int rank) {
  return std::string("shm/") + what + "/" + std::to_string(rank);
}

// Which ranks share this rank's host, and one leader per host; false when nothing is shared.
bool group_hosts(Store& store, HostPlan& plan, int size, bool enabled) {
  store.set(key("host", plan.rank), enabled ? host_id() : "");
  std::vector<std::string> hosts(size);
  for (int r = 0; r < size; ++r) {
    hosts[r] = store.get_string(key("host", r));
    if (hosts[r].empty()) return false;  // WEFT_SHM=0 there: Gloo alone, everywhere
  }
  for (int r = 0; r < size; ++r) {
    if (hosts[r] == hosts[plan.rank]) plan.local.push_back(r);
    bool first = true;
    for (int q = 0; q < r && first; ++q) first = hosts[q] != hosts[r];
    if (first) {
      if (hosts[r] == hosts[plan.rank]) plan.host_index = static_cast<int>(plan.leaders.size());
      plan.leaders.push_back(r);
    }
  }
  return static_cast<int>(plan.leaders.size()) < size;
}

// The leader creates the segment and publishes "<name> <chunk>"; the others map it. Returns
// "ok" or what went wrong on this rank.
std::string map_segment(Store& store, HostPlan& plan, size_t chunk) {
  const int n = static_cast<int>(plan.local.size()), leader = plan.local.front();
  bool published = false;
  try {
    if (plan.leader()) {
      Segment seg = ShmGroup::create_segment(n, chunk);
      const std::string name = seg.name();
      plan.shm = std::make_unique<ShmGroup>(std::move(seg), 0, plan.local, chunk);
      store.set(key("segment", leader), name + " " + std::to_string(chunk));
      published = true;
    } else {
      const std::string v = store.get_string(key("segment", leader));
      if (!v.empty() && v[0] == '!')
        return "its host's leader, rank " + std::to_string(leader) +
               ", could not create the segment";
      std::istringstream in(v);
      std::string name;
      size_t leader_chunk = 0;
      in >> name >> leader_chunk;
      int me = 0;
      while (plan.local[me] != plan.rank) ++me;
      plan.shm =
          std::make_unique<ShmGroup>(Segment::open(name, ShmGroup::segment_bytes(n, leader_chunk)),
                                     me, plan.local, leader_chunk);
    }
  } catch (const DistError& e) {
    plan.shm.reset();
    if (plan.leader() && !published) store.set(key("segment", leader), "!");
    return e.what();
  }
  return "ok";
}

}  // namespace

std::optional<HostPlan> plan_hosts(Store& store, int rank, int size, const Settings& settings) {
  if (size < 2) return std::nullopt;
  HostPlan plan;
  plan.rank = rank;
  if (!group_hosts(store, plan, size, settings.enabled)) return std::nullopt;
  const std::string status =
      plan.local.size() > 1 ? map_segment(store, plan, settings.chunk) : "ok";
  store.set(key("status", rank), status);
  std::string failed;
  for (int r = 0; r < size; ++r)
    if (store.get_string(key("status", r)) != "ok" && failed.empty()) failed = std::to_string(r);
  // Every rank of the host has mapped the segment or given up: the name can go, and the memory
  // goes with the last process that maps it, however that process ends.
  if (plan.shm && plan.leader()) plan.shm->segment().unlink();
  if (failed.empty()) return plan;
  if (status != "ok")
    std::fprintf(stderr, "[weft] rank %d: shared-memory all-reduce off for this group: %s\n", rank,
                 status.c_str());
  return std::nullopt;
}

}  // namespace weft::dist::shm
