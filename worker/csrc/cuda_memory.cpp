// What libtorch's CUDA caching allocator holds, for the worker's GPU-memory gauge
// (worker/src/cuda_memory.rs). tch does not expose the allocator's statistics.
//
// Built without CUDA (no `nccl` cargo feature) the call reports exactly that. Errors follow
// guarded.h, read back through kontrast_cuda_memory_last_error().
#include <cstdint>
#include <string>

#ifdef USE_CUDA
#include <c10/core/Allocator.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "guarded.h"

namespace {
thread_local std::string last_error;
}  // namespace

extern "C" {

const char* kontrast_cuda_memory_last_error() { return last_error.c_str(); }

// Bytes of tensors allocated on `device` now and at their peak, and bytes the allocator has
// reserved from the driver.
int kontrast_cuda_memory(int device, int64_t* allocated, int64_t* peak, int64_t* reserved) noexcept {
#ifdef USE_CUDA
  return kontrast::guarded(last_error, "CUDA memory statistics", [&] {
    const auto stats =
        c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    constexpr auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    *allocated = stats.allocated_bytes[all].current;
    *peak = stats.allocated_bytes[all].peak;
    *reserved = stats.reserved_bytes[all].current;
  });
#else
  (void)device;
  *allocated = *peak = *reserved = 0;
  last_error = "this kontrast was built without CUDA (cargo feature nccl)";
  return -1;
#endif
}

}  // extern "C"
