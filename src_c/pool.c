/*
 * pool.c — cbp's own worker threads for the model-parallel training step
 * (engine_impl.h, pool_train_step).
 *
 * Why cbp has threads of its own.  With two BLAS threads, each product of
 * a step is split by OpenBLAS as OpenBLAS sees fit, and the element-wise
 * passes between the products run on the calling thread alone, on data
 * half of which the product left in the other core's cache.  The pool
 * instead gives each of `parts` threads a fixed share of every layer's
 * units: the same thread computes those columns of Z, their activation,
 * those rows of W in the update, each with single-threaded BLAS calls, so
 * a share of W and of the activations stays in one core's cache for the
 * whole step, and the passes run on every core.  The threads meet at a
 * barrier after each layer.
 *
 * Use: cbp_pool_acquire(parts, steady, cost_ns) (0: busy, unavailable or
 * standing aside — take the serial path), cbp_pool_run(fn, arg) as often
 * as needed, cbp_pool_release().
 * One user at a time: a second network training in another thread while
 * the pool is taken gets 0 and runs as before.  The caller is part 0;
 * helpers 1 .. parts-1 are created on first use and kept.  Between jobs a
 * helper spins for CBP_POOL_SPIN_NS (the next step of a fit comes within
 * microseconds), then sleeps on a condition variable: an idle pool takes
 * no CPU.  Inside a job, cbp_pool_barrier() waits for every part.
 *
 * The caller must make BLAS single-threaded while it runs jobs (each part
 * calls BLAS itself); the Cython layer does, and takes the pool only when
 * it can (see _engine.pyx).
 *
 * A helper runs each job under the caller's floating-point control
 * (fpenv_set: a thread keeps the one it was created with, so a
 * flush-to-zero the caller set later would not hold there).
 *
 * After fork() the child has no helpers: a pthread_atfork handler resets
 * the pool there, and the next acquire creates them again.  Without POSIX
 * threads (MSVC) acquire always answers 0.
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* sched_getcpu, pthread_setaffinity_np */
#endif
#include "cbp.h"

#if defined(_WIN32) || !defined(__STDC_VERSION__) || __STDC_VERSION__ < 201112L || \
    defined(__STDC_NO_ATOMICS__)

int cbp_pool_acquire(int parts, int steady, long long cost_ns)
{
    (void)parts, (void)steady, (void)cost_ns;
    return 0;
}
void cbp_pool_note_blas_threads(void) {}
void cbp_pool_settle(void) {}
long long cbp_pool_jobs(void) { return 0; }
void cbp_threads_changed(int old) { (void)old; }
void cbp_threads_restored(void) {}
int cbp_threads_after_fork(void) { return 0; }
void cbp_pool_release(void) {}
void cbp_pool_run(cbp_pool_fn fn, void *arg, int parts) { (void)parts; fn(arg, 0, 1); }
void cbp_pool_barrier(void) {}
int cbp_obx_bind(void *level1_thread) { (void)level1_thread; return 0; }
int cbp_obx_parts(int threads) { (void)threads; return 0; }
void cbp_obx_run(cbp_pool_fn fn, void *arg, int parts) { for (int p = 0; p < parts; p++) fn(arg, p, parts); }
long long cbp_obx_jobs(void) { return 0; }
int cbp_obx_fpenv_mismatches(int parts) { (void)parts; return 0; }
int cbp_pool_fpenv_mismatches(int parts) { (void)parts; return -1; }

#else

#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

_Static_assert(CBP_POOL_MAX_PARTS < 16, "a job's parts fit the low 4 bits of pool.job");

#define CBP_POOL_SPIN_NS 200000 /* 0.2 ms */
/* OpenBLAS's workers spin 2^28 cycles (0.1 s at 2.6 GHz) after their last
 * job before they sleep; meanwhile each holds a core the pool needs.  So
 * after cbp runs BLAS on OpenBLAS's threads, calls that may stand aside
 * (not steady) do, until calls wanting the pool have brought about
 * CBP_POOL_ASIDE_NS of estimated work (cbp_pool_acquire's cost_ns): a
 * count of work, not a clock, so that which path a sequence of calls
 * takes, and so its rounding, never depends on timing. */
#define CBP_POOL_ASIDE_NS 140000000

