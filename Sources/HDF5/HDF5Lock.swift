import CHDF5
import Synchronization

/// Serializes every libhdf5 call in the process.
///
/// libhdf5 built without `--enable-threadsafe` (HDF5's default, and what
/// Homebrew ships) must never be entered by two threads at once. Debian 12's
/// serial libhdf5 happens to be built thread-safe, but the wrapper must not
/// depend on that. The lock lives here, inside the only module that imports
/// `CHDF5`, so callers cannot forget it (swift-hdf5's `HDF5Lock` does the
/// same). The protected value records whether `H5open` has run.
private let hdf5Lock = Mutex<Bool>(false)

/// Runs `body` while holding the process-wide HDF5 lock.
///
/// Every call also turns off libhdf5's automatic printing of errors to stderr
/// (`H5Eset_auto2` with a null handler): errors are reported as
/// ``HDF5Error`` values instead. Once per process is not enough, because
/// Debian's libhdf5 is built thread-safe and then keeps that setting per
/// thread, and tasks move between threads. The lock is not recursive: `body`
/// must not call `withHDF5Lock`, directly or by releasing the last reference
/// to an HDF5 object.
///
/// - Parameter body: The libhdf5 calls to make.
/// - Returns: What `body` returns.
/// - Throws: What `body` throws.
@discardableResult
func withHDF5Lock<Result: Sendable, Failure: Error>(
  _ body: () throws(Failure) -> Result
) throws(Failure) -> Result {
  try hdf5Lock.withLock { (isOpen: inout Bool) throws(Failure) -> Result in
    if !isOpen {
      _ = H5open()
      isOpen = true
    }
    _ = H5Eset_auto2(chdf5_e_default(), nil, nil)
    return try body()
  }
}
