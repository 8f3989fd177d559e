/*
 * gates_impl.h — the local view of the chain rule: each gate multiplies
 * the upstream gradient dz by its own local gradient.
 * Template: see instantiate.h.  Arguments are validated by the caller.
 */

/* z = x + y:  ∂z/∂x = ∂z/∂y = 1, so the add gate distributes dz. */
void FN(add_gate_backward)(ptrdiff_t size, const REAL *dz, REAL *dx, REAL *dy)
{
    for (ptrdiff_t i = 0; i < size; i++) {
        dx[i] = dz[i];
        dy[i] = dz[i];
    }
}

/* z = x y:  ∂z/∂x = y, ∂z/∂y = x, so the mul gate switches its inputs. */
void FN(mul_gate_backward)(ptrdiff_t size, const REAL *dz, const REAL *x, const REAL *y,
                           REAL *dx, REAL *dy)
{
    for (ptrdiff_t i = 0; i < size; i++) {
        REAL g = dz[i], xi = x[i], yi = y[i];
        dx[i] = g * yi;
        dy[i] = g * xi;
    }
}

/* z = max(x, 0):  ∂z/∂x = [x > 0], so the ReLU gate filters dz. */
void FN(relu_gate_backward)(ptrdiff_t size, const REAL *dz, const REAL *x, REAL *dx)
{
    for (ptrdiff_t i = 0; i < size; i++)
        dx[i] = x[i] > 0 ? dz[i] : 0;
}
