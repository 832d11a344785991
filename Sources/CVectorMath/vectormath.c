#include "vectormath.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

// Multiply-adds contract into FMA where the clone has it (the x86-64-v3 and v4 clones): the
// polynomials' dependency chains halve. So the clones differ in the last bits, as OpenBLAS's
// kernels for different CPUs do.
#pragma clang fp contract(fast)

#if defined(__x86_64__) && defined(__clang__) && defined(__ELF__)
#define NAR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NAR_CLONES
#endif

static const float exp_hi = 88.72283f, exp_lo = -87.33654f;

static inline float bits_to_float(int32_t i) { float f; memcpy(&f, &i, 4); return f; }
static inline int32_t float_to_bits(float f) { int32_t i; memcpy(&i, &f, 4); return i; }

// e^x for x within [exp_lo, exp_hi] (Cephes): x = n ln2 + r, |r| <= ln2/2, e^r by a degree-6
// polynomial, 2^n through the exponent bits as 2^(n-1) * 2 so that n in [-126, 128] fits
// (n = -126 underflows to exactly 0). n = round(x / ln2) by the 1.5 * 2^23 trick.
static inline float exp_in_range(float x) {
    const float magic = 12582912.0f;
    float t = x * 1.44269504f + magic;
    float n = t - magic;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691e-4f;
    p = p * r + 1.3981999e-3f;
    p = p * r + 8.3334520e-3f;
    p = p * r + 4.1665796e-2f;
    p = p * r + 1.6666665e-1f;
    p = p * r + 0.5f;
    float er = p * (r * r) + r + 1.0f;
    int32_t n1 = float_to_bits(t) - 0x4B400000 + 126;
    return er * bits_to_float((int32_t)((uint32_t)n1 << 23)) * 2.0f;
}

// e^x with the edges: 0 below exp_lo (-inf included), +inf above exp_hi, NaN stays NaN.
static inline float vexp(float x) {
    float xc = x > exp_hi ? exp_hi : x;
    xc = xc < exp_lo ? exp_lo : xc;
    float y = exp_in_range(xc);
    y = x < exp_lo ? 0.0f : y;
    y = x > exp_hi ? INFINITY : y;
    return x != x ? x : y;
}

// e^x for softmax's shifted inputs (x <= 0 or NaN): only the lower clamp.
static inline float vexp_nonpositive(float x) { return exp_in_range(x < exp_lo ? exp_lo : x); }

// erf(x), Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7), odd, NaN stays NaN.
static inline float verf(float x) {
    float a = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * a);
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    p = p * t;
    float y = 1.0f - p * vexp(-a * a);
    y = x < 0 ? -y : y;
    return x != x ? x : y;
}

// Elementwise loops: element i reads only input i, and outputs are either the inputs themselves
// or disjoint from them, so the loops vectorise without alias checks (assume_safety).
#define NAR_MAP(EXPR)                                                                          \
    _Pragma("clang loop vectorize(assume_safety)")                                             \
    for (long i = 0; i < n; i++) { float v = x[i]; y[i] = EXPR; }

NAR_CLONES
int nar_vm_unary(int op, const float *x, float *y, long n, float p0, float p1) {
    switch (op) {
    case NAR_VM_EXP: NAR_MAP(vexp(v)) return 0;
    case NAR_VM_SILU: NAR_MAP(v / (1.0f + vexp(-v))) return 0;
    case NAR_VM_SIGMOID: NAR_MAP(1.0f / (1.0f + vexp(-v))) return 0;
    case NAR_VM_GELU: NAR_MAP(0.5f * v * (1.0f + verf(v * 0.70710678118654752f))) return 0;
    case NAR_VM_AFFINE: NAR_MAP(v * p0 + p1) return 0;
    case NAR_VM_SQUARE: NAR_MAP(v * v) return 0;
    case NAR_VM_SQRT: NAR_MAP(__builtin_elementwise_sqrt(v)) return 0;
    case NAR_VM_RELU: NAR_MAP(v < 0 ? 0.0f : v) return 0;
    default: return -1;
    }
}

