// Stand-in for gloo/algorithm.h (see README.md): ProcessGroupGloo.hpp needs nothing from it.
#pragma once

#include "gloo/context.h"
