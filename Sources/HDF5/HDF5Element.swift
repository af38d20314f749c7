import CHDF5

/// A Swift numeric type that datasets and attributes can hold.
///
/// `Float`, `Double`, `Int64`, `Int32` and `Int` (64-bit platforms only)
/// conform. The set is closed: ``HDF5ElementType`` has no public
/// initializer.
public protocol HDF5Element: Sendable {
  /// How values of this type are stored in HDF5.
  static var hdf5Type: HDF5ElementType { get }
}

/// An element type as HDF5 stores it: IEEE float or two's-complement
/// integer, little-endian on disk.
public struct HDF5ElementType: Hashable, Sendable, CustomStringConvertible {
  enum Kind: Hashable, Sendable {
    case float32, float64, int32, int64
  }

  let kind: Kind

  /// 32-bit IEEE float, stored as `H5T_IEEE_F32LE`.
  public static let float32 = HDF5ElementType(kind: .float32)
  /// 64-bit IEEE float, stored as `H5T_IEEE_F64LE`.
  public static let float64 = HDF5ElementType(kind: .float64)
  /// 32-bit signed integer, stored as `H5T_STD_I32LE`.
  public static let int32 = HDF5ElementType(kind: .int32)
  /// 64-bit signed integer, stored as `H5T_STD_I64LE`.
  public static let int64 = HDF5ElementType(kind: .int64)

  /// The type's name as numpy spells it: "float32", "float64", "int32" or
  /// "int64".
  public var description: String {
    switch kind {
    case .float32: "float32"
    case .float64: "float64"
    case .int32: "int32"
    case .int64: "int64"
    }
  }

  /// The size of one element in bytes.
  var byteCount: Int {
    switch kind {
    case .float32, .int32: 4
    case .float64, .int64: 8
    }
  }

  /// Whether the type is floating point (`H5T_FLOAT`) rather than integer.
  var isFloatingPoint: Bool {
    kind == .float32 || kind == .float64
  }

  /// The in-memory type, such as `H5T_NATIVE_FLOAT`. Call under the HDF5 lock.
  var memoryTypeID: hid_t {
    switch kind {
    case .float32: chdf5_native_float()
    case .float64: chdf5_native_double()
    case .int32: chdf5_native_int32()
    case .int64: chdf5_native_int64()
    }
  }

  /// The on-disk type, such as `H5T_IEEE_F32LE`. Call under the HDF5 lock.
  var fileTypeID: hid_t {
    switch kind {
    case .float32: chdf5_ieee_f32le()
    case .float64: chdf5_ieee_f64le()
    case .int32: chdf5_std_i32le()
    case .int64: chdf5_std_i64le()
    }
  }

  /// Checks that `T`'s memory layout matches this type, so that libhdf5 never
  /// writes past a Swift buffer. Traps otherwise (a wrong conformance).
  static func checked<T: HDF5Element>(_: T.Type) -> HDF5ElementType {
    let type = T.hdf5Type
    precondition(
      MemoryLayout<T>.size == type.byteCount && MemoryLayout<T>.stride == type.byteCount,
      "\(T.self) does not have the layout of \(type)")
    return type
  }
}

extension Float: HDF5Element {
  /// `Float` is stored as ``HDF5ElementType/float32``.
  public static var hdf5Type: HDF5ElementType { .float32 }
}

extension Double: HDF5Element {
  /// `Double` is stored as ``HDF5ElementType/float64``.
  public static var hdf5Type: HDF5ElementType { .float64 }
}

extension Int32: HDF5Element {
  /// `Int32` is stored as ``HDF5ElementType/int32``.
  public static var hdf5Type: HDF5ElementType { .int32 }
}

extension Int64: HDF5Element {
  /// `Int64` is stored as ``HDF5ElementType/int64``.
  public static var hdf5Type: HDF5ElementType { .int64 }
}

#if _pointerBitWidth(_64)
  extension Int: HDF5Element {
    /// `Int` is stored as ``HDF5ElementType/int64`` (64-bit platforms only).
    public static var hdf5Type: HDF5ElementType { .int64 }
  }
#endif
