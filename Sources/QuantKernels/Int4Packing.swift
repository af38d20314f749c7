/// Bit packing of 4-bit integer codes, byte for byte as compressed-tensors
/// 0.12.2 `pack_to_int32` / `unpack_from_int32` with `num_bits = 4`.
///
/// Layout (see `docs/FORMATS.md` §2.2):
///
/// * A code `q ∈ [−8, 7]` is stored **offset-binary**: `nibble = q + 8`.
/// * Eight codes fill one little-endian 32-bit word, least significant nibble
///   first: element `j` of a row is in word `j / 8`, bits `4·(j % 8) … 4·(j % 8) + 3`.
///   So byte `k` of a packed row holds element `2k` in its low nibble and element
///   `2k + 1` in its high nibble.
/// * A row of `n` codes takes `ceil(n / 8)` words. Padding nibbles past `n` are
///   written as 0 (which would decode to −8); unpacking always trims to `n`.
///
/// Weights are packed along the input dimension (each row separately,
/// ``packRow(_:into:)``); asymmetric zero points are packed along dimension 0
/// (``packColumns(_:rows:columns:into:)``). Only 4-bit codes are supported;
/// the library's other `num_bits` values are not.
///
/// Every function here traps (`precondition`) on a buffer of the wrong size or a
/// code outside `[−8, 7]`; these are programmer errors. Validate untrusted shapes
/// with ``Int4Layout`` first. Packed buffers may have any alignment.
public enum Int4Packing {
  /// Codes per packed 32-bit word.
  public static let codesPerWord = 8

  /// Packed 32-bit words for a row of `columns` codes: `ceil(columns / 8)`.
  ///
  /// - Precondition: `columns >= 0` (traps otherwise).
  @inlinable
  public static func wordsPerRow(columns: Int) -> Int {
    precondition(columns >= 0, "negative column count")
    return columns / 8 + (columns % 8 == 0 ? 0 : 1)
  }

  /// Packed bytes for a row of `columns` codes: `4 · ceil(columns / 8)`.
  ///
  /// - Precondition: `columns >= 0` (traps otherwise).
  @inlinable
  public static func bytesPerRow(columns: Int) -> Int { 4 * wordsPerRow(columns: columns) }

  /// Scalar reference: the two codes held by one packed byte.
  ///
  /// `low = (byte & 0xF) − 8` is element `2k`, `high = (byte >> 4) − 8` is
  /// element `2k + 1`. Defined for all 256 bytes.
  @inlinable
  public static func codes(ofByte byte: UInt8) -> (low: Int8, high: Int8) {
    (Int8(byte & 0xF) - 8, Int8(byte >> 4) - 8)
  }

  /// The 256-entry decode table: entry `b` holds the two codes of byte `b` as the
  /// bit patterns of two `Int8`s in memory order, `UInt16(low) | UInt16(high) << 8`
  /// (store it with `littleEndian` to write both codes at once).
  ///
  /// Built from ``codes(ofByte:)``.
  public static let pairTable: [UInt16] = (0..<256).map { b in
    let (lo, hi) = codes(ofByte: UInt8(b))
    return UInt16(UInt8(bitPattern: lo)) | UInt16(UInt8(bitPattern: hi)) << 8
  }

  // MARK: Rows (packed along the input dimension)

