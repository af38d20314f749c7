import CHDF5

/// An open HDF5 object: a file, a group or a dataset.
///
/// An object owns its libhdf5 identifier and closes it on deinit. All its
/// stored properties are immutable and every libhdf5 call goes through the
/// module's process-wide lock, so objects may be shared between tasks.
///
/// Every object can carry attributes: small named values (strings and
/// numeric scalars) attached to it. A file's attributes are those of its root
/// group, as in h5py.
public class HDF5Object: @unchecked Sendable {
  // @unchecked: `id` never changes after init, and it is only passed to
  // libhdf5 while holding the HDF5 lock (see withHDF5Lock).

  enum Kind {
    case file, group, dataset
  }

  let id: hid_t
  let kind: Kind

  /// The file system path of the file this object lives in.
  public let filePath: String

  /// The object's absolute path inside the file; `/` for a file or its root
  /// group.
  public let path: String

  init(id: hid_t, kind: Kind, filePath: String, path: String) {
    self.id = id
    self.kind = kind
    self.filePath = filePath
    self.path = path
  }

  deinit {
    let id = id
    let kind = kind
    withHDF5Lock {
      // Errors cannot be reported from deinit. A file stays open (with
      // H5F_CLOSE_WEAK, the sec2 default) until its last object is closed.
      switch kind {
      case .file: _ = H5Fclose(id)
      case .group: _ = H5Gclose(id)
      case .dataset: _ = H5Dclose(id)
      }
    }
  }

  /// This object's location, for error reports.
  var location: HDF5Location {
    HDF5Location(file: filePath, path: path)
  }

  /// The location of `name`, a path relative to this object (or absolute).
  func location(of name: String) -> HDF5Location {
    HDF5Location(file: filePath, path: absolutePath(name))
  }

  /// Resolves `name` against this object's path.
  func absolutePath(_ name: String) -> String {
    if name.hasPrefix("/") { return name }
    return path == "/" ? "/" + name : path + "/" + name
  }

  // MARK: Attributes

  /// Sets a string attribute, replacing any attribute of that name.
  ///
  /// The value is stored as a scalar variable-length UTF-8 string, which h5py
  /// reads back as `str`.
  ///
  /// The corresponding C functions are `H5Adelete`, `H5Acreate2` and
  /// `H5Awrite`.
  ///
  /// - Parameters:
  ///   - name: The attribute's name.
  ///   - value: The text; it must not contain NUL characters (traps).
  /// - Throws: ``HDF5Error`` if libhdf5 fails, for example when the file is
  ///   read-only.
  public func setAttribute(_ name: String, to value: String) throws(HDF5Error) {
    precondition(!value.utf8.contains(0), "HDF5 string attributes cannot contain NUL")
    let location = location
    try withHDF5Lock { () throws(HDF5Error) in
      let type = try variableStringType(location)
      defer { H5Tclose(type) }
      let attribute = try createAttribute(name, type: type, location)
      defer { H5Aclose(attribute) }
      let status = value.withCString { text in
        var pointer: UnsafePointer<CChar>? = text
        return H5Awrite(attribute, type, &pointer)
      }
      try checkHDF5(status, "H5Awrite", location)
    }
  }

  /// Sets a numeric scalar attribute, replacing any attribute of that name.
  ///
  /// The corresponding C functions are `H5Adelete`, `H5Acreate2` and
  /// `H5Awrite`.
  ///
  /// - Parameters:
  ///   - name: The attribute's name.
  ///   - value: The value, stored with the type of ``HDF5Element/hdf5Type``.
  /// - Throws: ``HDF5Error`` if libhdf5 fails, for example when the file is
  ///   read-only.
  public func setAttribute<Value: HDF5Element>(_ name: String, to value: Value)
    throws(HDF5Error)
  {
    let elementType = HDF5ElementType.checked(Value.self)
    let location = location
    try withHDF5Lock { () throws(HDF5Error) in
      let attribute = try createAttribute(name, type: elementType.fileTypeID, location)
      defer { H5Aclose(attribute) }
      let status = withUnsafeBytes(of: value) { bytes in
        H5Awrite(attribute, elementType.memoryTypeID, bytes.baseAddress)
      }
      try checkHDF5(status, "H5Awrite", location)
    }
  }

