import Checkpoint
import QuantKernels
import SafeTensors

/// Scans tensor data: NaN/Inf in float tensors, zero, negative or non-finite
/// quantization scales, and non-zero INT4 padding nibbles.
///
/// Work is split into chunks of about 32 MiB across all shards and run on
/// all cores, so one large shard is scanned in parallel too. Pages are
/// released after each chunk, so resident memory stays bounded.
enum DataScanner {
  static let chunkBytes = 32 << 20

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

  struct Item: Sendable {
    let shard: Int
    let tensor: Int
    /// Element range within the tensor.
    let elements: Range<Int>
  }

  struct Finding: Sendable {
    var counts = ScanCounts()
    var first: (index: Int, bits: UInt64)? = nil
    var badPaddingRows = 0
    /// A damaged archive chunk (the bytes could not be restored).
    var storageError: SafeTensorsError? = nil
  }

  /// Scans the shards; returns the problems and the bytes scanned.
  static func scan(
    shards: [(name: String, path: String, header: SafeTensorsHeader)], jobs: Int,
    progress: (@Sendable (Int) -> Void)?
  ) -> ([Problem], Int) {
    var problems: [Problem] = []
    var maps: [MappedFile?] = []
    for s in shards {
      do {
        let m = try MappedFile(path: s.path)
        guard m.count == s.header.fileSize else {
          problems.append(Problem("file-changed", file: s.name, "the file is \(m.count) bytes now but was \(s.header.fileSize) when its header was read; it changed during validation"))
          maps.append(nil)
          continue
        }
        m.adviseSequential()
        maps.append(m)
      } catch {
        problems.append(Problem(error, file: s.name))
        maps.append(nil)
      }
    }
    // Plan: float tensors in element chunks; packed INT4 tensors whole.
    var items: [Item] = []
    var weightShapes: [[String: [Int]]] = []
    for (si, s) in shards.enumerated() {
      var shapes: [String: [Int]] = [:]
      guard let map = maps[si] else {
        weightShapes.append(shapes)
        continue
      }
      for t in s.header.tensors where t.name.hasSuffix(".weight_shape") && t.shape == [2] && (t.dtype == .i32 || t.dtype == .i64) {
        // A damaged archive chunk is reported by the scan item of that tensor.
        guard let v = try? map.withPreparedBytes(range(s.header, t, 0..<2), { decodeWeightShape($0, t.dtype) }) else { continue }
        shapes[String(t.name.dropLast(".weight_shape".count))] = v
      }
      weightShapes.append(shapes)
      for (ti, t) in s.header.tensors.enumerated() {
        if let f = scanFormat(t.dtype) {
          let per = max(1, chunkBytes / f.byteSize)
          var e = 0
          while e < t.elementCount {
            items.append(Item(shard: si, tensor: ti, elements: e..<min(t.elementCount, e + per)))
            e += per
          }
        } else if t.name.hasSuffix(".weight_packed") || map.isStored {
          // Archived shards: every tensor is restored once, which checks its chunks' SHA-256.
          items.append(Item(shard: si, tensor: ti, elements: 0..<t.elementCount))
        }
      }
    }
    let frozenMaps = maps
    let frozenShapes = weightShapes
    let plan = items
    let results = Parallel.map(items.count, jobs: jobs) { k -> Finding in
      let item = plan[k]
      let s = shards[item.shard]
      let t = s.header.tensors[item.tensor]
      guard let map = frozenMaps[item.shard] else { return Finding() }
      let bytes = range(s.header, t, item.elements)
      var finding = Finding()
      // A failed prepare pins nothing: report it without releasing.
      do throws(SafeTensorsError) { try map.prepare(bytes) } catch {
        finding.storageError = error
        progress?(bytes.count)
        return finding
      }
      defer {
        map.release(bytes)
        progress?(bytes.count)
      }
      map.withBytes(bytes) { raw in
        if let format = scanFormat(t.dtype) {
          if isScale(t.name) {
            finding.counts = FloatScan.countReference(raw, format)
            if finding.counts.nonFinite + finding.counts.zero + finding.counts.negative > 0 {
              finding.first = FloatScan.firstIndex(raw, format) { b in
                let (n, z, neg) = FloatScan.classify(b, format)
                return n + z + neg > 0
              }
            }
          } else {
            finding.counts.nonFinite = FloatScan.countNonFinite(raw, format)
            if finding.counts.nonFinite > 0 {
              finding.first = FloatScan.firstIndex(raw, format) { FloatScan.classify($0, format).0 == 1 }
            }
          }
          if let f = finding.first { finding.first = (f.index + item.elements.lowerBound, f.bits) }
        } else if t.dtype == .i32, t.shape.count == 2,
          let dims = frozenShapes[item.shard][String(t.name.dropLast(".weight_packed".count))],
          dims.allSatisfy({ $0 > 0 }), dims[1] % 8 != 0, t.shape == [dims[0], (dims[1] + 7) / 8]
        {
          finding.badPaddingRows = PackedInt4Scan.countNonzeroPadding(raw, rows: dims[0], columns: dims[1])
        }
      }
      return finding
    }
    // Merge chunk findings per tensor, in file order.
    var merged: [Int: [Int: Finding]] = [:]
    for (item, f) in zip(items, results) {
      var m = merged[item.shard]?[item.tensor] ?? Finding()
      m.counts.nonFinite += f.counts.nonFinite
      m.counts.zero += f.counts.zero
      m.counts.negative += f.counts.negative
      m.badPaddingRows += f.badPaddingRows
      if m.first == nil { m.first = f.first }
      if m.storageError == nil { m.storageError = f.storageError }
      merged[item.shard, default: [:]][item.tensor] = m
    }
    var scanned = 0
    for (si, s) in shards.enumerated() where maps[si] != nil {
      scanned += s.header.dataLength
      for (ti, t) in s.header.tensors.enumerated() {
        guard let f = merged[si]?[ti] else { continue }
        if let e = f.storageError {
          problems.append(Problem(e.code, file: s.name, tensor: e.tensor ?? t.name, e.message))
          continue
        }
        let format = scanFormat(t.dtype)
        let where_ = f.first.map { " first at \(position($0.index, t.shape)) = \(FloatScan.value(bits: $0.bits, format ?? .f32))" } ?? ""
        if isScale(t.name), format != nil, f.counts.nonFinite + f.counts.zero + f.counts.negative > 0 {
          var what: [String] = []
          if f.counts.zero > 0 { what.append("\(f.counts.zero) zero") }
          if f.counts.negative > 0 { what.append("\(f.counts.negative) negative") }
          if f.counts.nonFinite > 0 { what.append("\(f.counts.nonFinite) NaN/Inf") }
          problems.append(Problem("bad-scale", file: s.name, tensor: t.name, "\(what.joined(separator: ", ")) scale(s) of \(t.elementCount);\(where_)"))
        } else if format != nil, f.counts.nonFinite > 0 {
          problems.append(Problem("non-finite", file: s.name, tensor: t.name, "\(f.counts.nonFinite) NaN/Inf value(s) of \(t.elementCount);\(where_)"))
        }
        if f.badPaddingRows > 0 {
          problems.append(Problem("nonzero-padding", file: s.name, tensor: t.name, "\(f.badPaddingRows) row(s) have non-zero padding nibbles (pack_to_int32 writes zeros)"))
        }
      }
    }
    return (problems, scanned)
  }

  /// The two values of a `weight_shape` tensor stored as I32 or I64.
  static func decodeWeightShape(_ raw: UnsafeRawBufferPointer, _ dtype: DType) -> [Int] {
    dtype == .i32
      ? (0..<2).map { Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) }
      : (0..<2).map { Int(truncatingIfNeeded: Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))) }
  }

  static func isScale(_ name: String) -> Bool {
    name.hasSuffix(".weight_scale") || name.hasSuffix(".weight_scale_inv")
  }

  /// The absolute file range of `elements` of `t` (whole bytes).
  static func range(_ h: SafeTensorsHeader, _ t: TensorInfo, _ elements: Range<Int>) -> Range<Int> {
    let bits = t.dtype.bitSize
    let lo = h.dataStart + t.begin + elements.lowerBound * bits / 8
    let hi = elements.upperBound == t.elementCount ? h.dataStart + t.end : h.dataStart + t.begin + elements.upperBound * bits / 8
    return lo..<hi
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