/* A thread's floating-point control (x86-64: MXCSR, whose flush-to-zero
 * and denormals-are-zero bits a caller may set for its own thread, e.g.
 * torch.set_flush_denormal; AArch64: FPCR).  Work that cbp hands to
 * another thread, a pool helper or an OpenBLAS worker, runs under the
 * caller's, as it would on the caller. */
#if defined(__x86_64__)
#include <xmmintrin.h>
typedef unsigned int fpenv_t;
static fpenv_t fpenv_get(void) { return _mm_getcsr(); }
static void fpenv_set(fpenv_t env) { _mm_setcsr(env); }
#elif defined(__aarch64__)
typedef unsigned long fpenv_t;
static fpenv_t fpenv_get(void)
{
    fpenv_t env;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(env));
    return env;
}
static void fpenv_set(fpenv_t env) { __asm__ __volatile__("msr fpcr, %0" : : "r"(env)); }
#else
typedef int fpenv_t;
static fpenv_t fpenv_get(void) { return 0; }
static void fpenv_set(fpenv_t env) { (void)env; }
#endif

static struct {
    atomic_int busy;              /* 1 while a caller holds the pool */
    int helpers;                  /* helper threads running */
    atomic_int parts;             /* parts of the current job */
    cbp_pool_fn fn;
    void *arg;
    fpenv_t fpenv;                /* the caller's, for the helpers */
    atomic_ullong job;            /* the current job: sequence << 4 | its parts */
    atomic_int done;              /* helpers finished with the current job */
    atomic_int sleeping[CBP_POOL_MAX_PARTS]; /* helper i waits on wake[i] */
    atomic_uint bar_count, bar_gen;
    atomic_llong jobs;            /* jobs run since the process started (tests) */
    atomic_llong aside_ns;        /* estimated work still to stand aside for */
    unsigned long long start[CBP_POOL_MAX_PARTS]; /* pool.job when helper i was created */
    pthread_t threads[CBP_POOL_MAX_PARTS]; /* helper i's thread */
#ifdef __linux__
    cpu_set_t caller_mask;        /* the caller's affinity, restored by release */
    int pinned;                   /* the caller was pinned by acquire */
#endif
    pthread_mutex_t lock;
    pthread_cond_t wake[CBP_POOL_MAX_PARTS]; /* initialised by acquire */
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t init_once_flag = PTHREAD_ONCE_INIT;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Spin politely: a few hundred pauses, then give the core away between
 * checks, so that a part waiting for a descheduled one does not hold the
 * core it needs (a loaded machine, more threads than cores). */
#define SPIN_UNTIL(cond)                                                    \
    do {                                                                    \
        for (unsigned spins_ = 0; !(cond); spins_++) {                      \
            if (spins_ < 512)                                               \
                cpu_relax();                                                \
            else                                                            \
                sched_yield();                                              \
        }                                                                   \
    } while (0)

static void *helper_main(void *arg)
{
    int id = (int)(intptr_t)arg;
#ifdef __linux__
    pthread_setname_np(pthread_self(), "cbp-pool"); /* as `top -H` shows it */
#endif
    /* Not pool.job as it is now: the first job may already be posted. */
    unsigned long long seen = pool.start[id];
    for (;;) {
        /* Wait for a job of ours (id < its parts): spin a while, then
         * sleep.  Jobs of fewer parts pass a helper by, and it sleeps. */
        int64_t deadline = now_ns() + CBP_POOL_SPIN_NS;
        unsigned spins = 0;
        for (;;) {
            /* The parts come in the same word as the job: a helper that
             * lags behind can never pair one job with another's parts. */
            unsigned long long job = atomic_load(&pool.job);
            if (job != seen) {
                seen = job;
                if (id < (int)(job & 15))
                    break;
            }
            cpu_relax();
            if (++spins % 256 == 0 && now_ns() > deadline) {
                /* Sleep until a job for this helper is posted (a job of
                 * fewer parts does not wake it). */
                pthread_mutex_lock(&pool.lock);
                atomic_store(&pool.sleeping[id], 1);
                while (atomic_load(&pool.job) == seen)
                    pthread_cond_wait(&pool.wake[id], &pool.lock);
                atomic_store(&pool.sleeping[id], 0);
                pthread_mutex_unlock(&pool.lock);
            }
        }
        fpenv_set(pool.fpenv); /* helpers run only cbp's jobs: no need to restore */
        pool.fn(pool.arg, id, (int)(seen & 15));
        atomic_fetch_add(&pool.done, 1);
    }
    return NULL;
}

static void reset_in_child(void)
{
    /* Only the forking thread exists in the child. */
    pthread_mutex_init(&pool.lock, NULL);
    for (int i = 0; i < CBP_POOL_MAX_PARTS; i++) {
        pthread_cond_init(&pool.wake[i], NULL);
        atomic_store(&pool.sleeping[i], 0);
    }
    pool.helpers = 0;
#ifdef __linux__
    pool.pinned = 0;
#endif
    atomic_store(&pool.done, 0);
    atomic_store(&pool.bar_count, 0);
    atomic_store(&pool.busy, 0);
}

static void init_once(void)
{
    for (int i = 0; i < CBP_POOL_MAX_PARTS; i++)
        pthread_cond_init(&pool.wake[i], NULL);
    pthread_atfork(NULL, NULL, reset_in_child);
}

#ifdef __linux__
/* Where the threads run.  Left to itself, Linux often wakes a helper on
 * the CPU of the thread that woke it and leaves both there for
 * milliseconds while another CPU idles; each barrier then waits for a
 * time slice (measured: a quarter of the steps of a fit with both parts on
 * one CPU, and such fits 1.5-3x slower).  So while it holds the pool the
 * caller stays on the CPU it is on, and helper i runs on the i-th CPU
 * after it that the caller was allowed; release gives the caller its mask
 * back.
 * Skipped when the caller may use fewer CPUs than the parts. */
static void pin_threads(int parts)
{
    pool.pinned = 0;
    int here = sched_getcpu();
    if (here < 0 || pthread_getaffinity_np(pthread_self(), sizeof(cpu_set_t),
                                           &pool.caller_mask) != 0)
        return;
    if (CPU_COUNT(&pool.caller_mask) < parts || !CPU_ISSET(here, &pool.caller_mask))
        return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(here, &one);
    if (pthread_setaffinity_np(pthread_self(), sizeof(cpu_set_t), &one) != 0)
        return;
    pool.pinned = 1;
    int cpu = here;
    for (int i = 1; i < parts; i++) {
        /* The next allowed CPU after the last one (cyclically), so that
         * two processes' pools on different CPUs do not pile up on CPU 0. */
        do
            cpu = (cpu + 1) % CPU_SETSIZE;
        while (cpu != here && !CPU_ISSET(cpu, &pool.caller_mask));
        if (cpu == here)
            break;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        pthread_setaffinity_np(pool.threads[i], sizeof(cpu_set_t), &one);
    }
}

static void unpin_caller(void)
{
    if (pool.pinned)
        pthread_setaffinity_np(pthread_self(), sizeof(cpu_set_t), &pool.caller_mask);
    pool.pinned = 0;
}
#else
static void pin_threads(int parts) { (void)parts; }
static void unpin_caller(void) {}
#endif

/* cbp is about to run BLAS on two or more of OpenBLAS's threads. */
void cbp_pool_note_blas_threads(void)
{
    atomic_store(&pool.aside_ns, CBP_POOL_ASIDE_NS);
}

/* Nothing to stand aside for (tests and benchmarks, after waiting for
 * OpenBLAS's workers to sleep). */
void cbp_pool_settle(void)
{
    atomic_store(&pool.aside_ns, 0);
}

int cbp_pool_acquire(int parts, int steady, long long cost_ns)
{
    if (parts < 2)
        return 0;
    /* OpenBLAS's workers may still be spinning after cbp's last threaded
     * BLAS call: then its threads, awake anyway, serve a short run of
     * calls better than the pool would beside them (measured: pool steps
     * 2x slower for 0.1 s after a threaded OpenBLAS call).  Such a call
     * stands aside until the calls asking for the pool since have
     * brought about CBP_POOL_ASIDE_NS of estimated work, its own
     * included.  A steady caller (every call of a fit) takes the pool all
     * the same, its work counted: a fit's path must not depend on the
     * calls before it, and standing aside, a fit's first epochs would
     * take the other path than its later ones. */
    if (atomic_load(&pool.aside_ns) > 0) {
        atomic_fetch_sub(&pool.aside_ns, cost_ns > 0 ? cost_ns : 1);
        if (!steady)
            return 0;
    }
    if (parts > CBP_POOL_MAX_PARTS)
        parts = CBP_POOL_MAX_PARTS;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&pool.busy, &expected, 1))
        return 0;
    pthread_once(&init_once_flag, init_once);
    while (pool.helpers < parts - 1) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pool.start[pool.helpers + 1] = atomic_load(&pool.job);
        /* Helpers start with every signal blocked, so that signals (Ctrl-C)
         * go to the application's threads, never to a pool thread. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        int failed = pthread_create(&thread, &attr, helper_main,
                                    (void *)(intptr_t)(pool.helpers + 1));
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
        if (failed)
            break;
        pool.threads[++pool.helpers] = thread;
    }
    if (pool.helpers < 1) {
        atomic_store(&pool.busy, 0);
        return 0;
    }
    if (parts > pool.helpers + 1)
        parts = pool.helpers + 1;
    pin_threads(parts);
    return parts;
}

void cbp_pool_release(void)
{
    unpin_caller();
    atomic_store(&pool.busy, 0);
}

void cbp_pool_run(cbp_pool_fn fn, void *arg, int parts)
{
    pool.fn = fn;
    pool.arg = arg;
    pool.fpenv = fpenv_get();
    atomic_store(&pool.parts, parts);
    atomic_store(&pool.bar_count, 0);
    atomic_store(&pool.done, 0);
    /* seq_cst: the fields above are visible to whoever sees this job */
    atomic_store(&pool.job, ((atomic_load(&pool.job) >> 4) + 1) << 4 | (unsigned long long)parts);
    for (int i = 1; i < parts; i++) {
        /* A helper that set sleeping[i] before this job's increment is, or
         * will be, in cond_wait under the lock (seq_cst: else it sees the
         * job and does not wait). */
        if (atomic_load(&pool.sleeping[i])) {
            pthread_mutex_lock(&pool.lock);
            pthread_cond_signal(&pool.wake[i]);
            pthread_mutex_unlock(&pool.lock);
        }
    }
    fn(arg, 0, parts);
    SPIN_UNTIL(atomic_load(&pool.done) == parts - 1);
    atomic_fetch_add(&pool.jobs, 1);
}