  /// Reads a string attribute.
  ///
  /// Both variable-length strings (what this module and h5py write) and
  /// fixed-length strings (trailing NULs removed) are accepted.
  ///
  /// The corresponding C function is `H5Aread`.
  ///
  /// - Parameter name: The attribute's name.
  /// - Returns: The attribute's text; invalid UTF-8 is repaired with U+FFFD.
  /// - Throws: ``HDF5Error`` if there is no such attribute, it is not a
  ///   single string, or libhdf5 fails.
  public func stringAttribute(_ name: String) throws(HDF5Error) -> String {
    let location = location
    return try withHDF5Lock { () throws(HDF5Error) -> String in
      let attribute = try checkHDF5(H5Aopen(id, name, chdf5_p_default()), "H5Aopen", location)
      defer { H5Aclose(attribute) }
      try checkScalar(attribute, name, location)
      let fileType = try checkHDF5(H5Aget_type(attribute), "H5Aget_type", location)
      defer { H5Tclose(fileType) }
      guard H5Tget_class(fileType) == H5T_STRING else {
        throw location.error("read", "attribute '\(name)' is not a string")
      }
      if try checkHDF5(H5Tis_variable_str(fileType), "H5Tis_variable_str", location) > 0 {
        let memoryType = try variableStringType(location)
        defer { H5Tclose(memoryType) }
        var text: UnsafeMutablePointer<CChar>? = nil
        try checkHDF5(H5Aread(attribute, memoryType, &text), "H5Aread", location)
        defer { if let text { H5free_memory(text) } }
        return text.map { String(cString: $0) } ?? ""
      }
      let size = H5Tget_size(fileType)
      let memoryType = try checkHDF5(H5Tcopy(fileType), "H5Tcopy", location)
      defer { H5Tclose(memoryType) }
      var bytes = [UInt8](repeating: 0, count: max(size, 1))
      try checkHDF5(H5Aread(attribute, memoryType, &bytes), "H5Aread", location)
      let end = bytes.firstIndex(of: 0) ?? size
      return String(decoding: bytes[..<end], as: UTF8.self)
    }
  }

  /// Reads a numeric scalar attribute.
  ///
  /// libhdf5 converts the stored value to `Value` when both are floating
  /// point or both are integers (for example a `float64` attribute read as
  /// `Float` is rounded); reading an integer attribute as a float, or the
  /// reverse, is an error.
  ///
  /// The corresponding C function is `H5Aread`.
  ///
  /// - Parameters:
  ///   - name: The attribute's name.
  ///   - type: The type to read as.
  /// - Returns: The value.
  /// - Throws: ``HDF5Error`` if there is no such attribute, it does not hold
  ///   exactly one number of a compatible class, or libhdf5 fails.
  public func attribute<Value: HDF5Element>(_ name: String, as type: Value.Type = Value.self)
    throws(HDF5Error) -> Value
  {
    let elementType = HDF5ElementType.checked(Value.self)
    let location = location
    return try withHDF5Lock { () throws(HDF5Error) -> Value in
      let attribute = try checkHDF5(H5Aopen(id, name, chdf5_p_default()), "H5Aopen", location)
      defer { H5Aclose(attribute) }
      try checkScalar(attribute, name, location)
      let fileType = try checkHDF5(H5Aget_type(attribute), "H5Aget_type", location)
      defer { H5Tclose(fileType) }
      try checkClass(H5Tget_class(fileType), elementType, "attribute '\(name)'", location)
      return try withUnsafeTemporaryAllocation(of: Value.self, capacity: 1) {
        buffer throws(HDF5Error) -> Value in
        try checkHDF5(
          H5Aread(attribute, elementType.memoryTypeID, buffer.baseAddress), "H5Aread", location)
        return buffer.baseAddress!.move()
      }
    }
  }

