// Stand-in for gloo/context.h (see README.md).
#pragma once

#include <chrono>

#include "gloo/config.h"

namespace gloo {

// Only ever created by libtorch and held here through std::shared_ptr. No data members are
// declared and construction is impossible, so nothing compiled here can depend on its layout.
class Context {
 public:
  Context() = delete;
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // Out-of-line in gloo and exported by libtorch (ProcessGroupGloo::setTimeout calls it inline).
  void setTimeout(std::chrono::milliseconds timeout);
};

} // namespace gloo
