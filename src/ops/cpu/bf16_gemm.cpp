// oneDNN matmul primitives for bf16 products, one per shape and layout, made on first use and
// kept (a primitive costs far more to make than a small product does to run). Plain strided
// memory on both sides, so no reorders; scratchpads come from weft's allocator
// (scratchpad_mode::user), so that a primitive may run on any thread, and on several at once.
#include "ops/cpu/bf16_gemm.h"

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <string>
#include <unordered_map>

#include "weft/tensor.h"

namespace weft::cpu {

namespace {

using dnnl::memory;

const dnnl::engine& engine() {
  static const dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

// op(X) as a rows x cols bf16 view of memory with leading dimension ld.
memory::desc view(int64_t rows, int64_t cols, bool trans, int64_t ld) {
  return memory::desc({rows, cols}, memory::data_type::bf16,
                      trans ? memory::dims{1, ld} : memory::dims{ld, 1});
}

struct Entry {
  std::optional<dnnl::matmul> prim;  // empty: oneDNN has no native kernel for it
  memory::desc a, b, c, bias, scratch;
};

using Key = std::array<int64_t, 9>;
std::mutex g_mutex;
std::map<Key, std::shared_ptr<Entry>> g_cache;

std::shared_ptr<Entry> entry_for(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda,
                                 int64_t ldb, int64_t ldc, bool has_bias) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_cache.size() > 256) g_cache.clear();  // shapes that keep changing: start over
  auto& e = g_cache[{ta, tb, M, N, K, lda, ldb, ldc, has_bias}];
  if (e) return e;
  e = std::make_shared<Entry>();
  e->a = view(M, K, ta, lda);
  e->b = view(K, N, tb, ldb);
  e->c = memory::desc({M, N}, memory::data_type::bf16, memory::dims{ldc, 1});
  if (has_bias) e->bias = memory::desc({1, N}, memory::data_type::f32, memory::dims{N, 1});
  try {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(e->a, e->b, e->bias, e->c), attr, engine());
    if (std::string(pd.impl_info_str()).find("ref") == std::string::npos) {
      e->prim.emplace(pd);
      e->scratch = pd.scratchpad_desc();
    }
  } catch (const dnnl::error&) {
  }
  return e;
}

}  // namespace

bool bf16_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A,
               int64_t lda, const uint16_t* B, int64_t ldb, uint16_t* C, int64_t ldc,
               const float* bias) {
  if (M <= 0 || N <= 0 || K <= 0) return false;
  std::shared_ptr<Entry> e = entry_for(trans_a, trans_b, M, N, K, lda, ldb, ldc, bias != nullptr);
  if (!e->prim) return false;
  thread_local dnnl::stream stream(engine());
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, memory(e->a, engine(), const_cast<uint16_t*>(A))},
      {DNNL_ARG_WEIGHTS, memory(e->b, engine(), const_cast<uint16_t*>(B))},
      {DNNL_ARG_DST, memory(e->c, engine(), C)}};
  if (bias) args.emplace(DNNL_ARG_BIAS, memory(e->bias, engine(), const_cast<float*>(bias)));
  Tensor scratch;
  if (e->scratch.get_size() > 0) {
    scratch = make_empty({(int64_t)((e->scratch.get_size() + 3) / 4)});
    args.emplace(DNNL_ARG_SCRATCHPAD, memory(e->scratch, engine(), scratch.data_ptr<float>()));
  }
  e->prim->execute(stream, args);
  stream.wait();
  return true;
}

}  // namespace weft::cpu
