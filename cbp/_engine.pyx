# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Bindings of the compiled network engine (src_c/engine_impl.h).

An :class:`Engine` holds the plan of one network: layer sizes, activation
codes, offsets into the flat parameter and gradient buffers, and workspace
buffers sized for ``capacity`` rows — all NumPy-owned.  Each method checks
its arrays (type, dtype, contiguity, sizes: cheap C-level checks, so no
caller can make C read or write out of bounds), releases the GIL and makes
one call into C.  cbp.network validates user input before calling these.
"""
cimport numpy as cnp
import numpy as np
import os
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from cpython.pyport cimport PY_SSIZE_T_MAX
from libc.stdint cimport int64_t
from cbp._capi cimport *

cnp.import_array()

cdef cbp_blas BLAS
fill_blas_table(&BLAS)

# OpenBLAS thread control (see cbp/_threads.py): set around each call into
# C when an engine asks for a thread count, restored afterwards.
ctypedef int (*get_threads_t)() noexcept nogil
ctypedef void (*set_threads_t)(int) noexcept nogil
cdef get_threads_t _get_threads = NULL
cdef set_threads_t _set_threads = NULL


def bind_blas_threads(size_t get_address, size_t set_address):
    global _get_threads, _set_threads
    _get_threads = <get_threads_t><void *>get_address
    _set_threads = <set_threads_t><void *>set_address


cdef inline int _threads_enter(int want, bint note=True) noexcept nogil:
    """Switch BLAS to `want` threads; return the count to restore (0: none).
    A call on two or more threads is noted for cbp's pool (see
    cbp_pool_acquire), unless not `note`: a step that the pool refused
    (see _pool_enter) must not renew the wait that refused it."""
    if _get_threads == NULL:
        return 0
    cdef int old = _get_threads()
    if note and (want > 1 or (want <= 0 and old > 1)):
        cbp_pool_note_blas_threads()
    if want <= 0 or old == want:
        return 0
    cbp_threads_changed(old)   # before the change: a fork meanwhile puts it back
    _set_threads(want)
    return old


cdef inline void _threads_leave(int old) noexcept nogil:
    if old > 0:
        _set_threads(old)
        cbp_threads_restored()


def restore_threads_after_fork():
    """In a forked child (os.register_at_fork, see cbp._threads.bind):
    put back the BLAS thread count that a call in flight in another thread
    of the parent had lowered (that thread, which would have restored it,
    does not exist in the child).  Returns the count put back, or 0."""
    cdef int base = cbp_threads_after_fork()
    if base > 0 and _set_threads != NULL:
        _set_threads(base)
    return base


# cbp's pool (src_c/pool.c): a training step that would run BLAS on two
# or more threads runs model-parallel on cbp's own threads instead, each
# calling BLAS single-threaded.  Needs the thread control above (else BLAS
# could not be made single-threaded).  CBP_POOL=0 in the environment, or
# set_pool(False), turns it off for the process (see docs/threads.md).
cdef bint _pool_on = os.environ.get("CBP_POOL", "1") != "0"


def set_pool(bint on):
    """Let training steps run on cbp's pool (True) or not (False);
    returns the previous setting."""
    global _pool_on
    cdef bint old = _pool_on
    _pool_on = on
    return old


def pool_jobs():
    """How many jobs cbp's pool has run in this process (steps that took
    it); for tests."""
    return cbp_pool_jobs()


def pool_fpenv_mismatches(int parts=2):
    """For tests: run a job of `parts` parts on cbp's pool and return how
    many ran under another floating-point control (MXCSR, FPCR) than the
    calling thread's; None when the pool was not granted (busy, or
    OpenBLAS's workers still spinning: see cbp_pool_acquire)."""
    cdef int bad
    with nogil:
        bad = cbp_pool_fpenv_mismatches(parts)
    return None if bad < 0 else bad


def pool_active():
    """Whether training steps may run on cbp's pool: on, and BLAS thread
    control available."""
    return bool(_pool_on and _get_threads != NULL)


def pool_settle():
    """For tests and benchmarks that waited for OpenBLAS's workers to
    sleep: the next calls need not stand aside (see cbp_pool_acquire)."""
    cbp_pool_settle()


cdef inline long long _work_ns(const cbp_net *net, double steps, double rows,
                               double flops_per_row_param, int typenum) noexcept nogil:
    """A call's work in estimated ns, as cbp_pool_acquire counts it: per
    step 20 µs plus flops_per_row_param · rows · parameters flops at 100
    per ns (float32) or 50 (float64), near what 2 cores did at
    784-256-128-10.  An estimate, never a measurement, so that the path a
    sequence of calls takes never depends on timing."""
    cdef double per_ns = 100.0 if typenum == cnp.NPY_FLOAT32 else 50.0
    cdef double ns = steps * (20000.0 + flops_per_row_param * rows * net.n_params / per_ns)
    return <long long>(ns if ns < 1e18 else 1e18)


