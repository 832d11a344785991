/* erf for the Vulkan shaders (GLSL has none); included by the shaders that need it.
 *
 * erf_f(x), computed in float, max relative error about 1.5e-7 (< 3 ulp) over all x
 * (checked against mpmath on a dense grid), i.e. within OpenCL's 16-ulp bound for erf:
 * - |x| < 1: erf(x) = x + x * (E0 + t * P(t)), t = x * x, where E0 + t * P(t) is a
 *   degree-6 Chebyshev fit of erf(x) / x - 1 in t on [0, 1] (fit error 1.3e-9 relative);
 *   keeping the leading x exact avoids rounding the bulk of the result;
 * - 1 <= |x| < 4: erf(|x|) = 1 - exp(-x * x) * Q(u), u = (2|x| - 5) / 3 in [-1, 1], where Q
 *   is a degree-12 Chebyshev series of erfc(a) * exp(a * a) on [1, 4] (fit error 6.3e-9
 *   relative), summed with Clenshaw's recurrence;
 * - |x| >= 4: erf = +-1 exactly (erfc(4) = 1.5e-8 is below float resolution at 1);
 * - NaN propagates (the range tests are false and the middle branch yields NaN).
 * The coefficients were fitted for this file (Chebyshev interpolation in mpmath). */
#ifndef NOISEAR_ERF_GLSL
#define NOISEAR_ERF_GLSL

float erf_f(float x) {
    float a = abs(x);
    if (a < 1.0) {
        float t = x * x;
        float p = 7.875875062685488e-05;
        p = p * t - 0.000801686428716587;
        p = p * t + 0.005189087423433974;
        p = p * t - 0.026854212010626415;
        p = p * t + 0.11283594715160217;
        p = p * t - 0.37612626666720334;
        return x + x * (0.128379165848351 + t * p);
    }
    if (a >= 4.0) return x > 0.0 ? 1.0 : -1.0;
    const float c[13] = float[13](
        0.24442575284923573, -0.13589862891594598, 0.035635114148534965,
        -0.008884098618222471, 0.0021184239975530544, -0.00048539876407924996,
        0.000107273754532751, -2.2936634451047057e-05, 4.756874502919963e-06,
        -9.589933490288507e-07, 1.882833674413364e-07, -3.6024327066982936e-08,
        6.526287040003729e-09);
    float u = a * (2.0 / 3.0) - 5.0 / 3.0;
    float u2 = u + u;
    float b1 = 0.0, b2 = 0.0;
    for (int j = 12; j >= 1; --j) {
        float b0 = u2 * b1 - b2 + c[j];
        b2 = b1;
        b1 = b0;
    }
    float r = 1.0 - exp(-a * a) * (u * b1 - b2 + c[0]);
    return x < 0.0 ? -r : r;
}

#endif
