/* engine.c — instantiates engine_impl.h for float and double. */
#include <math.h>
#include <string.h>
#include "cbp.h"

#define CBP_TEMPLATE "engine_impl.h"
#include "instantiate.h"