NAR_CLONES
int nar_vm_unary_backward(int op, const float *x, const float *dy, float *dx, long n) {
    switch (op) {
    case NAR_VM_EXP:
        _Pragma("clang loop vectorize(assume_safety)")
        for (long i = 0; i < n; i++) dx[i] = dy[i] * vexp(x[i]);
        return 0;
    case NAR_VM_SILU:
        _Pragma("clang loop vectorize(assume_safety)")
        for (long i = 0; i < n; i++) {
            float s = 1.0f / (1.0f + vexp(-x[i]));
            dx[i] = dy[i] * (s * (1.0f + x[i] * (1.0f - s)));
        }
        return 0;
    case NAR_VM_SIGMOID:
        _Pragma("clang loop vectorize(assume_safety)")
        for (long i = 0; i < n; i++) {
            float s = 1.0f / (1.0f + vexp(-x[i]));
            dx[i] = dy[i] * (s * (1.0f - s));
        }
        return 0;
    case NAR_VM_GELU:
        _Pragma("clang loop vectorize(assume_safety)")
        for (long i = 0; i < n; i++) {
            float v = x[i];
            float cdf = 0.5f * (1.0f + verf(v * 0.70710678118654752f));
            float pdf = vexp(-0.5f * v * v) * 0.39894228040143268f;
            dx[i] = dy[i] * (cdf + v * pdf);
        }
        return 0;
    default: return -1;
    }
}

NAR_CLONES
void nar_vm_softmax_row(const float *x, float *y, long n, int log) {
    // The maximum and the sum in 16 partial lanes (a fixed order, whatever the vector width),
    // then folded.
    enum { L = 16 };
    float mv[L], sv[L];
    for (int l = 0; l < L; l++) { mv[l] = -INFINITY; sv[l] = 0.0f; }
    long full = n / L * L;
    for (long j = 0; j < full; j += L)
        for (int l = 0; l < L; l++) mv[l] = x[j + l] > mv[l] ? x[j + l] : mv[l];
    float m = -INFINITY;
    for (int l = 0; l < L; l++) m = mv[l] > m ? mv[l] : m;
    for (long j = full; j < n; j++) m = x[j] > m ? x[j] : m;
    if (log) {
        for (long j = 0; j < full; j += L)
            for (int l = 0; l < L; l++) sv[l] += vexp_nonpositive(x[j + l] - m);
        float s = 0.0f;
        for (int l = 0; l < L; l++) s += sv[l];
        for (long j = full; j < n; j++) s += vexp_nonpositive(x[j] - m);
        float shift = m + logf(s);
        _Pragma("clang loop vectorize(assume_safety)")
        for (long j = 0; j < n; j++) y[j] = x[j] - shift;
    } else {
        _Pragma("clang loop vectorize(assume_safety)")
        for (long j = 0; j < n; j++) y[j] = vexp_nonpositive(x[j] - m);
        for (long j = 0; j < full; j += L)
            for (int l = 0; l < L; l++) sv[l] += y[j + l];
        float s = 0.0f;
        for (int l = 0; l < L; l++) s += sv[l];
        for (long j = full; j < n; j++) s += y[j];
        float inv = 1.0f / s;
        _Pragma("clang loop vectorize(assume_safety)")
        for (long j = 0; j < n; j++) y[j] *= inv;
    }
}

// The sum of f(x[j]) for j < n: 8 float lanes per block of 1024 (a fixed order, whatever the
// vector width), each block's lanes folded and added in double.
#define NAR_BLOCK_SUM(TOTAL, X, N, F)                                                          \
    do {                                                                                       \
        double total_ = 0;                                                                     \
        for (long b0_ = 0; b0_ < (N); b0_ += 1024) {                                           \
            long e_ = (N) - b0_ < 1024 ? (N) - b0_ : 1024, full_ = e_ / 8 * 8;                 \
            float lane_[8] = {0};                                                              \
            for (long j_ = 0; j_ < full_; j_ += 8)                                             \
                for (int l_ = 0; l_ < 8; l_++) { float v = (X)[b0_ + j_ + l_]; lane_[l_] += (F); } \
            float s_ = ((lane_[0] + lane_[4]) + (lane_[2] + lane_[6]))                         \
                     + ((lane_[1] + lane_[5]) + (lane_[3] + lane_[7]));                        \
            for (long j_ = full_; j_ < e_; j_++) { float v = (X)[b0_ + j_]; s_ += (F); }        \
            total_ += (double)s_;                                                              \
        }                                                                                      \
        (TOTAL) = total_;                                                                      \
    } while (0)

