/* kernels.c — instantiates kernels_impl.h for float and double. */
#include <math.h>
#include "cbp.h"

#define CBP_TEMPLATE "kernels_impl.h"
#include "instantiate.h"
