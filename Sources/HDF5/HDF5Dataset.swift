import CHDF5

/// An open HDF5 dataset: an n-dimensional array of numbers.
///
/// Get one from ``HDF5Group/createDataset(_:values:shape:)``
/// or ``HDF5Group/openDataset(_:)``.
public final class HDF5Dataset: HDF5Object, @unchecked Sendable {
  // @unchecked: `shape` is immutable; see HDF5Object for the rest.

  /// The dataset's dimensions, row-major; `[]` for a scalar dataset.
  public let shape: [Int]

  /// The number of elements: the product of ``shape``.
  public var count: Int {
    shape.reduce(1, *)
  }

  init(id: hid_t, filePath: String, path: String, shape: [Int]) {
    self.shape = shape
    super.init(id: id, kind: .dataset, filePath: filePath, path: path)
  }

  /// Reads all elements, row-major.
  ///
  /// libhdf5 converts the stored values to `Element` when both are floating
  /// point or both are integers (a `float64` dataset read as `Float` is
  /// rounded to nearest); reading an integer dataset as floats, or the
  /// reverse, is an error.
  ///
  /// The corresponding C function is `H5Dread`.
  ///
  /// - Parameter type: The element type to read as.
  /// - Returns: ``count`` elements, row-major.
  /// - Throws: ``HDF5Error`` if the stored class does not match `type`, or
  ///   libhdf5 fails.
  public func read<Element: HDF5Element>(as type: Element.Type = Element.self)
    throws(HDF5Error) -> [Element]
  {
    let elementType = HDF5ElementType.checked(Element.self)
    let location = location
    let count = count
    return try withHDF5Lock { () throws(HDF5Error) -> [Element] in
      let fileType = try checkHDF5(H5Dget_type(id), "H5Dget_type", location)
      defer { H5Tclose(fileType) }
      try checkClass(H5Tget_class(fileType), elementType, "dataset", location)
      guard count > 0 else { return [] }
      var status: herr_t = 0
      let values = [Element](unsafeUninitializedCapacity: count) { buffer, initializedCount in
        status = H5Dread(
          id, elementType.memoryTypeID, chdf5_s_all(), chdf5_s_all(), chdf5_p_default(),
          buffer.baseAddress)
        // Element is a trivial type, so nothing needs cleaning up on failure.
        initializedCount = status < 0 ? 0 : count
      }
      try checkHDF5(status, "H5Dread", location)
      return values
    }
  }
}