/* OpenBLAS's thread count across fork.  A call that lowers the count
 * (to 1 for a small step, or for the pool's parts) restores it when it
 * returns; a child forked meanwhile by another thread has no such
 * thread, and would keep the lowered count for good (measured: 9 of 10
 * children forked while another thread fitted stayed at one BLAS thread
 * and never used the pool).  So the count before the first of the calls
 * in flight is kept here, and the child restores it
 * (cbp_threads_after_fork, from Python's os.register_at_fork). */
static atomic_int threads_in_flight, threads_base;

void cbp_threads_changed(int old)
{
    if (atomic_fetch_add(&threads_in_flight, 1) == 0)
        atomic_store(&threads_base, old);
}

void cbp_threads_restored(void)
{
    atomic_fetch_sub(&threads_in_flight, 1);
}

int cbp_threads_after_fork(void)
{
    return atomic_exchange(&threads_in_flight, 0) > 0 ? atomic_load(&threads_base) : 0;
}

long long cbp_pool_jobs(void)
{
    return atomic_load(&pool.jobs);
}

void cbp_pool_barrier(void)
{
    unsigned gen = atomic_load(&pool.bar_gen);
    if (atomic_fetch_add(&pool.bar_count, 1) == (unsigned)atomic_load(&pool.parts) - 1) {
        atomic_store(&pool.bar_count, 0);
        atomic_fetch_add(&pool.bar_gen, 1);
    } else {
        SPIN_UNTIL(atomic_load(&pool.bar_gen) != gen);
    }
}

