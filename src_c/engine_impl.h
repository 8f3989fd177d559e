/*
 * engine_impl.h — a compiled network: forward, loss, backward, update,
 * a whole training step and a run of mini-batches, each one call.
 * Template: see instantiate.h.  Arguments are validated by the caller;
 * every buffer of the plan (cbp_net in cbp.h) is owned by the caller and
 * sized for net->capacity rows.  Nothing here allocates.
 *
 * Layer l (0-based) maps A_{l-1} (n, n_in) to Z_l = A_{l-1} W_lᵀ + b_l and
 * A_l = σ_l(Z_l), with A_{-1} = X.  The backward pass runs the derivation:
 *   Δ_L = ∂loss/∂A_L ⊙ σ_L'(Z_L)
 *   dW_l = Δ_lᵀ A_{l-1},  db_l = Σ_rows Δ_l
 *   Δ_{l-1} = (Δ_l W_l) ⊙ σ_{l-1}'(Z_{l-1})     (no input gradient for l = 0)
 * One sample (n = 1) takes the vector forms: gemv and ger.
 *
 * A training step with plain SGD folds the update into the weight
 * products (W_l ← W_l − lr Δ_lᵀ A_{l-1}, one ger or gemm per layer), after
 * all deltas are computed with the old weights; other optimizers store
 * the gradient and make one pass over the flat buffers.
 */

#define LAYER_W(net, L) ((REAL *)(net)->params + (L)->w_offset)
#define LAYER_B(net, L) ((REAL *)(net)->params + (L)->b_offset)

static const REAL *FN(net_output)(const cbp_net *net)
{
    return (const REAL *)net->layers[net->n_layers - 1].A;
}

/* ------------------------------------------------------------------
 * Passes on OpenBLAS's threads (pool.c, cbp_obx_*).  In a fused step
 * whose products run on OpenBLAS's threads (net->ob_parts > 1, set by
 * the caller), the passes over a large layer — its bias rows, its
 * activation, σ' with its bias sums — are split over those threads by
 * blocks of columns (unit_share: part 0, the caller's, takes the first
 * block, the one OpenBLAS's product leaves in the caller's cache), while
 * they would otherwise spin until the next product.  Each pass is
 * element-wise per column, and each bias sum still runs over the rows in
 * order, so the step is the serial step bit for bit; the maxima are
 * combined after.
 *
 * Measured 2026-12-06 on 2 cores (Xeon, SkylakeX kernels), float32, the
 * C loop on one repeated batch, all passes split against none, ÷ the
 * BLAS floor: 784-2048-2048-10 at batch 256 (2 MiB per pass) 1.025
 * against 1.060; 784-1024-1024-10 at 128 (512 KiB) 1.045 against 1.065,
 * at 256 1.047 against 1.059; 784-2048-2048-10 at 64 1.022 against
 * 1.033; 784-512-512-10 at 128 (256 KiB) 1.070 against 1.069; and
 * 784-256-128-10 at 128 (128 KiB) 1.165 against 1.110: a small layer's
 * pass, just written by a product on both cores, costs each part about
 * what the whole pass costs one core (it runs at the speed of the
 * traffic between the two cores' caches).  So only passes of at least
 * OBX_MIN_BYTES are split.
 * ------------------------------------------------------------------ */
#ifndef CBP_OBX_TASKS /* once for both instantiations */
#define CBP_OBX_TASKS
enum { OBX_BIAS, OBX_ACTIVATE, OBX_FINISH, OBX_MIN_BYTES = 512 * 1024 };
#endif

static void FN(unit_share)(int size, int part, int parts, int *lo, int *hi);
static double FN(max2)(double a, double b);

struct FN(obx_pass_ctx) {
    const cbp_net *net;
    cbp_layer *L;
    int n, task;
    double part_max[CBP_POOL_MAX_PARTS];
};

static void FN(obx_pass_part)(void *arg, int part, int parts)
{
    struct FN(obx_pass_ctx) *c = (struct FN(obx_pass_ctx) *)arg;
    cbp_layer *L = c->L;
    const int n = c->n, n_out = L->n_out;
    int j0, j1;
    FN(unit_share)(n_out, part, parts, &j0, &j1);
    const int width = j1 - j0;
    REAL *Z = (REAL *)L->Z + j0, *A = (REAL *)L->A + j0;
    double m = 0;
    if (width > 0 && c->task == OBX_BIAS) { /* linear_forward's bias rows */
        const REAL *b = LAYER_B(c->net, L) + j0;
        for (ptrdiff_t i = 0; i < n; i++)
            memcpy(Z + i * n_out, b, sizeof(REAL) * (size_t)width);
    } else if (width > 0 && c->task == OBX_ACTIVATE) { /* forward_chunk's measured pass */
        for (ptrdiff_t i = 0; i < n; i++)
            m = FN(max2)(m, L->activation != CBP_IDENTITY
                                ? FN(activation_forward_max)(L->activation, width, Z + i * n_out,
                                                             A + i * n_out)
                                : FN(max_abs)(width, A + i * n_out));
    } else if (width > 0 && c->task == OBX_FINISH) { /* finish_delta's measured pass */
        m = FN(activation_backward_sum_max_ld)(L->activation, n, width, n_out, Z,
                                               (REAL *)L->D + j0, (REAL *)L->S + j0);
    }
    c->part_max[part] = m;
}

/* Does the pass over layer L's n rows go to OpenBLAS's threads? */
static int FN(obx_splits)(const cbp_net *net, const cbp_layer *L, int n)
{
    return net->ob_parts > 1 && (double)n * L->n_out * sizeof(REAL) >= OBX_MIN_BYTES;
}

/* The pass `task` over layer L on OpenBLAS's threads; the maximum of
 * its parts' maxima. */
static double FN(obx_pass)(const cbp_net *net, cbp_layer *L, int n, int task)
{
    struct FN(obx_pass_ctx) c;
    c.net = net;
    c.L = L;
    c.n = n;
    c.task = task;
    memset(c.part_max, 0, sizeof c.part_max);
    cbp_obx_run(FN(obx_pass_part), &c, net->ob_parts);
    double m = 0;
    for (int p = 0; p < net->ob_parts; p++)
        m = FN(max2)(m, c.part_max[p]);
    return m;
}

