// OpenBLAS' CBLAS header (pkg-config openblas puts its include folder on the path), and the
// LAPACK routines the SVD's QR preconditioning and the ridge fit call. OpenBLAS builds LAPACK in by default
// (Debian's libopenblas0 does), but ships no LAPACK header of its own, so their Fortran
// prototypes are declared here (LP64: 32-bit integers, as OpenBLAS' default interface).
#ifndef NOISEAR_CBLAS_SHIM_H
#define NOISEAR_CBLAS_SHIM_H
#include <cblas.h>

/// QR factorisation with column pivoting, A P = Q R (column-major).
void sgeqp3_(const int *m, const int *n, float *a, const int *lda, int *jpvt, float *tau,
             float *work, const int *lwork, int *info);
/// Forms Q (m x n, column-major) from sgeqp3's / sgeqrf's reflectors in place.
void sorgqr_(const int *m, const int *n, const int *k, float *a, const int *lda, const float *tau,
             float *work, const int *lwork, int *info);
/// Solves A X = B for a symmetric positive definite A (Cholesky; column-major, upper triangle).
void dposv_(const char *uplo, const int *n, const int *nrhs, double *a, const int *lda, double *b,
            const int *ldb, int *info);
#endif
