// One rank of the distributed checkpoint tests (tests/test_dcp.cpp, under weft-run). Tensors hold
// a closed form of (generation, name, global element index), so a load at any world size can
// check every element it receives:
//   save DIR GEN     "w" (10x6, rows split over the ranks), "flat" (23, split unevenly), "r"
//                    (3x2, replicated) and "step" (int64, replicated)
//   load DIR GEN     the same keys sharded for this world, loaded and checked; rank 0 also
//                    checks load_full, consolidate, and that a wrong shape is refused
//   badsave DIR GEN  rank 1 offers a broken entry: every rank must fail, naming rank 1
//   crash DIR GEN    rank 1 is killed while the others save
#include <weft/distributed/checkpoint.h>
#include <weft/distributed/distributed.h>
#include <weft/weft.h>

#include <csignal>
#include <cstdio>
#include <string>

#include "worker_check.h"

using namespace weft;
namespace dcp = weft::dist::checkpoint;

namespace {

int g_world = 1;

float value(int gen, int which, int64_t index) {
  return static_cast<float>(gen * 10000 + which * 1000 + index);
}

// [start, start + count) of n items split over the ranks, the first n % world getting one more.
std::pair<int64_t, int64_t> my_range(int64_t n) {
  const int64_t base = n / g_world, extra = n % g_world, r = test::g_rank;
  return {r * base + std::min(r, extra), base + (r < extra ? 1 : 0)};
}

dcp::StateDict make_state(int gen) {
  dcp::StateDict s;
  auto [row0, rows] = my_range(10);
  Tensor w = empty({rows, 6});
  for (int64_t i = 0; i < rows * 6; ++i) w.data_ptr<float>()[i] = value(gen, 1, row0 * 6 + i);
  s["w"] = dcp::ShardedTensor{w, {10, 6}, {row0, 0}};
  auto [f0, fn] = my_range(23);
  Tensor flat = empty({fn});
  for (int64_t i = 0; i < fn; ++i) flat.data_ptr<float>()[i] = value(gen, 2, f0 + i);
  s["flat"] = dcp::ShardedTensor{flat, {23}, {f0}};
  Tensor r = empty({3, 2});
  for (int64_t i = 0; i < 6; ++i) r.data_ptr<float>()[i] = value(gen, 3, i);
  s["r"] = r;
  s["step"] = tensor(std::vector<int64_t>{gen * 7}, {1});
  return s;
}

void check_state(const dcp::StateDict& s, int gen) {
  const auto& w = std::get<dcp::ShardedTensor>(s.at("w"));
  for (int64_t i = 0; i < w.local.numel(); ++i)
    EXPECT(w.local.data_ptr<float>()[i] == value(gen, 1, w.offsets[0] * 6 + i), "w[", i, "] is ",
           w.local.data_ptr<float>()[i]);
  const auto& flat = std::get<dcp::ShardedTensor>(s.at("flat"));
  for (int64_t i = 0; i < flat.local.numel(); ++i)
    EXPECT(flat.local.data_ptr<float>()[i] == value(gen, 2, flat.offsets[0] + i), "flat[", i, "]");
  const Tensor& r = std::get<Tensor>(s.at("r"));
  for (int64_t i = 0; i < 6; ++i) EXPECT(r.data_ptr<float>()[i] == value(gen, 3, i), "r[", i, "]");
  EXPECT(std::get<Tensor>(s.at("step")).item<int64_t>() == gen * 7, "step");
}

int load_and_check(const std::string& dir, int gen) {
  dcp::StateDict s = make_state(0);  // this world's sharding, zero generation
  dcp::load(s, dir);
  check_state(s, gen);
  if (test::g_rank == 0) {
    auto full = dcp::load_full(dir);
    EXPECT(full.at("w").sizes() == Shape({10, 6}) &&
               full.at("w").data_ptr<float>()[59] == value(gen, 1, 59),
           "load_full's w");
    dcp::consolidate(dir, dir + ".full.safetensors");
    TensorDict plain = weft::load(dir + ".full.safetensors");
    EXPECT(plain.find("flat") && plain.find("flat")->data_ptr<float>()[22] == value(gen, 2, 22),
           "the consolidated file's flat");
    dcp::StateDict wrong;
    wrong["w"] = zeros({11, 6});
    bool refused = false;
    try {
      dcp::load(wrong, dir);
    } catch (const Error& e) {
      refused = std::string(e.what()).find("'w' is float32 (10, 6) there") != std::string::npos;
    }
    EXPECT(refused, "a wrong shape was not refused by name");
  }
  std::printf("rank %d: loaded generation %d at world %d\n", test::g_rank, gen, g_world);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) return 64;
  const std::string mode = argv[1], dir = argv[2];
  const int gen = std::atoi(argv[3]);
  try {
    dist::init_process_group();
    test::g_rank = dist::get_rank();
    g_world = dist::get_world_size();
    int rc = 0;
    if (mode == "save") {
      dcp::save(make_state(gen), dir);
      std::printf("rank %d: saved generation %d at world %d\n", test::g_rank, gen, g_world);
    } else if (mode == "load") {
      rc = load_and_check(dir, gen);
    } else if (mode == "badsave") {
      auto s = make_state(gen);
      if (test::g_rank == 1) s["w"] = dcp::ShardedTensor{zeros({4, 6}), {10, 6}, {8, 0}};
      try {
        dcp::save(s, dir);
        test::fail("a save with a box outside its tensor succeeded");
      } catch (const dist::DistError& e) {
        EXPECT(std::string(e.what()).find("rank 1") != std::string::npos, e.what());
        std::printf("rank %d: save refused: %s\n", test::g_rank, e.what());
      }
    } else if (mode == "crash") {
      dist::default_group()->barrier()->wait();
      if (test::g_rank == 1) std::raise(SIGKILL);
      dcp::save(make_state(gen), dir);
      test::fail("a save without rank 1 succeeded");
    }
    std::fflush(stdout);
    dist::destroy_process_group();
    return rc;
  } catch (const std::exception& e) {
    std::printf("rank %d: fatal: %s\n", test::g_rank, e.what());
    return 3;
  }
}
