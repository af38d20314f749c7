import CHDF5

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// An open HDF5 group: a container of groups and datasets.
///
/// Paths given to a group's methods are relative to the group (`"a/b"`) or
/// absolute within the file (`"/a/b"`). Creating a group or dataset also
/// creates any missing intermediate groups.
public class HDF5Group: HDF5Object, @unchecked Sendable {
  // @unchecked: no stored state beyond HDF5Object's; see there.

  /// What a group member is.
  public enum MemberKind: Hashable, Sendable {
    /// A group.
    case group
    /// A dataset.
    case dataset
    /// A committed (named) datatype.
    case namedDatatype
    /// Anything else, including a soft or external link whose target is
    /// missing.
    case other
  }

  /// One entry of a group.
  public struct Member: Hashable, Sendable {
    /// The link's name inside the group.
    public var name: String
    /// What the link points to.
    public var kind: MemberKind

    /// Creates a member description.
    ///
    /// - Parameters:
    ///   - name: The link's name inside the group.
    ///   - kind: What the link points to.
    public init(name: String, kind: MemberKind) {
      self.name = name
      self.kind = kind
    }
  }

  // MARK: Groups

  /// Creates a group, and any missing groups on the way to it.
  ///
  /// The corresponding C function is `H5Gcreate2` (with
  /// `H5Pset_create_intermediate_group`).
  ///
  /// - Parameter path: The new group's path, such as `"layers/0"`.
  /// - Returns: The new group, open.
  /// - Throws: ``HDF5Error`` if something already exists at `path`, the file
  ///   is read-only, or libhdf5 fails.
  public func createGroup(_ path: String) throws(HDF5Error) -> HDF5Group {
    let location = location(of: path)
    let groupID = try withHDF5Lock { () throws(HDF5Error) -> hid_t in
      let linkProperties = try intermediateGroupLinkProperties(location)
      defer { H5Pclose(linkProperties) }
      return try checkHDF5(
        H5Gcreate2(id, path, linkProperties, chdf5_p_default(), chdf5_p_default()),
        "H5Gcreate2", location)
    }
    return HDF5Group(id: groupID, kind: .group, filePath: filePath, path: location.path)
  }

  /// Opens an existing group.
  ///
  /// The corresponding C function is `H5Gopen2`.
  ///
  /// - Parameter path: The group's path, such as `"layers/0"`.
  /// - Returns: The group, open.
  /// - Throws: ``HDF5Error`` if there is no group at `path`.
  public func openGroup(_ path: String) throws(HDF5Error) -> HDF5Group {
    let location = location(of: path)
    let groupID = try withHDF5Lock { () throws(HDF5Error) -> hid_t in
      try checkHDF5(H5Gopen2(id, path, chdf5_p_default()), "H5Gopen2", location)
    }
    return HDF5Group(id: groupID, kind: .group, filePath: filePath, path: location.path)
  }

  /// The group's direct members, in name order.
  ///
  /// The corresponding C functions are `H5Gget_info`, `H5Lget_name_by_idx`,
  /// `H5Oopen` and `H5Iget_type`.
  ///
  /// - Returns: Each member's name and kind.
  /// - Throws: ``HDF5Error`` if libhdf5 fails.
  public func members() throws(HDF5Error) -> [Member] {
    let location = location
    return try withHDF5Lock { () throws(HDF5Error) -> [Member] in
      var info = H5G_info_t()
      try checkHDF5(H5Gget_info(id, &info), "H5Gget_info", location)
      var members: [Member] = []
      members.reserveCapacity(Int(info.nlinks))
      for index in 0..<info.nlinks {
        let length = try checkHDF5(
          H5Lget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, index, nil, 0, chdf5_p_default()),
          "H5Lget_name_by_idx", location)
        var bytes = [CChar](repeating: 0, count: length + 1)
        try checkHDF5(
          H5Lget_name_by_idx(
            id, ".", H5_INDEX_NAME, H5_ITER_INC, index, &bytes, bytes.count, chdf5_p_default()),
          "H5Lget_name_by_idx", location)
        let name = String(
          decoding: bytes.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        members.append(Member(name: name, kind: memberKind(name)))
      }
      return members
    }
  }

  /// What `name` links to; `.other` when it cannot be opened. Call under the
  /// HDF5 lock.
  private func memberKind(_ name: String) -> MemberKind {
    let object = H5Oopen(id, name, chdf5_p_default())
    guard object >= 0 else {
      // A dangling soft or external link: not an error for a listing.
      H5Eclear2(chdf5_e_default())
      return .other
    }
    defer { H5Oclose(object) }
    switch H5Iget_type(object) {
    case H5I_GROUP: return .group
    case H5I_DATASET: return .dataset
    case H5I_DATATYPE: return .namedDatatype
    default: return .other
    }
  }

