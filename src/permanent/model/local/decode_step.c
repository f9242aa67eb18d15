/* One token through every layer of a Llama-shaped model in one call, for x86-64 with AVX2
 * and FMA: RMSNorm, the packed q/k/v product with the voice's low-rank pair, the rotary
 * turn, the key/value cache written in place, attention over it, the output product and
 * its residual, RMSNorm, gate/up with SiLU, down and its residual.
 *
 * In torch the same step is about 200 small calls a layer, each a few microseconds
 * however little it computes; on a 2-core CPU they cost as much as the 4-bit products.
 * The products are int4_kernel.c's (`int4_linear`, its rows shared among threads); the
 * rest is float32 as the torch path computes it, in another order of summation. The
 * output matrix, the entropy and the sampling stay in torch. See decode_step.py. */

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int int4_linear(const float *x, int m, int k, const uint8_t *w, const uint16_t *w_scales,
                int n, const float *residual, float *y, int threads);
void shared_runs(void (*work)(void *context, int run), void *context, int runs, int threads);

/* One packed matrix as int4_linear reads it, and the voice beside it: y += (x A^T) B^T
 * with A^T (in, rank) and B^T (rank, out), each contiguous; rank 0 for none. */
struct packed {
    const uint8_t *weight;
    const uint16_t *scales;
    const float *a_t, *b_t;
    int rank;
};

struct layer {
    struct packed qkv, out, gate_up, down;
    const float *attention_norm, *mlp_norm;
};

struct shape {
    int layers, hidden, heads, kv_heads, head_dim, intermediate, capacity, threads;
    float eps;
};

static inline float sum_of(__m256 v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

static float dot(const float *a, const float *b, int count) {   /* count: a multiple of 8 */
    __m256 total = _mm256_setzero_ps();
    for (int i = 0; i < count; i += 8)
        total = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), total);
    return sum_of(total);
}

