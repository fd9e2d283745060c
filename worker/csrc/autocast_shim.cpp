// A plain C ABI over ATen's autocast state, used by worker/src/model/autocast.rs. tch's own
// `autocast` only toggles CUDA autocast with its default dtype (float16); training needs bfloat16
// on the CPU as well as on CUDA.
//
// Conventions (as in c10d_shim.cpp):
// - Devices are c10::DeviceType values (0 CPU, 1 CUDA; nothing else is accepted); dtypes are
//   c10::ScalarType values (5 Half, 15 BFloat16; nothing else is accepted).
// - Fallible functions return 0 on success and -1 on failure; the message is then available from
//   kontrast_autocast_last_error() on the same thread. No C++ exception crosses this boundary.
// - Autocast state, its nesting depth and its cache of cast weights are thread-local in ATen:
//   enter and exit must run on the same thread.
#include <exception>
#include <string>

#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include "guarded.h"

namespace {

thread_local std::string last_error;

// Runs `body`, turning any exception into -1 plus a message for kontrast_autocast_last_error().
template <typename F>
int guarded(const char* what, F&& body) noexcept {
  return kontrast::guarded(last_error, what, std::forward<F>(body));
}

c10::DeviceType device_of(int device_type) {
  switch (device_type) {
    case static_cast<int>(c10::DeviceType::CPU):
      return c10::DeviceType::CPU;
    case static_cast<int>(c10::DeviceType::CUDA):
      return c10::DeviceType::CUDA;
    default:
      TORCH_CHECK(false, "autocast is only used on the CPU and CUDA, not device type ", device_type);
  }
}

// The autocast dtype to enter with; only the two reduced-precision float types make sense.
c10::ScalarType autocast_dtype_of(int scalar_type) {
  switch (scalar_type) {
    case static_cast<int>(c10::ScalarType::Half):
      return c10::ScalarType::Half;
    case static_cast<int>(c10::ScalarType::BFloat16):
      return c10::ScalarType::BFloat16;
    default:
      TORCH_CHECK(false, "autocast needs float16 or bfloat16, not scalar type ", scalar_type);
  }
}

// A dtype saved by kontrast_autocast_enter, put back as it was.
c10::ScalarType saved_dtype_of(int scalar_type) {
  TORCH_CHECK(
      scalar_type >= 0 && scalar_type < static_cast<int>(c10::ScalarType::NumOptions),
      "not a scalar type: ",
      scalar_type);
  return static_cast<c10::ScalarType>(scalar_type);
}

} // namespace

extern "C" {

const char* kontrast_autocast_last_error(void) {
  return last_error.c_str();
}

// Whether autocast is on for `device_type` on this thread, and its dtype.
int kontrast_autocast_state(int device_type, int* enabled, int* dtype) {
  return guarded("autocast state", [&] {
    TORCH_CHECK(enabled != nullptr && dtype != nullptr, "null output pointer");
    const auto device = device_of(device_type);
    *enabled = at::autocast::is_autocast_enabled(device) ? 1 : 0;
    *dtype = static_cast<int>(at::autocast::get_autocast_dtype(device));
  });
}

// Turns autocast on for `device_type` with `scalar_type`, as torch.autocast.__enter__ does, and
// reports the previous state for kontrast_autocast_exit. Nothing changes on failure.
int kontrast_autocast_enter(int device_type, int scalar_type, int* prev_enabled, int* prev_dtype) {
  return guarded("autocast enter", [&] {
    TORCH_CHECK(prev_enabled != nullptr && prev_dtype != nullptr, "null output pointer");
    const auto device = device_of(device_type);
    const auto dtype = autocast_dtype_of(scalar_type);
    *prev_enabled = at::autocast::is_autocast_enabled(device) ? 1 : 0;
    *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(device));
    at::autocast::set_autocast_enabled(device, true);
    at::autocast::set_autocast_dtype(device, dtype);
    at::autocast::increment_nesting();
  });
}

// Leaves a region entered by kontrast_autocast_enter, as torch.autocast.__exit__ does: the cache
// of cast weights is dropped when the outermost region ends (the weights change before the next
// forward pass), then the previous state is restored.
int kontrast_autocast_exit(int device_type, int prev_enabled, int prev_dtype) {
  return guarded("autocast exit", [&] {
    const auto device = device_of(device_type);
    const auto dtype = saved_dtype_of(prev_dtype);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(device, prev_enabled != 0);
    at::autocast::set_autocast_dtype(device, dtype);
  });
}

} // extern "C"
