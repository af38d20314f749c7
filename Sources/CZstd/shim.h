// C shim for the `Zstd` wrapper module; nothing else imports it.
//
// Only zstd's stable API is used (no ZSTD_STATIC_LINKING_ONLY), so any
// libzstd >= 1.4.0 works.
#include <zstd.h>
#include <zstd_errors.h>

// ZSTD_CONTENTSIZE_UNKNOWN and ZSTD_CONTENTSIZE_ERROR are `(0ULL - 1)` and
// `(0ULL - 2)`, expressions Swift does not import.
static inline unsigned long long czstd_contentsize_unknown(void) { return ZSTD_CONTENTSIZE_UNKNOWN; }
static inline unsigned long long czstd_contentsize_error(void) { return ZSTD_CONTENTSIZE_ERROR; }