/* Forward n <= capacity rows of X (n, n_in) through every layer.
 * measure (the fused step): each hidden layer's a_max = max |A|, taken in
 * the activation's own pass, a large layer's passes on OpenBLAS's
 * threads when the caller allows (obx_splits).  Without measure, on the
 * pool when the caller holds it (pool_forward). */
static void FN(pool_forward)(const cbp_net *net, int n, const REAL *X);

static void FN(forward_chunk)(const cbp_net *net, int n, const REAL *X, int measure)
{
    if (!measure && net->pool_parts > 1 && n >= 2 && net->n_layers <= CBP_POOL_MAX_LAYERS) {
        FN(pool_forward)(net, n, X); /* a caller holding the pool: inference in fit */
        return;
    }
    const REAL *in = X;
    for (int l = 0; l < net->n_layers; l++) {
        cbp_layer *L = &net->layers[l];
        ptrdiff_t size = (ptrdiff_t)n * L->n_out;
        REAL *Z = L->Z, *A = L->A;
        /* The NN form's workspace: Xᵀ in the layer below's D (the input
         * layer's in batch_xt), Zᵀ in this layer's D, both free until the
         * backward pass. */
        REAL *XT = l == 0 ? (REAL *)net->batch_xt : (REAL *)net->layers[l - 1].D;
        if (n == 1)
            FN(linear_forward_vec)(net->blas, L->n_out, L->n_in, LAYER_W(net, L),
                                   LAYER_B(net, L), in, Z);
        else if (net->forward_nn && XT != NULL && cbp_forward_nn_pays(n, L->n_out, L->n_in))
            FN(linear_forward_nn)(net->blas, n, L->n_out, L->n_in, LAYER_W(net, L),
                                  LAYER_B(net, L), in, XT, (REAL *)L->D, Z);
        else if (measure && FN(obx_splits)(net, L, n)) { /* linear_forward, its bias split */
            FN(obx_pass)(net, L, n, OBX_BIAS);
            FN(gemm_rm)(net->blas, 0, 1, n, L->n_out, L->n_in, 1, in, L->n_in,
                        LAYER_W(net, L), L->n_in, 1, Z, L->n_out);
        } else
            FN(linear_forward)(net->blas, n, L->n_out, L->n_in, LAYER_W(net, L),
                               LAYER_B(net, L), in, Z);
        if (measure && l < net->n_layers - 1 && FN(obx_splits)(net, L, n))
            L->a_max = FN(obx_pass)(net, L, n, OBX_ACTIVATE);
        else if (measure && l < net->n_layers - 1)
            L->a_max = L->activation != CBP_IDENTITY
                           ? FN(activation_forward_max)(L->activation, size, Z, A)
                           : FN(max_abs)(size, A);
        else if (L->activation != CBP_IDENTITY) /* NaN for an overflowed z: see there */
            (void)FN(activation_forward_max)(L->activation, size, Z, A);
        in = A;
    }
}

/* Δ_l ⊙= σ'_l(Z_l), the Hadamard step that finishes a layer's delta.
 * measure (the fused step): the same pass also leaves Σ_rows Δ_l in S and
 * max |Δ_l| in d_max (for a large layer on OpenBLAS's threads when the
 * caller allows, obx_splits). */
static void FN(finish_delta)(const cbp_net *net, cbp_layer *L, int n, int measure)
{
    if (measure && FN(obx_splits)(net, L, n))
        L->d_max = FN(obx_pass)(net, L, n, OBX_FINISH);
    else if (measure)
        L->d_max = FN(activation_backward_sum_max)(L->activation, n, L->n_out, L->Z, L->D,
                                                   L->S);
    else
        FN(activation_backward)(L->activation, (ptrdiff_t)n * L->n_out, L->Z, L->D);
}

/* Loss of the chunk's n rows (their share of Σ w l / weight_total) and
 * Δ_L = ∂loss/∂Z_L into the last layer's D. */
static double FN(loss_chunk)(const cbp_net *net, int n, const void *target,
                             const REAL *w, double weight_total, int measure)
{
    cbp_layer *last = &net->layers[net->n_layers - 1];
    const REAL *out = FN(net_output)(net);
    REAL *delta = last->D;
    double loss;
    if (net->loss == CBP_LOSS_SOFTMAX_CE)
        loss = FN(softmax_cross_entropy)(n, last->n_out, out, (const int64_t *)target, w,
                                         weight_total, delta);
    else if (net->loss == CBP_LOSS_BCE)
        loss = FN(binary_cross_entropy)(n, last->n_out, out, (const REAL *)target, w,
                                        weight_total, delta);
    else
        loss = FN(mean_squared_error)(n, last->n_out, out, (const REAL *)target, w,
                                      weight_total, delta);
    FN(finish_delta)(net, last, n, measure);
    return loss;
}

/* The error recurrence, from Δ_L in the last layer's D down to Δ_0:
 * Δ_{l-1} = (Δ_l W_l) ⊙ σ'_{l-1}(Z_{l-1}) (backprop_delta's two steps,
 * the product by BLAS, then finish_delta).  The first layer needs no
 * input gradient. */
static void FN(backward_deltas)(const cbp_net *net, int n, int measure)
{
    for (int l = net->n_layers - 1; l > 0; l--) {
        const cbp_layer *L = &net->layers[l];
        cbp_layer *P = &net->layers[l - 1];
        if (n == 1)
            FN(matvec_t_vec)(net->blas, L->n_out, L->n_in, LAYER_W(net, L), L->D, P->D);
        else
            FN(matvec_t)(net->blas, n, L->n_out, L->n_in, LAYER_W(net, L), L->D, P->D);
        FN(finish_delta)(net, P, n, measure);
    }
}

