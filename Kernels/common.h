/* Shared helpers, prepended to every program. OpenCL C 1.2, vendor-neutral.
 * Every buffer argument comes with an element offset so outputs can live anywhere in a
 * buffer (sub-buffers would need device-specific alignment). */
#ifndef NOISEAR_COMMON_H
#define NOISEAR_COMMON_H

/* Offset of linear index i over an up-to-6-D shape (int8 lanes s0..s5 used; the host
 * collapses mergeable axes and pads with leading 1s, whose divisions are skipped). */
#define STRIDED_STEP(lane) \
    if (shape.lane != 1) { q = i / shape.lane; off += (i - q * shape.lane) * strides.lane; i = q; }
inline int strided_offset(int i, int8 shape, int8 strides) {
    int off = 0, q;
    STRIDED_STEP(s5)
    STRIDED_STEP(s4)
    STRIDED_STEP(s3)
    STRIDED_STEP(s2)
    STRIDED_STEP(s1)
    off += i * strides.s0;
    return off;
}

/* f(x) of the unary ops (UnaryOp's raw values): unary_f32, and the activation epilogues of
 * the GEMM and convolution kernels. CPU twin: CPUBackend.unaryForward. */
inline float unary_f(int op, float x, float p0, float p1) {
    switch (op) {
    case 0: return exp(x);
    case 1: return log(x);
    case 2: return sqrt(x);
    case 3: return p0 * x + p1;
    case 4: return fmin(fmax(x, p0), p1);
    case 5: return x / (1.0f + exp(-x));
    case 6: return 0.5f * x * (1.0f + erf(x * 0.70710678118654752f));
    case 7: return fmax(x, 0.0f);
    case 8: return 1.0f / (1.0f + exp(-x));
    case 9: return tanh(x);
    default: return x * x;
    }
}

/* The GEMM and convolution kernels' activation epilogue: act < 0 is none, else a
 * parameter-free unary op (GemmDesc.activation, Op.Conv2d.activation). */
inline float epilogue_act(int act, float v) { return act < 0 ? v : unary_f(act, v, 0.0f, 0.0f); }

#endif