  /// Packs one row of codes into `ceil(values.count / 8)` little-endian words,
  /// exactly as `pack_to_int32(…, num_bits=4)` packs one row.
  ///
  /// - Parameters:
  ///   - values: Codes in `[−8, 7]`.
  ///   - packed: Destination of exactly ``bytesPerRow(columns:)`` bytes, any
  ///     alignment. Padding nibbles are written as 0.
  /// - Precondition: `packed.count == bytesPerRow(columns: values.count)` and every
  ///   value is in `[−8, 7]`; traps otherwise.
  public static func packRow(_ values: UnsafeBufferPointer<Int8>, into packed: UnsafeMutableRawBufferPointer) {
    let n = values.count
    precondition(packed.count == bytesPerRow(columns: n), "packed row buffer has the wrong size")
    guard n > 0 else { return }
    let src = values.baseAddress!
    let dst = packed.baseAddress!
    var outOfRange: UInt8 = 0
    let fullWords = n / 8
    for w in 0..<fullWords {
      var word: UInt32 = 0
      for j in 0..<8 {
        let nibble = UInt8(bitPattern: src[8 * w + j]) &+ 8
        outOfRange |= nibble
        word |= UInt32(nibble & 0xF) << UInt32(4 * j)
      }
      dst.storeBytes(of: word.littleEndian, toByteOffset: 4 * w, as: UInt32.self)
    }
    if n % 8 != 0 {
      var word: UInt32 = 0
      for j in 0..<(n % 8) {
        let nibble = UInt8(bitPattern: src[8 * fullWords + j]) &+ 8
        outOfRange |= nibble
        word |= UInt32(nibble & 0xF) << UInt32(4 * j)
      }
      dst.storeBytes(of: word.littleEndian, toByteOffset: 4 * fullWords, as: UInt32.self)
    }
    // q + 8 is in [0, 15] for every q in [-8, 7], so no high bit may be set.
    precondition(outOfRange & 0xF0 == 0, "INT4 code outside [-8, 7]")
  }

  /// Unpacks the first `count` codes of one packed row; same as
  /// `unpack_from_int32(…, num_bits=4)` on one row, padding trimmed.
  ///
  /// Every nibble decodes (`nibble − 8`); padding nibbles are ignored, whatever
  /// they hold.
  ///
  /// - Parameters:
  ///   - packed: Exactly ``bytesPerRow(columns:)`` bytes for `count`, any alignment.
  ///   - count: Codes in the row.
  ///   - values: Destination of exactly `count` codes.
  /// - Precondition: `packed.count == bytesPerRow(columns: count)` and
  ///   `values.count == count`; traps otherwise.
  public static func unpackRow(_ packed: UnsafeRawBufferPointer, count: Int, into values: UnsafeMutableBufferPointer<Int8>) {
    precondition(packed.count == bytesPerRow(columns: count), "packed row buffer has the wrong size")
    precondition(values.count == count, "code buffer has the wrong size")
    guard count > 0 else { return }
    let src = packed.baseAddress!
    let dst = UnsafeMutableRawPointer(values.baseAddress!)
    pairTable.withUnsafeBufferPointer { table in
      let pairs = count / 2
      for k in 0..<pairs {
        // This is safe: k < count / 2 <= packed.count, and 2k + 1 < count.
        let b = src.load(fromByteOffset: k, as: UInt8.self)
        dst.storeBytes(of: table[Int(b)].littleEndian, toByteOffset: 2 * k, as: UInt16.self)
      }
      if count % 2 != 0 {
        values[count - 1] = codes(ofByte: src.load(fromByteOffset: pairs, as: UInt8.self)).low
      }
    }
  }

  /// Packs a row-major `[rows, columns]` code matrix along dimension 1 into
  /// `[rows, ceil(columns / 8)]` words (`weight_packed`).
  ///
  /// - Precondition: `values.count == rows · columns`,
  ///   `packed.count == rows · bytesPerRow(columns:)`, codes in `[−8, 7]`; traps otherwise.
  public static func pack(_ values: UnsafeBufferPointer<Int8>, rows: Int, columns: Int, into packed: UnsafeMutableRawBufferPointer) {
    precondition(rows >= 0 && columns >= 0, "negative shape")
    let rowBytes = bytesPerRow(columns: columns)
    precondition(values.count == rows * columns, "code buffer has the wrong size")
    precondition(packed.count == rows * rowBytes, "packed buffer has the wrong size")
    for r in 0..<rows {
      packRow(
        UnsafeBufferPointer(rebasing: values[(r * columns)..<((r + 1) * columns)]),
        into: UnsafeMutableRawBufferPointer(rebasing: packed[(r * rowBytes)..<((r + 1) * rowBytes)]))
    }
  }