static const REAL *FN(layer_input)(const cbp_net *net, int l, const REAL *X)
{
    return l == 0 ? X : (const REAL *)net->layers[l - 1].A;
}

/* dW_l = beta dW_l + Δ_lᵀ A_{l-1},  db_l = beta db_l + Σ_rows Δ_l, every
 * layer (beta = 1 adds a later chunk's share). */
static void FN(layer_gradients)(const cbp_net *net, int n, const REAL *X, REAL beta)
{
    REAL *grads = net->grads;
    for (int l = 0; l < net->n_layers; l++) {
        const cbp_layer *L = &net->layers[l];
        const REAL *in = FN(layer_input)(net, l, X);
        REAL *dW = grads + L->w_offset, *db = grads + L->b_offset;
        if (n == 1)
            FN(outer_vec)(net->blas, L->n_out, L->n_in, L->D, in, beta, dW);
        else
            FN(outer)(net->blas, n, L->n_out, L->n_in, L->D, in, beta, dW);
        FN(bias_grad)(n, L->n_out, L->D, beta, db);
    }
}

/* Plain SGD fused into the products, rows [j0, j1) of layer l:
 * W_l ← W_l − lr Δ_lᵀ A_{l-1} as one ger (one sample) or gemm with
 * alpha = −lr, beta = 1, and b_l ← b_l − lr Σ_rows Δ_l from the sums
 * finish_delta left in S (rounded and applied as bias_sum applies them).
 * The gradient is never stored. */
static void FN(fused_sgd_update_rows)(const cbp_net *net, int l, int n, const REAL *X,
                                      REAL lr, int j0, int j1)
{
    const cbp_layer *L = &net->layers[l];
    const REAL *in = FN(layer_input)(net, l, X);
    REAL *W = LAYER_W(net, L) + (ptrdiff_t)j0 * L->n_in, *b = LAYER_B(net, L);
    const REAL *D = (const REAL *)L->D + j0;
    if (n == 1)
        FN(ger_rm)(net->blas, j1 - j0, L->n_in, -lr, D, in, W);
    else
        FN(gemm_rm)(net->blas, 1, 0, j1 - j0, L->n_in, n, -lr, D, L->n_out, in, L->n_in, 1,
                    W, L->n_in);
    const REAL *sums = L->S, alpha = -lr;
    for (int j = j0; j < j1; j++)
        b[j] = b[j] + alpha * sums[j];
}

/* Every layer; the pool's parts each take their rows of W_l and b_l. */
static void FN(fused_sgd_update)(const cbp_net *net, int n, const REAL *X, REAL lr)
{
    for (int l = 0; l < net->n_layers; l++)
        FN(fused_sgd_update_rows)(net, l, n, X, lr, 0, net->layers[l].n_out);
}

/* Can the fused update run with no risk of a non-finite parameter?  Every
 * entry of Δ_lᵀ A_{l-1} is at most n · max|Δ_l| · max|A_{l-1}| in
 * magnitude, and of Σ Δ_l at most n · max|Δ_l|.  A finite p plus an
 * increment below SAFE_STEP = 2^(emax − mantissa − 3) — an eighth of half
 * an ulp of the largest finite number — cannot round to infinity,
 * whatever p is.  So if those bounds, times max(lr, 1) (BLAS may form the
 * product before scaling it), stay below SAFE_STEP, the update is finite;
 * otherwise the step takes the checked path.  The maxima were taken in
 * passes the step makes anyway (forward_chunk and finish_delta with
 * measure); max|X| is passed in when the caller has it (x_max >= 0:
 * gather_rows measures it while copying the rows), else read here. */
static int FN(layer_update_is_safe)(int n, double lr, double d_max, double a_max)
{
    const double safe_step = sizeof(REAL) == sizeof(float) ? ldexp(1.0, 127 - 23 - 3)
                                                           : ldexp(1.0, 1023 - 52 - 3);
    const double scale = (lr > 1 ? lr : 1) * (double)n;
    return scale * d_max * (a_max > 1 ? a_max : 1) < safe_step; /* false for inf and NaN too */
}

static int FN(fused_update_is_safe)(const cbp_net *net, int n, const REAL *X, double lr,
                                    double x_max)
{
    for (int l = 0; l < net->n_layers; l++) {
        double a = l > 0 ? net->layers[l - 1].a_max
                         : x_max >= 0 ? x_max : FN(max_abs)((ptrdiff_t)n * net->layers[0].n_in, X);
        if (!FN(layer_update_is_safe)(n, lr, net->layers[l].d_max, a))
            return 0;
    }
    return 1;
}

static const void *FN(target_rows)(const cbp_net *net, const void *target, ptrdiff_t row)
{
    if (net->loss == CBP_LOSS_SOFTMAX_CE)
        return (const int64_t *)target + row;
    return (const REAL *)target + row * net->layers[net->n_layers - 1].n_out;
}

/* Σ w over a batch of n rows (n without weights). */
static double FN(weight_sum)(ptrdiff_t n, const REAL *w)
{
    if (w == NULL)
        return (double)n;
    double total = 0.0;
    for (ptrdiff_t i = 0; i < n; i++)
        total += w[i];
    return total;
}

void FN(net_forward)(const cbp_net *net, ptrdiff_t n_rows, const REAL *X, REAL *outputs,
                     int transform)
{
    int n_in = net->layers[0].n_in, n_out = net->layers[net->n_layers - 1].n_out;
    for (ptrdiff_t start = 0; start < n_rows; start += net->capacity) {
        int n = (int)(n_rows - start < net->capacity ? n_rows - start : net->capacity);
        REAL *out = outputs + start * n_out;
        FN(forward_chunk)(net, n, X + start * n_in, 0);
        memcpy(out, FN(net_output)(net), sizeof(REAL) * (size_t)n * (size_t)n_out);
        if (transform == CBP_OUTPUT_SOFTMAX)
            FN(softmax_rows)(n, n_out, out);
        else if (transform == CBP_OUTPUT_SIGMOID)
            FN(activation_forward)(CBP_SIGMOID, (ptrdiff_t)n * n_out, out, out);
    }
}

