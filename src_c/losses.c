/* losses.c — instantiates losses_impl.h for float and double. */
#include <math.h>
#include <string.h>
#include "cbp.h"

#define CBP_TEMPLATE "losses_impl.h"
#include "instantiate.h"
