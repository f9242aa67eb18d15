/* 4-bit weights times inputs held as two 8-bit parts, for x86-64 with AVX2, FMA, F16C.
 *
 * torch's int4 kernel expands each weight to a float before multiplying; on a CPU with
 * AVX2 only that ran slower than a float32 product of the same matrix. This one
 * multiplies in integers, 32 products an instruction (vpmaddubsw), with one float
 * multiply-add per block of 32 weights, as llama.cpp does on such a CPU. llama.cpp rounds
 * each input to 8 bits per block, which doubled how far the model's distribution moved
 * (KL 0.0062 bits against 0.0030, the entropy 0.084 bits against 0.038). Here each input
 * is a coarse 8-bit level plus a fine one, 1/128 of its step, what the coarse one
 * rounded away: about 15 bits, finer than torch's bfloat16 inputs, for a quarter more
 * time. See int4_kernel.py for the layout and how it is built and called. */

#define _GNU_SOURCE   /* pthread_setname_np */
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#define BLOCK 32
#define FINE 128   /* the fine part's step: the coarse step / FINE */
#define AHEAD 8    /* weight rows prefetched ahead of the one multiplied */
#define LINE 64    /* bytes in a cache line */
#define MOST_THREADS 64
#define SPIN 20000 /* pauses a worker waits awake for the next call (tens of us) before sleeping */

static inline float sum_of(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

static inline __m256i bytes_of(const __m256i levels[4]) {
    /* Packing narrows within 128-bit lanes; the permutation puts the 32 back in order. */
    __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(levels[0], levels[1]),
                                       _mm256_packs_epi32(levels[2], levels[3]));
    return _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* x (k floats) to coarse and fine levels (k int8 each) and, per block, the fine step and
 * the sum of the block as the levels hold it (what a weight block's minimum multiplies). */
static void quantize_row(const float *x, int k, int8_t *coarse, int8_t *fine,
                         float *steps, float *sums) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int b = 0; b < k / BLOCK; b++) {
        const float *xb = x + b * BLOCK;
        __m256 v[4], largest = _mm256_setzero_ps();
        for (int j = 0; j < 4; j++) {
            v[j] = _mm256_loadu_ps(xb + 8 * j);
            largest = _mm256_max_ps(largest, _mm256_andnot_ps(sign, v[j]));
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(largest), _mm256_extractf128_ps(largest, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float amax = _mm_cvtss_f32(h);
        const float step = amax / 127.0f;
        const __m256 per_step = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
        const __m256 per_fine = _mm256_set1_ps(amax > 0.0f ? FINE * 127.0f / amax : 0.0f);
        __m256i high[4], low[4], total = _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {   /* rounded to nearest, ties to even */
            high[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], per_step));
            const __m256 rest = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(high[j]),
                                                 _mm256_set1_ps(step), v[j]);
            low[j] = _mm256_cvtps_epi32(_mm256_mul_ps(rest, per_fine));   /* within +-65 */
            total = _mm256_add_epi32(total, _mm256_add_epi32(
                _mm256_slli_epi32(high[j], 7), low[j]));
        }
        _mm256_storeu_si256((__m256i *)(coarse + b * BLOCK), bytes_of(high));
        _mm256_storeu_si256((__m256i *)(fine + b * BLOCK), bytes_of(low));
        steps[b] = step / FINE;
        sums[b] = steps[b] * sum_of(_mm256_cvtepi32_ps(total));
    }
}

/* One block's 32 products, unsigned levels (0..15) by signed inputs, in fine steps:
 * pairs summed in 16 bits, then 32; the coarse ones scaled up by FINE (a shift). */
static inline __m256i products(__m256i levels, const int8_t *coarse, const int8_t *fine) {
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i high = _mm256_madd_epi16(_mm256_maddubs_epi16(
        levels, _mm256_loadu_si256((const __m256i *)coarse)), ones);
    const __m256i low = _mm256_madd_epi16(_mm256_maddubs_epi16(
        levels, _mm256_loadu_si256((const __m256i *)fine)), ones);
    return _mm256_add_epi32(_mm256_slli_epi32(high, 7), low);
}