cdef inline int _pool_enter(cbp_net *net, const cbp_optim *opt, int threads, int wanted,
                            Py_ssize_t rows, bint steady, long long cost_ns,
                            bint *refused=NULL) noexcept nogil:
    """Take the pool for a call (the engine `wanted` it, see
    cbp._threads.pool_for: 2 only if the pool can have as many threads as
    BLAS would) whose steps of `rows` rows (>= 2, one chunk) asked for
    `threads` BLAS threads (0: as many as BLAS is set to use, so a limit
    set with threadpoolctl holds): the parts granted (the caller then
    makes BLAS single-threaded), or 0 (busy, off, or not such a call).
    opt NULL: a forward-only call (inference).  steady: a call of fit,
    which takes the pool even where other calls stand aside for
    OpenBLAS's workers (see cbp_pool_acquire).  cost_ns: the call's work
    (_work_ns).  *refused (if given): set when such a call was not
    granted the pool (busy, or standing aside)."""
    if opt != NULL and rows > net.capacity:
        return 0   # a step in chunks
    if not wanted or rows < 2 or not _pool_on or _get_threads == NULL:
        return 0
    if threads == 0:
        threads = _get_threads()
    if threads < 2 or net.n_layers > CBP_POOL_MAX_LAYERS:
        return 0
    if wanted == 2 and threads > CBP_POOL_MAX_PARTS:
        return 0
    cdef int parts = cbp_pool_acquire(threads, steady, cost_ns)
    net.pool_parts = parts
    if refused != NULL:
        refused[0] = parts == 0
    return parts


cdef inline void _pool_leave(cbp_net *net, int parts) noexcept nogil:
    if parts:
        net.pool_parts = 0
        cbp_pool_release()


# OpenBLAS's own threads for the work between the products of steps
# whose products run on them (src_c/pool.c and engine_impl.h, cbp_obx_*):
# the gather of shuffled batches, and a large layer's passes.  Bound by
# cbp._threads.bind when SciPy's OpenBLAS exports blas_level1_thread.
# CBP_OB_GATHER=0 in the environment, or set_ob_gather(False), leaves
# that work to the caller.
cdef bint _obx_on = os.environ.get("CBP_OB_GATHER", "1") != "0"
cdef bint _obx_bound = False


def bind_blas_level1(size_t address):
    """Give the engine OpenBLAS's blas_level1_thread; returns whether it
    is taken (only where its calling convention was checked, and only the
    first address given: the engine keeps that one)."""
    global _obx_bound
    cdef bint taken = cbp_obx_bind(<void *>address) != 0
    _obx_bound = _obx_bound or taken
    return taken


def set_ob_gather(bint on):
    """Let steps on OpenBLAS's threads have those threads gather their
    shuffled batches and split a large layer's passes (True) or not
    (False); returns the previous setting."""
    global _obx_on
    cdef bint old = _obx_on
    _obx_on = on
    return old


def ob_gather_jobs():
    """How many jobs (a batch's gather, a layer's pass) OpenBLAS's
    threads have run for cbp in this process (for tests)."""
    return cbp_obx_jobs()


def ob_fpenv_mismatches():
    """For tests: run a job on OpenBLAS's threads (as many parts as BLAS
    has threads) and return how many of its parts ran under another
    floating-point control (MXCSR, FPCR) than the calling thread's; None
    when such jobs are not available (not bound, one BLAS thread, or the
    self-test refused the entry)."""
    if not _obx_bound or _get_threads == NULL:
        return None
    cdef int parts = cbp_obx_parts(_get_threads())
    if parts < 2:
        return None
    cdef int bad
    with nogil:
        bad = cbp_obx_fpenv_mismatches(parts)
    return bad


# Engine.all_finite splits arrays of at least this many bytes over the
# threads of the engine's steps (engine_impl.h, all_finite_parts).
FINITE_SPLIT_BYTES = 4 << 20
cdef Py_ssize_t _finite_split_bytes = FINITE_SPLIT_BYTES


def set_finite_split_bytes(Py_ssize_t nbytes):
    """Split Engine.all_finite from `nbytes` on (tests split small
    arrays); returns the previous size."""
    global _finite_split_bytes
    old = _finite_split_bytes
    _finite_split_bytes = max(nbytes, 0)
    return old


cdef inline void _obx_enter(cbp_net *net, int parts) noexcept nogil:
    """A call not on the pool (parts 0) whose BLAS runs on 2+ threads:
    OpenBLAS's threads may gather its shuffled batches and split its
    large layers' passes."""
    net.ob_parts = 0
    if parts or not _obx_on or not _obx_bound or _get_threads == NULL:
        return
    cdef int threads = _get_threads()
    if threads >= 2:
        net.ob_parts = cbp_obx_parts(threads)

LOSS_CODES = {"softmax_cross_entropy": CBP_LOSS_SOFTMAX_CE,
              "binary_cross_entropy": CBP_LOSS_BCE,
              "mse": CBP_LOSS_MSE}
OPTIM_CODES = {"sgd": CBP_SGD, "adam": CBP_ADAM, "adamw": CBP_ADAMW}
OUTPUT_RAW = CBP_OUTPUT_RAW
OUTPUT_SOFTMAX = CBP_OUTPUT_SOFTMAX
OUTPUT_SIGMOID = CBP_OUTPUT_SIGMOID
OK = CBP_OK
NONFINITE_LOSS = CBP_NONFINITE_LOSS
NONFINITE_GRADIENT = CBP_NONFINITE_GRADIENT
NONFINITE_UPDATE = CBP_NONFINITE_UPDATE


