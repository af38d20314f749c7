import Crypto
import Dispatch
import QuantKernels
import SafeTensors
import StrictJSON
import Synchronization
import Zstd

#if canImport(Glibc)
  import Glibc
#endif

/// A lossless archive of one safetensors shard: `NAME.safetensors.zst`
/// (format `ckpt-zst/1`, Docs/ARCHIVES.md).
///
/// ```
/// "CKPTZST1"                      8 bytes
/// L                               u64 LE: bytes of the shard's header block
/// the shard's first L bytes       verbatim (u64 N + JSON header): readable as is
/// frames                          zstd frames, per tensor chunk (see Encoding)
/// manifest                        JSON: tensors, chunks, frame ranges, SHA-256s
/// manifest offset                 u64 LE
/// "CKPTZEND"                      8 bytes
/// ```
///
/// Each tensor is cut into chunks of whole rows (~4 MiB) compressed
/// independently, so one tensor, or part of one, can be read alone, and
/// chunks compress and decompress on all cores. Every zstd frame carries its
/// content checksum; every chunk records the SHA-256 of the bytes it restores,
/// and the manifest the SHA-256 of the whole shard.
public enum ShardArchive {
  public static let magic = Array("CKPTZST1".utf8)
  public static let endMagic = Array("CKPTZEND".utf8)
  public static let format = "ckpt-zst/1"
  /// The file-name suffix archives get.
  public static let suffix = ".zst"

  /// How a chunk is stored.
  public enum Encoding: String, Sendable {
    /// One frame of the bytes.
    case bytes
    /// Float bytes split into planes (byte k of every element), one frame each:
    /// sign-and-exponent bytes compress far better apart from mantissa bytes.
    case planes
    /// BF16 groups of 32 that are exactly `bf16(q·s)` for INT4 codes and a
    /// BF16 scale: frames of the packed codes, the scales, a bitmap of exact
    /// groups, and the other groups' values as two planes. Verified on write:
    /// the codes are dequantized and compared with the input group by group.
    case gridInt4 = "grid-int4-g32"
  }
}

/// Why an archive cannot be written or read, naming the file and tensor.
public struct ArchiveError: Error, Sendable, CustomStringConvertible {
  public let code: String
  public let file: String
  public let tensor: String?
  public let message: String

  public init(_ code: String, file: String, tensor: String? = nil, _ message: String) {
    self.code = code
    self.file = file
    self.tensor = tensor
    self.message = message
  }

  public var description: String {
    "\(code): \(file): " + (tensor.map { "tensor \($0): " } ?? "") + message
  }
}

/// Figures of one compressed or decompressed shard.
public struct ArchiveResult: Sendable {
  public var file: String
  public var originalBytes: Int
  public var archiveBytes: Int
  /// Elements stored as INT4 codes (grid) and elements stored as floats or bytes.
  public var gridElements: Int
  public var sha256: String
}

// MARK: - Chunks

/// One independently compressed piece of a tensor.
struct ChunkPlan {
  var tensor: Int
  /// Byte range of the tensor's data (relative to the tensor's start).
  var bytes: Range<Int>
  /// Rows (for grid chunks).
  var rows: Int
  var columns: Int
}

struct EncodedChunk {
  var encoding: ShardArchive.Encoding
  var frames: [[UInt8]]
  var sha256: String
  var gridElements: Int
}

extension ShardArchive {
  static let chunkBytes = 4 << 20
  static let group = 32

  /// Plane count for a dtype: 2 for BF16/F16, 4 for F32, 0 (bytes) otherwise.
  static func planeCount(_ d: DType) -> Int {
    switch d {
    case .bf16, .f16: 2
    case .f32: 4
    default: 0
    }
  }

  /// Splits `bytes` of `width`-byte elements into planes: plane k holds byte k of each element.
  static func split(_ src: UnsafeRawBufferPointer, width: Int) -> [[UInt8]] {
    let n = src.count / width
    var planes = (0..<width).map { _ in [UInt8](repeating: 0, count: n) }
    guard n > 0 else { return planes }
    let s = src.baseAddress!
    switch width {
    case 2:
      // Whole elements as integers: the compiler vectorizes these loops.
      let e = s.assumingMemoryBound(to: UInt16.self)
      var low = planes[0]
      var high = planes[1]
      low.withUnsafeMutableBufferPointer { p0 in
        high.withUnsafeMutableBufferPointer { p1 in
          for i in 0..<n {
            let v = UInt16(littleEndian: e[i])
            p0[i] = UInt8(truncatingIfNeeded: v)
            p1[i] = UInt8(truncatingIfNeeded: v >> 8)
          }
        }
      }
      planes = [low, high]
    default:
      for k in 0..<width {
        planes[k].withUnsafeMutableBufferPointer { p in
          for i in 0..<n { p[i] = s.load(fromByteOffset: i * width + k, as: UInt8.self) }
        }
      }
    }
    return planes
  }

  /// The inverse of ``split(_:width:)``.
  static func join(_ planes: [[UInt8]], width: Int, into dst: UnsafeMutableRawBufferPointer) {
    let n = dst.count / width
    guard n > 0 else { return }
    let d = dst.baseAddress!
    switch width {
    case 2:
      let e = d.assumingMemoryBound(to: UInt16.self)
      planes[0].withUnsafeBufferPointer { p0 in
        planes[1].withUnsafeBufferPointer { p1 in
          for i in 0..<n { e[i] = (UInt16(p0[i]) | UInt16(p1[i]) << 8).littleEndian }
        }
      }
    case 4:
      let e = d.assumingMemoryBound(to: UInt32.self)
      planes[0].withUnsafeBufferPointer { p0 in
        planes[1].withUnsafeBufferPointer { p1 in
          planes[2].withUnsafeBufferPointer { p2 in
            planes[3].withUnsafeBufferPointer { p3 in
              for i in 0..<n {
                e[i] = (UInt32(p0[i]) | UInt32(p1[i]) << 8 | UInt32(p2[i]) << 16 | UInt32(p3[i]) << 24).littleEndian
              }
            }
          }
        }
      }
    default:
      for k in 0..<width {
        planes[k].withUnsafeBufferPointer { p in
          for i in 0..<n { d.storeBytes(of: p[i], toByteOffset: i * width + k, as: UInt8.self) }
        }
      }
    }
  }

  static func sha256(_ b: UnsafeRawBufferPointer) -> String { hex(SHA256.hash(data: b)) }

  static func hex(_ d: SHA256.Digest) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    for byte in d {
      out.append(digits[Int(byte >> 4)])
      out.append(digits[Int(byte & 15)])
    }
    return String(decoding: out, as: UTF8.self)
  }
}
