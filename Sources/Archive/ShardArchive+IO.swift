import Conversion
import Crypto
import Dispatch
import SafeTensors
import StrictJSON
import Synchronization
import Zstd

#if canImport(Glibc)
  import Glibc
#endif

extension ShardArchive {
  /// Compresses the shard at `input` (which must pass the safetensors header
  /// rules) into `output`, written under a temporary name and renamed when
  /// complete. Chunks are encoded on `jobs` threads, a window at a time, and
  /// written in order: memory stays at a few chunks per thread.
  public static func compress(_ input: String, to output: String, level: Int32 = Zstd.defaultLevel, jobs: Int) throws(ArchiveError) -> ArchiveResult {
    let name = FileSystem.split(input).name
    let file: SafeTensorsFile
    do { file = try SafeTensorsFile(path: input) } catch { throw ArchiveError("unreadable-shard", file: name, "\(error)") }
    let dataStart = file.header.dataStart
    let tensors = file.tensors.sorted { $0.begin < $1.begin }
    var chunks: [ChunkPlan] = []
    for (i, t) in tensors.enumerated() {
      let size = t.end - t.begin
      let element = t.dtype.byteSize ?? 0
      let columns = t.shape.count >= 1 && element > 0 ? t.shape.last! : 0
      let rowBytes = columns > 0 ? columns * element : 0
      if rowBytes == 0 || size == 0 {
        var b = 0
        repeat {
          let e = min(size, b + chunkBytes)
          chunks.append(ChunkPlan(tensor: i, bytes: b..<e, rows: 0, columns: 0))
          b = e
        } while b < size
        continue
      }
      let rowsPer = max(1, chunkBytes / rowBytes)
      var r = 0
      let rows = size / rowBytes
      while r < rows {
        let e = min(rows, r + rowsPer)
        chunks.append(ChunkPlan(tensor: i, bytes: (r * rowBytes)..<(e * rowBytes), rows: e - r, columns: columns))
        r = e
      }
    }

    let temporary = FileSystem.temporaryPath(for: output)
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw ArchiveError("write-failed", file: output, "cannot create: \(systemErrorDescription(errno))") }
    var ok = false
    defer {
      close(fd)
      if !ok { unlink(temporary) }
    }
    var offset = 0
    func put(_ bytes: UnsafeRawBufferPointer) throws(ArchiveError) {
      var done = 0
      while done < bytes.count {
        let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
        guard n > 0 else { throw ArchiveError("write-failed", file: output, "write: \(systemErrorDescription(errno))") }
        done += n
      }
      offset += bytes.count
    }
    // The whole shard's SHA-256, in the background while chunks are encoded.
    let whole = Mutex<String?>(nil)
    let hashed = DispatchSemaphore(value: 0)
    // Read with pread into one buffer, not through the mapping, so the hashed
    // pages do not stay mapped (resident) while the chunks are released.
    DispatchQueue.global().async {
      whole.withLock { $0 = ShardArchive.fileSHA256(input) }
      hashed.signal()
    }
    try withBytes(of: magic) { (b) throws(ArchiveError) in try put(b) }
    var l = UInt64(dataStart).littleEndian
    try withUnsafeBytes(of: &l) { (b) throws(ArchiveError) in try put(b) }
    try file.mapping.withBytes(0..<dataStart) { (b) throws(ArchiveError) in try put(b) }

