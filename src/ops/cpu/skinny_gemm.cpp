// Skinny SGEMM kernels (see skinny_gemm.h). Register-blocked micro-kernels on GCC vector types
// of one register's width (16 floats with AVX-512, 8 with AVX, 4 otherwise). Tiles past
// the edge of the small operand read its last row again and drop the result, so that one
// micro-kernel shape serves every size; leftover columns (fewer than a vector) take a scalar loop.
#include "ops/cpu/skinny_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "ops/cpu/parallel.h"

namespace weft::cpu {

namespace {

// One vector register of floats on the machine compiled for (-march=native in the build).
#if defined(__AVX512F__)
constexpr int L = 16;
#elif defined(__AVX__)
constexpr int L = 8;
#else
constexpr int L = 4;
#endif
typedef float vf __attribute__((vector_size(L * sizeof(float))));

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
// Non-temporal store of a vector-aligned vector (a plain store without AVX).
inline void stream_store(float* p, vf v) {
#if defined(__AVX512F__)
  _mm512_stream_ps(p, (__m512)v);
#elif defined(__AVX__)
  _mm256_stream_ps(p, (__m256)v);
#else
  store(p, v);
#endif
}
inline float hsum(vf v) {
  float s = 0;
  for (int i = 0; i < L; ++i) s += v[i];
  return s;
}
inline float blend(float beta, const float* c, float v) { return beta == 0 ? v : beta * *c + v; }

// Grain (in tiles) so that a chunk holds at least ~256K multiply-adds before forking a thread.
int64_t grain_for(int64_t work_per_tile) {
  return std::max<int64_t>(1, (int64_t(1) << 18) / std::max<int64_t>(1, work_per_tile));
}

// C[M,N] = A[M,K] B[N,K]^T (Linear's forward x W^T): dot products along K, both operands
// read contiguously. Tiles of 4 rows of A by 4 rows of B (16 accumulators).
void gemm_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, float beta, float* C, int64_t ldc) {
  const int64_t tiles = (N + 3) / 4;
  parallel_for(0, tiles, grain_for(4 * M * K), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n0 = t * 4;
      const float* b[4];
      for (int j = 0; j < 4; ++j) b[j] = B + std::min(n0 + j, N - 1) * ldb;
      for (int64_t m0 = 0; m0 < M; m0 += 4) {
        const float* a[4];
        for (int i = 0; i < 4; ++i) a[i] = A + std::min(m0 + i, M - 1) * lda;
        vf acc[4][4] = {};
        int64_t k = 0;
        for (; k + L <= K; k += L) {
          vf bv[4];
          for (int j = 0; j < 4; ++j) bv[j] = load(b[j] + k);
          for (int i = 0; i < 4; ++i) {
            vf av = load(a[i] + k);
#if defined(__AVX512F__)
            asm("" : "+v"(av));  // keep it in a register: folded into 4 FMAs it is loaded 4 times
#endif
            for (int j = 0; j < 4; ++j) acc[i][j] += av * bv[j];
          }
        }
        for (int i = 0; i < 4 && m0 + i < M; ++i)
          for (int j = 0; j < 4 && n0 + j < N; ++j) {
            float s = hsum(acc[i][j]);
            for (int64_t kk = k; kk < K; ++kk) s += a[i][kk] * b[j][kk];
            float* c = C + (m0 + i) * ldc + n0 + j;
            *c = blend(beta, c, s);
          }
      }
    }
  });
}

// One 8-row by NV*16-column block of C (+)= A[M,K] B[K,N] over rows [k0, k1) of B.
template <int NV>
void nn_block(int64_t M, int64_t m0, int64_t k0, int64_t k1, const float* A, int64_t lda,
              const float* B, int64_t ldb, int64_t c0, float beta, float* C, int64_t ldc) {
  const float* a[8];
  for (int i = 0; i < 8; ++i) a[i] = A + std::min(m0 + i, M - 1) * lda;
  vf acc[8][NV] = {};
  for (int64_t k = k0; k < k1; ++k) {
    // B is walked down its columns, a row apart: fetch a few rows ahead (first row tile only;
    // the next one finds the strip in L2).
    if (m0 == 0 && k + 8 < k1)
      for (int j = 0; j < NV; ++j) __builtin_prefetch(B + (k + 8) * ldb + c0 + j * L);
    vf bv[NV];
    for (int j = 0; j < NV; ++j) bv[j] = load(B + k * ldb + c0 + j * L);
    for (int i = 0; i < 8; ++i) {
      const float s = a[i][k];
      for (int j = 0; j < NV; ++j) acc[i][j] += s * bv[j];
    }
  }
  for (int i = 0; i < 8 && m0 + i < M; ++i)
    for (int j = 0; j < NV; ++j) {
      float* c = C + (m0 + i) * ldc + c0 + j * L;
      store(c, beta == 0 ? acc[i][j] : beta * load(c) + acc[i][j]);
    }
}

