// Seeded random number generation. One default generator (manual_seed) plus explicit
// Generator objects for samplers and workers. State can be saved and restored exactly, so
// a resumed run draws the same numbers as an uninterrupted one.
#pragma once

#include <cstdint>
#include <mutex>
#include <random>
#include <string>

namespace weft {

class Generator {
 public:
  explicit Generator(uint64_t seed = 67280421310721ull) : engine_(seed), seed_(seed) {}
  void manual_seed(uint64_t seed);
  uint64_t initial_seed() const { return seed_; }
  uint64_t next_u64();
  float uniform();  // [0, 1) with 24 random bits, as PyTorch's float uniform
  double normal();  // N(0,1), Box-Muller
  int64_t randint(int64_t low, int64_t high);  // [low, high)
  std::string get_state() const;
  void set_state(const std::string& state);
  std::mutex& mutex() { return mu_; }

 private:
  std::mt19937_64 engine_;
  uint64_t seed_;
  bool has_spare_ = false;
  double spare_ = 0;
  mutable std::mutex mu_;
};

Generator& default_generator();
void manual_seed(uint64_t seed);

}  // namespace weft