/* One output: a weight row (k/2 bytes, scale and minimum per block) against one input
 * row. Two blocks a step: one 32-byte load holds both, the first block's levels in the
 * low nibbles and the second's in the high ones, so neither needs a shuffle. */
static inline float dot_row(const uint8_t *w, const float *w_scales, int blocks,
                            const int8_t *coarse, const int8_t *fine,
                            const float *steps, const float *sums) {
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    __m256 even = _mm256_setzero_ps(), odd = _mm256_setzero_ps();
    float minimums = 0.0f;
    for (int b = 0; b < blocks; b += 2) {
        const __m256i both = _mm256_loadu_si256((const __m256i *)(w + b * BLOCK / 2));
        const __m256i p0 = products(_mm256_and_si256(both, nibble),
                                    coarse + b * BLOCK, fine + b * BLOCK);
        const __m256i p1 = products(_mm256_and_si256(_mm256_srli_epi16(both, 4), nibble),
                                    coarse + (b + 1) * BLOCK, fine + (b + 1) * BLOCK);
        even = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0),
                               _mm256_set1_ps(w_scales[2 * b] * steps[b]), even);
        odd = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1),
                              _mm256_set1_ps(w_scales[2 * b + 2] * steps[b + 1]), odd);
        minimums += w_scales[2 * b + 1] * sums[b] + w_scales[2 * b + 3] * sums[b + 1];
    }
    return sum_of(_mm256_add_ps(even, odd)) + minimums;
}

/* A weight row's scales and minimums, half floats (as the GGUF's own are), to floats. */
static void widen_row(const uint16_t *half, int count, float *out) {
    int at = 0;
    for (; at + 8 <= count; at += 8)
        _mm256_storeu_ps(out + at, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(half + at))));
    for (; at < count; at++)
        out[at] = _cvtsh_ss(half[at]);
}

/* One call's work, as every thread reads it: the outputs in runs of `run` rows. */
struct job {
    const float *residual;
    float *y;
    const uint8_t *w;
    const uint16_t *w_scales;
    const int8_t *coarse, *fine;
    const float *steps, *sums;
    int m, k, n, run;
};

/* Outputs [first, last) of the job: row by row of the weights, each read from memory once
 * whatever m is. The row AHEAD rows on is asked for now: without it the core waited on
 * memory about as long as it multiplied (a token's matrices took a third longer). */
static void run_rows(const struct job *job, int first, int last) {
    const int k = job->k, blocks = k / BLOCK;
    float s_row[2 * (k / BLOCK)];   /* one row's scales, widened */
    for (int o = first; o < last; o++) {
        const uint8_t *w_row = job->w + (size_t)o * (k / 2);
        const uint16_t *half_row = job->w_scales + (size_t)o * blocks * 2;
        if (o + AHEAD < last) {
            for (int at = 0; at < k / 2; at += LINE)
                _mm_prefetch((const char *)(w_row + (size_t)AHEAD * (k / 2) + at), _MM_HINT_T0);
            for (int at = 0; at < blocks * 2; at += LINE / (int)sizeof(uint16_t))
                _mm_prefetch((const char *)(half_row + (size_t)AHEAD * blocks * 2 + at),
                             _MM_HINT_T0);
        }
        widen_row(half_row, blocks * 2, s_row);
        for (int r = 0; r < job->m; r++) {
            const size_t at = (size_t)r * job->n + o;
            const float out = dot_row(w_row, s_row, blocks, job->coarse + (size_t)r * k,
                                      job->fine + (size_t)r * k, job->steps + (size_t)r * blocks,
                                      job->sums + (size_t)r * blocks);
            job->y[at] = job->residual ? job->residual[at] + out : out;
        }
    }
}