cdef void *_buffer(object a, int typenum, Py_ssize_t size, str name,
                   bint writable=False) except NULL:
    """The data pointer of a C-contiguous array of `typenum` holding
    exactly `size` elements."""
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != typenum:
        raise TypeError(f"{name}: expected dtype {np.dtype(cnp.PyArray_TypeObjectFromType(typenum))}, "
                        f"got {arr.dtype}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISALIGNED(arr):
        raise ValueError(f"{name}: expected a C-contiguous, aligned array")
    if writable and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{name}: array is read-only")
    if cnp.PyArray_SIZE(arr) != size:
        raise ValueError(f"{name}: expected {size} elements, got {cnp.PyArray_SIZE(arr)}")
    # Never hand C a NULL pointer, even for an empty array.
    cdef void *p = cnp.PyArray_DATA(arr)
    return p if p != NULL else <void *>&BLAS


cdef Py_ssize_t _elements(Py_ssize_t rows, Py_ssize_t cols, str name) except -1:
    """rows × cols, refused when it would overflow (a product that wrapped
    around could match a smaller array's size, and C would read past it)."""
    if cols > 0 and rows > PY_SSIZE_T_MAX // cols:
        raise ValueError(f"{name}: {rows} rows of {cols} values exceed the address space")
    return rows * cols


def aligned_empty(shape, dtype):
    """np.empty(shape, dtype) starting on a 64-byte boundary (a cache line,
    and the widest vector load).  Parameters, optimizer state and the
    workspace live in such buffers: BLAS kernels run measurably faster on
    them — 784-256-128-10 at one sample, 32 µs per step from 64-byte
    aligned rows against 34.5 µs from rows 16 bytes off, the NumPy
    default."""
    dtype = np.dtype(dtype)
    cdef Py_ssize_t count = 1
    for extent in (shape if isinstance(shape, tuple) else (shape,)):
        if extent < 0:
            raise ValueError(f"aligned_empty: negative dimension in {shape}")
        count *= extent
    cdef Py_ssize_t nbytes = _elements(count, dtype.itemsize, "aligned_empty")
    cdef cnp.ndarray raw = np.empty(nbytes + 64, dtype=np.uint8)
    cdef Py_ssize_t offset = (64 - <size_t>cnp.PyArray_DATA(raw) % 64) % 64
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


def aligned_zeros(shape, dtype):
    """np.zeros(shape, dtype) on a 64-byte boundary (see aligned_empty)."""
    a = aligned_empty(shape, dtype)
    a[...] = 0
    return a


cdef bint _all_finite(cnp.ndarray a, int typenum):
    """Every element of `a` (C-contiguous, aligned, of `typenum`) finite."""
    cdef Py_ssize_t size = cnp.PyArray_SIZE(a)
    cdef void *p = cnp.PyArray_DATA(a)
    cdef int ok
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            ok = cbp_all_finite_f32(size, <const float *>p)
        else:
            ok = cbp_all_finite_f64(size, <const double *>p)
    return ok != 0


def all_finite(cnp.ndarray a not None):
    """Whether every element of `a` is finite, without the temporary
    boolean array of ``np.isfinite(a).all()``.  `a` is a C-contiguous,
    aligned float32 or float64 array (the callers' converted data)."""
    if not (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a)):
        raise ValueError("all_finite: a must be C-contiguous and aligned")
    cdef int typenum = cnp.PyArray_TYPE(a)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        raise TypeError(f"all_finite: a must be float32 or float64, got {a.dtype}")
    return _all_finite(a, typenum)


