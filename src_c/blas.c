/* blas.c — instantiates blas_impl.h for float and double. */
#include <math.h>
#include "cbp.h"

#define CBP_TEMPLATE "blas_impl.h"
#include "instantiate.h"
