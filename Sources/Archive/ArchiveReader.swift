import Dispatch
import SafeTensors
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

extension ShardArchive {
  /// Lets every reader of safetensors files (``SafeTensors/MappedFile``,
  /// ``SafeTensors/SafeTensorsFile``, header inspection) open
  /// `NAME.safetensors.zst` archives as the shards they restore, decoding only
  /// the chunks a reader prepares. `ckpt` calls this at start.
  public static func registerReader() {
    VirtualFiles.register(suffix: VirtualFiles.archiveSuffix) { (path) throws(SafeTensorsError) -> any VirtualFileSource in
      try ArchiveSource(path)
    }
  }
}

/// An archive read as the shard it restores: the header block is copied at
/// open, every other piece (one chunk of one tensor) is decoded, and its
/// SHA-256 checked, when a reader first prepares a range that overlaps it.
final class ArchiveSource: VirtualFileSource {
  /// One decodable piece of the shard: `tensor` and `chunk` index the
  /// manifest; `tensor == -1` is the header block.
  struct Piece {
    var range: Range<Int>
    var tensor: Int
    var chunk: Int
  }

  /// The state of one piece: readers holding it, and whether its bytes are in memory.
  final class Slot: Sendable {
    let state = Mutex<(pins: Int, resident: Bool)>((0, false))
  }

  private let archive: OpenArchive
  /// The whole archive; the mapping is kept alive by `archive`.
  private nonisolated(unsafe) let raw: UnsafeRawBufferPointer
  private let pieces: [Piece]
  private let slots: [Slot]
  let count: Int

  init(_ path: String) throws(SafeTensorsError) {
    do { archive = try OpenArchive(path) } catch { throw Self.error(error, path) }
    raw = archive.mapping.withBytes(0..<archive.mapping.count) { $0 }
    count = archive.fileBytes
    var pieces = [Piece(range: 0..<archive.headerBytes, tensor: -1, chunk: 0)]
    for (i, t) in archive.tensors.enumerated() {
      for (k, c) in t.chunks.enumerated() where c.end > c.begin {
        let at = archive.headerBytes + t.begin
        pieces.append(Piece(range: (at + c.begin)..<(at + c.end), tensor: i, chunk: k))
      }
    }
    self.pieces = pieces
    slots = pieces.map { _ in Slot() }
  }

  static func error(_ e: ArchiveError, _ path: String) -> SafeTensorsError {
    SafeTensorsError(file: path, kind: .storage(code: e.code, tensor: e.tensor, message: e.message))
  }

  /// The indices of the pieces overlapping `range`.
  func overlapping(_ range: Range<Int>) -> Range<Int> {
    // First piece ending after range.lowerBound (pieces are sorted and disjoint).
    var lo = 0
    var hi = pieces.count
    while lo < hi {
      let mid = (lo + hi) / 2
      if pieces[mid].range.upperBound <= range.lowerBound { lo = mid + 1 } else { hi = mid }
    }
    var end = lo
    while end < pieces.count && pieces[end].range.lowerBound < range.upperBound { end += 1 }
    return lo..<end
  }

  func materialize(_ range: Range<Int>, into base: UnsafeMutableRawPointer) throws(SafeTensorsError) {
    let needed = overlapping(range)
    if needed.isEmpty { return }
    let missingBytes = needed.reduce(0) { sum, i in
      sum + (slots[i].state.withLock { $0.resident } ? 0 : pieces[i].range.count)
    }
    // Decode on every core when there is enough to decode.
    let results = Mutex([ArchiveError?](repeating: nil, count: needed.count))
    if needed.count > 1 && missingBytes >= 8 << 20 {
      nonisolated(unsafe) let target = base
      DispatchQueue.concurrentPerform(iterations: needed.count) { j in
        let e = self.pin(needed.lowerBound + j, target)
        results.withLock { $0[j] = e }
      }
    } else {
      for j in needed.indices.map({ $0 - needed.lowerBound }) {
        let e = pin(needed.lowerBound + j, base)
        results.withLock { $0[j] = e }
      }
    }
    let failures = results.withLock { $0 }
    guard let first = failures.compactMap({ $0 }).first else { return }
    // Leave nothing pinned for a reader that gets an error instead of bytes.
    for (j, e) in failures.enumerated() where e == nil { unpin(needed.lowerBound + j, base) }
    throw Self.error(first, archive.mapping.path)
  }

  /// Pins piece `i`, decoding it first when it is not in memory.
  private func pin(_ i: Int, _ base: UnsafeMutableRawPointer) -> ArchiveError? {
    let p = pieces[i]
    return slots[i].state.withLock { s -> ArchiveError? in
      if !s.resident {
        let d = UnsafeMutableRawBufferPointer(start: base + p.range.lowerBound, count: p.range.count)
        if p.tensor < 0 {
          d.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[16..<(16 + p.range.count)]))
        } else {
          let t = archive.tensors[p.tensor]
          let c = t.chunks[p.chunk]
          do throws(ArchiveError) { try archive.restore(t, c, from: raw, into: d) } catch { return error }
          // The compressed frames are read: give their pages back.
          for f in c.frames { archive.mapping.release(f) }
        }
        s.resident = true
      }
      s.pins += 1
      return nil
    }
  }

  func release(_ range: Range<Int>, base: UnsafeMutableRawPointer) {
    for i in overlapping(range) { unpin(i, base) }
  }

  /// Unpins piece `i`; drops its pages when no reader holds it. The header
  /// block stays.
  private func unpin(_ i: Int, _ base: UnsafeMutableRawPointer) {
    let p = pieces[i]
    slots[i].state.withLock { s in
      s.pins = max(0, s.pins - 1)
      guard s.pins == 0, s.resident, p.tensor >= 0 else { return }
      s.resident = false
      // Only pages wholly inside the piece: a page shared with a neighbour keeps its bytes.
      let page = Int(sysconf(Int32(_SC_PAGESIZE)))
      let lo = (p.range.lowerBound + page - 1) / page * page
      let hi = p.range.upperBound / page * page
      if hi > lo { _ = madvise(base + lo, hi - lo, MADV_DONTNEED) }
    }
  }
}