/* A pool of workers made once and kept: a token makes a few hundred calls of tens of
 * microseconds, too short to start threads for. A call's outputs are cut into runs that
 * the caller and the workers claim one at a time, so a worker that another program keeps
 * off its core delays the call by one run at most, not by its share; each output is
 * computed by the same code whoever claims it, so the result is the same on any number
 * of threads, to the bit. A worker waits awake a little after each call, since the next
 * one usually follows within microseconds, then sleeps.
 *
 * `ticket` says which call is open and which run is claimed next, in one word, so a worker
 * can never claim a run of a call that has ended: the call's number (bits 40-63), its runs
 * (20-39) and the next run (0-19). */
#define CALL(t) ((t) >> 40)
#define RUNS(t) (((t) >> 20) & 0xFFFFF)
#define NEXT(t) ((t) & 0xFFFFF)
#define MOST_RUNS 0xFFFFF

static struct {
    pthread_mutex_t calling;  /* one call at a time */
    pthread_mutex_t lock;     /* with `wake`, for workers going to sleep */
    pthread_cond_t wake;
    int workers;              /* started so far, the caller not counted */
    void (*work)(void *context, int run);   /* the open call's: compute one run */
    void *context;
    int nice;                 /* the caller's niceness, which the workers take */
    /* Each counter on a cache line of its own: a write to one must not take from the
     * other threads the line they read the job or spin on. */
    _Alignas(LINE) _Atomic uint64_t ticket;
    _Alignas(LINE) atomic_int done;       /* runs of the open call computed */
    _Alignas(LINE) atomic_int sleeping;   /* workers asleep on `wake` */
} pool = {.calling = PTHREAD_MUTEX_INITIALIZER, .lock = PTHREAD_MUTEX_INITIALIZER,
          .wake = PTHREAD_COND_INITIALIZER};

static inline int claimable(uint64_t ticket) { return NEXT(ticket) < RUNS(ticket); }

/* Claim and compute runs of the open call until none is left. */
static void claim_runs(void) {
    uint64_t ticket = atomic_load(&pool.ticket);
    while (claimable(ticket)) {
        if (atomic_compare_exchange_weak(&pool.ticket, &ticket, ticket + 1)) {
            /* The call cannot end before this run is done, so its work stays as read. */
            pool.work(pool.context, (int)NEXT(ticket));
            atomic_fetch_add(&pool.done, 1);
            ticket = atomic_load(&pool.ticket);
        }
    }
}

/* One run of an int4 product's rows; the job copied, so the loops read it from this
 * thread's own stack rather than a line the others write. */
static void rows_run(void *context, int run) {
    const struct job job = *(const struct job *)context;
    const int first = run * job.run;
    run_rows(&job, first, first + job.run < job.n ? first + job.run : job.n);
}

/* Linux gives each thread its own niceness: the model's process lowers its own after
 * loading (the screen and the hum go first), and workers started before that would keep
 * the higher priority. So a worker takes the caller's at each call where it changed. */
static void follow_niceness(int *held) {
    const int wanted = pool.nice;
    if (wanted != *held) {
        setpriority(PRIO_PROCESS, 0, wanted);   /* may fail to raise it: then it stays lower */
        *held = wanted;
    }
}

static void *worker(void *unused) {
    (void)unused;
    pthread_setname_np(pthread_self(), "int4 worker");   /* as ps and /proc name it */
    int held = getpriority(PRIO_PROCESS, 0);
    for (;;) {
        int spin = 0;
        while (!claimable(atomic_load(&pool.ticket)) && spin++ < SPIN)
            _mm_pause();
        if (!claimable(atomic_load(&pool.ticket))) {
            pthread_mutex_lock(&pool.lock);
            atomic_fetch_add(&pool.sleeping, 1);
            while (!claimable(atomic_load(&pool.ticket)))
                pthread_cond_wait(&pool.wake, &pool.lock);
            atomic_fetch_sub(&pool.sleeping, 1);
            pthread_mutex_unlock(&pool.lock);
        }
        follow_niceness(&held);
        claim_runs();
    }
    return NULL;
}

