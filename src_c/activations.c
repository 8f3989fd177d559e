/* activations.c — instantiates activations_impl.h for float and double. */
#include <math.h>
#include "cbp.h"

#define CBP_TEMPLATE "activations_impl.h"
#include "instantiate.h"
