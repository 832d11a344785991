/* The unary operations of elementwise.cl (unary_f / unary_df), shared by unary_f32.comp and
 * unary_backward_f32.comp; needs erf.glsl included first. op: 0 exp, 1 log, 2 sqrt,
 * 3 affine p0 * x + p1, 4 clamp to [p0, p1], 5 silu, 6 gelu (erf form), 7 relu, 8 sigmoid,
 * 9 tanh, other: square.
 * Differences from OpenCL: fmin/fmax are min/max (a NaN input of clamp/relu gives an
 * implementation-defined result instead of OpenCL's "ignore the NaN"); tanh is tanh_f below
 * instead of the GLSL builtin, because Vulkan drivers may build the builtin from exp (Mesa:
 * (e^x - e^-x) / (e^x + e^-x)), which loses all relative accuracy near 0 and, unclamped,
 * gives NaN for large |x|. */
#ifndef NOISEAR_UNARY_OPS_GLSL
#define NOISEAR_UNARY_OPS_GLSL

/* tanh in float, max relative error ~1e-7 plus exp's error:
 * |x| < 0.55: x + x * t * P(t), t = x * x, P a degree-4 Chebyshev fit of (tanh(x) / x - 1) / t
 * (fit error 1e-9 relative); up to 10: 1 - 2 / (exp(2|x|) + 1) with the sign of x (the
 * result is >= 0.5 there, so the subtraction loses at most one bit); beyond: +-1 (tanh(10)
 * is 1 in float). NaN propagates through the middle branch. */
float tanh_f(float xv) {
    float a = abs(xv);
    if (a < 0.55) {
        float t = xv * xv;
        float p = -0.006233633487954959;
        p = p * t + 0.021038214806276566;
        p = p * t - 0.05384231924681723;
        p = p * t + 0.13332456536433132;
        p = p * t - 0.3333331079774895;
        return xv + xv * (t * p);
    }
    if (a > 10.0) return xv > 0.0 ? 1.0 : -1.0;
    float r = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
    return xv < 0.0 ? -r : r;
}

float unary_f(int op, float xv, float p0, float p1) {
    switch (op) {
    case 0: return exp(xv);
    case 1: return log(xv);
    case 2: return sqrt(xv);
    case 3: return p0 * xv + p1;
    case 4: return min(max(xv, p0), p1);
    case 5: return xv / (1.0 + exp(-xv));
    case 6: return 0.5 * xv * (1.0 + erf_f(xv * 0.70710678118654752));
    case 7: return max(xv, 0.0);
    case 8: return 1.0 / (1.0 + exp(-xv));
    case 9: return tanh_f(xv);
    default: return xv * xv;
    }
}

float unary_df(int op, float xv, float p0, float p1) {
    switch (op) {
    case 0: return exp(xv);
    case 1: return 1.0 / xv;
    case 2: return 0.5 / sqrt(xv);
    case 3: return p0;
    case 4: return (xv >= p0 && xv <= p1) ? 1.0 : 0.0;
    case 5: { float s = 1.0 / (1.0 + exp(-xv)); return s * (1.0 + xv * (1.0 - s)); }
    case 6: {
        float cdf = 0.5 * (1.0 + erf_f(xv * 0.70710678118654752));
        float pdf = exp(-0.5 * xv * xv) * 0.39894228040143268;
        return cdf + xv * pdf;
    }
    case 7: return xv > 0.0 ? 1.0 : 0.0;
    case 8: { float s = 1.0 / (1.0 + exp(-xv)); return s * (1.0 - s); }
    case 9: { float t = tanh_f(xv); return 1.0 - t * t; }
    default: return 2.0 * xv;
    }
}

#endif