double FN(net_loss)(const cbp_net *net, ptrdiff_t n_rows, const REAL *X,
                    const void *target, const REAL *w, int want_grads, REAL *outputs,
                    double *weight_total_out)
{
    int n_in = net->layers[0].n_in, n_out = net->layers[net->n_layers - 1].n_out;
    double weight_total = FN(weight_sum)(n_rows, w);
    if (weight_total_out != NULL)
        *weight_total_out = weight_total;
    int grads_written = 0;
    double loss = 0.0;
    for (ptrdiff_t start = 0; start < n_rows; start += net->capacity) {
        int n = (int)(n_rows - start < net->capacity ? n_rows - start : net->capacity);
        const REAL *Xc = X + start * n_in;
        FN(forward_chunk)(net, n, Xc, 0);
        if (outputs != NULL)
            memcpy(outputs + start * n_out, FN(net_output)(net),
                   sizeof(REAL) * (size_t)n * (size_t)n_out);
        loss += FN(loss_chunk)(net, n, FN(target_rows)(net, target, start),
                               w == NULL ? NULL : w + start, weight_total, 0);
        if (want_grads && weight_total > 0) {
            FN(backward_deltas)(net, n, 0);
            FN(layer_gradients)(net, n, Xc, grads_written ? 1 : 0);
            grads_written = 1;
        }
    }
    if (want_grads && !grads_written) /* no rows, or Σ w = 0: the gradient is zero */
        memset(net->grads, 0, sizeof(REAL) * (size_t)net->n_params);
    return loss;
}

/* The optimizer step from the stored gradient.  optim_update refuses any
 * step with a non-finite new value, which every non-finite gradient entry
 * gives (it propagates through each rule); only then is the gradient
 * scanned, to tell the caller which it was. */
static int FN(checked_update)(const cbp_net *net, cbp_optim *opt)
{
    int status = FN(optim_step)(opt, net->n_params, net->params, net->grads);
    if (status == CBP_NONFINITE_UPDATE && !FN(all_finite)(net->n_params, net->grads))
        return CBP_NONFINITE_GRADIENT;
    return status;
}

/* Plain SGD (no momentum, no weight decay) on a batch that fits the
 * workspace takes the fused path: the update is folded into the weight
 * products and the gradient is never stored. */
static int FN(can_fuse)(const cbp_net *net, const cbp_optim *opt, ptrdiff_t n)
{
    return cbp_optim_fuses(opt) && n >= 1 && n <= net->capacity;
}

/* One sample's x is read once per block of rows by gemv and ger; from a
 * 64-byte boundary (the workspace's batch_x) they run measurably faster
 * than from a user's row 16 bytes off, and the copy yields max|x| too. */
static int FN(misaligned)(const void *p)
{
    return (uintptr_t)p % 64 != 0;
}

/* ------------------------------------------------------------------
 * A training step on cbp's pool (pool.c): the same step as train_step's,
 * model-parallel.  Part p of P owns a share of every layer's units, a
 * block of whole cache lines (unit_share): it computes those columns of
 * Z_l and A_l, those columns of Δ_{l-1}, and those rows of W_l's update
 * and entries of b_l's, each with a single-threaded BLAS call on a block
 * of the matrices train_step multiplies whole.  The loss (all rows, one
 * small pass) is part 0's.  Every part meets the others at a barrier
 * after each layer's product and pass, as the next layer reads every
 * column.  Plain SGD folds the update into the products, as train_step's
 * fused path does: each part takes the guard's maxima over its own
 * blocks; after the last backward barrier every part combines them alike
 * and makes the same decision.  Any other optimizer: each part stores its
 * rows of dW_l and db_l, then updates its slice of the flat parameters
 * (cbp_optim_step_part; the caller finishes with cbp_optim_step_done).
 * The per-element arithmetic is train_step's
 * (same passes, same rounding; a block of a product is computed by the
 * same BLAS kernel), though BLAS does not promise the bits of a block to
 * be those of the whole product.
 * ------------------------------------------------------------------ */
/* A shuffled batch's source: rows order[first ..] of a data set of
 * n_rows rows (X, the targets, the weights or NULL), which gather_rows
 * copies into the plan's batch buffers. */
struct FN(rows_src) {
    const int64_t *order;
    ptrdiff_t first, n_rows;
    const REAL *X;
    const void *target;
    const REAL *w;
};

static double FN(gather_rows)(const cbp_net *net, const struct FN(rows_src) *src, int i0,
                              int i1);

struct FN(pool_ctx) {
    const cbp_net *net;
    int n;
    const REAL *X;
    const void *target;
    const REAL *w;
    double weight_total, lr, x_max;
    double loss;                 /* written by part 0 before the loss barrier */
    /* Plain SGD (fused): the update folded into the products, unless the
     * guard says otherwise (safe = 0, its decision every part's alike).
     * Any other optimizer: the parts store the gradient, then each updates
     * its slice of the parameters (cbp_optim_step_part; status, part 0's). */
    const cbp_optim *opt;
    int fused, safe, status;
    cbp_optim_share share;
    /* Shuffled batches (src != NULL): each part first gathers its rows of
     * the batch into the plan's batch buffers, which X, target and w then
     * point to; weight_total < 0: part 0 sums it. */
    const struct FN(rows_src) *src;
    double x_part[CBP_POOL_MAX_PARTS];
    double a_part[CBP_POOL_MAX_PARTS][CBP_POOL_MAX_LAYERS];
    double d_part[CBP_POOL_MAX_PARTS][CBP_POOL_MAX_LAYERS];
};

/* Part p's units [lo, hi) of `size`: boundaries at multiples of 64 bytes
 * from a row's start, so where rows are whole cache lines (n_out a
 * multiple of 16 floats or 8 doubles) no two parts write one line; a
 * small layer may fall to one part. */
