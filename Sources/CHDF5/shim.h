// C shim for the `HDF5` wrapper module; nothing else imports it.
//
// Only explicitly versioned functions (H5Dcreate2, H5Gopen2, H5Aiterate2, ...)
// and functions with a single version are called, so the wrapper builds
// against HDF5 1.10 (Debian 12) and 1.12/1.14 (Homebrew) alike.
#include <hdf5.h>

// Most HDF5 constants are macros that call H5open() or cast, which Swift
// cannot import: one static inline accessor per constant.

// Property lists and the default error stack.
static inline hid_t chdf5_p_default(void) { return H5P_DEFAULT; }
static inline hid_t chdf5_p_link_create(void) { return H5P_LINK_CREATE; }
static inline hid_t chdf5_e_default(void) { return H5E_DEFAULT; }
static inline hid_t chdf5_s_all(void) { return H5S_ALL; }
static inline H5S_class_t chdf5_s_scalar(void) { return H5S_SCALAR; }

// File access flags.
static inline unsigned chdf5_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline unsigned chdf5_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned chdf5_acc_rdwr(void) { return H5F_ACC_RDWR; }

// In-memory (native) types.
static inline hid_t chdf5_native_float(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t chdf5_native_double(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t chdf5_native_int32(void) { return H5T_NATIVE_INT32; }
static inline hid_t chdf5_native_int64(void) { return H5T_NATIVE_INT64; }

// On-disk types: little-endian whatever the host, as h5py and numpy write.
static inline hid_t chdf5_ieee_f32le(void) { return H5T_IEEE_F32LE; }
static inline hid_t chdf5_ieee_f64le(void) { return H5T_IEEE_F64LE; }
static inline hid_t chdf5_std_i32le(void) { return H5T_STD_I32LE; }
static inline hid_t chdf5_std_i64le(void) { return H5T_STD_I64LE; }

// Strings.
static inline hid_t chdf5_c_s1(void) { return H5T_C_S1; }
static inline size_t chdf5_variable(void) { return H5T_VARIABLE; }