  // MARK: Datasets

  /// Creates a dataset holding `values`, and any missing groups on the way
  /// to it.
  ///
  /// The data is stored contiguously, without compression, row-major (the
  /// last dimension varies fastest, as in C and numpy). `shape` may have any
  /// rank from 0 (a scalar) to 32, and dimensions may be 0.
  ///
  /// Traps if a dimension is negative, the rank exceeds 32, or the product of
  /// `shape` is not `values.count`.
  ///
  /// The corresponding C functions are `H5Dcreate2` and `H5Dwrite`.
  ///
  /// - Parameters:
  ///   - path: The new dataset's path, such as `"layers/0/diff"`.
  ///   - values: The elements, row-major.
  ///   - shape: The dataset's dimensions.
  /// - Returns: The new dataset, open.
  /// - Throws: ``HDF5Error`` if something already exists at `path`, the file
  ///   is read-only, or libhdf5 fails.
  @discardableResult
  public func createDataset<Element: HDF5Element>(
    _ path: String, values: UnsafeBufferPointer<Element>, shape: [Int]
  ) throws(HDF5Error) -> HDF5Dataset {
    precondition(shape.count <= 32, "HDF5 datasets have at most 32 dimensions")
    precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
    let count = shape.reduce(1) { product, dimension in
      let (result, overflow) = product.multipliedReportingOverflow(by: dimension)
      precondition(!overflow, "shape \(shape) overflows Int")
      return result
    }
    precondition(count == values.count, "shape \(shape) needs \(count) values, got \(values.count)")
    let elementType = HDF5ElementType.checked(Element.self)
    let location = location(of: path)
    let datasetID = try withHDF5Lock { () throws(HDF5Error) -> hid_t in
      let space = try createDataspace(shape, location)
      defer { H5Sclose(space) }
      let linkProperties = try intermediateGroupLinkProperties(location)
      defer { H5Pclose(linkProperties) }
      let dataset = try checkHDF5(
        H5Dcreate2(
          id, path, elementType.fileTypeID, space, linkProperties, chdf5_p_default(),
          chdf5_p_default()),
        "H5Dcreate2", location)
      // libhdf5 1.10 rejects a null buffer even for an empty selection.
      if count > 0 {
        let status = H5Dwrite(
          dataset, elementType.memoryTypeID, chdf5_s_all(), chdf5_s_all(), chdf5_p_default(),
          values.baseAddress)
        if status < 0 {
          defer { H5Dclose(dataset) }
          try checkHDF5(status, "H5Dwrite", location)
        }
      }
      return dataset
    }
    return HDF5Dataset(id: datasetID, filePath: filePath, path: location.path, shape: shape)
  }

  /// Creates a dataset holding `values`, and any missing groups on the way
  /// to it.
  ///
  /// A convenience over ``createDataset(_:values:shape:)``: `shape` defaults
  /// to one dimension of `values.count` elements. Traps if the product of
  /// `shape` is not `values.count`.
  ///
  /// The corresponding C functions are `H5Dcreate2` and `H5Dwrite`.
  ///
  /// - Parameters:
  ///   - path: The new dataset's path.
  ///   - values: The elements, row-major.
  ///   - shape: The dataset's dimensions, or `nil` for `[values.count]`.
  /// - Returns: The new dataset, open.
  /// - Throws: ``HDF5Error`` if something already exists at `path`, the file
  ///   is read-only, or libhdf5 fails.
  @discardableResult
  public func createDataset<Element: HDF5Element>(
    _ path: String, values: [Element], shape: [Int]? = nil
  ) throws(HDF5Error) -> HDF5Dataset {
    let shape = shape ?? [values.count]
    let result = values.withUnsafeBufferPointer { buffer in
      Result { () throws(HDF5Error) in try createDataset(path, values: buffer, shape: shape) }
    }
    return try result.get()
  }