    var manifestTensors: [JSONValue] = []
    var chunkJSON: [[JSONValue]] = Array(repeating: [], count: tensors.count)
    var gridElements = 0
    let window = max(1, jobs) * 2
    var next = 0
    while next < chunks.count {
      let batch = Array(chunks[next..<min(chunks.count, next + window)])
      let results = Mutex([Result<EncodedChunk, ZstdError>?](repeating: nil, count: batch.count))
      let encodeOne = { @Sendable (k: Int) in
        let c = batch[k]
        let t = tensors[c.tensor]
        let range = (dataStart + t.begin + c.bytes.lowerBound)..<(dataStart + t.begin + c.bytes.upperBound)
        let r = file.mapping.withBytes(range) { b in
          Result { () throws(ZstdError) in try ChunkCodec.encode(b, dtype: t.dtype, rows: c.rows, columns: c.columns, level: level) }
        }
        results.withLock { $0[k] = r }
      }
      DispatchQueue.concurrentPerform(iterations: batch.count, execute: encodeOne)
      let encoded = results.withLock { $0 }
      for (k, c) in batch.enumerated() {
        let e: EncodedChunk
        switch encoded[k]! {
        case .success(let v): e = v
        case .failure(let err): throw ArchiveError("compress-failed", file: name, tensor: tensors[c.tensor].name, "\(err)")
        }
        var frames: [JSONValue] = []
        for f in e.frames {
          frames.append(.array([.number(JSONNumber(offset)), .number(JSONNumber(f.count))]))
          try withBytes(of: f) { (b) throws(ArchiveError) in try put(b) }
        }
        gridElements += e.gridElements
        chunkJSON[c.tensor].append(.object(JSONObject([
          ("begin", .number(JSONNumber(c.bytes.lowerBound))), ("end", .number(JSONNumber(c.bytes.upperBound))),
          ("rows", .number(JSONNumber(c.rows))), ("columns", .number(JSONNumber(c.columns))),
          ("encoding", .string(e.encoding.rawValue)), ("frames", .array(frames)), ("sha256", .string(e.sha256)),
        ])))
      }
      file.mapping.release((dataStart + tensors[batch.first!.tensor].begin)..<(dataStart + tensors[batch.last!.tensor].end))
      next += batch.count
    }
    hashed.wait()
    guard let digest = whole.withLock({ $0 }) else { throw ArchiveError("unreadable-shard", file: name, "cannot read it to hash it") }
    for (i, t) in tensors.enumerated() {
      manifestTensors.append(.object(JSONObject([
        ("name", .string(t.name)), ("dtype", .string(t.dtype.rawValue)), ("shape", .array(t.shape.map { .number(JSONNumber($0)) })),
        ("begin", .number(JSONNumber(t.begin))), ("end", .number(JSONNumber(t.end))), ("chunks", .array(chunkJSON[i])),
      ])))
    }
    let manifest = JSONValue.object(JSONObject([
      ("format", .string(format)), ("file_bytes", .number(JSONNumber(file.mapping.count))), ("header_bytes", .number(JSONNumber(dataStart))),
      ("sha256", .string(digest)), ("tensors", .array(manifestTensors)),
    ]))
    let manifestOffset = offset
    try withBytes(of: JSONWriter.bytes(manifest)) { (b) throws(ArchiveError) in try put(b) }
    var m = UInt64(manifestOffset).littleEndian
    try withUnsafeBytes(of: &m) { (b) throws(ArchiveError) in try put(b) }
    try withBytes(of: endMagic) { (b) throws(ArchiveError) in try put(b) }
    guard fsync(fd) == 0 else { throw ArchiveError("write-failed", file: output, "fsync: \(systemErrorDescription(errno))") }
    do { try FileSystem.commit(temporary, to: output) } catch { throw ArchiveError("write-failed", file: output, "\(error)") }
    ok = true
    return ArchiveResult(file: name, originalBytes: file.mapping.count, archiveBytes: offset, gridElements: gridElements, sha256: digest)
  }
}

extension ShardArchive {
  /// The SHA-256 of a file, read in 8 MiB pieces; `nil` when it cannot be read.
  static func fileSHA256(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    let size = 8 << 20
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
    defer { buffer.deallocate() }
    var hasher = SHA256()
    var offset = 0
    while true {
      let n = pread(fd, buffer, size, off_t(offset))
      if n < 0 { return nil }
      if n == 0 { break }
      hasher.update(bufferPointer: UnsafeRawBufferPointer(start: buffer, count: n))
      offset += n
    }
    return hex(hasher.finalize())
  }
}

/// `body` over the bytes of an array, with typed throws.
func withBytes<E: Error>(of a: [UInt8], _ body: (UnsafeRawBufferPointer) throws(E) -> Void) throws(E) {
  let r: Result<Void, E> = a.withUnsafeBytes { b in Result { () throws(E) in try body(b) } }
  try r.get()
}

/// A parsed, checked archive: its mapping and manifest.
struct OpenArchive {
  struct Chunk {
    var begin: Int
    var end: Int
    var rows: Int
    var columns: Int
    var encoding: ShardArchive.Encoding
    var frames: [Range<Int>]
    var sha256: String
  }
  struct Tensor {
    var name: String
    var dtype: DType
    var begin: Int
    var end: Int
    var chunks: [Chunk]
  }
  let name: String
  let mapping: MappedFile
  let headerBytes: Int
  let fileBytes: Int
  let sha256: String
  let tensors: [Tensor]

