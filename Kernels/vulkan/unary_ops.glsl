/* The unary operations of elementwise.cl (unary_f / unary_df), shared by unary_f32.comp and
 * unary_backward_f32.comp; needs erf.glsl included first. op: 0 exp, 1 log, 2 sqrt,
 * 3 affine p0 * x + p1, 4 clamp to [p0, p1], 5 silu, 6 gelu (erf form), 7 relu, 8 sigmoid,
 * 9 tanh, other: square.
 * Differences from OpenCL: fmin/fmax are min/max (a NaN input of clamp/relu gives an
 * implementation-defined result instead of OpenCL's "ignore the NaN"); tanh and log are
 * tanh_f and log_f below instead of the GLSL builtins, whose Vulkan precision is far from
 * OpenCL's: drivers build tanh from exp (Mesa: (e^x - e^-x) / (e^x + e^-x) on x clamped to
 * +-10; llvmpipe returns 3e-8 for tanh(1e-40)) and log from log2 with only an absolute error
 * bound near 1 (llvmpipe: 1e-3 relative error at 0.99998), and leave log(x <= 0) undefined.
 * exp stays the builtin (Vulkan bound 3 + 2|x| ulp; llvmpipe measured <= 64 ulp, 4e-6
 * relative, at |x| ~ 87; OpenCL asks 3 ulp), as in the other shaders. */
#ifndef NOISEAR_UNARY_OPS_GLSL
#define NOISEAR_UNARY_OPS_GLSL

/* tanh in float, max error about 2 ulp on llvmpipe (checked against mpmath):
 * |x| < 0.55: a + a * t * P(t), a = |x|, t = a * a, P a degree-4 Chebyshev fit of
 * (tanh(a) / a - 1) / t (fit error 1e-9 relative); up to 10: 1 - 2 / (exp(2a) + 1) (the
 * result is >= 0.5 there, so the subtraction loses at most one bit); beyond: 1 (tanh(10) is 1
 * in float); the sign bit of x is put back at the end (so tanh(-0) = -0). NaN propagates
 * through the middle branch. */
float tanh_f(float xv) {
    float a = abs(xv);
    float r;
    if (a < 0.55) {
        float t = a * a;
        float p = -0.006233633487954959;
        p = p * t + 0.021038214806276566;
        p = p * t - 0.05384231924681723;
        p = p * t + 0.13332456536433132;
        p = p * t - 0.3333331079774895;
        r = a + a * (t * p);
    } else if (a > 10.0) {
        r = 1.0;
    } else {
        r = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
    }
    return uintBitsToFloat(floatBitsToUint(r) | (floatBitsToUint(xv) & 0x80000000u));
}

/* Natural log in float, max error about 1 ulp (checked against mpmath), with OpenCL's special
 * values (GLSL leaves log(x <= 0) undefined, and drivers build log from log2, whose absolute
 * error bound leaves no relative accuracy near 1: llvmpipe is off by 1e-3 relative at
 * 0.99998). x = 2^e * m with m in [sqrt(1/2), sqrt(2)), f = m - 1 (exact), and
 * log(x) = e * ln2_hi + (e * ln2_lo + (f - f^2 / 2 + f^3 * P(f))), P a degree-8 Chebyshev
 * fit of (log(1 + f) - f + f^2 / 2) / f^3 on that range (fit error 7e-8 relative on a term
 * below 6% of the result); ln2_hi has 15 significant bits, so e * ln2_hi is exact. Subnormal
 * inputs are scaled by 2^24 first. */
float log_f(float xv) {
    if (!(xv > 0.0) || xv == uintBitsToFloat(0x7f800000u)) {
        if (xv == 0.0) return uintBitsToFloat(0xff800000u);   /* log(+-0) = -inf */
        if (xv < 0.0) return uintBitsToFloat(0x7fc00000u);    /* NaN */
        return xv;                                           /* NaN or +inf */
    }
    int e = 0;
    if (xv < 1.17549435e-38) { xv *= 16777216.0; e = -24; }
    uint bits = floatBitsToUint(xv);
    e += int(bits >> 23) - 127;
    float m = uintBitsToFloat((bits & 0x007fffffu) | 0x3f800000u);
    if (m > 1.41421356) { m *= 0.5; e += 1; }
    float f = m - 1.0;
    float p = 0.06971611471451178;
    p = p * f - 0.11479733846637635;
    p = p * f + 0.11685419923486738;
    p = p * f - 0.12425687331451106;
    p = p * f + 0.1424905764569748;
    p = p * f - 0.16667802319501254;
    p = p * f + 0.20000715748892095;
    p = p * f - 0.24999996957950882;
    p = p * f + 0.33333331180030046;
    float hf2 = 0.5 * f * f;
    float r = f + (f * hf2 * 2.0 * p - hf2);
    float fe = float(e);
    return fe * 0.693145751953125 + (fe * 1.4286068203094173e-06 + r);
}

float unary_f(int op, float xv, float p0, float p1) {
    switch (op) {
    case 0: return exp(xv);
    case 1: return log_f(xv);
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

/* The GEMM and convolution shaders' activation epilogue, as elementwise.cl's twin in
 * common.h: act < 0 is none, else a parameter-free unary op. */
float epilogue_act(int act, float v) { return act < 0 ? v : unary_f(act, v, 0.0, 0.0); }

#endif
