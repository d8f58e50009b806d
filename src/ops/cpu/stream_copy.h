// Internal: a copy with non-temporal (streaming) stores for large, write-once outputs.
// Regular stores first read each destination line into cache (read-for-ownership), which
// costs a third of the bandwidth of a copy; glibc's memcpy streams above a size threshold,
// so kernels that copy many mid-sized runs (ChannelShuffle planes) stream too, to keep up.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace weft::cpu {

inline void stream_copy(float* dst, const float* src, int64_t n) {
#if defined(__AVX512F__) || defined(__AVX__)
#if defined(__AVX512F__)
  constexpr int64_t kLanes = 16;
#else
  constexpr int64_t kLanes = 8;
#endif
  int64_t i = 0;
  while (i < n && (reinterpret_cast<uintptr_t>(dst + i) % (kLanes * 4)) != 0) {
    dst[i] = src[i];
    ++i;
  }
  for (; i + kLanes <= n; i += kLanes) {
#if defined(__AVX512F__)
    _mm512_stream_ps(dst + i, _mm512_loadu_ps(src + i));
#else
    _mm256_stream_ps(dst + i, _mm256_loadu_ps(src + i));
#endif
  }
  for (; i < n; ++i) dst[i] = src[i];
#else
  std::memcpy(dst, src, (size_t)n * sizeof(float));
#endif
}

// o[i] = f(i) for i in [0, n), the 64-byte-aligned blocks of 16 written with streaming stores:
// for outputs larger than the last-level cache, where reading each line in first (the
// read-for-ownership of a plain store) would add a third to the memory traffic.
template <typename F>
inline void stream_store_fn(float* o, int64_t n, F f) {
  int64_t i = 0;
#if defined(__AVX512F__)
  while (i < n && (reinterpret_cast<uintptr_t>(o + i) % 64) != 0) {
    o[i] = f(i);
    ++i;
  }
  for (; i + 16 <= n; i += 16) {
    alignas(64) float v[16];
    for (int l = 0; l < 16; ++l) v[l] = f(i + l);
    _mm512_stream_ps(o + i, _mm512_load_ps(v));
  }
#endif
  for (; i < n; ++i) o[i] = f(i);
}

// Orders streamed stores before later loads/stores of other threads (call once at the end).
inline void stream_fence() {
#if defined(__AVX512F__) || defined(__AVX__)
  _mm_sfence();
#endif
}

}  // namespace weft::cpu