/* Workers enough for `threads` threads with the caller; how many threads there are. */
static int grow_pool(int threads) {
    if (threads > MOST_THREADS)
        threads = MOST_THREADS;
    while (pool.workers + 1 < threads) {
        pthread_t thread;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int made = pthread_create(&thread, &attr, worker, NULL);
        pthread_attr_destroy(&attr);
        if (made != 0)
            break;
        pool.workers++;
    }
    return pool.workers + 1;
}

/* work(context, run) for run 0 .. runs - 1, on the pool's threads and the caller's;
 * returns when every run is done. Also for decode_step.c. */
void shared_runs(void (*work)(void *context, int run), void *context, int runs,
                 int threads) {
    if (threads <= 1 || runs <= 1 || runs > MOST_RUNS) {
        for (int run = 0; run < runs; run++)
            work(context, run);
        return;
    }
    pthread_mutex_lock(&pool.calling);
    grow_pool(threads);
    pool.work = work;
    pool.context = context;
    pool.nice = getpriority(PRIO_PROCESS, 0);
    atomic_store(&pool.done, 0);
    const uint64_t call = CALL(atomic_load(&pool.ticket)) + 1;
    atomic_store(&pool.ticket, (call << 40) | ((uint64_t)runs << 20));   /* after the job */
    if (atomic_load(&pool.sleeping) > 0) {
        pthread_mutex_lock(&pool.lock);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.lock);
    }
    claim_runs();
    /* Runs claimed by workers, still under way. A worker kept off its core may be queued
     * on this one: after a while, this thread gives its core up. */
    for (int spin = 0; atomic_load(&pool.done) < runs; spin++) {
        if (spin < SPIN)
            _mm_pause();
        else
            sched_yield();
    }
    pthread_mutex_unlock(&pool.calling);
}

/* y (m, n) = x (m, k) W^T, plus residual (m, n) when it is not NULL (it may be y), the
 * outputs shared among `threads` threads. w: (n, k/2) bytes as dot_row reads them;
 * w_scales: (n, k/32, 2) half floats, (scale, minimum), a weight being scale * level +
 * minimum. k must be whole pairs of blocks (64). Calls from several threads take turns
 * on the pool. A pool once grown is kept: a later call asking fewer threads may still be
 * helped by all of them, with the same result. Returns 0, or -1 when there is no memory for the
 * inputs' levels. */
int int4_linear(const float *x, int m, int k, const uint8_t *w, const uint16_t *w_scales,
                int n, const float *residual, float *y, int threads) {
    const int blocks = k / BLOCK;
    int8_t *levels = malloc((size_t)m * k * 2);
    float *steps = malloc(sizeof(float) * ((size_t)m * blocks * 2));
    if (levels == NULL || steps == NULL) {
        free(levels);
        free(steps);
        return -1;
    }
    int8_t *fine = levels + (size_t)m * k;
    float *sums = steps + (size_t)m * blocks;
    for (int r = 0; r < m; r++)
        quantize_row(x + (size_t)r * k, k, levels + (size_t)r * k, fine + (size_t)r * k,
                     steps + (size_t)r * blocks, sums + (size_t)r * blocks);
    struct job job = {residual, y, w, w_scales, levels, fine, steps, sums, m, k, n, n};
    if (threads > 1 && n >= 32) {
        /* Runs of whole groups of 8 rows, about 8 a thread, so a late thread costs little. */
        int run = (n + 8 * threads - 1) / (8 * threads);
        run = (run + 7) / 8 * 8;
        job.run = run < 16 ? 16 : run;
        while ((n + job.run - 1) / job.run > MOST_RUNS)
            job.run *= 2;
        shared_runs(rows_run, &job, (n + job.run - 1) / job.run, threads);
    } else {
        run_rows(&job, 0, n);
    }
    free(levels);
    free(steps);
    return 0;
}