// C[M,N] = A[M,K] B[K,N] for small M (Linear's input gradient dy W). B is taken in strips of
// three vectors of columns by 512 rows (96 KB with AVX-512), small enough to stay in L2 while every
// row tile of A uses it.
void gemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, float beta, float* C, int64_t ldc) {
  constexpr int64_t kW = 3 * L, kRows = 512;
  const int64_t blocks = N / kW, vec_end = N / L * L;
  auto strip = [&](auto nv, int64_t c0) {
    for (int64_t k0 = 0; k0 < K; k0 += kRows) {
      const float b = k0 == 0 ? beta : 1.0f;
      for (int64_t m0 = 0; m0 < M; m0 += 8)
        nn_block<decltype(nv)::value>(M, m0, k0, std::min(K, k0 + kRows), A, lda, B, ldb, c0, b, C,
                                      ldc);
    }
  };
  parallel_for(0, blocks + 1, grain_for(kW * M * K), [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      if (blk < blocks) {
        strip(std::integral_constant<int, 3>(), blk * kW);
        continue;
      }
      // The last, narrower block: single-vector columns, then a scalar remainder.
      for (int64_t c0 = blocks * kW; c0 < vec_end; c0 += L)
        strip(std::integral_constant<int, 1>(), c0);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t c = vec_end; c < N; ++c) {
          float s = 0;
          for (int64_t k = 0; k < K; ++k) s += A[m * lda + k] * B[k * ldb + c];
          C[m * ldc + c] = blend(beta, C + m * ldc + c, s);
        }
    }
  });
}

// One 4-row by NV*16-column block of C = A[K,M]^T B[K,N] (K small).
// With `stream`, C's rows are written with non-temporal stores: C is larger than the caches
// and is not read again soon, so reading each line in before overwriting it is wasted.
template <int NV>
void tn_block(int64_t M, int64_t m0, int64_t K, const float* A, int64_t lda, const float* B,
              int64_t ldb, int64_t c0, float beta, float* C, int64_t ldc, bool stream) {
  const int64_t mi[4] = {std::min(m0, M - 1), std::min(m0 + 1, M - 1), std::min(m0 + 2, M - 1),
                         std::min(m0 + 3, M - 1)};
  vf acc[4][NV] = {};
  for (int64_t k = 0; k < K; ++k) {
    vf bv[NV];
    for (int j = 0; j < NV; ++j) bv[j] = load(B + k * ldb + c0 + j * L);
    for (int i = 0; i < 4; ++i) {
      const float s = A[k * lda + mi[i]];
      for (int j = 0; j < NV; ++j) acc[i][j] += s * bv[j];
    }
  }
  for (int i = 0; i < 4 && m0 + i < M; ++i)
    for (int j = 0; j < NV; ++j) {
      float* c = C + (m0 + i) * ldc + c0 + j * L;
      vf v = beta == 0 ? acc[i][j] : beta * load(c) + acc[i][j];
      if (stream)
        stream_store(c, v);
      else
        store(c, v);
    }
}

// C[M,N] = A[K,M]^T B[K,N] for small K: the weight gradient dy^T x of a Linear layer. C is
// the large side and is written exactly once.
void gemm_tn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, float beta, float* C, int64_t ldc) {
  constexpr int64_t kW = 4 * L;
  const int64_t blocks = N / kW, vec_end = N / L * L;
  const int64_t tiles = (M + 3) / 4;
  const bool stream = M * N * sizeof(float) >= (size_t(4) << 20) && ldc % L == 0 &&
                      reinterpret_cast<uintptr_t>(C) % sizeof(vf) == 0;
  parallel_for(0, tiles, grain_for(4 * N * K), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t m0 = t * 4;
      for (int64_t blk = 0; blk < blocks; ++blk)
        tn_block<4>(M, m0, K, A, lda, B, ldb, blk * kW, beta, C, ldc, stream);
      for (int64_t c0 = blocks * kW; c0 < vec_end; c0 += L)
        tn_block<1>(M, m0, K, A, lda, B, ldb, c0, beta, C, ldc, stream);
      for (int64_t m = m0; m < std::min(m0 + 4, M); ++m)
        for (int64_t c = vec_end; c < N; ++c) {
          float s = 0;
          for (int64_t k = 0; k < K; ++k) s += A[k * lda + m] * B[k * ldb + c];
          C[m * ldc + c] = blend(beta, C + m * ldc + c, s);
        }
    }
    if (stream) _mm_sfence();  // streamed stores visible before the caller reads C
  });
}

constexpr int64_t kMaxSmall = 32;       // rows of the small operand
constexpr int64_t kMinLarge = 64 * 64;  // elements of the large operand worth the kernels

}  // namespace

bool skinny_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
                  int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0 || K <= 0) return false;
  if (!trans_a && trans_b && M <= kMaxSmall && K >= L && N * K >= kMinLarge) {
    gemm_nt(M, N, K, A, lda, B, ldb, beta, C, ldc);
    return true;
  }
  if (!trans_a && !trans_b && M <= kMaxSmall && N >= L && N * K >= kMinLarge) {
    gemm_nn(M, N, K, A, lda, B, ldb, beta, C, ldc);
    return true;
  }
  if (trans_a && !trans_b && K <= kMaxSmall && N >= L && M * N >= kMinLarge) {
    gemm_tn(M, N, K, A, lda, B, ldb, beta, C, ldc);
    return true;
  }
  return false;
}

}  // namespace weft::cpu
