import Checkpoint
import Crypto
import SafeTensors
import StrictJSON

/// SHA-256 digests of shards and tensors, and `sha256sum`-format manifests.
public enum Hashing {
  /// The SHA-256 of the file at `path`, as lowercase hex, read in 8 MiB chunks.
  ///
  /// - Parameter progress: Called with the bytes hashed since the last call.
  /// For an archive (``SafeTensors/VirtualFiles``), the SHA-256 of the shard
  /// it restores, decoding and checking every chunk.
  public static func sha256(file path: String, progress: ((Int) -> Void)? = nil) throws(SafeTensorsError) -> String {
    if VirtualFiles.isStored(path) {
      let m = try MappedFile(path: path)
      var hasher = SHA256()
      var offset = 0
      while offset < m.count {
        let r = offset..<min(m.count, offset + (32 << 20))
        try m.withPreparedBytes(r) { hasher.update(bufferPointer: $0) }
        offset = r.upperBound
        progress?(r.count)
      }
      return hex(hasher.finalize())
    }
    let f = try SystemFile(readingAt: path)
    f.adviseSequential()
    var hasher = SHA256()
    let chunk = 8 << 20
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 64)
    defer { buffer.deallocate() }
    var offset = 0
    while true {
      let n = try f.read(into: buffer, at: offset)
      if n == 0 { break }
      hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[..<n]))
      offset += n
      progress?(n)
    }
    return hex(hasher.finalize())
  }

  /// The SHA-256 of `bytes`, as lowercase hex.
  public static func sha256(_ bytes: UnsafeRawBufferPointer) -> String {
    hex(SHA256.hash(data: bytes))
  }

  /// A digest as lowercase hex.
  public static func hex(_ digest: SHA256.Digest) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(64)
    for b in digest {
      out.append(digits[Int(b >> 4)])
      out.append(digits[Int(b & 0xF)])
    }
    return String(decoding: out, as: UTF8.self)
  }

  /// One line of a `sha256sum`-format file.
  public struct ChecksumEntry: Sendable, Equatable {
    /// The expected digest, lowercase hex.
    public let digest: String
    /// The file name as written (may contain a directory part).
    public let name: String
  }

  /// Parses `sha256sum` output: `<64 hex> <space><space or *><name>` per line.
  ///
  /// Blank lines and lines starting with `#` are skipped.
  /// - Throws: ``CheckpointError`` (`invalid-checksums`) naming the bad line.
  public static func parseChecksums(_ bytes: [UInt8], file: String) throws(CheckpointError) -> [ChecksumEntry] {
    var entries: [ChecksumEntry] = []
    let text = String(decoding: bytes, as: UTF8.self)
    for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let line = raw.hasSuffix("\r") ? raw.dropLast() : raw[...]
      if line.isEmpty || line.hasPrefix("#") { continue }
      let chars = Array(line.utf8)
      let isHex = chars.count > 66 && chars[0..<64].allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) || (0x41...0x46).contains($0) }
      guard isHex, chars[64] == 0x20, chars[65] == 0x20 || chars[65] == UInt8(ascii: "*") else {
        throw CheckpointError("invalid-checksums", file: file, "line \(n + 1) is not \"<sha256 hex>  <file name>\": \(line.prefix(80))")
      }
      entries.append(ChecksumEntry(digest: String(decoding: chars[0..<64], as: UTF8.self).lowercased(), name: String(decoding: chars[66...], as: UTF8.self)))
    }
    return entries
  }

  /// Parses the JSON written by `ckpt hash --tensors`:
  /// `{"shards": {name: digest}, "tensors": {name: {"sha256": digest, …}}}`.
  ///
  /// - Returns: The shard entries and the per-tensor digests.
  /// - Throws: ``CheckpointError`` (`invalid-checksums`).
  public static func parseTensorManifest(_ bytes: [UInt8], file: String) throws(CheckpointError) -> ([ChecksumEntry], [String: String]) {
    func bad(_ why: String) -> CheckpointError { CheckpointError("invalid-checksums", file: file, why) }
    let root: JSONValue
    do { root = try JSONParser.parse(bytes) } catch { throw bad("not valid JSON: \(error)") }
    guard let shards = root["shards"]?.objectValue else { throw bad("missing \"shards\" object") }
    var entries: [ChecksumEntry] = []
    for (name, v) in shards.members {
      guard let d = v.stringValue, d.utf8.count == 64 else { throw bad("shard \"\(name)\" has no 64-digit SHA-256") }
      entries.append(ChecksumEntry(digest: d.lowercased(), name: name))
    }
    var tensors: [String: String] = [:]
    for (name, v) in root["tensors"]?.objectValue?.members ?? [] {
      guard let d = v["sha256"]?.stringValue, d.utf8.count == 64 else { throw bad("tensor \"\(name)\" has no 64-digit SHA-256") }
      tensors[name] = d.lowercased()
    }
    return (entries, tensors)
  }

  /// A `sha256sum`-compatible manifest: `<hex>  <name>` lines.
  public static func manifest(_ digests: [(name: String, digest: String)]) -> String {
    digests.map { "\($0.digest)  \($0.name)\n" }.joined()
  }
}
