// OpenBLAS' CBLAS header (pkg-config openblas puts its include folder on the path).
#ifndef NOISEAR_CBLAS_SHIM_H
#define NOISEAR_CBLAS_SHIM_H
#include <cblas.h>
#endif
