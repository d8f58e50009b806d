// weft::cuda's queries in a build without the CUDA backend: no devices. (The CUDA build defines
// them in src/cuda/runtime.cpp.)
#include <atomic>

#include "weft/cuda.h"

namespace weft::cuda {

namespace {
std::atomic<bool> g_allow_tf32{false};
}

bool is_available() { return false; }
int device_count() { return 0; }
void synchronize(int device) {
  WEFT_CHECK(device < 0, "synchronize(", device, "): this build of weft has no CUDA backend");
}
void set_allow_tf32(bool allow) { g_allow_tf32 = allow; }
bool allow_tf32() { return g_allow_tf32; }

}  // namespace weft::cuda
