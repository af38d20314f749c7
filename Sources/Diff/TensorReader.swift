import QuantKernels
import SafeTensors

/// Decodes row ranges of one logical tensor to FP32, straight from the
/// memory-mapped shard: nothing but the requested rows is materialized.
///
/// Every encoding decodes exactly: INT4 `q·s` and FP8 `code·scale_inv` are
/// computed in FP32 as their reference dequantizers do (compressed-tensors,
/// DeepSeek-V3 `weight_dequant`), BF16 and FP16 widen exactly.
public struct TensorReader: @unchecked Sendable {
  public let tensor: LogicalTensor
  /// Keeps the mapping alive while the pointers below are used.
  private let file: SafeTensorsFile
  private let base: UnsafeRawPointer?
  private let ranges: [String: Range<Int>]
  private let groupIndex: [Int32]?

  /// - Parameter prepare: Makes the stored bytes readable now (decodes an
  ///   archived shard's chunks; see ``prepare()``). Pass `false` to only plan.
  /// - Throws: ``DiffError`` when a stored part is missing, damaged in an
  ///   archive, or a `g_idx` is invalid.
  public init(_ tensor: LogicalTensor, file: SafeTensorsFile, prepare: Bool = true) throws(DiffError) {
    self.tensor = tensor
    self.file = file
    var ranges: [String: Range<Int>] = [:]
    for n in tensor.storedNames {
      do { ranges[n] = file.fileRange(of: try file.info(n)) } catch {
        throw DiffError("missing-tensor", file: tensor.shard, tensor: n, "\(error)")
      }
    }
    self.ranges = ranges
    base = file.mapping.withBytes(0..<file.mapping.count) { $0.baseAddress }
    if case .int4(let m) = tensor.encoding, let gi = m.groupIndex, let r = ranges[gi], let base {
      do { try file.mapping.prepare(r) } catch { throw DiffError(unreadable: error, shard: tensor.shard, tensor: gi) }
      defer { file.mapping.release(r) }
      do { groupIndex = try m.layout.groupIndex(from: UnsafeRawBufferPointer(start: base + r.lowerBound, count: r.count)) } catch {
        throw DiffError("bad-g-idx", file: tensor.shard, tensor: gi, "\(error)")
      }
    } else {
      groupIndex = nil
    }
    if prepare { try self.prepare() }
  }

  /// Makes the stored bytes readable until ``release()``: on an archived
  /// shard this decodes (and checks) the chunks that hold them; on a plain
  /// file it does nothing.
  public func prepare() throws(DiffError) {
    // A damaged archive chunk names its own tensor; the fallback is the first stored part.
    do { try file.mapping.prepare(all: tensor.storedNames.map { ranges[$0]! }) } catch {
      throw DiffError(unreadable: error, shard: tensor.shard, tensor: tensor.storedNames[0])
    }
  }

  /// The stored bytes read, for progress and page release.
  public var storedRanges: [Range<Int>] { Array(ranges.values) }
  /// Stored bytes in total.
  public var storedBytes: Int { ranges.values.reduce(0) { $0 + $1.count } }

  private func bytes(_ name: String) -> UnsafeRawBufferPointer {
    let r = ranges[name]!
    return UnsafeRawBufferPointer(start: base.map { $0 + r.lowerBound }, count: r.count)
  }

