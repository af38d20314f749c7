import CHDF5

/// An open HDF5 file, which is also its root group (`/`), as in h5py.
///
/// ```swift
/// let file = try HDF5File(creatingAt: "/tmp/report.h5")
/// try file.setAttribute("tool", to: "ckpt")
/// let layer = try file.createGroup("layers/0")
/// try layer.createDataset("error", values: errors, shape: [rows, columns])
/// ```
///
/// The file is closed when the last ``HDF5Object`` from it is released (the
/// file, or a group or dataset opened from it). All access to libhdf5 in the
/// process is serialized by one lock inside this module, because the
/// distributions' libhdf5 is not thread-safe.
public final class HDF5File: HDF5Group, @unchecked Sendable {
  // @unchecked: no stored state beyond HDF5Object's; see there.

  /// How to open an existing file.
  public enum Mode: Hashable, Sendable {
    /// Reading only; writes fail with ``HDF5Error``.
    case readOnly
    /// Reading and writing.
    case readWrite
  }

  /// Creates a file, truncating any existing file at `path`.
  ///
  /// The corresponding C function is `H5Fcreate` with `H5F_ACC_TRUNC`.
  ///
  /// - Parameter path: The file system path.
  /// - Throws: ``HDF5Error`` if the file cannot be created, or is already
  ///   open in this process.
  public init(creatingAt path: String) throws(HDF5Error) {
    let location = HDF5Location(file: path, path: "/")
    let fileID = try withHDF5Lock { () throws(HDF5Error) -> hid_t in
      try checkHDF5(
        H5Fcreate(path, chdf5_acc_trunc(), chdf5_p_default(), chdf5_p_default()), "H5Fcreate",
        location)
    }
    super.init(id: fileID, kind: .file, filePath: path, path: "/")
  }

  /// Opens an existing file.
  ///
  /// The corresponding C function is `H5Fopen`.
  ///
  /// - Parameters:
  ///   - path: The file system path.
  ///   - mode: Whether the file may be modified.
  /// - Throws: ``HDF5Error`` if the file does not exist or is not an HDF5
  ///   file.
  public init(openingAt path: String, mode: Mode = .readOnly) throws(HDF5Error) {
    let location = HDF5Location(file: path, path: "/")
    let fileID = try withHDF5Lock { () throws(HDF5Error) -> hid_t in
      let flags = mode == .readOnly ? chdf5_acc_rdonly() : chdf5_acc_rdwr()
      return try checkHDF5(H5Fopen(path, flags, chdf5_p_default()), "H5Fopen", location)
    }
    super.init(id: fileID, kind: .file, filePath: path, path: "/")
  }

  /// Writes everything buffered for this file to disk.
  ///
  /// Closing happens on deinit, where errors cannot be reported; call this
  /// first when a failed write must not go unnoticed.
  ///
  /// The corresponding C function is `H5Fflush`.
  ///
  /// - Throws: ``HDF5Error`` if libhdf5 cannot write.
  public func flush() throws(HDF5Error) {
    let location = location
    try withHDF5Lock { () throws(HDF5Error) in
      try checkHDF5(H5Fflush(id, H5F_SCOPE_GLOBAL), "H5Fflush", location)
    }
  }
}