  init(_ path: String) throws(ArchiveError) {
    let name = FileSystem.split(path).name
    self.name = name
    func corrupt(_ m: String, _ tensor: String? = nil) -> ArchiveError { ArchiveError("corrupt-archive", file: name, tensor: tensor, m) }
    do { mapping = try MappedFile(path: path, decoding: false) } catch { throw ArchiveError("unreadable-archive", file: name, "\(error)") }
    let size = mapping.count
    guard size >= 32 else { throw corrupt("\(size) bytes: truncated (no header and trailer)") }
    let raw = mapping.withBytes(0..<size) { $0 }
    func u64(_ at: Int) -> Int { Int(truncatingIfNeeded: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt64.self))) }
    guard Array(raw[0..<8]) == ShardArchive.magic else { throw corrupt("not a ckpt-zst archive (bad magic)") }
    guard Array(raw[(size - 8)..<size]) == ShardArchive.endMagic else { throw corrupt("no end marker: truncated or not finished") }
    let header = u64(8)
    let manifestAt = u64(size - 16)
    guard header >= 8, header <= size, 16 + header <= manifestAt, manifestAt <= size - 16 else {
      throw corrupt("header block (\(header) bytes) or manifest offset (\(manifestAt)) outside the file")
    }
    guard u64(16) + 8 == header else { throw corrupt("header block length \(header) does not match its safetensors length prefix") }
    headerBytes = header
    let json: JSONObject
    do {
      guard let o = try JSONParser.parse(Array(raw[manifestAt..<(size - 16)])).objectValue else { throw corrupt("manifest is not a JSON object") }
      json = o
    } catch let e as ArchiveError { throw e } catch { throw corrupt("manifest: \(error)") }
    guard json["format"]?.stringValue == ShardArchive.format else { throw corrupt("format \(json["format"]?.stringValue ?? "?"), expected \(ShardArchive.format)") }
    guard let fileBytes = json["file_bytes"]?.intValue, json["header_bytes"]?.intValue == header, let digest = json["sha256"]?.stringValue,
      let list = json["tensors"]?.arrayValue, fileBytes >= header
    else { throw corrupt("manifest lacks file_bytes, header_bytes, sha256 or tensors") }
    self.fileBytes = fileBytes
    sha256 = digest
    var tensors: [Tensor] = []
    var expected = 0
    for v in list {
      guard let o = v.objectValue, let n = o["name"]?.stringValue, let d = o["dtype"]?.stringValue.flatMap(DType.init(rawValue:)),
        let b = o["begin"]?.intValue, let e = o["end"]?.intValue, let cs = o["chunks"]?.arrayValue
      else { throw corrupt("a tensor entry lacks name, dtype, begin, end or chunks") }
      guard b == expected, e >= b else { throw corrupt("data [\(b), \(e)) does not follow the previous tensor (at \(expected))", n) }
      expected = e
      var chunks: [Chunk] = []
      var at = 0
      for cv in cs {
        guard let c = cv.objectValue, let cb = c["begin"]?.intValue, let ce = c["end"]?.intValue, let rows = c["rows"]?.intValue,
          let cols = c["columns"]?.intValue, let enc = c["encoding"]?.stringValue.flatMap(ShardArchive.Encoding.init(rawValue:)),
          let fr = c["frames"]?.arrayValue, let sh = c["sha256"]?.stringValue
        else { throw corrupt("a chunk entry is incomplete", n) }
        guard cb == at, ce > cb || (ce == cb && b == e), rows >= 0, cols >= 0, rows * cols * (d.byteSize ?? 0) == (cols > 0 ? ce - cb : 0) else {
          throw corrupt("chunk [\(cb), \(ce)) with \(rows) × \(cols) does not fit", n)
        }
        var frames: [Range<Int>] = []
        for f in fr {
          guard let p = f.arrayValue?.compactMap(\.intValue), p.count == 2, p[0] >= 16 + header, p[1] >= 0, p[0] + p[1] <= manifestAt else {
            throw corrupt("a frame lies outside the archive's data (truncated?)", n)
          }
          frames.append(p[0]..<(p[0] + p[1]))
        }
        chunks.append(Chunk(begin: cb, end: ce, rows: rows, columns: cols, encoding: enc, frames: frames, sha256: sh))
        at = ce
      }
      guard at == e - b else { throw corrupt("chunks cover \(at) of \(e - b) bytes", n) }
      tensors.append(Tensor(name: n, dtype: d, begin: b, end: e, chunks: chunks))
    }
    guard header + expected == fileBytes else { throw corrupt("tensors cover \(expected) data bytes, the shard has \(fileBytes - header)") }
    self.tensors = tensors
  }
}

