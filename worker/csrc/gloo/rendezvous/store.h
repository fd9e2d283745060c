// Stand-in for gloo/rendezvous/store.h (see README.md).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "gloo/config.h"

namespace gloo {
namespace rendezvous {

// The base of c10d's inline GlooStore, whose overrides must match these signatures. The extra
// pure virtual keeps GlooStore abstract in this build: only libtorch, with the real gloo, may
// create one.
class Store {
 public:
  virtual ~Store() = default;

  virtual void set(const std::string& key, const std::vector<char>& data) = 0;
  virtual std::vector<char> get(const std::string& key) = 0;
  virtual void wait(const std::vector<std::string>& keys) = 0;
  virtual void wait(
      const std::vector<std::string>& keys,
      const std::chrono::milliseconds& timeout) = 0;

 private:
  virtual void stand_in_only_libtorch_creates_gloo_stores() = 0;
};

} // namespace rendezvous
} // namespace gloo