  /// Writes rows `rows` (of ``LogicalTensor/rows``, each ``LogicalTensor/columns``
  /// wide) as FP32 into `out`, which holds exactly that many values.
  public func decode(rows: Range<Int>, into out: UnsafeMutableBufferPointer<Float>) {
    let columns = tensor.columns
    precondition(rows.lowerBound >= 0 && rows.upperBound <= tensor.rows, "rows outside the tensor")
    precondition(out.count == rows.count * columns, "output buffer has the wrong size")
    if out.isEmpty { return }
    let dst = UnsafeMutableRawBufferPointer(out)
    switch tensor.encoding {
    case .float(let dtype):
      let stored = bytes(tensor.storedNames[0])
      let size = dtype.byteSize!
      let src = UnsafeRawBufferPointer(rebasing: stored[(rows.lowerBound * columns * size)..<(rows.upperBound * columns * size)])
      FloatConversion.convertRow(src, from: Self.format(dtype), to: .f32, count: out.count, into: dst)
    case .integer(let dtype):
      let stored = bytes(tensor.storedNames[0])
      let size = dtype.byteSize!
      let first = rows.lowerBound * columns
      for i in 0..<out.count {
        let o = (first + i) * size
        let v: Float
        switch dtype {
        case .bool, .u8: v = Float(stored.load(fromByteOffset: o, as: UInt8.self))
        case .i8: v = Float(stored.load(fromByteOffset: o, as: Int8.self))
        case .i16: v = Float(Int16(littleEndian: stored.loadUnaligned(fromByteOffset: o, as: Int16.self)))
        case .u16: v = Float(UInt16(littleEndian: stored.loadUnaligned(fromByteOffset: o, as: UInt16.self)))
        case .i32: v = Float(Int32(littleEndian: stored.loadUnaligned(fromByteOffset: o, as: Int32.self)))
        case .u32: v = Float(UInt32(littleEndian: stored.loadUnaligned(fromByteOffset: o, as: UInt32.self)))
        case .i64: v = Float(Int64(littleEndian: stored.loadUnaligned(fromByteOffset: o, as: Int64.self)))
        default: v = Float(UInt64(littleEndian: stored.loadUnaligned(fromByteOffset: o, as: UInt64.self)))
        }
        out[i] = v
      }
    case .fp8Block(let scaleInv, let br, let bc):
      let codes = bytes(tensor.storedNames[0])
      let scales = bytes(scaleInv)
      let scaleColumns = (columns + bc - 1) / bc
      for (k, r) in rows.enumerated() {
        let row = UnsafeMutableRawBufferPointer(rebasing: dst[(k * columns * 4)..<((k + 1) * columns * 4)])
        FloatConversion.convertRow(
          UnsafeRawBufferPointer(rebasing: codes[(r * columns)..<((r + 1) * columns)]), from: .f8e4m3fn, to: .f32, count: columns, into: row)
        let values = row.assumingMemoryBound(to: Float.self)
        for bj in 0..<scaleColumns {
          let s = Float(bitPattern: UInt32(littleEndian: scales.loadUnaligned(fromByteOffset: 4 * ((r / br) * scaleColumns + bj), as: UInt32.self)))
          for j in (bj * bc)..<min(columns, (bj + 1) * bc) { values[j] *= s }
        }
      }
    case .int4(let m):
      let layout = m.layout
      let packed = bytes(m.packed)
      let scales = bytes(m.scale)
      let zeroPoints = m.zeroPoint.map { bytes($0) }
      let rowBytes = Int4Packing.bytesPerRow(columns: columns)
      let scaleRowBytes = layout.groupsPerRow * layout.scaleType.byteSize
      var zp = [Int8](repeating: 0, count: zeroPoints == nil ? 0 : layout.groupsPerRow)
      for (k, r) in rows.enumerated() {
        let scaleRow = layout.scaleRows == 1 ? 0 : r
        if let z = zeroPoints {
          for g in 0..<layout.groupsPerRow {
            zp[g] = Int4Packing.unpackZeroPoint(z, row: scaleRow, group: g, groups: layout.groupsPerRow)
          }
        }
        let row = UnsafeMutableRawBufferPointer(rebasing: dst[(k * columns * 4)..<((k + 1) * columns * 4)])
        let p = UnsafeRawBufferPointer(rebasing: packed[(r * rowBytes)..<((r + 1) * rowBytes)])
        let s = UnsafeRawBufferPointer(rebasing: scales[(scaleRow * scaleRowBytes)..<((scaleRow + 1) * scaleRowBytes)])
        zp.withUnsafeBufferPointer { zpb in
          if let gi = groupIndex {
            gi.withUnsafeBufferPointer { g in
              _ = Int4Dequantize.row(
                packed: p, columns: columns, scales: s, scaleType: layout.scaleType, zeroPoints: zeroPoints == nil ? nil : zpb,
                groupSize: layout.groupSize, groupIndex: g, output: row, outputType: .f32)
            }
          } else {
            _ = Int4Dequantize.row(
              packed: p, columns: columns, scales: s, scaleType: layout.scaleType, zeroPoints: zeroPoints == nil ? nil : zpb,
              groupSize: layout.groupSize, groupIndex: nil, output: row, outputType: .f32)
          }
        }
      }
    }
  }

  /// Decodes the whole tensor.
  public func decodeAll() -> [Float] {
    [Float](unsafeUninitializedCapacity: tensor.elementCount) { buffer, count in
      decode(rows: 0..<tensor.rows, into: UnsafeMutableBufferPointer(rebasing: buffer[0..<tensor.elementCount]))
      count = tensor.elementCount
    }
  }

  /// Gives the stored pages back to the kernel (`madvise(MADV_DONTNEED)`);
  /// on an archived shard the bytes must be prepared again before decoding.
  public func release() {
    for n in tensor.storedNames { file.mapping.release(ranges[n]!) }
  }

  static func format(_ d: DType) -> FloatFormat {
    switch d {
    case .bf16: .bf16
    case .f16: .f16
    case .f8E4M3: .f8e4m3fn
    case .f8E5M2: .f8e5m2
    default: .f32
    }
  }
}