static inline void mean_rstd(const float *x, long n, float eps, float *mean, float *rstd) {
    double sum, sq;
    NAR_BLOCK_SUM(sum, x, n, v);
    float m = (float)(sum / (double)n);
    NAR_BLOCK_SUM(sq, x, n, (v - m) * (v - m));
    *mean = m;
    *rstd = (float)(1.0 / sqrt(sq / (double)n + (double)eps));
}

NAR_CLONES
void nar_vm_mean_rstd(const float *x, long n, float eps, float *mean, float *rstd) { mean_rstd(x, n, eps, mean, rstd); }

NAR_CLONES
void nar_vm_layernorm_rows(const float *x, float *y, long lo, long hi, long n, const float *gamma,
                           const float *beta, float eps, float *mean, float *rstd) {
    for (long r = lo; r < hi; r++) {
        const float *xs = x + r * n;
        float *ys = y + r * n;
        mean_rstd(xs, n, eps, mean + r, rstd + r);
        const float m = mean[r], rs = rstd[r];
        if (gamma && beta) {
            _Pragma("clang loop vectorize(assume_safety)")
            for (long j = 0; j < n; j++) ys[j] = (xs[j] - m) * rs * gamma[j] + beta[j];
        } else if (gamma) {
            _Pragma("clang loop vectorize(assume_safety)")
            for (long j = 0; j < n; j++) ys[j] = (xs[j] - m) * rs * gamma[j];
        } else if (beta) {
            _Pragma("clang loop vectorize(assume_safety)")
            for (long j = 0; j < n; j++) ys[j] = (xs[j] - m) * rs + beta[j];
        } else {
            _Pragma("clang loop vectorize(assume_safety)")
            for (long j = 0; j < n; j++) ys[j] = (xs[j] - m) * rs;
        }
    }
}

#define NAR_BINARY_LOOP(EXPR)                                                                  \
    if (sa == 1 && sb == 1) {                                                                  \
        _Pragma("clang loop vectorize(assume_safety)")                                         \
        for (long i = 0; i < n; i++) { float u = a[i], v = b[i]; out[i] = EXPR; }              \
    } else if (sa == 1 && sb == 0) {                                                           \
        float v = b[0];                                                                        \
        _Pragma("clang loop vectorize(assume_safety)")                                         \
        for (long i = 0; i < n; i++) { float u = a[i]; out[i] = EXPR; }                        \
    } else if (sa == 0 && sb == 1) {                                                           \
        float u = a[0];                                                                        \
        _Pragma("clang loop vectorize(assume_safety)")                                         \
        for (long i = 0; i < n; i++) { float v = b[i]; out[i] = EXPR; }                        \
    } else {                                                                                   \
        for (long i = 0; i < n; i++) { float u = a[i * sa], v = b[i * sb]; out[i] = EXPR; }    \
    }

NAR_CLONES
void nar_vm_binary(int op, const float *a, long sa, const float *b, long sb, float *out, long n) {
    switch (op) {
    case NAR_VM_ADD: NAR_BINARY_LOOP(u + v) break;
    case NAR_VM_SUB: NAR_BINARY_LOOP(u - v) break;
    case NAR_VM_MUL: NAR_BINARY_LOOP(u * v) break;
    default: NAR_BINARY_LOOP(u / v) break;
    }
}

NAR_CLONES
void nar_vm_copy(const float *src, long ss, float *dst, long n) {
    if (ss == 1) {
        _Pragma("clang loop vectorize(assume_safety)")
        for (long i = 0; i < n; i++) dst[i] = src[i];
    } else if (ss == 0) {
        float v = src[0];
        for (long i = 0; i < n; i++) dst[i] = v;
    } else {
        _Pragma("clang loop vectorize(assume_safety)")
        for (long i = 0; i < n; i++) dst[i] = src[i * ss];
    }
}

const char *nar_vm_level(void) {
#if defined(__x86_64__) && defined(__clang__) && defined(__ELF__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return "x86-64-v4";
    if (__builtin_cpu_supports("x86-64-v3")) return "x86-64-v3";
    return "x86-64";
#else
    return "generic";
#endif
}
