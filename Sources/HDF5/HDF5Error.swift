import CHDF5

/// A failed libhdf5 call, or a request the stored data cannot satisfy.
///
/// Every libhdf5 return value goes through one checker: a negative `hid_t`,
/// `herr_t`, `htri_t` or `ssize_t` becomes an ``HDF5Error`` that records the C
/// function, the file, the object path inside it, and the descriptions libhdf5
/// pushed onto its error stack. (libhdf5's automatic printing of that stack
/// to stderr is turned off before every call this module makes.)
public struct HDF5Error: Error, Hashable, Sendable, CustomStringConvertible {
  /// The C function that failed (such as `H5Dopen2`), or the check made by
  /// this module (such as `read`).
  public var operation: String

  /// The file system path of the file involved.
  public var file: String

  /// The object's path inside the file, such as `/layers/0/weight`; `/` for
  /// the file itself.
  public var path: String

  /// What went wrong: for a libhdf5 failure, the outermost and innermost
  /// descriptions on its error stack, such as "unable to open dataset: object
  /// 'weight' doesn't exist".
  public var message: String

  /// Creates an error.
  ///
  /// - Parameters:
  ///   - operation: The C function or check that failed.
  ///   - file: The file system path of the file.
  ///   - path: The object's path inside the file.
  ///   - message: What went wrong.
  public init(operation: String, file: String, path: String, message: String) {
    self.operation = operation
    self.file = file
    self.path = path
    self.message = message
  }

  /// The error as one line: `hdf5: <operation> failed for <path> in <file>: <message>`.
  public var description: String {
    "hdf5: \(operation) failed for \(path) in \(file): \(message)"
  }
}

/// Where an HDF5 call happens, for error reports.
struct HDF5Location: Sendable {
  var file: String
  var path: String

  /// Makes an error at this location.
  ///
  /// - Parameters:
  ///   - operation: The C function or check that failed.
  ///   - message: What went wrong.
  /// - Returns: The error.
  func error(_ operation: String, _ message: String) -> HDF5Error {
    HDF5Error(operation: operation, file: file, path: path, message: message)
  }
}

/// Returns `result` unless it is negative, in which case it throws.
///
/// The single checker for libhdf5 return values (`hid_t`, `herr_t`, `htri_t`,
/// `ssize_t`). Call it while holding the HDF5 lock, right after the failed
/// call, so that the error stack still describes that call.
///
/// - Parameters:
///   - result: The value a libhdf5 function returned.
///   - operation: The name of that C function.
///   - location: The file and object the call was about.
/// - Returns: `result`, which is not negative.
/// - Throws: ``HDF5Error`` carrying the operation, the location and the error
///   stack's descriptions.
@discardableResult
func checkHDF5<Result: SignedInteger>(
  _ result: Result, _ operation: String, _ location: HDF5Location
) throws(HDF5Error) -> Result {
  guard result < 0 else { return result }
  throw location.error(operation, takeErrorStackMessage() ?? "failed")
}

/// Reads and clears the default error stack.
///
/// - Returns: The outermost description, joined to the innermost one when they
///   differ, or `nil` when the stack is empty.
private func takeErrorStackMessage() -> String? {
  var descriptions: [String] = []
  // H5E_WALK_DOWNWARD starts at the API function and ends where the error was
  // detected.
  _ = withUnsafeMutablePointer(to: &descriptions) { pointer in
    H5Ewalk2(
      chdf5_e_default(), H5E_WALK_DOWNWARD,
      { _, error, clientData in
        guard let error, let description = error.pointee.desc, let clientData else { return 0 }
        clientData.assumingMemoryBound(to: [String].self).pointee.append(
          String(cString: description))
        return 0
      }, pointer)
  }
  _ = H5Eclear2(chdf5_e_default())
  guard let outer = descriptions.first, let inner = descriptions.last else { return nil }
  return outer == inner ? outer : "\(outer): \(inner)"
}