static void FN(unit_share)(int size, int part, int parts, int *lo, int *hi)
{
    const int line = 64 / (int)sizeof(REAL);
    int a = (int)(((int64_t)size * part / parts + line / 2) / line * line);
    int b = (int)(((int64_t)size * (part + 1) / parts + line / 2) / line * line);
    *lo = part == 0 ? 0 : a < size ? a : size;
    *hi = part == parts - 1 ? size : b < size ? b : size;
}

static double FN(max2)(double a, double b)
{
    return a > b ? a : b;
}

/* Forward on the pool: this part's columns of Z_l = A_{l-1} W_lᵀ + b_l,
 * then of A_l, layer by layer (forward_chunk's arithmetic); with measure,
 * the part's max |A_l| of each hidden layer into c->a_part. */
static void FN(pool_forward_layers)(struct FN(pool_ctx) *c, int part, int parts, int measure)
{
    const cbp_net *net = c->net;
    const int n = c->n, n_layers = net->n_layers;
    const REAL *in = c->X;
    for (int l = 0; l < n_layers; l++) {
        cbp_layer *L = &net->layers[l];
        int j0, j1;
        FN(unit_share)(L->n_out, part, parts, &j0, &j1);
        double a_max = 0;
        if (j1 > j0) {
            int width = j1 - j0, n_out = L->n_out;
            REAL *Z = (REAL *)L->Z + j0, *A = (REAL *)L->A + j0;
            const REAL *b = LAYER_B(net, L) + j0;
            for (int i = 0; i < n; i++)
                memcpy(Z + (ptrdiff_t)i * n_out, b, sizeof(REAL) * (size_t)width);
            FN(gemm_rm)(net->blas, 0, 1, n, width, L->n_in, 1, in, L->n_in,
                        LAYER_W(net, L) + (ptrdiff_t)j0 * L->n_in, L->n_in, 1, Z, n_out);
            for (int i = 0; i < n; i++) {
                const REAL *z = Z + (ptrdiff_t)i * n_out;
                REAL *a = A + (ptrdiff_t)i * n_out;
                if (measure && l < n_layers - 1)
                    a_max = FN(max2)(a_max, L->activation != CBP_IDENTITY
                                                ? FN(activation_forward_max)(L->activation,
                                                                             width, z, a)
                                                : FN(max_abs)(width, a));
                else if (L->activation != CBP_IDENTITY) /* NaN for an overflowed z */
                    (void)FN(activation_forward_max)(L->activation, width, z, a);
            }
        }
        c->a_part[part][l] = a_max;
        cbp_pool_barrier();
        in = (const REAL *)L->A;
    }
}

static void FN(pool_forward_part)(void *arg, int part, int parts)
{
    FN(pool_forward_layers)((struct FN(pool_ctx) *)arg, part, parts, 0);
}

/* forward_chunk on the pool (n >= 2 rows, the caller holds it). */
static void FN(pool_forward)(const cbp_net *net, int n, const REAL *X)
{
    struct FN(pool_ctx) c;
    c.net = net;
    c.n = n;
    c.X = X;
    cbp_pool_run(FN(pool_forward_part), &c, net->pool_parts);
}

static void FN(pool_step_part)(void *arg, int part, int parts)
{
    struct FN(pool_ctx) *c = (struct FN(pool_ctx) *)arg;
    const cbp_net *net = c->net;
    const int n = c->n, n_layers = net->n_layers;

    /* This part's rows: gathered (shuffled batches, with their max |x|),
     * or, for the fused update's guard, their max |X| read, unless the
     * caller's gather measured it. */
    ptrdiff_t r0 = (ptrdiff_t)n * part / parts, r1 = (ptrdiff_t)n * (part + 1) / parts;
    if (c->src != NULL) {
        c->x_part[part] = FN(gather_rows)(net, c->src, (int)r0, (int)r1);
        cbp_pool_barrier(); /* every row is in place before any product */
    } else if (c->fused && c->x_max < 0) {
        int n_in = net->layers[0].n_in;
        c->x_part[part] = FN(max_abs)((r1 - r0) * n_in, c->X + r0 * n_in);
    }

    FN(pool_forward_layers)(c, part, parts, 1);

    /* The loss and Δ_L with its sums and max (part 0), as train_step. */
    if (part == 0) {
        if (c->weight_total < 0) /* the gathered weights */
            c->weight_total = FN(weight_sum)(n, c->w);
        c->loss = FN(loss_chunk)(net, n, c->target, c->w, c->weight_total, 1);
    }
    cbp_pool_barrier();
    if (!isfinite(c->loss) || !(c->weight_total > 0))
        return;

    /* Backward: this part's columns of Δ_{l-1} = (Δ_l W_l) ⊙ σ'(Z_{l-1}). */
    for (int l = n_layers - 1; l > 0; l--) {
        const cbp_layer *L = &net->layers[l];
        cbp_layer *P = &net->layers[l - 1];
        int i0, i1;
        FN(unit_share)(P->n_out, part, parts, &i0, &i1);
        double d_max = 0;
        if (i1 > i0) {
            REAL *D = (REAL *)P->D + i0;
            FN(gemm_rm)(net->blas, 0, 0, n, i1 - i0, L->n_out, 1, L->D, L->n_out,
                        LAYER_W(net, L) + i0, L->n_in, 0, D, P->n_out);
            d_max = FN(activation_backward_sum_max_ld)(P->activation, n, i1 - i0, P->n_out,
                                                       (const REAL *)P->Z + i0, D,
                                                       (REAL *)P->S + i0);
        }
        c->d_part[part][l - 1] = d_max;
        cbp_pool_barrier();
    }

    if (!c->fused) {
        /* The gradient: this part's rows of dW_l = Δ_lᵀ A_{l-1} (layer_gradients'
         * product, in blocks) and entries of db_l (the sums finish_delta left
         * in S, rounded as bias_grad rounds them); then every part's slice of
         * the optimizer's update. */
        for (int l = 0; l < n_layers; l++) {
            const cbp_layer *L = &net->layers[l];
            int j0, j1;
            FN(unit_share)(L->n_out, part, parts, &j0, &j1);
            if (j1 > j0) {
                REAL *grads = net->grads;
                FN(gemm_rm)(net->blas, 1, 0, j1 - j0, L->n_in, n, 1, (const REAL *)L->D + j0,
                            L->n_out, FN(layer_input)(net, l, c->X), L->n_in, 0,
                            grads + L->w_offset + (ptrdiff_t)j0 * L->n_in, L->n_in);
                memcpy(grads + L->b_offset + j0, (const REAL *)L->S + j0,
                       sizeof(REAL) * (size_t)(j1 - j0));
            }
        }
        cbp_pool_barrier(); /* the whole gradient before any slice of the update */
        int status = FN(optim_step_part)(c->opt, net->n_params, net->params, net->grads, part,
                                         parts, &c->share);
        if (part == 0)
            c->status = status;
        return;
    }

    /* The guard (fused_update_is_safe) on the combined maxima. */
    for (int l = 0; l < n_layers; l++) {
        double d = l == n_layers - 1 ? net->layers[l].d_max : 0, a = l > 0 ? 0 : c->x_max;
        for (int p = 0; p < parts; p++) {
            if (l < n_layers - 1)
                d = FN(max2)(d, c->d_part[p][l]);
            a = l > 0 ? FN(max2)(a, c->a_part[p][l - 1])
                      : c->x_max >= 0 ? a : FN(max2)(a, c->x_part[p]);
        }
        if (!FN(layer_update_is_safe)(n, c->lr, d, a)) {
            if (part == 0)
                c->safe = 0;
            return;
        }
    }

    /* Update: this part's rows of W_l and entries of b_l. */
    for (int l = 0; l < n_layers; l++) {
        int j0, j1;
        FN(unit_share)(net->layers[l].n_out, part, parts, &j0, &j1);
        if (j1 > j0)
            FN(fused_sgd_update_rows)(net, l, n, c->X, (REAL)c->lr, j0, j1);
    }
}