  /// Creates a one-dimensional dataset of variable-length UTF-8 strings (h5py
  /// reads it as an array of `bytes`, or `str` through `.asstr()`), and any
  /// missing groups on the way to it.
  ///
  /// The corresponding C functions are `H5Dcreate2` and `H5Dwrite`.
  ///
  /// - Parameters:
  ///   - path: The new dataset's path.
  ///   - strings: The elements; none may contain NUL (traps otherwise).
  /// - Throws: ``HDF5Error`` if something already exists at `path`, the file
  ///   is read-only, or libhdf5 fails.
  public func createStringDataset(_ path: String, strings: [String]) throws(HDF5Error) {
    precondition(strings.allSatisfy { !$0.utf8.contains(0) }, "HDF5 strings cannot contain NUL")
    let location = location(of: path)
    let copies = strings.map { strdup($0) }
    defer { for c in copies { free(c) } }
    try withHDF5Lock { () throws(HDF5Error) in
      let type = try variableStringType(location)
      defer { H5Tclose(type) }
      let space = try createDataspace([strings.count], location)
      defer { H5Sclose(space) }
      let linkProperties = try intermediateGroupLinkProperties(location)
      defer { H5Pclose(linkProperties) }
      let dataset = try checkHDF5(
        H5Dcreate2(id, path, type, space, linkProperties, chdf5_p_default(), chdf5_p_default()), "H5Dcreate2", location)
      defer { H5Dclose(dataset) }
      if !copies.isEmpty {
        let status = copies.map { UnsafePointer<CChar>($0) }.withUnsafeBufferPointer {
          H5Dwrite(dataset, type, chdf5_s_all(), chdf5_s_all(), chdf5_p_default(), $0.baseAddress)
        }
        try checkHDF5(status, "H5Dwrite", location)
      }
    }
  }

  /// Opens an existing dataset.
  ///
  /// The corresponding C function is `H5Dopen2`.
  ///
  /// - Parameter path: The dataset's path.
  /// - Returns: The dataset, open, with its ``HDF5Dataset/shape`` read.
  /// - Throws: ``HDF5Error`` if there is no dataset at `path` or its
  ///   dataspace is neither simple nor scalar.
  public func openDataset(_ path: String) throws(HDF5Error) -> HDF5Dataset {
    let location = location(of: path)
    let (datasetID, shape) = try withHDF5Lock { () throws(HDF5Error) -> (hid_t, [Int]) in
      let dataset = try checkHDF5(H5Dopen2(id, path, chdf5_p_default()), "H5Dopen2", location)
      do throws(HDF5Error) {
        return (dataset, try datasetShape(dataset, location))
      } catch {
        H5Dclose(dataset)
        throw error
      }
    }
    return HDF5Dataset(id: datasetID, filePath: filePath, path: location.path, shape: shape)
  }

  /// Reads a whole dataset as a flat, row-major array.
  ///
  /// A convenience over ``openDataset(_:)`` and ``HDF5Dataset/read(as:)``;
  /// use those to learn the shape as well.
  ///
  /// - Parameters:
  ///   - path: The dataset's path.
  ///   - type: The element type to read as.
  /// - Returns: The elements, row-major.
  /// - Throws: ``HDF5Error`` if there is no dataset at `path`, its values are
  ///   of the other class (integer or floating point) than `type`, or libhdf5
  ///   fails.
  public func readDataset<Element: HDF5Element>(
    _ path: String, as type: Element.Type = Element.self
  ) throws(HDF5Error) -> [Element] {
    try openDataset(path).read(as: type)
  }
}

/// A link creation property list that creates missing intermediate groups;
/// the caller closes it. Call under the HDF5 lock.
private func intermediateGroupLinkProperties(_ location: HDF5Location) throws(HDF5Error) -> hid_t {
  let properties = try checkHDF5(H5Pcreate(chdf5_p_link_create()), "H5Pcreate", location)
  let status = H5Pset_create_intermediate_group(properties, 1)
  if status < 0 {
    defer { H5Pclose(properties) }
    try checkHDF5(status, "H5Pset_create_intermediate_group", location)
  }
  return properties
}

/// A dataspace of `shape` (scalar when empty); the caller closes it. Call
/// under the HDF5 lock.
private func createDataspace(_ shape: [Int], _ location: HDF5Location) throws(HDF5Error) -> hid_t {
  if shape.isEmpty {
    return try checkHDF5(H5Screate(chdf5_s_scalar()), "H5Screate", location)
  }
  let dimensions = shape.map { hsize_t($0) }
  return try checkHDF5(
    H5Screate_simple(Int32(shape.count), dimensions, nil), "H5Screate_simple", location)
}

/// The dimensions of a dataset's dataspace. Call under the HDF5 lock.
func datasetShape(_ dataset: hid_t, _ location: HDF5Location) throws(HDF5Error) -> [Int] {
  let space = try checkHDF5(H5Dget_space(dataset), "H5Dget_space", location)
  defer { H5Sclose(space) }
  let rank = try checkHDF5(
    H5Sget_simple_extent_ndims(space), "H5Sget_simple_extent_ndims", location)
  var dimensions = [hsize_t](repeating: 0, count: Int(rank))
  try checkHDF5(
    H5Sget_simple_extent_dims(space, &dimensions, nil), "H5Sget_simple_extent_dims", location)
  var shape: [Int] = []
  for dimension in dimensions {
    guard let value = Int(exactly: dimension) else {
      throw location.error("H5Sget_simple_extent_dims", "dimension \(dimension) does not fit Int")
    }
    shape.append(value)
  }
  return shape
}
