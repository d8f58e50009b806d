// Test helper: one host's ShmGroup with its ranks as threads in this process (the shared-memory
// tests: test_shm_allreduce.cpp, test_shm_symmetric.cpp). Group ranks are 10, 11, ...; the
// segment's name is unlinked once every rank has mapped it, as the real rendezvous does.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "distributed/shm/shm_group.h"
#include "weft/error.h"

namespace weft::test {

struct ShmHost {
  std::vector<std::unique_ptr<dist::shm::ShmGroup>> ranks;
  std::string name;
  ShmHost(int n, size_t chunk) {
    std::vector<int> group_ranks;
    for (int r = 0; r < n; ++r) group_ranks.push_back(10 + r);  // group ranks 10, 11, ...
    dist::shm::Segment seg = dist::shm::ShmGroup::create_segment(n, chunk);
    name = seg.name();
    ranks.push_back(std::make_unique<dist::shm::ShmGroup>(std::move(seg), 0, group_ranks, chunk));
    for (int r = 1; r < n; ++r)
      ranks.push_back(std::make_unique<dist::shm::ShmGroup>(
          dist::shm::Segment::open(name, dist::shm::ShmGroup::segment_bytes(n, chunk)), r,
          group_ranks, chunk));
    ranks[0]->segment().unlink();
  }
  // Runs fn(local rank) on one thread per rank; returns each thread's DistError message.
  std::vector<std::string> run(const std::function<void(int)>& fn, int skip = -1) {
    std::vector<std::string> errors(ranks.size());
    std::vector<std::thread> threads;
    for (int r = 0; r < static_cast<int>(ranks.size()); ++r) {
      if (r == skip) continue;
      threads.emplace_back([&, r] {
        try {
          fn(r);
        } catch (const DistError& e) {
          errors[r] = e.what();
        }
      });
    }
    for (auto& t : threads) t.join();
    return errors;
  }
};

inline dist::shm::Deadline long_deadline() {
  return dist::shm::Deadline::after(std::chrono::seconds(120));
}

}  // namespace weft::test