/* The pool step on X, target, w; or, with src, on the rows it names,
 * gathered by the parts (X, target, weight_total and x_max are then
 * ignored, w taken from src). */
static int FN(pool_train_step)(const cbp_net *net, cbp_optim *opt, int n, const REAL *X,
                               const void *target, const REAL *w, double weight_total,
                               double *loss, double x_max, const struct FN(rows_src) *src)
{
    struct FN(pool_ctx) c;
    c.net = net;
    c.n = n;
    c.lr = opt->lr;
    c.loss = 0;
    c.opt = opt;
    c.fused = cbp_optim_fuses(opt);
    c.safe = 1;
    c.status = CBP_OK;
    c.src = src;
    if (src != NULL) {
        X = (const REAL *)net->batch_x;
        target = net->batch_target;
        w = src->w == NULL ? NULL : (const REAL *)net->batch_weight;
        weight_total = w == NULL ? (double)n : -1;
        x_max = -1;
    }
    c.X = X;
    c.target = target;
    c.w = w;
    c.weight_total = weight_total;
    c.x_max = x_max;
    cbp_pool_run(FN(pool_step_part), &c, net->pool_parts);
    *loss = c.loss;
    if (!c.fused && (!isfinite(c.loss) || !(c.weight_total > 0))) {
        /* The parts stopped before the gradient; as net_loss, still store
         * it (every train_step replaces dW and db): Σ w = 0, zero; a
         * non-finite loss, the backward pass on the forward's results. */
        if (!(c.weight_total > 0)) {
            memset(net->grads, 0, sizeof(REAL) * (size_t)net->n_params);
        } else {
            FN(backward_deltas)(net, n, 0);
            FN(layer_gradients)(net, n, X, 0);
        }
    }
    if (!isfinite(c.loss))
        return CBP_NONFINITE_LOSS;
    if (!(c.weight_total > 0))
        return CBP_OK; /* every weight zero: the batch changes nothing */
    if (!c.fused) { /* as checked_update */
        if (c.status == CBP_OK) {
            FN(optim_step_done)(opt, net->n_params, &c.share, net->pool_parts);
            return CBP_OK;
        }
        return FN(all_finite)(net->n_params, net->grads) ? c.status : CBP_NONFINITE_GRADIENT;
    }
    if (c.safe)
        return CBP_OK;
    /* Near overflow: store the gradient, then check it and the update. */
    FN(layer_gradients)(net, n, X, 0);
    return FN(checked_update)(net, opt);
}

/* A step of n rows, any optimizer, on the pool (when the caller holds it):
 * the batch is one chunk of at least two rows. */
static int FN(pool_can_take)(const cbp_net *net, ptrdiff_t n)
{
    return net->pool_parts > 1 && n >= 2 && n <= net->capacity &&
           net->n_layers <= CBP_POOL_MAX_LAYERS;
}

static int FN(train_step)(const cbp_net *net, cbp_optim *opt, ptrdiff_t n, const REAL *X,
                          const void *target, const REAL *w, double *loss, double x_max)
{
    double weight_total;
    if (n == 1 && x_max < 0 && FN(misaligned)(X)) {
        x_max = FN(copy_max_abs)(net->layers[0].n_in, X, net->batch_x);
        X = net->batch_x;
    }
    if (FN(pool_can_take)(net, n))
        return FN(pool_train_step)(net, opt, (int)n, X, target, w, FN(weight_sum)(n, w), loss,
                                   x_max, NULL);
    if (!FN(can_fuse)(net, opt, n)) {
        *loss = FN(net_loss)(net, n, X, target, w, 1, NULL, &weight_total);
        if (!isfinite(*loss))
            return CBP_NONFINITE_LOSS;
        if (weight_total > 0)
            return FN(checked_update)(net, opt);
        return CBP_OK; /* Σ w = 0: the gradient is zero */
    }
    /* The fused path: the batch is one chunk. */
    weight_total = FN(weight_sum)(n, w);
    FN(forward_chunk)(net, (int)n, X, 1);
    *loss = FN(loss_chunk)(net, (int)n, target, w, weight_total, 1);
    if (!isfinite(*loss))
        return CBP_NONFINITE_LOSS;
    if (!(weight_total > 0))
        return CBP_OK; /* every weight zero: the batch changes nothing */
    FN(backward_deltas)(net, (int)n, 1);
    if (FN(fused_update_is_safe)(net, (int)n, X, opt->lr, x_max)) {
        FN(fused_sgd_update)(net, (int)n, X, (REAL)opt->lr);
        return CBP_OK; /* momentum 0: SGD's step count stays (optim_update) */
    }
    /* Near overflow: store the gradient, then check it and the update. */
    FN(layer_gradients)(net, (int)n, X, 0);
    return FN(checked_update)(net, opt);
}

