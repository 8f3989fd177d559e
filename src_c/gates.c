/* gates.c — instantiates gates_impl.h for float and double. */
#include <math.h>
#include "cbp.h"

#define CBP_TEMPLATE "gates_impl.h"
#include "instantiate.h"