cdef class OptimizerState:
    """The C optimizer record and its state buffers (aligned with the
    network's flat parameter buffer)."""
    cdef cbp_optim opt
    cdef readonly object buf1, buf2
    cdef object hints  # float32 Adam's path hints (cbp_optim.hints)
    cdef readonly Py_ssize_t n_params
    cdef readonly object dtype
    cdef public object key  # the hyperparameters last loaded (see cbp.optim)
    cdef object __weakref__  # cbp.optim keeps a weak reference to the last one used

    def __cinit__(self, str kind, Py_ssize_t n_params, dtype):
        self.opt.kind = OPTIM_CODES[kind]
        self.n_params = n_params
        self.dtype = np.dtype(dtype)
        self.buf1 = aligned_zeros(n_params, self.dtype)
        self.buf2 = aligned_zeros(n_params if kind != "sgd" else 0, self.dtype)
        self.opt.buf1 = cnp.PyArray_DATA(<cnp.ndarray>self.buf1)
        self.opt.buf2 = cnp.PyArray_DATA(<cnp.ndarray>self.buf2)
        if kind == "adam" and self.dtype == np.float32:
            self.hints = np.zeros((n_params + 15) // 16 + 1, np.uint8)
            self.opt.hints = <unsigned char *>cnp.PyArray_DATA(<cnp.ndarray>self.hints)
            self.opt.n_hints = (n_params + 15) // 16
        self.opt.hints_step = 0
        self.opt.step = 0
        self.key = None

    def set_hyperparameters(self, double lr, double momentum=0.0, double dampening=0.0,
                            bint nesterov=False, double weight_decay=0.0,
                            double beta1=0.9, double beta2=0.999, double eps=1e-8):
        self.opt.lr = lr
        self.opt.momentum = momentum
        self.opt.dampening = dampening
        self.opt.nesterov = nesterov
        self.opt.weight_decay = weight_decay
        self.opt.beta1 = beta1
        self.opt.beta2 = beta2
        self.opt.eps = eps

    def update(self, params, grads):
        """One optimizer update of the flat `params` from `grads` (both of
        this state's dtype and size, neither overlapping the other or the
        state), in place, as a network's step makes it.  Returns OK, or
        NONFINITE_UPDATE when a new value would not be finite (then nothing
        is written).  The tests drive the C update rules through it."""
        cdef int typenum = cnp.NPY_FLOAT32 if self.dtype == np.float32 else cnp.NPY_FLOAT64
        cdef void *p = _buffer(params, typenum, self.n_params, "params", True)
        cdef const void *g = _buffer(grads, typenum, self.n_params, "grads")
        for a, b in ((params, grads), (params, self.buf1), (params, self.buf2),
                     (grads, self.buf1), (grads, self.buf2)):
            if np.shares_memory(a, b):
                raise ValueError("update: params, grads and the state must not overlap")
        cdef int status
        cdef Py_ssize_t n = self.n_params
        with nogil:
            if typenum == cnp.NPY_FLOAT32:
                status = cbp_optim_update_f32(&self.opt, n, <float *>p, <const float *>g)
            else:
                status = cbp_optim_update_f64(&self.opt, n, <double *>p, <const double *>g)
        return status

    @property
    def fuses(self):
        """Whether the engine folds this optimizer's update into the weight
        products (plain SGD: cbp_optim_fuses)."""
        return bool(cbp_optim_fuses(&self.opt))

    @property
    def step(self):
        return self.opt.step

    @step.setter
    def step(self, int64_t value):
        self.opt.step = value


cdef class Engine:
    """A network compiled into a plan for the C engine."""
    cdef cbp_net net
    cdef cbp_layer *layers
    cdef readonly object params, grads
    cdef readonly int typenum
    cdef readonly int n_in, n_out
    cdef list workspace
    cdef public int blas_threads  # BLAS threads during calls; 0: leave as set
    cdef readonly long long batches_run  # batches train_batches has completed, ever
    cdef object labels            # the engine's copy of a call's labels (see _target)
    cdef public int pool          # training steps may run on cbp's pool: 0 no, 1 yes, 2 if
                                  # BLAS's threads fit it (see _pool_enter)

    def __cinit__(self, sizes, activations, str loss, params, grads):
        cdef int n_layers = len(sizes) - 1
        cdef Py_ssize_t offset = 0
        cdef int l
        if n_layers < 1 or len(activations) != n_layers:
            raise ValueError("Engine: need len(sizes) - 1 == len(activations) >= 1")
        self.typenum = cnp.PyArray_TYPE(<cnp.ndarray>params)
        if self.typenum != cnp.NPY_FLOAT32 and self.typenum != cnp.NPY_FLOAT64:
            raise TypeError("Engine: parameters must be float32 or float64")
        self.layers = <cbp_layer *>PyMem_Malloc(n_layers * sizeof(cbp_layer))
        if self.layers == NULL:
            raise MemoryError()
        for l in range(n_layers):
            if sizes[l] < 1 or sizes[l + 1] < 1 or sizes[l] > 2**31 - 1 or sizes[l + 1] > 2**31 - 1:
                raise ValueError("Engine: layer sizes must be in [1, 2**31 - 1]")
            if not 0 <= activations[l] < CBP_NUM_ACTIVATIONS:
                raise ValueError("Engine: activation code out of range")
            self.layers[l].n_in = sizes[l]
            self.layers[l].n_out = sizes[l + 1]
            self.layers[l].activation = activations[l]
            self.layers[l].w_offset = offset
            offset += <Py_ssize_t>sizes[l + 1] * sizes[l]
            self.layers[l].b_offset = offset
            offset += sizes[l + 1]
            self.layers[l].Z = NULL
            self.layers[l].A = NULL
            self.layers[l].D = NULL
            self.layers[l].S = NULL
        self.net.blas = &BLAS
        self.net.n_layers = n_layers
        self.net.layers = self.layers
        self.net.loss = LOSS_CODES[loss]
        self.net.n_params = offset
        self.net.params = _buffer(params, self.typenum, offset, "params", True)
        self.net.grads = _buffer(grads, self.typenum, offset, "grads", True)
        self.params, self.grads = params, grads
        self.net.capacity = 0
        self.net.forward_nn = 0
        self.net.pool_parts = 0
        self.net.ob_parts = 0
        self.net.batch_xt = NULL
        self.n_in, self.n_out = sizes[0], sizes[n_layers]
        self.workspace = []
        self.blas_threads = 0
        self.pool = False

    def __dealloc__(self):
        PyMem_Free(self.layers)

    @property
    def capacity(self):
        return self.net.capacity

    @property
    def n_params(self):
        return self.net.n_params

    @property
    def workspace_nbytes(self):
        """Bytes held by the workspace buffers, each counted once."""
        return sum({id(a): a.nbytes for a in self.workspace}.values())

    def reserve(self, Py_ssize_t rows):
        """Make the workspace hold at least `rows` rows (it only grows)."""
        if rows <= self.net.capacity:
            return
        if rows > 2**31 - 1:
            raise ValueError("Engine.reserve: too many rows")
        dtype = np.float32 if self.typenum == cnp.NPY_FLOAT32 else np.float64
        cdef int l
        cdef list work = []
        for l in range(self.net.n_layers):
            n_out = self.layers[l].n_out
            Z = aligned_empty((rows, n_out), dtype)
            # identity (0) needs no A of its own; relu (1) and leaky_relu (2)
            # overwrite Z with A: their σ'(a) is σ'(z) bit for bit (a keeps
            # z's sign and zeros), so the backward pass reads A as Z.
            act = self.layers[l].activation
            A = Z if act in (CBP_IDENTITY, CBP_RELU, CBP_LEAKY_RELU) else aligned_empty((rows, n_out), dtype)
            D = aligned_empty((rows, n_out), dtype)
            S = aligned_empty(n_out, dtype)
            work += [Z, A, D, S]
            self.layers[l].Z = cnp.PyArray_DATA(<cnp.ndarray>Z)
            self.layers[l].A = cnp.PyArray_DATA(<cnp.ndarray>A)
            self.layers[l].D = cnp.PyArray_DATA(<cnp.ndarray>D)
            self.layers[l].S = cnp.PyArray_DATA(<cnp.ndarray>S)
        batch_x = aligned_empty((rows, self.n_in), dtype)
        if self.net.loss == CBP_LOSS_SOFTMAX_CE:
            batch_target = np.empty(rows, dtype=np.int64)
        else:
            batch_target = np.empty((rows, self.n_out), dtype=dtype)
        batch_weight = np.empty(rows, dtype=dtype)
        work += [batch_x, batch_target, batch_weight]
        self.net.batch_x = cnp.PyArray_DATA(<cnp.ndarray>batch_x)
        self.net.batch_target = cnp.PyArray_DATA(<cnp.ndarray>batch_target)
        self.net.batch_weight = cnp.PyArray_DATA(<cnp.ndarray>batch_weight)
        self.workspace = work
        self.net.capacity = <int>rows
        self.net.batch_xt = NULL
        if self.net.forward_nn:
            self._reserve_xt()

    cdef _reserve_xt(self):
        batch_xt = aligned_empty((self.n_in, self.net.capacity),
                                 np.float32 if self.typenum == cnp.NPY_FLOAT32 else np.float64)
        self.workspace.append(batch_xt)
        self.net.batch_xt = cnp.PyArray_DATA(<cnp.ndarray>batch_xt)

    @property
    def forward_nn(self):
        """Whether batch forward products may run as Zᵀ = W Xᵀ where
        cbp_forward_nn_pays (src_c/cbp.h): set for OpenBLAS's AVX-512
        kernels (cbp._threads.forward_nn_default)."""
        return bool(self.net.forward_nn)

    @forward_nn.setter
    def forward_nn(self, bint on):
        self.net.forward_nn = on
        if on and self.net.capacity > 0 and self.net.batch_xt == NULL:
            self._reserve_xt()

    cdef int _ready(self) except -1:
        if self.net.capacity < 1:
            raise RuntimeError("Engine: reserve() workspace before use")
        return 0

    cdef const void *_target(self, object target, Py_ssize_t n, bint copy=True) except NULL:
        """The target rows for C.  Class labels are checked to lie in
        [0, n_classes) and, unless not `copy` (a caller's private array),
        copied as they are checked into the engine's own buffer, which C
        then reads: C uses each label as an index, and the caller's array
        could change while C runs without the GIL (another thread, a
        loader reusing its buffer), after the check."""
        cdef const int64_t *labels
        cdef int64_t *kept
        cdef int64_t label
        cdef Py_ssize_t i
        cdef int64_t n_classes = self.n_out
        if self.net.loss == CBP_LOSS_SOFTMAX_CE:
            labels = <const int64_t *>_buffer(target, cnp.NPY_INT64, n, "target")
            if not copy:
                for i in range(n):
                    if labels[i] < 0 or labels[i] >= n_classes:
                        raise ValueError(f"label {labels[i]} at row {i} is outside "
                                         f"[0, {n_classes})")
                return labels
            if self.labels is None or cnp.PyArray_DIM(<cnp.ndarray>self.labels, 0) < n:
                self.labels = np.empty(max(n, 1), dtype=np.int64)
            kept = <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>self.labels)
            for i in range(n):
                label = labels[i]  # read once: checked and kept alike
                if label < 0 or label >= n_classes:
                    raise ValueError(f"label {label} at row {i} is outside [0, {n_classes})")
                kept[i] = label
            return kept
        return _buffer(target, self.typenum, _elements(n, self.n_out, "target"), "target")

    cdef const void *_weights(self, object w, Py_ssize_t n) except? NULL:
        if w is None:
            return NULL
        return _buffer(w, self.typenum, n, "sample_weight")

    def ready(self, X, target, sample_weight=None):
        """True when X, target and sample_weight can go to C as they are:
        exact dtypes in native byte order, C-contiguous, consistent shapes, at least one row,
        X and the weights finite, weights non-negative, labels in range.
        False sends the caller to the full validation in Python, which
        converts what it can and explains what it cannot.  Checked in C,
        so the common case costs next to nothing."""
        cdef cnp.ndarray x, t
        cdef Py_ssize_t n, i
        cdef const int64_t *labels
        if not cnp.PyArray_Check(X) or not cnp.PyArray_Check(target):
            return False
        x = <cnp.ndarray>X
        # PyArray_TYPE does not see the byte order: a big-endian X (or
        # target) has the type of a native one, and C would misread it.
        if (cnp.PyArray_NDIM(x) != 2 or cnp.PyArray_TYPE(x) != self.typenum
                or not cnp.PyArray_ISNOTSWAPPED(x)
                or not cnp.PyArray_IS_C_CONTIGUOUS(x) or not cnp.PyArray_ISALIGNED(x)
                or cnp.PyArray_DIM(x, 1) != self.n_in or cnp.PyArray_DIM(x, 0) < 1):
            return False
        n = cnp.PyArray_DIM(x, 0)
        t = <cnp.ndarray>target
        if (not cnp.PyArray_IS_C_CONTIGUOUS(t) or not cnp.PyArray_ISALIGNED(t)
                or not cnp.PyArray_ISNOTSWAPPED(t)):
            return False
        if self.net.loss == CBP_LOSS_SOFTMAX_CE:
            if (cnp.PyArray_TYPE(t) != cnp.NPY_INT64 or cnp.PyArray_NDIM(t) != 1
                    or cnp.PyArray_DIM(t, 0) != n):
                return False
            labels = <const int64_t *>cnp.PyArray_DATA(t)
            for i in range(n):
                if labels[i] < 0 or labels[i] >= self.n_out:
                    return False
        else:
            if (cnp.PyArray_TYPE(t) != self.typenum or cnp.PyArray_NDIM(t) < 1
                    or cnp.PyArray_DIM(t, 0) != n):
                return False
            if not ((cnp.PyArray_NDIM(t) == 2 and cnp.PyArray_DIM(t, 1) == self.n_out)
                    or (cnp.PyArray_NDIM(t) == 1 and self.n_out == 1)):
                return False
            if self.net.loss == CBP_LOSS_BCE:
                return False  # targets must also lie in [0, 1]: checked in Python
            if not self._finite(t):
                return False
        if sample_weight is not None:
            return False  # weights (finite, non-negative) are checked in Python
        return self._finite(x)

    cdef bint _finite(self, cnp.ndarray a):
        return _all_finite(a, self.typenum)

    def forward(self, X, out, int transform=CBP_OUTPUT_RAW):
        """out (n, n_out) ← the network's output for X (n, n_in)."""
        self._ready()
        cdef Py_ssize_t n = cnp.PyArray_DIM(X, 0) if cnp.PyArray_Check(X) and cnp.PyArray_NDIM(X) == 2 else -1
        if n < 0:
            raise ValueError("Engine.forward: X must be 2-D")
        cdef const void *x = _buffer(X, self.typenum, _elements(n, self.n_in, "X"), "X")
        cdef void *o = _buffer(out, self.typenum, _elements(n, self.n_out, "out"), "out", True)
        if transform < CBP_OUTPUT_RAW or transform > CBP_OUTPUT_SIGMOID:
            raise ValueError("Engine.forward: unknown transform")
        cdef int restore, parts
        with nogil:
            parts = _pool_enter(&self.net, NULL, self.blas_threads, self.pool, n, False,
                                _work_ns(&self.net, 1, n, 2, self.typenum))
            restore = _threads_enter(1 if parts else self.blas_threads)
            if self.typenum == cnp.NPY_FLOAT32:
                cbp_net_forward_f32(&self.net, n, <const float *>x, <float *>o, transform)
            else:
                cbp_net_forward_f64(&self.net, n, <const double *>x, <double *>o, transform)
            _threads_leave(restore)
            _pool_leave(&self.net, parts)
        return out

    def loss(self, X, target, sample_weight=None, bint want_grads=False, outputs=None,
             bint steady=False):
        """(loss, Σ w) of the rows of X; with want_grads the gradient of that
        loss fills the gradient buffer; outputs (n, n_out), if given,
        receives the raw outputs.  steady: fit's validation (see
        _pool_enter)."""
        self._ready()
        cdef Py_ssize_t n = cnp.PyArray_DIM(X, 0) if cnp.PyArray_Check(X) and cnp.PyArray_NDIM(X) == 2 else -1
        if n < 0:
            raise ValueError("Engine.loss: X must be 2-D")
        cdef const void *x = _buffer(X, self.typenum, _elements(n, self.n_in, "X"), "X")
        cdef const void *t = self._target(target, n)
        cdef const void *w = self._weights(sample_weight, n)
        cdef void *o = NULL
        if outputs is not None:
            o = _buffer(outputs, self.typenum, _elements(n, self.n_out, "outputs"), "outputs", True)
        cdef double loss, weight_total
        cdef int restore, parts
        with nogil:
            # Forward-only (an evaluation) may run on the pool; not backward.
            parts = _pool_enter(&self.net, NULL, self.blas_threads, self.pool,
                                0 if want_grads else n, steady,
                                _work_ns(&self.net, 1, n, 2, self.typenum))
            restore = _threads_enter(1 if parts else self.blas_threads)
            if self.typenum == cnp.NPY_FLOAT32:
                loss = cbp_net_loss_f32(&self.net, n, <const float *>x, t, <const float *>w,
                                        want_grads, <float *>o, &weight_total)
            else:
                loss = cbp_net_loss_f64(&self.net, n, <const double *>x, t, <const double *>w,
                                        want_grads, <double *>o, &weight_total)
            _threads_leave(restore)
            _pool_leave(&self.net, parts)
        return loss, weight_total

    def train_step(self, OptimizerState state, X, target, sample_weight=None):
        """One step: (loss before the update, status)."""
        self._ready()
        self._check_state(state)
        cdef Py_ssize_t n = cnp.PyArray_DIM(X, 0) if cnp.PyArray_Check(X) and cnp.PyArray_NDIM(X) == 2 else -1
        if n < 0:
            raise ValueError("Engine.train_step: X must be 2-D")
        cdef const void *x = _buffer(X, self.typenum, _elements(n, self.n_in, "X"), "X")
        cdef const void *t = self._target(target, n)
        cdef const void *w = self._weights(sample_weight, n)
        cdef double loss
        cdef int status, restore, parts
        cdef bint refused = False
        with nogil:
            # A step that stood aside for OpenBLAS's workers runs on their
            # threads without renewing the wait: noted, each such step of
            # a loop renewed it, and a train_step loop begun after a
            # threaded call never reached the pool.
            parts = _pool_enter(&self.net, &state.opt, self.blas_threads, self.pool, n, False,
                                _work_ns(&self.net, 1, n, 6, self.typenum), &refused)
            restore = _threads_enter(1 if parts else self.blas_threads, not refused)
            _obx_enter(&self.net, parts)
            if self.typenum == cnp.NPY_FLOAT32:
                status = cbp_net_train_step_f32(&self.net, &state.opt, n, <const float *>x,
                                                t, <const float *>w, &loss)
            else:
                status = cbp_net_train_step_f64(&self.net, &state.opt, n, <const double *>x,
                                                t, <const double *>w, &loss)
            self.net.ob_parts = 0
            _threads_leave(restore)
            _pool_leave(&self.net, parts)
        return loss, status

    def train_batches(self, OptimizerState state, X, target, sample_weight, order,
                      Py_ssize_t first_batch, int batch_size, Py_ssize_t n_batches, losses,
                      bint private_target=False, progress=None):
        """Train on `n_batches` mini-batches from batch `first_batch` on,
        where batch g is batch g mod B of epoch g // B, an epoch being
        B = ceil(len(X) / batch_size) batches (the last holds the rest), so
        that one call may span epochs.  `order`: None (rows in sequence) or
        int64 holding one permutation of the rows per epoch, from epoch 0
        on (shape (epochs, len(X)) or flat).  losses[k] receives batch
        first_batch + k's loss.  private_target: `target` is the caller's
        own array, which nothing else can change during the call (fit's
        copy), so its labels are read in place, not copied (see _target).
        progress (an int64 array, if given): progress[0] receives the
        batches completed, before the call returns (a Ctrl-C can arrive
        before the caller has the returned tuple).
        Returns (batches completed, status)."""
        self._ready()
        self._check_state(state)
        cdef Py_ssize_t n = cnp.PyArray_DIM(X, 0) if cnp.PyArray_Check(X) and cnp.PyArray_NDIM(X) == 2 else -1
        if n < 0:
            raise ValueError("Engine.train_batches: X must be 2-D")
        if batch_size < 1 or batch_size > self.net.capacity:
            raise ValueError("Engine.train_batches: batch_size must be in [1, capacity]")
        if (n_batches < 0 or first_batch < 0 or n_batches > PY_SSIZE_T_MAX - first_batch
                or (n_batches > 0 and n == 0)):
            raise ValueError("Engine.train_batches: batches run past the data")
        cdef const void *x = _buffer(X, self.typenum, _elements(n, self.n_in, "X"), "X")
        cdef const void *t = self._target(target, n, not private_target)
        cdef const void *w = self._weights(sample_weight, n)
        cdef double *l = <double *>_buffer(losses, cnp.NPY_FLOAT64, n_batches, "losses", True)
        cdef const int64_t *o = NULL
        cdef Py_ssize_t i, lo, hi, epochs, last, epoch_batches = (n + batch_size - 1) // batch_size
        if order is not None and n_batches > 0:
            if not cnp.PyArray_Check(order):
                raise TypeError(f"order: expected a numpy.ndarray, got {type(order).__name__}")
            epochs = cnp.PyArray_SIZE(order) // n
            if cnp.PyArray_SIZE(order) != epochs * n:
                raise ValueError(f"order: expected one permutation of the {n} rows per epoch, "
                                 f"got {cnp.PyArray_SIZE(order)} entries")
            o = <const int64_t *>_buffer(order, cnp.NPY_INT64, epochs * n, "order")
            if first_batch + n_batches > epochs * epoch_batches:
                raise ValueError("Engine.train_batches: batches run past the epochs in order")
            # the rows the batches read: contiguous in the flat order
            last = first_batch + n_batches - 1
            lo = first_batch // epoch_batches * n + first_batch % epoch_batches * batch_size
            hi = last // epoch_batches * n + min(n, (last % epoch_batches + 1) * <Py_ssize_t>batch_size)
            for i in range(lo, hi):
                if o[i] < 0 or o[i] >= n:
                    raise ValueError("Engine.train_batches: order holds a row out of range")
        cdef Py_ssize_t done
        cdef int status, restore, parts
        with nogil:
            parts = _pool_enter(&self.net, &state.opt, self.blas_threads, self.pool, batch_size,
                                True, _work_ns(&self.net, n_batches, batch_size, 6, self.typenum))
            restore = _threads_enter(1 if parts else self.blas_threads)
            _obx_enter(&self.net, parts)
            if self.typenum == cnp.NPY_FLOAT32:
                done = cbp_net_train_batches_f32(&self.net, &state.opt, n, <const float *>x, t,
                                                 <const float *>w, o, first_batch, batch_size,
                                                 n_batches, l, &status)
            else:
                done = cbp_net_train_batches_f64(&self.net, &state.opt, n, <const double *>x, t,
                                                 <const double *>w, o, first_batch, batch_size,
                                                 n_batches, l, &status)
            self.net.ob_parts = 0
            _threads_leave(restore)
            _pool_leave(&self.net, parts)
        self.batches_run += done
        if progress is not None:
            progress[0] = done
        return done, status

    def all_finite(self, cnp.ndarray a not None, int threads=1, int pool=0, Py_ssize_t rows=2,
                   bint steady=False):
        """Whether every element of `a` (C-contiguous, aligned, of this
        engine's dtype) is finite.  From the split size on (see
        set_finite_split_bytes), `a` is read by the threads of training
        steps of `rows` rows that ask for `threads` BLAS threads (0: as
        BLAS is set) and `pool` (cbp._threads.pool_for): cbp's pool when
        such steps may take it and it is free, else OpenBLAS's threads
        when there are two or more, else the caller alone.  steady: fit's
        check (see _pool_enter)."""
        if not (cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISALIGNED(a)):
            raise ValueError("Engine.all_finite: a must be C-contiguous and aligned")
        if cnp.PyArray_TYPE(a) != self.typenum:
            raise TypeError(f"Engine.all_finite: a must have the engine's dtype, got {a.dtype}")
        cdef Py_ssize_t size = cnp.PyArray_SIZE(a)
        cdef void *p = cnp.PyArray_DATA(a)
        cdef Py_ssize_t nbytes = size * (4 if self.typenum == cnp.NPY_FLOAT32 else 8)
        cdef int parts = 0, on_pool = 0, ok
        with nogil:
            if nbytes >= _finite_split_bytes:
                parts = _pool_enter(&self.net, NULL, threads, pool, rows, steady,
                                    nbytes // 10)   # read at about 10 bytes per ns
                on_pool = parts
                if not parts and _obx_on and _obx_bound and _get_threads != NULL:
                    if threads <= 0:
                        threads = _get_threads()
                    parts = cbp_obx_parts(threads) if threads >= 2 else 0
                    if parts:
                        cbp_pool_note_blas_threads() # its workers spin after the job
            if self.typenum == cnp.NPY_FLOAT32:
                ok = cbp_all_finite_parts_f32(size, <const float *>p, parts, on_pool != 0)
            else:
                ok = cbp_all_finite_parts_f64(size, <const double *>p, parts, on_pool != 0)
            _pool_leave(&self.net, on_pool)
        return ok != 0

    def blas_floor(self, X, double lr, int64_t reps):
        """Benchmark only: run the bare BLAS calls of `reps` fused-SGD
        steps on the rows of X (n <= capacity) and the plan's buffers.
        Call after a real step so the buffers hold realistic values; it
        changes the parameters."""
        self._ready()
        cdef Py_ssize_t n = cnp.PyArray_DIM(X, 0) if cnp.PyArray_Check(X) and cnp.PyArray_NDIM(X) == 2 else -1
        if n < 1 or n > self.net.capacity:
            raise ValueError("Engine.blas_floor: X must be 2-D with 1..capacity rows")
        cdef const void *x = _buffer(X, self.typenum, _elements(n, self.n_in, "X"), "X")
        cdef int restore
        with nogil:
            restore = _threads_enter(self.blas_threads)
            if self.typenum == cnp.NPY_FLOAT32:
                cbp_net_blas_floor_f32(&self.net, <int>n, <const float *>x, <float>lr, reps)
            else:
                cbp_net_blas_floor_f64(&self.net, <int>n, <const double *>x, lr, reps)
            _threads_leave(restore)

    cdef int _check_state(self, OptimizerState state) except -1:
        if state is None or state.n_params != self.net.n_params:
            raise ValueError("optimizer state does not match this network")
        if cnp.PyArray_TYPE(<cnp.ndarray>state.buf1) != self.typenum:
            raise TypeError("optimizer state has another dtype than this network")
        return 0