int FN(net_train_step)(const cbp_net *net, cbp_optim *opt, ptrdiff_t n, const REAL *X,
                       const void *target, const REAL *w, double *loss)
{
    opt->maxima_fresh = 0; /* see cbp_optim */
    return FN(train_step)(net, opt, n, X, target, w, loss, -1);
}

/* Ask the memory system for row r of X (n_in values) ahead of its copy. */
static void FN(prefetch_row)(const REAL *row, int n_in)
{
#if defined(__GNUC__)
    const char *p = (const char *)row, *end = (const char *)(row + n_in);
    for (; p < end; p += 64)
        __builtin_prefetch(p, 0, 3);
#else
    (void)row;
    (void)n_in;
#endif
}

/* Copy rows order[first + i] of src's X, targets and weights, i in
 * [i0, i1), into place i of the plan's batch buffers; returns max |x|
 * over the copied rows.  Shuffled rows come from anywhere in X, each a fresh trip to memory: the
 * row `ahead` places further on in the order (about 4 KiB ahead; into the
 * next batch, which then arrives while this one trains) is requested
 * while row i is copied, so the trips overlap instead of adding up. */
static double FN(gather_rows)(const cbp_net *net, const struct FN(rows_src) *src, int i0,
                              int i1)
{
    const int64_t *order = src->order;
    const ptrdiff_t first = src->first, n_rows = src->n_rows;
    const REAL *X = src->X, *w = src->w;
    const void *target = src->target;
    int n_in = net->layers[0].n_in, n_out = net->layers[net->n_layers - 1].n_out;
    ptrdiff_t ahead = 4096 / ((ptrdiff_t)sizeof(REAL) * n_in);
    ahead = ahead < 2 ? 2 : ahead > 16 ? 16 : ahead;
    REAL *bx = net->batch_x, *bw = net->batch_weight;
    double x_max = 0;
    if (first + i0 == 0) /* the epoch's first rows: nothing asked for them yet */
        for (ptrdiff_t k = 0; k < ahead && k < n_rows; k++)
            FN(prefetch_row)(X + order[k] * n_in, n_in);
    for (int i = i0; i < i1; i++) {
        ptrdiff_t r = order[first + i];
        if (first + i + ahead < n_rows)
            FN(prefetch_row)(X + order[first + i + ahead] * n_in, n_in);
        double row_max = FN(copy_max_abs)(n_in, X + r * n_in, bx + (ptrdiff_t)i * n_in);
        x_max = row_max > x_max ? row_max : x_max;
        if (net->loss == CBP_LOSS_SOFTMAX_CE)
            ((int64_t *)net->batch_target)[i] = ((const int64_t *)target)[r];
        else
            memcpy((REAL *)net->batch_target + (ptrdiff_t)i * n_out,
                   (const REAL *)target + r * n_out, sizeof(REAL) * (size_t)n_out);
        if (w != NULL)
            bw[i] = w[r];
    }
    return x_max;
}

/* ------------------------------------------------------------------
 * The gather on OpenBLAS's threads (pool.c, cbp_obx_*): a step whose
 * products run on OpenBLAS's threads (not on the pool) has its shuffled
 * batch gathered by those threads, each part a range of rows
 * (gather_rows), while they would otherwise spin until the first
 * product.  Rows are copied, not computed: the batch, and so the step,
 * are the caller's gather bit for bit.
 *
 * Measured 2026-12-06 on 2 cores (Xeon, SkylakeX kernels), the C loop on
 * shuffled batches of 784-256-128-10 at batch 128, float32, OpenBLAS's
 * two threads: 729 µs per step against 760 with the caller's gather, and
 * as fast as on one repeated batch (723), i.e. the gather's cost gone.
 * (A large layer's passes go to those threads too: see obx_pass.)
 * ------------------------------------------------------------------ */
struct FN(obx_gather_ctx) {
    const cbp_net *net;
    int n;
    const struct FN(rows_src) *src;
    double part_max[CBP_POOL_MAX_PARTS];
};

static void FN(obx_gather_part)(void *arg, int part, int parts)
{
    struct FN(obx_gather_ctx) *c = (struct FN(obx_gather_ctx) *)arg;
    int i0 = (int)((int64_t)c->n * part / parts), i1 = (int)((int64_t)c->n * (part + 1) / parts);
    c->part_max[part] = FN(gather_rows)(c->net, c->src, i0, i1);
}

/* gather_rows of a batch of n rows on OpenBLAS's threads (the caller set
 * net->ob_parts); the max |x| of the batch. */
static double FN(obx_gather)(const cbp_net *net, const struct FN(rows_src) *src, int n)
{
    struct FN(obx_gather_ctx) c = {net, n, src, {0}};
    cbp_obx_run(FN(obx_gather_part), &c, net->ob_parts);
    double x_max = 0;
    for (int p = 0; p < net->ob_parts; p++)
        x_max = FN(max2)(x_max, c.part_max[p]);
    return x_max;
}

static int FN(obx_can_take)(const cbp_net *net, ptrdiff_t n)
{
    return net->ob_parts > 1 && n >= 2;
}

/* ------------------------------------------------------------------
 * The check that X is finite (cbp.network: fit's, and inference's), read
 * by the threads of the calls that follow it (the caller picks them): a
 * data set of megabytes is one trip to memory, which two cores make in
 * about half the time of one.
 * Measured 2026-12-06 on 2 cores (Xeon), inside fit after an epoch:
 * 18 MB of float32 in 0.76 ms on OpenBLAS's two threads against 1.46 on
 * the caller alone (21 MB of float64: 1.03 against 1.92).
 * ------------------------------------------------------------------ */