  /// The names of this object's attributes, in name order.
  ///
  /// The corresponding C function is `H5Aiterate2`.
  ///
  /// - Returns: The attribute names, sorted.
  /// - Throws: ``HDF5Error`` if libhdf5 fails.
  public func attributeNames() throws(HDF5Error) -> [String] {
    let location = location
    return try withHDF5Lock { () throws(HDF5Error) -> [String] in
      var names: [String] = []
      let status = withUnsafeMutablePointer(to: &names) { pointer in
        H5Aiterate2(
          id, H5_INDEX_NAME, H5_ITER_INC, nil,
          { _, name, _, clientData in
            guard let name, let clientData else { return -1 }
            clientData.assumingMemoryBound(to: [String].self).pointee.append(String(cString: name))
            return 0
          }, pointer)
      }
      try checkHDF5(status, "H5Aiterate2", location)
      return names
    }
  }

  // MARK: Helpers (call under the HDF5 lock)

  /// Creates a scalar attribute of `type`, deleting any attribute of that
  /// name first.
  private func createAttribute(_ name: String, type: hid_t, _ location: HDF5Location)
    throws(HDF5Error) -> hid_t
  {
    if try checkHDF5(H5Aexists(id, name), "H5Aexists", location) > 0 {
      try checkHDF5(H5Adelete(id, name), "H5Adelete", location)
    }
    let space = try checkHDF5(H5Screate(chdf5_s_scalar()), "H5Screate", location)
    defer { H5Sclose(space) }
    return try checkHDF5(
      H5Acreate2(id, name, type, space, chdf5_p_default(), chdf5_p_default()), "H5Acreate2",
      location)
  }

  /// Throws unless the attribute holds exactly one element.
  private func checkScalar(_ attribute: hid_t, _ name: String, _ location: HDF5Location)
    throws(HDF5Error)
  {
    let space = try checkHDF5(H5Aget_space(attribute), "H5Aget_space", location)
    defer { H5Sclose(space) }
    let count = try checkHDF5(
      H5Sget_simple_extent_npoints(space), "H5Sget_simple_extent_npoints", location)
    guard count == 1 else {
      throw location.error("read", "attribute '\(name)' holds \(count) values, not 1")
    }
  }
}

/// A variable-length UTF-8 string type; the caller closes it. Call under the
/// HDF5 lock.
func variableStringType(_ location: HDF5Location) throws(HDF5Error) -> hid_t {
  let type = try checkHDF5(H5Tcopy(chdf5_c_s1()), "H5Tcopy", location)
  do throws(HDF5Error) {
    try checkHDF5(H5Tset_size(type, chdf5_variable()), "H5Tset_size", location)
    try checkHDF5(H5Tset_cset(type, H5T_CSET_UTF8), "H5Tset_cset", location)
  } catch {
    H5Tclose(type)
    throw error
  }
  return type
}

/// Throws unless values stored with `typeClass` can be read as `elementType`
/// (float from float, integer from integer).
func checkClass(
  _ typeClass: H5T_class_t, _ elementType: HDF5ElementType, _ what: String,
  _ location: HDF5Location
) throws(HDF5Error) {
  let expected = elementType.isFloatingPoint ? H5T_FLOAT : H5T_INTEGER
  guard typeClass == expected else {
    let stored =
      switch typeClass {
      case H5T_FLOAT: "floating-point"
      case H5T_INTEGER: "integer"
      case H5T_STRING: "string"
      default: "non-numeric"
      }
    throw location.error("read", "\(what) holds \(stored) values, cannot read as \(elementType)")
  }
}
