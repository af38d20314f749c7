/// A safetensors element type, spelled as in the file (`"BF16"`, `"F8_E4M3"`).
///
/// Cases are declared in the reference implementation's order (`enum Dtype`
/// in huggingface/safetensors `tensor.rs`), which is increasing alignment; the
/// reference writer sorts tensors by descending position in this order, then
/// by name, and ``DType/referenceOrder`` reproduces it.
public enum DType: String, CaseIterable, Sendable, Hashable, CustomStringConvertible {
  case bool = "BOOL"
  case f4 = "F4"
  case f6E2M3 = "F6_E2M3"
  case f6E3M2 = "F6_E3M2"
  case u8 = "U8"
  case i8 = "I8"
  case f8E5M2 = "F8_E5M2"
  /// OCP E4M3 *fn* (torch `float8_e4m3fn`): no infinities, NaN = `0x7F`/`0xFF`.
  case f8E4M3 = "F8_E4M3"
  case f8E8M0 = "F8_E8M0"
  case f8E4M3FNUZ = "F8_E4M3FNUZ"
  case f8E5M2FNUZ = "F8_E5M2FNUZ"
  case i16 = "I16"
  case u16 = "U16"
  case f16 = "F16"
  case bf16 = "BF16"
  case i32 = "I32"
  case u32 = "U32"
  case f32 = "F32"
  case c64 = "C64"
  case f64 = "F64"
  case i64 = "I64"
  case u64 = "U64"

  /// Bits per element: 4 for `F4`, 6 for `F6_*`, otherwise 8 × the byte size.
  public var bitSize: Int {
    switch self {
    case .f4: 4
    case .f6E2M3, .f6E3M2: 6
    case .bool, .u8, .i8, .f8E5M2, .f8E4M3, .f8E8M0, .f8E4M3FNUZ, .f8E5M2FNUZ: 8
    case .i16, .u16, .f16, .bf16: 16
    case .i32, .u32, .f32: 32
    case .c64, .f64, .i64, .u64: 64
    }
  }

  /// Bytes per element, or `nil` for the sub-byte types `F4` and `F6_*`.
  public var byteSize: Int? { bitSize % 8 == 0 ? bitSize / 8 : nil }

  /// The position in the reference enum (the writer's sort key).
  public var referenceOrder: Int { Self.allCases.firstIndex(of: self)! }

  /// Whether the elements are IEEE-style or OCP floating point numbers that can
  /// hold NaN or infinity (F16, BF16, F32, F64, FP8 E4M3/E5M2 variants).
  public var isFloatingPoint: Bool {
    switch self {
    case .f16, .bf16, .f32, .f64, .f8E4M3, .f8E5M2, .f8E4M3FNUZ, .f8E5M2FNUZ: true
    default: false
    }
  }

  public var description: String { rawValue }
}