struct FN(finite_ctx) {
    const REAL *x;
    ptrdiff_t size;
    int ok[CBP_POOL_MAX_PARTS];
};

static void FN(finite_part)(void *arg, int part, int parts)
{
    struct FN(finite_ctx) *c = (struct FN(finite_ctx) *)arg;
    const ptrdiff_t line = 64 / (ptrdiff_t)sizeof(REAL), lines = (c->size + line - 1) / line;
    ptrdiff_t lo = lines * part / parts * line, hi = lines * (part + 1) / parts * line;
    hi = hi < c->size ? hi : c->size;
    c->ok[part] = lo < hi ? FN(all_finite)(hi - lo, c->x + lo) : 1;
}

int FN(all_finite_parts)(ptrdiff_t size, const REAL *x, int parts, int on_pool)
{
    if (parts < 2)
        return FN(all_finite)(size, x);
    struct FN(finite_ctx) c;
    c.x = x;
    c.size = size;
    if (on_pool)
        cbp_pool_run(FN(finite_part), &c, parts);
    else
        cbp_obx_run(FN(finite_part), &c, parts);
    int ok = 1;
    for (int p = 0; p < parts; p++)
        ok = ok && c.ok[p];
    return ok;
}

ptrdiff_t FN(net_train_batches)(const cbp_net *net, cbp_optim *opt, ptrdiff_t n_rows,
                                const REAL *X, const void *target, const REAL *w,
                                const int64_t *order, ptrdiff_t first_batch, int batch_size,
                                ptrdiff_t n_batches, double *losses, int *status)
{
    int n_in = net->layers[0].n_in;
    const ptrdiff_t epoch_batches = (n_rows + batch_size - 1) / batch_size;
    *status = CBP_OK;
    opt->maxima_fresh = 0; /* see cbp_optim */
    for (ptrdiff_t k = 0; k < n_batches; k++) {
        const ptrdiff_t g = first_batch + k;
        ptrdiff_t start = g % epoch_batches * batch_size;
        int n = (int)(n_rows - start < batch_size ? n_rows - start : batch_size);
        const REAL *Xb = X + start * n_in, *wb = w == NULL ? NULL : w + start;
        const void *tb = FN(target_rows)(net, target, start);
        double x_max = -1; /* unknown */
        const int64_t *epoch_order = order == NULL ? NULL : order + g / epoch_batches * n_rows;
        const struct FN(rows_src) src = {epoch_order, start, n_rows, X, target, w};
        if (order != NULL && FN(pool_can_take)(net, n)) {
            /* The pool's parts gather the batch themselves. */
            *status = FN(pool_train_step)(net, opt, n, NULL, NULL, NULL, 0, &losses[k], -1,
                                          &src);
            if (*status != CBP_OK)
                return k;
            continue;
        }
        if (order != NULL) {
            x_max = FN(obx_can_take)(net, n) ? FN(obx_gather)(net, &src, n)
                                             : FN(gather_rows)(net, &src, 0, n);
            Xb = net->batch_x;
            tb = net->batch_target;
            wb = w == NULL ? NULL : (const REAL *)net->batch_weight;
        }
        *status = FN(train_step)(net, opt, n, Xb, tb, wb, &losses[k], x_max);
        if (*status != CBP_OK)
            return k;
    }
    return n_batches;
}


/* Benchmark only: the BLAS floor of one fused-SGD training step, repeated
 * `reps` times — exactly the BLAS calls of the step (forward products,
 * delta products, and the update products with alpha = −lr), on the
 * plan's own buffers, with nothing else: no bias, activation, loss or
 * checks.  What a perfect implementation could not beat with this BLAS.
 * Runs on whatever the buffers hold; call it after a real step.  n <=
 * capacity. */
void FN(net_blas_floor)(const cbp_net *net, int n, const REAL *X, REAL lr, int64_t reps)
{
    for (int64_t r = 0; r < reps; r++) {
        /* The sign of the update alternates, so repetitions on the same
         * deltas swing the weights back and forth instead of letting them
         * (and the deltas computed from them) drift toward overflow or
         * subnormal numbers, which would time something else. */
        const REAL alpha = r % 2 == 0 ? -lr : lr;
        const REAL *in = X;
        for (int l = 0; l < net->n_layers; l++) {
            const cbp_layer *L = &net->layers[l];
            if (n == 1)
                FN(gemv_rm)(net->blas, 0, L->n_out, L->n_in, 1, LAYER_W(net, L), in, 0, L->Z);
            else
                FN(gemm_rm)(net->blas, 0, 1, n, L->n_out, L->n_in, 1, in, L->n_in,
                            LAYER_W(net, L), L->n_in, 0, L->Z, L->n_out);
            in = L->A;
        }
        for (int l = net->n_layers - 1; l > 0; l--) {
            const cbp_layer *L = &net->layers[l];
            REAL *prev = net->layers[l - 1].D;
            if (n == 1)
                FN(gemv_rm)(net->blas, 1, L->n_out, L->n_in, 1, LAYER_W(net, L), L->D, 0, prev);
            else
                FN(gemm_rm)(net->blas, 0, 0, n, L->n_in, L->n_out, 1, L->D, L->n_out,
                            LAYER_W(net, L), L->n_in, 0, prev, L->n_in);
        }
        for (int l = 0; l < net->n_layers; l++) {
            const cbp_layer *L = &net->layers[l];
            const REAL *a = FN(layer_input)(net, l, X);
            if (n == 1)
                FN(ger_rm)(net->blas, L->n_out, L->n_in, alpha, L->D, a, LAYER_W(net, L));
            else
                FN(gemm_rm)(net->blas, 1, 0, L->n_out, L->n_in, n, alpha, L->D, L->n_out, a,
                            L->n_in, 1, LAYER_W(net, L), L->n_in);
        }
    }
}

#undef LAYER_W
#undef LAYER_B