/* ------------------------------------------------------------------
 * OpenBLAS's own threads for the work between products (cbp_obx_*).
 *
 * A step too large for the pool runs its products on OpenBLAS's
 * threads; between two products the caller alone used to gather the
 * shuffled batch (a trip to memory per row) and make the element-wise
 * passes, while OpenBLAS's workers, awake from the last product, spun.
 * OpenBLAS exports the entry its level-1 routines use to split a job over
 * those workers, blas_level1_thread; cbp hands them the gather and a
 * large layer's passes through it (engine_impl.h, obx_gather and
 * obx_pass, with what was measured).  The job's items are one per part
 * (m = nthreads = parts, lda = ldb = 0 so every item gets the same
 * `a`, the job); each item claims a part (obx_item), so every part
 * runs exactly once whichever thread takes it, the caller included.
 * Only `a` is read of the arguments: an integer argument, in a register
 * on x86-64 and AArch64 whatever the precision of the alpha that
 * OpenBLAS's legacy call passes.  A part never calls BLAS (a nested call
 * would wait on the workers it holds).  A part on a worker runs under
 * the caller's floating-point control (fpenv_set: OpenBLAS's workers keep
 * their own), and when the entry returns the caller runs any part that
 * no item claimed.
 *
 * The entry is internal to OpenBLAS, so its first use runs a self-test
 * (`a` passed through, each part once; with BLAS_DOUBLE's mode in
 * OpenBLAS 0.3.2x and later, then in older releases); if it fails, the
 * work stays on the caller.  Only with BLAS set to two or more
 * threads: then OpenBLAS's workers exist.
 * ------------------------------------------------------------------ */