static void add_scaled(float *y, const float *x, float scale, int count) {   /* y += scale x */
    const __m256 s = _mm256_set1_ps(scale);
    int i = 0;
    for (; i + 8 <= count; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(s, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < count; i++)
        y[i] += scale * x[i];
}

/* Llama's RMSNorm: x / sqrt(mean(x^2) + eps) * weight. */
static void rms_norm(const float *x, const float *weight, int count, float eps, float *out) {
    double squares = 0.0;
    for (int i = 0; i < count; i++)
        squares += (double)x[i] * x[i];
    const float scale = 1.0f / sqrtf((float)(squares / count) + eps);
    for (int i = 0; i < count; i++)
        out[i] = x[i] * scale * weight[i];
}

/* y (out) = x (in) W^T + the voice's pair, plus y's own values first where `add`. */
static int product(const struct packed *p, const float *x, int in, int out, float *y,
                   int add, int threads, float *ranks) {
    if (int4_linear(x, 1, in, p->weight, p->scales, out, add ? y : NULL, y, threads) != 0)
        return -1;
    if (p->rank == 0)
        return 0;
    for (int j = 0; j < p->rank; j++)
        ranks[j] = 0.0f;
    for (int i = 0; i < in; i++)
        add_scaled(ranks, p->a_t + (size_t)i * p->rank, x[i], p->rank);
    for (int j = 0; j < p->rank; j++)
        add_scaled(y, p->b_t + (size_t)j * out, ranks[j], out);
    return 0;
}

/* Softmax attention of one query head over `length` cached positions. */
static void attend(const float *q, const float *keys, const float *values, int length,
                   int head_dim, float *scores, float *out) {
    const float scale = 1.0f / sqrtf((float)head_dim);
    float largest = -INFINITY;
    for (int t = 0; t < length; t++) {
        scores[t] = dot(q, keys + (size_t)t * head_dim, head_dim) * scale;
        largest = scores[t] > largest ? scores[t] : largest;
    }
    float total = 0.0f;
    for (int t = 0; t < length; t++) {
        scores[t] = expf(scores[t] - largest);
        total += scores[t];
    }
    memset(out, 0, sizeof(float) * head_dim);
    for (int t = 0; t < length; t++)
        add_scaled(out, values + (size_t)t * head_dim, scores[t] / total, head_dim);
}

/* One layer's attention, a query head a run (shared among the threads like a product's
 * rows): each head reads its group's keys and values and writes its own output. */
struct attention {
    const float *qkv, *keys, *values;
    float *scores, *attended;   /* scores: `length` floats a head */
    size_t capacity;
    int head_dim, group, length;
};

static void attend_head(void *context, int head) {
    const struct attention *a = context;
    const size_t held = (size_t)(head / a->group) * a->capacity * a->head_dim;
    attend(a->qkv + (size_t)head * a->head_dim, a->keys + held, a->values + held, a->length,
           a->head_dim, a->scores + (size_t)head * a->length,
           a->attended + (size_t)head * a->head_dim);
}

/* x (hidden): the residual stream of the token at `position`, taken through every layer
 * in place. cache: (layers, 2, kv_heads, capacity, head_dim) float32, keys then values;
 * this position's are written. cos, sin: (head_dim / 2) each, this position's rotary
 * angles; each rotary pair lies side by side in the q and k rows. Returns 0, or -1 when
 * there is no memory. */
int decode_step(const struct shape *s, const struct layer *layers, float *x, float *cache,
                int position, const float *cos, const float *sin) {
    const int hd = s->head_dim, queries = s->heads * hd, kv = s->kv_heads * hd;
    const int rows = queries + 2 * kv, group = s->heads / s->kv_heads;
    int most_rank = 0;
    for (int l = 0; l < s->layers; l++) {
        const struct packed *all[4] = {&layers[l].qkv, &layers[l].out, &layers[l].gate_up,
                                       &layers[l].down};
        for (int i = 0; i < 4; i++)
            most_rank = all[i]->rank > most_rank ? all[i]->rank : most_rank;
    }
    const size_t floats = (size_t)s->hidden + rows + queries + 2 * (size_t)s->intermediate +
                          (size_t)s->heads * (position + 1) + most_rank + 8;
    float *scratch = malloc(sizeof(float) * floats);
    if (scratch == NULL)
        return -1;
    float *normed = scratch, *qkv = normed + s->hidden, *attended = qkv + rows;
    float *gate_up = attended + queries, *scores = gate_up + 2 * (size_t)s->intermediate;
    float *ranks = scores + (size_t)s->heads * (position + 1);
    int failed = 0;
    for (int l = 0; l < s->layers && !failed; l++) {
        const struct layer *layer = &layers[l];
        float *keys = cache + (size_t)l * 2 * s->kv_heads * s->capacity * hd;
        float *values = keys + (size_t)s->kv_heads * s->capacity * hd;
        rms_norm(x, layer->attention_norm, s->hidden, s->eps, normed);
        failed |= product(&layer->qkv, normed, s->hidden, rows, qkv, 0, s->threads, ranks);
        for (int head = 0; head < s->heads + s->kv_heads; head++) {   /* queries and keys */
            float *pairs = qkv + (size_t)head * hd;
            for (int j = 0; j < hd / 2; j++) {
                const float a = pairs[2 * j], b = pairs[2 * j + 1];
                pairs[2 * j] = a * cos[j] - b * sin[j];
                pairs[2 * j + 1] = a * sin[j] + b * cos[j];
            }
        }
        for (int h = 0; h < s->kv_heads; h++) {
            memcpy(keys + ((size_t)h * s->capacity + position) * hd, qkv + queries + h * hd,
                   sizeof(float) * hd);
            memcpy(values + ((size_t)h * s->capacity + position) * hd,
                   qkv + queries + kv + h * hd, sizeof(float) * hd);
        }
        struct attention heads = {qkv, keys, values, scores, attended, (size_t)s->capacity,
                                  hd, group, position + 1};
        shared_runs(attend_head, &heads, s->heads, s->threads);
        failed |= product(&layer->out, attended, queries, s->hidden, x, 1, s->threads, ranks);
        rms_norm(x, layer->mlp_norm, s->hidden, s->eps, normed);
        failed |= product(&layer->gate_up, normed, s->hidden, 2 * s->intermediate, gate_up,
                          0, s->threads, ranks);
        for (int i = 0; i < s->intermediate; i++) {   /* SiLU(gate) * up, into the gate */
            const float g = gate_up[i];
            gate_up[i] = g / (1.0f + expf(-g)) * gate_up[s->intermediate + i];
        }
        failed |= product(&layer->down, gate_up, s->intermediate, s->hidden, x, 1, s->threads,
                          ranks);
    }
    free(scratch);
    return failed ? -1 : 0;
}
