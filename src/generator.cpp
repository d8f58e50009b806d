#include "weft/generator.h"

#include <cmath>
#include <sstream>

#include "weft/error.h"

namespace weft {

void Generator::manual_seed(uint64_t seed) {
  engine_.seed(seed);
  seed_ = seed;
  has_spare_ = false;
}

uint64_t Generator::next_u64() { return engine_(); }

float Generator::uniform() { return (float)(engine_() >> 40) * (1.0f / 16777216.0f); }

double Generator::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  // 53-bit uniforms; u1 in (0,1] so log is finite.
  double u1 = ((engine_() >> 11) + 1) * (1.0 / 9007199254740992.0);
  double u2 = (engine_() >> 11) * (1.0 / 9007199254740992.0);
  double r = std::sqrt(-2.0 * std::log(u1));
  spare_ = r * std::sin(2.0 * M_PI * u2);
  has_spare_ = true;
  return r * std::cos(2.0 * M_PI * u2);
}

int64_t Generator::randint(int64_t low, int64_t high) {
  WEFT_CHECK(high > low, "randint: empty range [", low, ", ", high, ")");
  uint64_t range = (uint64_t)(high - low);
  // Rejection sampling keeps the distribution exactly uniform.
  uint64_t limit = UINT64_MAX - UINT64_MAX % range;
  uint64_t x;
  do x = engine_();
  while (x >= limit);
  return low + (int64_t)(x % range);
}

std::string Generator::get_state() const {
  std::ostringstream os;
  os << seed_ << ' ' << has_spare_ << ' ' << std::hexfloat << spare_ << ' ' << engine_;
  return os.str();
}

void Generator::set_state(const std::string& state) {
  std::istringstream is(state);
  uint64_t seed;
  bool spare_flag;
  std::string spare_text;
  std::mt19937_64 engine;
  is >> seed >> spare_flag >> spare_text >> engine;
  WEFT_CHECK(!is.fail(), "Generator::set_state: malformed state string");
  seed_ = seed;
  has_spare_ = spare_flag;
  spare_ = std::strtod(spare_text.c_str(), nullptr);
  engine_ = engine;
}

Generator& default_generator() {
  static Generator g;
  return g;
}

void manual_seed(uint64_t seed) {
  std::lock_guard<std::mutex> lock(default_generator().mutex());
  default_generator().manual_seed(seed);
}

}  // namespace weft