extension OpenArchive {
  /// Decodes chunk `c` of tensor `t` into `d` (exactly its bytes) and checks
  /// its SHA-256; `raw` is the whole archive.
  func restore(_ t: Tensor, _ c: Chunk, from raw: UnsafeRawBufferPointer, into d: UnsafeMutableRawBufferPointer) throws(ArchiveError) {
    let frames = c.frames.map { UnsafeRawBufferPointer(rebasing: raw[$0]) }
    do {
      try ChunkCodec.decode(c.encoding, frames: frames, dtype: t.dtype, rows: c.rows, columns: c.columns, into: d)
    } catch {
      let what: String
      switch error {
      case .zstd(let z): what = "\(z)"
      case .layout(let m): what = m
      }
      throw ArchiveError("corrupt-archive", file: name, tensor: t.name, "bytes [\(c.begin), \(c.end)): \(what)")
    }
    let got = ShardArchive.sha256(UnsafeRawBufferPointer(d))
    guard got == c.sha256 else {
      throw ArchiveError("checksum-mismatch", file: name, tensor: t.name, "bytes [\(c.begin), \(c.end)) restore to SHA-256 \(got), the manifest says \(c.sha256)")
    }
  }
}

extension ShardArchive {
  /// Restores the shard from the archive at `input` into `output` (a
  /// temporary name, renamed when complete), verifying every chunk's SHA-256.
  public static func decompress(_ input: String, to output: String, jobs: Int) throws(ArchiveError) -> ArchiveResult {
    let a = try OpenArchive(input)
    let temporary = FileSystem.temporaryPath(for: output)
    unlink(temporary)
    // In order, through a ring of buffers another thread writes with O_DIRECT:
    // the kernel copies nothing into the page cache, and writing overlaps decoding.
    let sink: PipelinedSink
    do { sink = try PipelinedSink(path: temporary, direct: true, hashing: false) } catch {
      throw ArchiveError("write-failed", file: output, "\(error)")
    }
    var ok = false
    defer { if !ok { unlink(temporary) } }
    func put(_ bytes: UnsafeRawBufferPointer) throws(ArchiveError) {
      do { try sink.append(bytes) } catch { throw ArchiveError("write-failed", file: output, "\(error)") }
    }
    let raw = a.mapping.withBytes(0..<a.mapping.count) { $0 }
    try put(UnsafeRawBufferPointer(rebasing: raw[16..<(16 + a.headerBytes)]))
    var work: [(tensor: Int, chunk: Int)] = []
    for (i, t) in a.tensors.enumerated() { for k in t.chunks.indices { work.append((i, k)) } }
    let window = max(1, jobs) * 2
    var next = 0
    while next < work.count {
      let batch = Array(work[next..<min(work.count, next + window)])
      let out = Mutex([Result<[UInt8], ArchiveError>?](repeating: nil, count: batch.count))
      let archive = a
      nonisolated(unsafe) let bytes = raw
      DispatchQueue.concurrentPerform(iterations: batch.count) { j in
        let t = archive.tensors[batch[j].tensor]
        let c = t.chunks[batch[j].chunk]
        // Every encoding writes every byte of the chunk.
        var buffer = [UInt8](unsafeUninitializedCapacity: c.end - c.begin) { _, n in n = c.end - c.begin }
        let restored: Result<Void, ArchiveError> = buffer.withUnsafeMutableBytes { d in
          Result { () throws(ArchiveError) in try archive.restore(t, c, from: bytes, into: d) }
        }
        let r = restored.map { buffer }
        out.withLock { $0[j] = r }
      }
      let results = out.withLock { $0 }
      for j in batch.indices {
        switch results[j]! {
        case .failure(let e): throw e
        case .success(let b): try withBytes(of: b) { (p) throws(ArchiveError) in try put(p) }
        }
      }
      // The frames are read: give their pages back, so memory stays at a window.
      let used = batch.flatMap { a.tensors[$0.tensor].chunks[$0.chunk].frames }
      if let lo = used.map(\.lowerBound).min(), let hi = used.map(\.upperBound).max() { a.mapping.release(lo..<hi) }
      next += batch.count
    }
    guard sink.count == a.fileBytes else { throw ArchiveError("corrupt-archive", file: a.name, "restored \(sink.count) bytes, the manifest says \(a.fileBytes)") }
    do { try sink.finish() } catch { throw ArchiveError("write-failed", file: output, "\(error)") }
    do { try FileSystem.commit(temporary, to: output) } catch { throw ArchiveError("write-failed", file: output, "\(error)") }
    ok = true
    return ArchiveResult(
      file: FileSystem.split(output).name, originalBytes: a.fileBytes, archiveBytes: a.mapping.count,
      gridElements: 0, sha256: a.sha256)
  }
}