typedef int (*ob_level1_fn)(int mode, long m, long n, long k, void *alpha, void *a, long lda,
                            void *b, long ldb, void *c, long ldc, int (*function)(void),
                            int nthreads);
static ob_level1_fn ob_level1;
static int ob_mode;
static atomic_int ob_state;      /* 0 untested, 1 working, 2 testing, -1 refused */
static atomic_llong ob_jobs;

struct obx_job {
    cbp_pool_fn fn;
    void *arg;
    int parts;
    pthread_t caller;
    fpenv_t fpenv;             /* the caller's */
    atomic_int caller_took;      /* part 0 is claimed */
    atomic_int next;             /* the next of parts 1 .. parts-1 to claim */
};

/* One item of the job.  The caller takes part 0: OpenBLAS's threaded
 * products give the caller their first block of columns, the block a
 * pass's part 0 takes (unit_share in engine_impl.h), so it runs where
 * that block is in cache.  The workers take parts 1, 2, … as they come.
 * Whatever thread runs how many items, every part is claimed once. */
static int obx_item(long m, long n, long k, double alpha, void *a, long lda, void *b,
                    long ldb, void *c, long ldc, void *sb)
{
    (void)m, (void)n, (void)k, (void)alpha, (void)lda, (void)b, (void)ldb, (void)c, (void)ldc,
        (void)sb;
    struct obx_job *job = (struct obx_job *)a;
    int part;
    if (pthread_equal(pthread_self(), job->caller) && !atomic_exchange(&job->caller_took, 1)) {
        part = 0;
    } else {
        part = atomic_fetch_add(&job->next, 1);
        if (part >= job->parts) { /* every other part is claimed: 0 may be left */
            if (atomic_exchange(&job->caller_took, 1))
                return 0;
            part = 0;
        }
    }
    if (pthread_equal(pthread_self(), job->caller)) {
        job->fn(job->arg, part, job->parts);
    } else {
        fpenv_t own = fpenv_get();
        fpenv_set(job->fpenv);
        job->fn(job->arg, part, job->parts);
        fpenv_set(own);
    }
    return 0;
}

static void obx_job_init(struct obx_job *job, cbp_pool_fn fn, void *arg, int parts)
{
    job->fn = fn;
    job->arg = arg;
    job->parts = parts;
    job->caller = pthread_self();
    job->fpenv = fpenv_get();
    atomic_store(&job->caller_took, 0);
    atomic_store(&job->next, 1);
}

/* alpha: room for any precision's pair of values (a release whose mode 3
 * reads a long double reads zeros); the items ignore it. */
static void obx_dispatch(struct obx_job *job, int mode)
{
    long double alpha[2] = {0, 0};
    ob_level1(mode, job->parts, 0, 0, alpha, job, 0, job, 0, job, 0, (int (*)(void))obx_item,
              job->parts);
}

/* The self-test: the items must see the job as `a` (checked before it is
 * used) and every part must run once. */
static void *obx_probe_expected;
static atomic_int obx_probe_bad, obx_probe_runs[CBP_POOL_MAX_PARTS];

static int obx_probe_item(long m, long n, long k, double alpha, void *a, long lda, void *b,
                          long ldb, void *c, long ldc, void *sb)
{
    if (a != obx_probe_expected) {
        atomic_store(&obx_probe_bad, 1);
        return 0;
    }
    return obx_item(m, n, k, alpha, a, lda, b, ldb, c, ldc, sb);
}

static void obx_probe_part(void *arg, int part, int parts)
{
    (void)arg;
    if (part >= 0 && part < parts && part < CBP_POOL_MAX_PARTS)
        atomic_fetch_add(&obx_probe_runs[part], 1);
}

