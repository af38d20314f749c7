import CHDF5
import Synchronization

/// Serializes every libhdf5 call in the process.
///
/// The libhdf5 that Linux distributions ship is built without
/// `--enable-threadsafe`, so two threads inside it at once can corrupt its
/// global state. The lock lives here, inside the only module that imports
/// `CHDF5`, so callers cannot forget it (swift-hdf5's `HDF5Lock` does the
/// same). The protected value records whether libhdf5 has been set up.
private let hdf5Lock = Mutex<Bool>(false)

/// Runs `body` while holding the process-wide HDF5 lock.
///
/// The first call turns off libhdf5's automatic printing of errors to stderr
/// (`H5Eset_auto2` with a null handler): errors are reported as
/// ``HDF5Error`` values instead. The lock is not recursive: `body` must not
/// call `withHDF5Lock`, directly or by releasing the last reference to an
/// HDF5 object.
///
/// - Parameter body: The libhdf5 calls to make.
/// - Returns: What `body` returns.
/// - Throws: What `body` throws.
func withHDF5Lock<Result: Sendable, Failure: Error>(
  _ body: () throws(Failure) -> Result
) throws(Failure) -> Result {
  try hdf5Lock.withLock { (isSetUp: inout Bool) throws(Failure) -> Result in
    if !isSetUp {
      _ = H5open()
      _ = H5Eset_auto2(chdf5_e_default(), nil, nil)
      isSetUp = true
    }
    return try body()
  }
}
