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

#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

#define BLOCK 32
#define FINE 128   /* the fine part's step: the coarse step / FINE */
#define AHEAD 8    /* weight rows prefetched ahead of the one multiplied */
#define LINE 64    /* bytes in a cache line */

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

/* y (m, n) = x (m, k) W^T, plus residual (m, n) when it is not NULL (it may be y).
 * w: (n, k/2) bytes as dot_row reads them; w_scales: (n, k/32, 2) half floats, (scale,
 * minimum), a weight being scale * level + minimum. k must be whole pairs of blocks
 * (64). Returns 0, or -1 when there is no memory for the inputs' levels. */
int int4_linear(const float *x, int m, int k, const uint8_t *w, const uint16_t *w_scales,
                int n, const float *residual, float *y) {
    const int blocks = k / BLOCK;
    int8_t *levels = malloc((size_t)m * k * 2);
    float *steps = malloc(sizeof(float) * ((size_t)m * blocks * 2 + (size_t)blocks * 2));
    if (levels == NULL || steps == NULL) {
        free(levels);
        free(steps);
        return -1;
    }
    int8_t *fine = levels + (size_t)m * k;
    float *sums = steps + (size_t)m * blocks;
    float *s_row = sums + (size_t)m * blocks;
    for (int r = 0; r < m; r++)
        quantize_row(x + (size_t)r * k, k, levels + (size_t)r * k, fine + (size_t)r * k,
                     steps + (size_t)r * blocks, sums + (size_t)r * blocks);
    /* Row by row of the weights, each read from memory once whatever m is. The row
     * AHEAD rows on is asked for now: without it the core waited on memory about as long
     * as it multiplied (a token's matrices took a third longer). */
    for (int o = 0; o < n; o++) {
        const uint8_t *w_row = w + (size_t)o * (k / 2);
        const uint16_t *half_row = w_scales + (size_t)o * blocks * 2;
        if (o + AHEAD < n) {
            for (int at = 0; at < k / 2; at += LINE)
                _mm_prefetch((const char *)(w_row + (size_t)AHEAD * (k / 2) + at), _MM_HINT_T0);
            for (int at = 0; at < blocks * 2; at += LINE / (int)sizeof(uint16_t))
                _mm_prefetch((const char *)(half_row + (size_t)AHEAD * blocks * 2 + at),
                             _MM_HINT_T0);
        }
        widen_row(half_row, blocks * 2, s_row);
        for (int r = 0; r < m; r++) {
            const size_t at = (size_t)r * n + o;
            const float out = dot_row(w_row, s_row, blocks, levels + (size_t)r * k,
                                      fine + (size_t)r * k, steps + (size_t)r * blocks,
                                      sums + (size_t)r * blocks);
            y[at] = residual ? residual[at] + out : out;
        }
    }
    free(levels);
    free(steps);
    return 0;
}
