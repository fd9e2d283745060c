// Stand-in for gloo/config.h (see README.md). No optional gloo features are visible to this build:
// in particular GLOO_STORE_HAS_STORE_V2 stays undefined, which only affects GlooStore, a class this
// build never instantiates.
#pragma once
