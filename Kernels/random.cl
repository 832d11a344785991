/* Philox4x32-10 standard normals. CPU twin: Philox.swift (same operations in the same order,
 * only correctly rounded ones, explicit fma), so both give the same bits. */
#pragma OPENCL FP_CONTRACT OFF

inline uint4 philox4x32_10(uint4 c, uint2 k) {
    for (int r = 0; r < 10; ++r) {
        uint hi0 = mul_hi(0xD2511F53u, c.x), lo0 = 0xD2511F53u * c.x;
        uint hi1 = mul_hi(0xCD9E8D57u, c.z), lo1 = 0xCD9E8D57u * c.z;
        c = (uint4)(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
        k.x += 0x9E3779B9u;
        k.y += 0xBB67AE85u;
    }
    return c;
}

inline float philox_uniform(uint x) { return (float)((x >> 9) * 2u + 1u) * 5.9604644775390625e-8f; }

/* log on (0, 1]: Cephes logf polynomial. */
inline float philox_log(float u) {
    uint bits = as_uint(u);
    int e = (int)((bits >> 23) & 0xffu) - 126;
    float x = as_float((bits & 0x007fffffu) | 0x3f000000u);
    if (x < 0.70710678f) { e -= 1; x = x + x - 1.0f; } else { x = x - 1.0f; }
    float p = 7.0376836292e-2f;
    p = fma(p, x, -1.1514610310e-1f);
    p = fma(p, x, 1.1676998740e-1f);
    p = fma(p, x, -1.2420140846e-1f);
    p = fma(p, x, 1.4249322787e-1f);
    p = fma(p, x, -1.6668057665e-1f);
    p = fma(p, x, 2.0000714765e-1f);
    p = fma(p, x, -2.4999993993e-1f);
    p = fma(p, x, 3.3333331174e-1f);
    float fe = (float)e;
    float z = x * x;
    float y = (x * z) * p;
    y = fma(fe, -2.12194440e-4f, y);
    y = fma(-0.5f, z, y);
    float r = x + y;
    return fma(fe, 0.693359375f, r);
}

/* (cos, sin) of 2*pi*u for u in (0, 1). */
inline float2 philox_cossin(float u) {
    float v = u * 4.0f;
    int q = (int)v;
    float t = (v - (float)q - 0.5f) * 1.57079632679489662f;
    float t2 = t * t;
    float sp = -1.9515295891e-4f;
    sp = fma(sp, t2, 8.3321608736e-3f);
    sp = fma(sp, t2, -1.6666654611e-1f);
    float st = fma(t * t2, sp, t);
    float cp = 2.443315711809948e-5f;
    cp = fma(cp, t2, -1.388731625493765e-3f);
    cp = fma(cp, t2, 4.166664568298827e-2f);
    float ct = fma(t2 * t2, cp, fma(-0.5f, t2, 1.0f));
    float h = 0.70710678118654752f;
    float c = (ct - st) * h, s = (ct + st) * h;
    switch (q & 3) {
    case 0: return (float2)(c, s);
    case 1: return (float2)(-s, c);
    case 2: return (float2)(-c, -s);
    default: return (float2)(s, -c);
    }
}

inline float2 philox_pair(uint a, uint b) {
    float r = sqrt(-2.0f * philox_log(philox_uniform(a)));
    float2 cs = philox_cossin(philox_uniform(b));
    return (float2)(r * cs.x, r * cs.y);
}

/* dst[i] = normal number (offset + i) of stream seed. One work item per element. */
kernel void philox_randn(global float* dst, int doff, int n, uint seed_lo, uint seed_hi,
                         uint off_lo, uint off_hi) {
    int i = get_global_id(0);
    if (i >= n) return;
    ulong e = (((ulong)off_hi << 32) | (ulong)off_lo) + (ulong)i;
    ulong blk = e >> 2;
    uint4 w = philox4x32_10((uint4)((uint)blk, (uint)(blk >> 32), 0u, 0u), (uint2)(seed_lo, seed_hi));
    int lane = (int)(e & 3ul);
    float2 z = lane < 2 ? philox_pair(w.x, w.y) : philox_pair(w.z, w.w);
    dst[doff + i] = (lane & 1) ? z.y : z.x;
}

/* Normal number e of stream seed (the element philox_randn writes at offset e). */
inline float philox_normal_at(ulong e, ulong seed) {
    ulong blk = e >> 2;
    uint4 w = philox4x32_10((uint4)((uint)blk, (uint)(blk >> 32), 0u, 0u), (uint2)((uint)seed, (uint)(seed >> 32)));
    int lane = (int)(e & 3ul);
    float2 z = lane < 2 ? philox_pair(w.x, w.y) : philox_pair(w.z, w.w);
    return (lane & 1) ? z.y : z.x;
}

/* One patch of a NoiseAR sample. CPU twin: CPUBackend.samplePatch. One work item per token
 * element j = (c, py, px) of image b; the patch is (gy, gx) of a [B, C, S, S] latent:
 *   latent[b, c, y, x] = token[b, j] = mu[b, j] + eps * tau * exp(0.5 * clamp(logvar[b, j], lo, hi))
 * with eps = eps_in[b, c, y, x] when use_eps, else normal number c*S*S + y*S + x of stream
 * seed + b (the draw Tensor.randn makes for image b's latent). */
kernel void noisear_sample_patch(global const float* mu, int mu_off, global const float* lv, int lv_off,
                                 global const float* eps_in, int eps_off, int use_eps,
                                 global float* latent, int lat_off, global float* token, int tok_off,
                                 int batch, int channels, int size, int patch, int gy, int gx,
                                 uint seed_lo, uint seed_hi, float tau, float lo, float hi) {
    int i = get_global_id(0);
    int n = channels * patch * patch;
    if (i >= batch * n) return;
    int b = i / n, j = i - b * n;
    int c = j / (patch * patch), r = j - c * patch * patch;
    int py = r / patch, px = r - py * patch;
    int y = gy * patch + py, x = gx * patch + px;
    int at = (c * size + y) * size + x;
    int li = b * channels * size * size + at;
    float e;
    if (use_eps) {
        e = eps_in[eps_off + li];
    } else {
        ulong seed = (((ulong)seed_hi << 32) | (ulong)seed_lo) + (ulong)b;
        e = philox_normal_at((ulong)at, seed);
    }
    float v = mu[mu_off + i] + e * tau * exp(0.5f * clamp(lv[lv_off + i], lo, hi));
    token[tok_off + i] = v;
    latent[lat_off + li] = v;
}
