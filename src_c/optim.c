/* optim.c — instantiates optim_impl.h for float and double. */
#include <math.h>
#include <string.h>
#include "cbp.h"

#define CBP_TEMPLATE "optim_impl.h"
#include "instantiate.h"