static int obx_probe(int mode, int parts)
{
    struct obx_job job;
    obx_job_init(&job, obx_probe_part, NULL, parts);
    atomic_store(&obx_probe_bad, 0);
    for (int p = 0; p < CBP_POOL_MAX_PARTS; p++)
        atomic_store(&obx_probe_runs[p], 0);
    obx_probe_expected = &job;
    long double alpha[2] = {0, 0};
    ob_level1(mode, parts, 0, 0, alpha, &job, 0, &job, 0, &job, 0,
              (int (*)(void))obx_probe_item, parts);
    if (atomic_load(&obx_probe_bad) || !atomic_load(&job.caller_took))
        return 0;
    for (int p = 0; p < parts; p++)
        if (atomic_load(&obx_probe_runs[p]) != 1)
            return 0;
    return 1;
}

int cbp_obx_bind(void *level1_thread)
{
#if defined(__x86_64__) || defined(__aarch64__)
    if (level1_thread == NULL || ob_level1 != NULL)
        return ob_level1 != NULL && ob_level1 == (ob_level1_fn)level1_thread;
    ob_level1 = (ob_level1_fn)level1_thread;
    return 1;
#else
    (void)level1_thread; /* `a`'s place among the arguments was checked on these only */
    return 0;
#endif
}

int cbp_obx_parts(int threads)
{
    if (ob_level1 == NULL || threads < 2)
        return 0;
    int parts = threads < CBP_POOL_MAX_PARTS ? threads : CBP_POOL_MAX_PARTS;
    int state = atomic_load(&ob_state);
    if (state == 0) {
        int expected = 0;
        if (!atomic_compare_exchange_strong(&ob_state, &expected, 2))
            return 0; /* another thread is testing */
        /* BLAS_DOUBLE: 3 from 0.3.2x (half and bfloat16 come first), 1 before. */
        static const int modes[] = {3, 1};
        state = -1;
        for (int i = 0; i < 2 && state < 0; i++)
            if (obx_probe(modes[i], 2) && obx_probe(modes[i], parts)) {
                ob_mode = modes[i];
                state = 1;
            }
        atomic_store(&ob_state, state);
    }
    return state == 1 ? parts : 0;
}

void cbp_obx_run(cbp_pool_fn fn, void *arg, int parts)
{
    struct obx_job job;
    obx_job_init(&job, fn, arg, parts);
    obx_dispatch(&job, ob_mode);
    /* OpenBLAS returns once every item it ran has returned.  Should it
     * have run fewer items than asked (the self-test saw it run them all,
     * but it runs once), the caller runs the parts left: each call claims
     * one, until none is left. */
    while (!atomic_load(&job.caller_took) || atomic_load(&job.next) < parts)
        obx_item(0, 0, 0, 0, &job, 0, NULL, 0, NULL, 0, NULL);
    atomic_fetch_add(&ob_jobs, 1);
}

long long cbp_obx_jobs(void)
{
    return atomic_load(&ob_jobs);
}

/* Tests: run a job of `parts` parts on the pool (-1: not granted) or on
 * OpenBLAS's threads (after cbp_obx_parts granted them); how many ran
 * under another floating-point control than the caller's. */
struct obx_fpenv_probe {
    fpenv_t caller;
    atomic_int mismatches;
};

static void obx_fpenv_part(void *arg, int part, int parts)
{
    (void)part, (void)parts;
    struct obx_fpenv_probe *probe = (struct obx_fpenv_probe *)arg;
    if (fpenv_get() != probe->caller)
        atomic_fetch_add(&probe->mismatches, 1);
}

int cbp_pool_fpenv_mismatches(int parts)
{
    struct obx_fpenv_probe probe;
    probe.caller = fpenv_get();
    atomic_store(&probe.mismatches, 0);
    parts = cbp_pool_acquire(parts, 0, 0);
    if (parts < 2)
        return -1;
    cbp_pool_run(obx_fpenv_part, &probe, parts);
    cbp_pool_release();
    return atomic_load(&probe.mismatches);
}

int cbp_obx_fpenv_mismatches(int parts)
{
    struct obx_fpenv_probe probe;
    probe.caller = fpenv_get();
    atomic_store(&probe.mismatches, 0);
    cbp_obx_run(obx_fpenv_part, &probe, parts);
    return atomic_load(&probe.mismatches);
}

#endif
