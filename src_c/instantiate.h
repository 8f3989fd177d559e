/*
 * instantiate.h — compiles the template named by CBP_TEMPLATE twice:
 * once for float (names end in _f32), once for double (_f64).
 *
 * Inside a template:
 *   REAL         the element type
 *   FN(name)     the public name cbp_<name>_f32 / cbp_<name>_f64
 *   M(fn)        the C99 math function of that precision: M(exp) is expf
 *                for float, exp for double
 *   BLAS(name)   the BLAS routine of that precision from the table `blas`:
 *                BLAS(gemm) is blas->sgemm / blas->dgemm
 *   R(x)         a literal of type REAL, so float code stays float
 *   REAL_MAX     the largest finite REAL (FLT_MAX / DBL_MAX)
 *   REAL_IS_FLOAT  1 for float, 0 for double
 *   IREAL        the signed integer type of REAL's width: the bits of |x|
 *                (sign cleared) read as IREAL order like |x|
 *   INF_BITS     the bits of +infinity: |x|'s bits are >= it iff x is not finite
 *
 * Every template also sees bits_impl.h's helpers for the running max |x|.
 *
 * Usage:  #define CBP_TEMPLATE "kernels_impl.h"
 *         #include "instantiate.h"
 */
#include <float.h>
#include <stdint.h>
#include <string.h>

#ifndef CBP_TEMPLATE
#error "define CBP_TEMPLATE before including instantiate.h"
#endif

#define REAL float
#define FN(name) cbp_##name##_f32
#define M(fn) fn##f
#define BLAS(name) blas->s##name
#define R(x) ((float)(x))
#define REAL_MAX FLT_MAX
#define REAL_IS_FLOAT 1
#define IREAL int32_t
#define INF_BITS INT32_C(0x7f800000)
#include "bits_impl.h"
#include CBP_TEMPLATE
#undef REAL
#undef FN
#undef M
#undef BLAS
#undef R
#undef REAL_MAX
#undef REAL_IS_FLOAT
#undef IREAL
#undef INF_BITS

#define REAL double
#define FN(name) cbp_##name##_f64
#define M(fn) fn
#define BLAS(name) blas->d##name
#define R(x) ((double)(x))
#define REAL_MAX DBL_MAX
#define REAL_IS_FLOAT 0
#define IREAL int64_t
#define INF_BITS INT64_C(0x7ff0000000000000)
#include "bits_impl.h"
#include CBP_TEMPLATE
#undef REAL
#undef FN
#undef M
#undef BLAS
#undef R
#undef REAL_MAX
#undef REAL_IS_FLOAT
#undef IREAL
#undef INF_BITS

#undef CBP_TEMPLATE
