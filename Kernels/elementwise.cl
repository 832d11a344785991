/* Elementwise kernels. CPU twins: CPUBackend.fill/copy/binary/unary/unaryBackward/adamw/combine. */

kernel void fill_f32(global float* dst, int doff, int n, float value) {
    int i = get_global_id(0);
    if (i < n) dst[doff + i] = value;
}

/* dst[strided] = src[strided] over shape (rank <= 6, padded with leading 1s). */
kernel void copy_strided(global const float* src, int soff, int8 sstr,
                         global float* dst, int doff, int8 dstr, int8 shape, int n) {
    int i = get_global_id(0);
    if (i >= n) return;
    dst[doff + strided_offset(i, shape, dstr)] = src[soff + strided_offset(i, shape, sstr)];
}

/* One-axis forms (after the host collapsed the shape): no index arithmetic. */
kernel void copy_1d(global const float* src, int soff, int sstride, global float* dst, int doff,
                    int dstride, int n) {
    int i = get_global_id(0);
    if (i < n) dst[doff + i * dstride] = src[soff + i * sstride];
}

/* out[i] = c0 x0[i] + c1 x1[i] + c2 x2[i] + c3 x3[i] over the first `terms` operands (a
 * guidance combination or a scheduler step in one pass; out may alias an input). CPU twin:
 * CPUBackend.combine (same order of operations). */
kernel void combine_f32(global const float* x0, int off0, global const float* x1, int off1,
                        global const float* x2, int off2, global const float* x3, int off3,
                        global float* out, int ooff, int n, int terms,
                        float c0, float c1, float c2, float c3) {
    int i = get_global_id(0);
    if (i >= n) return;
    float v = c0 * x0[off0 + i];
    if (terms > 1) v += c1 * x1[off1 + i];
    if (terms > 2) v += c2 * x2[off2 + i];
    if (terms > 3) v += c3 * x3[off3 + i];
    out[ooff + i] = v;
}

inline float binary_f(int op, float x, float y) {
    switch (op) {
    case 0: return x + y;
    case 1: return x - y;
    case 2: return x * y;
    default: return x / y;
    }
}

kernel void binary_1d(global const float* a, int aoff, int astride, global const float* b, int boff,
                      int bstride, global float* out, int ooff, int n, int op) {
    int i = get_global_id(0);
    if (i < n) out[ooff + i] = binary_f(op, a[aoff + i * astride], b[boff + i * bstride]);
}

/* out[i] = a op b with broadcast strides; op: 0 add, 1 sub, 2 mul, 3 div. */
kernel void binary_strided(global const float* a, int aoff, int8 astr,
                           global const float* b, int boff, int8 bstr,
                           global float* out, int ooff, int8 shape, int n, int op) {
    int i = get_global_id(0);
    if (i >= n) return;
    out[ooff + i] = binary_f(op, a[aoff + strided_offset(i, shape, astr)], b[boff + strided_offset(i, shape, bstr)]);
}

inline float unary_df(int op, float x, float p0, float p1) {
    switch (op) {
    case 0: return exp(x);
    case 1: return 1.0f / x;
    case 2: return 0.5f / sqrt(x);
    case 3: return p0;
    case 4: return (x >= p0 && x <= p1) ? 1.0f : 0.0f;
    case 5: { float s = 1.0f / (1.0f + exp(-x)); return s * (1.0f + x * (1.0f - s)); }
    case 6: {
        float cdf = 0.5f * (1.0f + erf(x * 0.70710678118654752f));
        float pdf = exp(-0.5f * x * x) * 0.39894228040143268f;
        return cdf + x * pdf;
    }
    case 7: return x > 0.0f ? 1.0f : 0.0f;
    case 8: { float s = 1.0f / (1.0f + exp(-x)); return s * (1.0f - s); }
    case 9: { float t = tanh(x); return 1.0f - t * t; }
    default: return 2.0f * x;
    }
}

kernel void unary_f32(global const float* x, int xoff, global float* y, int yoff, int n,
                      int op, float p0, float p1) {
    int i = get_global_id(0);
    if (i < n) y[yoff + i] = unary_f(op, x[xoff + i], p0, p1);
}

kernel void unary_backward_f32(global const float* x, int xoff, global const float* dy, int dyoff,
                               global float* dx, int dxoff, int n, int op, float p0, float p1) {
    int i = get_global_id(0);
    if (i < n) dx[dxoff + i] = dy[dyoff + i] * unary_df(op, x[xoff + i], p0, p1);
}

/* One fused AdamW step (decoupled weight decay); bc1 = 1 - beta1^t, bc2 = 1 - beta2^t. */
kernel void adamw_f32(global float* p, int poff, global const float* g, int goff,
                      global float* m, int moff, global float* v, int voff, int n,
                      float lr, float beta1, float beta2, float eps, float wd, float bc1, float bc2) {
    int i = get_global_id(0);
    if (i >= n) return;
    float gi = g[goff + i];
    float mi = beta1 * m[moff + i] + (1.0f - beta1) * gi;
    float vi = beta2 * v[voff + i] + (1.0f - beta2) * gi * gi;
    m[moff + i] = mi;
    v[voff + i] = vi;
    float pi = p[poff + i];
    float mh = mi / bc1, vh = vi / bc2;
    p[poff + i] = pi - lr * (wd * pi + mh / (sqrt(vh) + eps));
}

/* Sum over the middle axis of [outer, reduce, inner]. */
kernel void reduce_sum(global const float* x, int xoff, global float* out, int ooff,
                       int outer, int reduce, int inner) {
    int i = get_global_id(0);
    if (i >= outer * inner) return;
    int o = i / inner, j = i - o * inner;
    global const float* p = x + xoff + (o * reduce) * inner + j;
    float s = 0.0f;
    for (int r = 0; r < reduce; ++r) s += p[r * inner];
    out[ooff + i] = s;
}

/* out[r, :] = table[index[r], :] (indices float-encoded). */
kernel void gather_rows(global const float* table, int toff, global const float* index, int ioff,
                        global float* out, int ooff, int rows, int dim) {
    int i = get_global_id(0);
    if (i >= rows * dim) return;
    int r = i / dim, j = i - r * dim;
    int src = (int)index[ioff + r];
    out[ooff + i] = table[toff + src * dim + j];
}

/* dtable[v, :] = sum of dy rows listed for v in the inverse index (CSR, float-encoded). */
kernel void gather_rows_backward(global const float* dy, int dyoff, global const float* start,
                                 int soff, global const float* list, int loff,
                                 global float* dtable, int toff, int vocab, int dim) {
    int i = get_global_id(0);
    if (i >= vocab * dim) return;
    int v = i / dim, j = i - v * dim;
    int e0 = (int)start[soff + v], e1 = (int)start[soff + v + 1];
    float s = 0.0f;
    for (int e = e0; e < e1; ++e) s += dy[dyoff + (int)list[loff + e] * dim + j];
    dtable[toff + i] = s;
}
