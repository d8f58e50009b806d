// Internal: where CUDA tensors' and pinned host tensors' storage comes from. Device memory comes
// from one caching BlockPool per device (caching_allocator_core.h), tied to the device's current
// stream at allocation; pinned host memory (cudaHostAlloc) is cached by size and reused only
// after the copies that read or wrote it (recorded with pinned_record_use) have completed.
// Declared in every build: without the CUDA backend (src/cuda/no_cuda.cpp) allocating throws.
#pragma once

#include <cstddef>

#include "weft/cuda.h"

namespace weft::cuda::detail {

void* device_alloc(size_t nbytes, int device);  // on current_stream(device)
void device_free(void* ptr, int device);
void device_record_stream(void* ptr, int device, const Stream& s);

void* pinned_alloc(size_t nbytes);
void pinned_free(void* ptr);
// `ptr` is the start of a pinned allocation used by work queued on `s` (an async copy).
void pinned_record_use(void* ptr, const Stream& s);
bool is_pinned_ptr(const void* ptr);  // start of a live pinned allocation

}  // namespace weft::cuda::detail