  /// Unpacks `[rows, ceil(columns / 8)]` words into a row-major `[rows, columns]`
  /// code matrix, trimming each row's padding.
  ///
  /// - Precondition: `packed.count == rows · bytesPerRow(columns:)`,
  ///   `values.count == rows · columns`; traps otherwise.
  public static func unpack(_ packed: UnsafeRawBufferPointer, rows: Int, columns: Int, into values: UnsafeMutableBufferPointer<Int8>) {
    precondition(rows >= 0 && columns >= 0, "negative shape")
    let rowBytes = bytesPerRow(columns: columns)
    precondition(values.count == rows * columns, "code buffer has the wrong size")
    precondition(packed.count == rows * rowBytes, "packed buffer has the wrong size")
    for r in 0..<rows {
      unpackRow(
        UnsafeRawBufferPointer(rebasing: packed[(r * rowBytes)..<((r + 1) * rowBytes)]), count: columns,
        into: UnsafeMutableBufferPointer(rebasing: values[(r * columns)..<((r + 1) * columns)]))
    }
  }

  // MARK: Columns (zero points, packed along dimension 0)

  /// Packs a row-major `[rows, columns]` code matrix along dimension 0 into
  /// `[ceil(rows / 8), columns]` words, as `pack_to_int32(…, packed_dim=0)` packs
  /// `weight_zero_point` (`rows` = output features, `columns` = groups).
  ///
  /// Element `(r, c)` goes to word `[r / 8, c]`, nibble `r % 8`; padding nibbles
  /// (rows past `rows` in the last word row) are 0.
  ///
  /// - Precondition: `values.count == rows · columns`,
  ///   `packed.count == 4 · ceil(rows / 8) · columns`, codes in `[−8, 7]`; traps otherwise.
  public static func packColumns(_ values: UnsafeBufferPointer<Int8>, rows: Int, columns: Int, into packed: UnsafeMutableRawBufferPointer) {
    precondition(rows >= 0 && columns >= 0, "negative shape")
    let wordRows = wordsPerRow(columns: rows)
    precondition(values.count == rows * columns, "code buffer has the wrong size")
    precondition(packed.count == 4 * wordRows * columns, "packed buffer has the wrong size")
    var outOfRange: UInt8 = 0
    for wr in 0..<wordRows {
      for c in 0..<columns {
        var word: UInt32 = 0
        for j in 0..<min(8, rows - 8 * wr) {
          let nibble = UInt8(bitPattern: values[(8 * wr + j) * columns + c]) &+ 8
          outOfRange |= nibble
          word |= UInt32(nibble & 0xF) << UInt32(4 * j)
        }
        packed.storeBytes(of: word.littleEndian, toByteOffset: 4 * (wr * columns + c), as: UInt32.self)
      }
    }
    precondition(outOfRange & 0xF0 == 0, "INT4 code outside [-8, 7]")
  }

  /// Unpacks `[ceil(rows / 8), columns]` words packed along dimension 0 into a
  /// row-major `[rows, columns]` code matrix (`unpack_from_int32(…, packed_dim=0)`).
  ///
  /// - Precondition: `packed.count == 4 · ceil(rows / 8) · columns`,
  ///   `values.count == rows · columns`; traps otherwise.
  public static func unpackColumns(_ packed: UnsafeRawBufferPointer, rows: Int, columns: Int, into values: UnsafeMutableBufferPointer<Int8>) {
    precondition(rows >= 0 && columns >= 0, "negative shape")
    precondition(packed.count == 4 * wordsPerRow(columns: rows) * columns, "packed buffer has the wrong size")
    precondition(values.count == rows * columns, "code buffer has the wrong size")
    for r in 0..<rows {
      for c in 0..<columns {
        values[r * columns + c] = unpackZeroPoint(packed, row: r, group: c, groups: columns)
      }
    }
  }

  /// One element of a matrix packed along dimension 0: the code at `(row, group)`
  /// of `[ceil(rows / 8), groups]` words, i.e. nibble `row % 8` of word
  /// `[row / 8, group]`, minus 8.
  ///
  /// - Precondition: `row >= 0`, `0 <= group < groups`, and the word lies inside
  ///   `packed`; traps otherwise.
  @inlinable
  public static func unpackZeroPoint(_ packed: UnsafeRawBufferPointer, row: Int, group: Int, groups: Int) -> Int8 {
    precondition(row >= 0 && group >= 0 && group < groups, "zero point index out of range")
    let offset = 4 * ((row / 8) * groups + group)
    precondition(offset + 4 <= packed.count, "zero point index out of range")
    let word = UInt32(littleEndian: packed.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    return Int8((word >> UInt32(4 * (row % 8))) & 0xF) - 8
  }
}
