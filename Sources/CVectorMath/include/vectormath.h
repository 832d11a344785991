// Float32 vector math for the CPU backend's hot loops (exp, SiLU, GELU, sigmoid, softmax rows,
// layer-norm rows, elementwise binary rows, strided row copies). One portable C implementation,
// compiled by the package's clang for baseline x86-64 and, on ELF systems (Linux: ifunc target
// clones), also for x86-64-v3 (AVX2, FMA) and x86-64-v4 (AVX-512); the loader picks the widest
// clone the CPU supports (a capability check, no vendor list). Elsewhere (macOS, other
// architectures) one build. The clones compute the same operations in the same order, except that
// the wider ones fuse multiply-adds (FMA): results may differ in the last bits by CPU.
#ifndef NOISEAR_VECTORMATH_H
#define NOISEAR_VECTORMATH_H

#ifdef __cplusplus
extern "C" {
#endif

/// Unary ops, numbered as the Swift `UnaryOp` raw values they implement.
enum {
    NAR_VM_EXP = 0, NAR_VM_SQRT = 2, NAR_VM_AFFINE = 3, NAR_VM_SILU = 5, NAR_VM_GELU = 6,
    NAR_VM_RELU = 7, NAR_VM_SIGMOID = 8, NAR_VM_SQUARE = 10
};

/// Binary ops, numbered as the Swift `BinaryOp` raw values.
enum { NAR_VM_ADD = 0, NAR_VM_SUB = 1, NAR_VM_MUL = 2, NAR_VM_DIV = 3 };

/// y[i] = f(x[i]) for i < n (y is x or does not overlap it). Returns 0, or -1 for an op without a vector form.
///   exp: e^x (0 below -87.34, +inf above 88.72, NaN stays NaN; within 2 ulp of libm)
///   silu: x / (1 + e^-x); sigmoid: 1 / (1 + e^-x)
///   gelu: 0.5 x (1 + erf(x / sqrt 2)), erf by Abramowitz & Stegun 7.1.26 (1.5e-7 absolute)
///   affine: p0 x + p1; square: x x; sqrt; relu: max(x, 0)
int nar_vm_unary(int op, const float *x, float *y, long n, float p0, float p1);

/// dx[i] = dy[i] * f'(x[i]) for i < n, for exp, SiLU, GELU and sigmoid (dx is dy or does not
/// overlap it). Returns 0, or -1 for another op.
int nar_vm_unary_backward(int op, const float *x, const float *dy, float *dx, long n);

/// Softmax (log = 0) or log-softmax (log = 1) of one row of n floats from x into y (y may be
/// x): the maximum subtracted first; -inf entries give exactly 0; an all -inf row gives NaN.
void nar_vm_softmax_row(const float *x, float *y, long n, int log);

/// The mean of n floats and rstd = 1 / sqrt(variance + eps), the variance about the mean: two
/// passes, each summed in 8 float lanes per block of 1024, the blocks added in double (the
/// statistics of the CPU backend's layer and group norms).
void nar_vm_mean_rstd(const float *x, long n, float eps, float *mean, float *rstd);

/// LayerNorm of rows lo..<hi of x [rows, n] into y (y may be x): per row the mean and rstd of
/// nar_vm_mean_rstd, y = (x - mean) rstd gamma + beta (gamma, beta: NULL for 1 and 0); mean[r]
/// and rstd[r] stored for the backward pass.
void nar_vm_layernorm_rows(const float *x, float *y, long lo, long hi, long n, const float *gamma,
                           const float *beta, float eps, float *mean, float *rstd);

/// out[i] = a[i * sa] (op) b[i * sb] for i < n, the strides 0 (broadcast) or any other value;
/// out is a (or b) itself or does not overlap it.
void nar_vm_binary(int op, const float *a, long sa, const float *b, long sb, float *out, long n);

/// dst[i] = src[i * ss] for i < n (ss 0 broadcasts src[0]); dst does not overlap src.
void nar_vm_copy(const float *src, long ss, float *dst, long n);

/// The clone the loader picked: "x86-64-v4", "x86-64-v3" or "x86-64"; "generic" where there
/// are no clones (not x86-64, or not ELF).
const char *nar_vm_level(void);

#ifdef __cplusplus
}
#endif
#endif
