// C shim for the `BLAS` wrapper module; nothing else imports it.
//
// OpenBLAS's cblas.h also declares the openblas_* extensions
// (openblas_get_config, openblas_get_corename, openblas_get_num_threads,
// openblas_set_num_threads); checked with libopenblas-dev 0.3.21 on Debian 12.
#include <cblas.h>
