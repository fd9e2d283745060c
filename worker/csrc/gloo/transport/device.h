// Stand-in for gloo/transport/device.h (see README.md). Devices are created by libtorch
// (ProcessGroupGloo::createDeviceForHostname) and only passed around here as std::shared_ptr.
#pragma once

#include "gloo/config.h"

namespace gloo {
namespace transport {

class Device;
class UnboundBuffer;

} // namespace transport
} // namespace gloo
