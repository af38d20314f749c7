import Checkpoint
import QuantKernels
import SafeTensors

/// Scans every tensor of a shard: NaN/Inf in float tensors, zero, negative or
/// non-finite quantization scales, and non-zero INT4 padding nibbles.
enum DataScanner {
  static func scanFormat(_ dtype: DType) -> ScanFormat? {
    switch dtype {
    case .bf16: .bf16
    case .f16: .f16
    case .f32: .f32
    case .f64: .f64
    case .f8E4M3: .f8E4M3FN
    case .f8E5M2: .f8E5M2
    default: nil
    }
  }

  /// Scans one shard; returns the problems and the bytes scanned.
  static func scan(shard: String, path: String, header: SafeTensorsHeader, progress: (@Sendable (Int) -> Void)?) -> ([Problem], Int) {
    let map: MappedFile
    do { map = try MappedFile(path: path) } catch { return ([Problem(error, file: shard)], 0) }
    map.adviseSequential()
    var problems: [Problem] = []
    var bytes = 0
    var weightShapes: [String: [Int]] = [:]
    for t in header.tensors where t.name.hasSuffix(".weight_shape") && t.shape == [2] && (t.dtype == .i32 || t.dtype == .i64) {
      let range = (header.dataStart + t.begin)..<(header.dataStart + t.end)
      weightShapes[String(t.name.dropLast(".weight_shape".count))] = map.withBytes(range) { raw in
        t.dtype == .i32
          ? (0..<2).map { Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) }
          : (0..<2).map { Int(truncatingIfNeeded: Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))) }
      }
    }
    for t in header.tensors {
      let range = (header.dataStart + t.begin)..<(header.dataStart + t.end)
      let isScale = t.name.hasSuffix(".weight_scale") || t.name.hasSuffix(".weight_scale_inv")
      map.withBytes(range) { raw in
        if let format = scanFormat(t.dtype) {
          if isScale {
            let c = FloatScan.countReference(raw, format)
            if c.nonFinite + c.zero + c.negative > 0 {
              let first = FloatScan.firstIndex(raw, format) { b in
                let (n, z, neg) = FloatScan.classify(b, format)
                return n + z + neg > 0
              }!
              var what: [String] = []
              if c.zero > 0 { what.append("\(c.zero) zero") }
              if c.negative > 0 { what.append("\(c.negative) negative") }
              if c.nonFinite > 0 { what.append("\(c.nonFinite) NaN/Inf") }
              problems.append(Problem("bad-scale", file: shard, tensor: t.name, "\(what.joined(separator: ", ")) scale(s) of \(t.elementCount); first at \(position(first.index, t.shape)) = \(FloatScan.value(bits: first.bits, format))"))
            }
          } else {
            let n = FloatScan.countNonFinite(raw, format)
            if n > 0 {
              let first = FloatScan.firstIndex(raw, format) { FloatScan.classify($0, format).0 == 1 }!
              problems.append(Problem("non-finite", file: shard, tensor: t.name, "\(n) NaN/Inf value(s) of \(t.elementCount); first at \(position(first.index, t.shape)) = \(FloatScan.value(bits: first.bits, format))"))
            }
          }
        } else if t.name.hasSuffix(".weight_packed"), t.dtype == .i32, t.shape.count == 2,
          let dims = weightShapes[String(t.name.dropLast(".weight_packed".count))],
          dims[1] % 8 != 0, t.shape == [dims[0], (dims[1] + 7) / 8]
        {
          let bad = PackedInt4Scan.countNonzeroPadding(raw, rows: dims[0], columns: dims[1])
          if bad > 0 {
            problems.append(Problem("nonzero-padding", file: shard, tensor: t.name, "\(bad) row(s) have non-zero padding nibbles past column \(dims[1]) (pack_to_int32 writes zeros)"))
          }
        }
      }
      map.release(range)
      bytes += t.byteCount
      progress?(t.byteCount)
    }
    return (problems, bytes)
  }

  /// `[i, j]` for a flat index in a shape.
  static func position(_ flat: Int, _ shape: [Int]) -> String {
    guard !shape.isEmpty, !shape.contains(0) else { return "[\(flat)]" }
    var rest = flat
    var idx: [Int] = []
    for d in shape.reversed() {
      idx.append(rest % d)
      rest /= d
    }
    return "[" + idx.reversed().map(String.init).joined(separator: ", ") + "]"
  }
}
