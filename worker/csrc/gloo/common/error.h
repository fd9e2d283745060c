// Stand-in for gloo/common/error.h (see README.md): ProcessGroupGloo.hpp needs nothing from it.
// Gloo's exceptions reach this build only as std::exception through c10d.
#pragma once

#include "gloo/config.h"
