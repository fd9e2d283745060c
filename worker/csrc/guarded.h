// The error convention every C shim in this directory follows: a fallible entry point runs its
// body through `guarded`, which turns any C++ exception into -1 and a message in the shim's
// thread-local `last_error` (read back through the shim's `*_last_error()` function). No C++
// exception crosses the C boundary.
#pragma once

#include <exception>
#include <string>
#include <utility>

#include <c10/util/Exception.h>

namespace kontrast {

template <typename F>
int guarded(std::string& last_error, const char* what, F&& body) noexcept {
  try {
    std::forward<F>(body)();
    return 0;
  } catch (const c10::Error& e) {
    // what() would append a C++ backtrace; the message alone is what a user can act on.
    last_error = std::string(what) + ": " + e.what_without_backtrace();
  } catch (const std::exception& e) {
    last_error = std::string(what) + ": " + e.what();
  } catch (...) {
    last_error = std::string(what) + ": unknown C++ exception";
  }
  return -1;
}

}  // namespace kontrast
