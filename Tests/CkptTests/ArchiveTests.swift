import Archive
import Foundation
import SafeTensors
import StrictJSON
import Testing
import TestSupport
import Verification

/// `ckpt compress` / `ckpt decompress`: byte-identical round trips on every
/// fixture, the INT4 grid path on a BF16 conversion, and damaged archives.
@Suite("ckpt compress and decompress")
struct ArchiveTests {
  static func digests(_ dir: String) throws -> [String: String] {
    var out: [String: String] = [:]
    for n in try FileManager.default.contentsOfDirectory(atPath: dir) where !n.hasPrefix(".") {
      out[n] = try Hashing.sha256(file: dir + "/" + n)
    }
    return out
  }

  @Test("Checkpoint folders round-trip byte for byte; other files are copied", arguments: ["kimi-k2-tiny", "kimi-k2-tiny-minmax", "kimi-k25-tiny", "malformed/checkpoints/valid-micro"])
  func folders(fixture: String) throws {
    let tmp = TemporaryDirectory("archive")
    defer { tmp.remove() }
    let src = TestPaths.fixture(fixture)
    let c = try runCkpt(["compress", src, tmp.file("z"), "--json"])
    #expect(c.status == 0, "\(c.stderr)")
    let names = try FileManager.default.contentsOfDirectory(atPath: tmp.file("z"))
    #expect(!names.contains { $0.hasSuffix(".safetensors") } && names.contains { $0.hasSuffix(".safetensors.zst") })
    let d = try runCkpt(["decompress", tmp.file("z"), tmp.file("out")])
    #expect(d.status == 0, "\(d.stderr)")
    #expect(try Self.digests(tmp.file("out")) == Self.digests(src))
  }

  @Test("Single files round-trip: every dtype, empty and scalar tensors, F32 planes, off-grid BF16", arguments: [
    "reference/all-dtypes.safetensors", "reference/extra-dtypes.safetensors", "reference/scalar-and-empty.safetensors",
    "reference/no-tensors.safetensors", "reference/escaped-names.safetensors", "requantize/offgrid.safetensors",
    "diff/activations.safetensors",
  ])
  func files(fixture: String) throws {
    let tmp = TemporaryDirectory("archive-file")
    defer { tmp.remove() }
    let src = TestPaths.fixture(fixture)
    let c = try runCkpt(["compress", src, tmp.file("a.safetensors.zst")])
    #expect(c.status == 0, "\(c.stderr)")
    let d = try runCkpt(["decompress", tmp.file("a.safetensors.zst"), tmp.file("a.safetensors")])
    #expect(d.status == 0, "\(d.stderr)")
    #expect(try Hashing.sha256(file: tmp.file("a.safetensors")) == Hashing.sha256(file: src))
  }

  /// The fixture converted to BF16 (its experts lie on the INT4 grid) and compressed.
  static func bf16Archive(_ tmp: TemporaryDirectory) throws -> JSONObject {
    let c = try runCkpt(["convert", TestPaths.fixture("kimi-k2-tiny"), tmp.file("bf16"), "--to", "bf16", "--json"])
    #expect(c.status == 0, "\(c.stderr)")
    let z = try runCkpt(["compress", tmp.file("bf16"), tmp.file("z"), "--json"])
    #expect(z.status == 0, "\(z.stderr)")
    let json = try JSONParser.parse(Array(z.stdout.utf8)).objectValue
    return try #require(json)
  }

  @Test("A BF16 conversion of INT4 stores its experts as codes and scales and restores them exactly")
  func grid() throws {
    let tmp = TemporaryDirectory("archive-grid")
    defer { tmp.remove() }
    let json = try Self.bf16Archive(tmp)
    let shards = json["shards"]?.arrayValue?.compactMap(\.objectValue) ?? []
    // 8 expert matrices of 96 × 256 per MoE shard, all on the grid.
    #expect(shards.map { $0["grid_elements"]?.intValue ?? -1 }.sorted() == [0, 294_912, 294_912])
    let expertShard = try #require(shards.first { $0["grid_elements"]?.intValue == 294_912 })
    let ratio = Double(expertShard["original_bytes"]!.intValue!) / Double(expertShard["archive_bytes"]!.intValue!)
    #expect(ratio > 1.5, "\(ratio)")
    let d = try runCkpt(["decompress", tmp.file("z"), tmp.file("out")])
    #expect(d.status == 0, "\(d.stderr)")
    #expect(try Self.digests(tmp.file("out")) == Self.digests(tmp.file("bf16")))
  }

  /// The manifest of an archive file, and where it starts.
  static func manifest(_ path: String) throws -> (JSONObject, Int) {
    let bytes = try readFile(path)
    let at = bytes[(bytes.count - 16)..<(bytes.count - 8)].withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
    let manifest = try JSONParser.parse(Array(bytes[at..<(bytes.count - 16)])).objectValue
    return (try #require(manifest), at)
  }

  /// The manifest entry of the first tensor whose name matches, and its first chunk's first frame (offset, length).
  static func firstFrame(_ path: String, _ matches: (String) -> Bool) throws -> (tensor: JSONObject, name: String, chunk: JSONObject, frame: [Int]) {
    let (manifest, _) = try manifest(path)
    let tensor = try #require(manifest["tensors"]?.arrayValue?.compactMap(\.objectValue).first { $0["name"]?.stringValue.map(matches) == true })
    let chunk = try #require(tensor["chunks"]?.arrayValue?.first?.objectValue)
    let values = chunk["frames"]?.arrayValue?.first?.arrayValue?.compactMap { $0.intValue }
    return (tensor, try #require(tensor["name"]?.stringValue), chunk, try #require(values))
  }

  @Test("Damaged archives: truncated, a flipped byte in a frame, a wrong checksum; exit 1 naming shard and tensor, nothing left behind")
  func damaged() throws {
    let tmp = TemporaryDirectory("archive-damage")
    defer { tmp.remove() }
    _ = try Self.bf16Archive(tmp)
    let shard = "model-00002-of-000003.safetensors"
    let path = tmp.file("z/" + shard + ".zst")
    let original = try readFile(path)
    let (_, manifestAt) = try Self.manifest(path)
    let (_, name, chunk, frame) = try Self.firstFrame(path) { $0.contains("experts.1.up_proj") }

    func expectFailure(_ bytes: [UInt8], _ needles: [String]) throws {
      try writeFile(path, bytes)
      let r = try runCkpt(["decompress", tmp.file("z"), tmp.file("out-\(needles[0])")])
      #expect(r.status == 1)
      for n in needles { #expect(r.stderr.contains(n), "\(n) not in: \(r.stderr)") }
      let left = (try? FileManager.default.contentsOfDirectory(atPath: tmp.file("out-\(needles[0])"))) ?? []
      #expect(!left.contains { $0.hasPrefix(".") || $0 == shard }, "\(left)")
    }
    // Truncated: the end marker is gone.
    try expectFailure(Array(original.prefix(original.count - 100)), ["corrupt-archive", shard, "truncated"])
    // A flipped byte inside the first frame of one tensor.
    var flipped = original
    flipped[frame[0] + frame[1] / 2] ^= 0x40
    try expectFailure(flipped, ["corrupt-archive", shard, name])
    // A wrong chunk checksum in the manifest (same length, so offsets hold).
    let digest = try #require(chunk["sha256"]?.stringValue)
    let wrong = String(digest.prefix(63)) + (digest.last == "0" ? "1" : "0")
    var text = Array(original[manifestAt..<(original.count - 16)])
    let at = try #require(text.indices.first { text[$0...].starts(with: Array(digest.utf8)) })
    text.replaceSubrange(at..<(at + 64), with: Array(wrong.utf8))
    try expectFailure(Array(original[..<manifestAt]) + text + Array(original.suffix(16)), ["checksum-mismatch", shard, name])
    try writeFile(path, original)
    #expect(try runCkpt(["decompress", tmp.file("z"), tmp.file("out-ok")]).status == 0)

    // The readers that open archives in place fail the same way, naming shard and tensor.
    try writeFile(path, flipped)
    let v = try runCkpt(["validate", tmp.file("z"), "--data"])
    #expect(v.status == 1 && v.stdout.contains(shard) && v.stdout.contains(name) && v.stdout.contains("corrupt-archive"), "\(v.stdout)")
    let c = try runCkpt(["convert", tmp.file("z"), tmp.file("conv"), "--to", "fp16"])
    #expect(c.status == 1 && c.stderr.contains(shard) && c.stderr.contains(name), "\(c.stderr)")
    #expect(!FileManager.default.fileExists(atPath: tmp.file("conv/" + shard)))
    let d = try runCkpt(["diff", tmp.file("bf16"), tmp.file("z")])
    #expect(d.status == 1 && d.stderr.contains(shard) && d.stderr.contains(name), "\(d.stderr)")
    try writeFile(path, Array(original.prefix(original.count - 100)))
    let t = try runCkpt(["validate", tmp.file("z")])
    #expect(t.status == 1 && t.stdout.contains(shard) && t.stdout.contains("truncated"), "\(t.stdout)")
  }

  @Test("A damaged weight_shape chunk fails a header-only validate as corrupt-archive, naming the tensor (not as a bad shape)")
  func damagedWeightShape() throws {
    let tmp = TemporaryDirectory("archive-shape")
    defer { tmp.remove() }
    #expect(try runCkpt(["compress", TestPaths.fixture("kimi-k2-tiny"), tmp.file("z")]).status == 0)
    let shard = "model-00002-of-000003.safetensors"
    let path = tmp.file("z/" + shard + ".zst")
    var bytes = try readFile(path)
    let (_, name, _, frame) = try Self.firstFrame(path) { $0.hasSuffix(".weight_shape") }
    bytes[frame[0] + frame[1] - 1] ^= 0x40  // inside the frame's checksum
    try writeFile(path, bytes)
    let v = try runCkpt(["validate", tmp.file("z"), "--json"])
    #expect(v.status == 1)
    let problems = try JSONParser.parse(Array(v.stdout.utf8)).objectValue?["problems"]?.arrayValue?.compactMap(\.objectValue) ?? []
    #expect(problems.contains { $0["code"]?.stringValue == "corrupt-archive" && $0["tensor"]?.stringValue == name && $0["file"]?.stringValue == shard }, "\(v.stdout)")
    #expect(!problems.contains { $0["code"]?.stringValue == "bad-weight-shape" }, "\(v.stdout)")
  }

  @Test("inspect, validate, convert, diff and verify read .safetensors.zst shards in place, through the index or alone")
  func transparent() throws {
    let tmp = TemporaryDirectory("archive-read")
    defer { tmp.remove() }
    let src = TestPaths.fixture("kimi-k2-tiny")
    #expect(try runCkpt(["compress", src, tmp.file("int4z")]).status == 0)
    _ = try Self.bf16Archive(tmp)  // tmp/bf16 (from the original) and tmp/z (its archive)

    // inspect: the same report as for the original, but for the path.
    func inspect(_ p: String) throws -> JSONObject {
      let r = try runCkpt(["inspect", p, "--json"])
      #expect(r.status == 0, "\(r.stderr)")
      var o = try #require(try JSONParser.parse(Array(r.stdout.utf8)).objectValue)
      o["path"] = nil
      return o
    }
    #expect(try inspect(tmp.file("int4z")) == inspect(src))

    // validate: data scan and the original's checksums (of the restored shards).
    let v = try runCkpt(["validate", tmp.file("int4z"), "--data", "--checksums", src + "/checksums.sha256", "--json"])
    #expect(v.status == 0, "\(v.stdout)")

    // convert: the same bytes as converting the original.
    for target in ["bf16", "fp8-block"] {
      #expect(try runCkpt(["convert", src, tmp.file("from-plain-\(target)"), "--to", target]).status == 0)
      let r = try runCkpt(["convert", tmp.file("int4z"), tmp.file("from-zst-\(target)"), "--to", target])
      #expect(r.status == 0, "\(r.stderr)")
      #expect(try Self.digests(tmp.file("from-zst-\(target)")) == Self.digests(tmp.file("from-plain-\(target)")))
    }

    // requantize: the BF16 archive gives the INT4 that the plain BF16 folder gives.
    #expect(try runCkpt(["requantize", tmp.file("bf16"), tmp.file("rq-plain"), "--to", "int4"]).status == 0)
    let rq = try runCkpt(["requantize", tmp.file("z"), tmp.file("rq-zst"), "--to", "int4"])
    #expect(rq.status == 0, "\(rq.stderr)")
    #expect(try Self.digests(tmp.file("rq-zst")) == Self.digests(tmp.file("rq-plain")))

    // diff: an archive against its original is identical everywhere; verify runs on two archives.
    let d = try runCkpt(["diff", src, tmp.file("int4z"), "--json", "-"])
    #expect(d.status == 0, "\(d.stderr)")
    let summary = try JSONParser.parse(Array(d.stdout.utf8)).objectValue?["summary"]?.objectValue
    #expect(summary?["items"]?.intValue == 67)
    #expect(summary?["metrics"]?.objectValue?["identical_fraction"]?.doubleValue == 1)
    let f = try runCkpt(["verify", tmp.file("int4z"), tmp.file("z"), "--samples", "4"])
    #expect(f.status == 0, "\(f.stderr)")

    // One archived shard alone, against the plain shard.
    let shard = "model-00002-of-000003.safetensors"
    let one = try runCkpt(["diff", tmp.file("z/" + shard + ".zst"), tmp.file("bf16/" + shard), "--json", "-"])
    #expect(one.status == 0, "\(one.stderr)")
    let oneSummary = try JSONParser.parse(Array(one.stdout.utf8)).objectValue?["summary"]?.objectValue
    #expect(oneSummary?["metrics"]?.objectValue?["identical_fraction"]?.doubleValue == 1)
    #expect(try runCkpt(["inspect", tmp.file("z/" + shard + ".zst")]).status == 0)
    #expect(try runCkpt(["validate", tmp.file("z/" + shard + ".zst"), "--data"]).status == 0)

    // A folder holding both a shard and its archive is ambiguous.
    try FileManager.default.copyItem(atPath: src + "/" + shard, toPath: tmp.file("int4z/" + shard))
    let both = try runCkpt(["validate", tmp.file("int4z")])
    #expect(both.status == 1 && both.stdout.contains("ambiguous-shard"), "\(both.stdout)")
  }

  @Test("Reading one tensor decodes only its chunks: a damaged chunk elsewhere does not stop it, and released chunks decode again")
  func selective() throws {
    let tmp = TemporaryDirectory("archive-selective")
    defer { tmp.remove() }
    _ = try Self.bf16Archive(tmp)
    ShardArchive.registerReader()
    let shard = "model-00002-of-000003.safetensors"
    let path = tmp.file("z/" + shard + ".zst")
    var bytes = try readFile(path)
    let (manifest, _) = try Self.manifest(path)
    let entries = manifest["tensors"]?.arrayValue?.compactMap(\.objectValue) ?? []
    let (damaged, _, _, frame) = try Self.firstFrame(path) { $0.contains("experts.1.up_proj") }
    bytes[frame[0] + frame[1] / 2] ^= 0x40
    try writeFile(path, bytes)

    let file = try SafeTensorsFile(path: path)
    let plain = try SafeTensorsFile(path: tmp.file("bf16/" + shard))
    #expect(file.mapping.isStored && file.mapping.count == plain.mapping.count)
    #expect(file.header.tensors == plain.header.tensors)
    let other = try file.info(try #require(entries.first { $0["name"]?.stringValue?.contains("experts.2.down_proj") == true }?["name"]?.stringValue))
    let range = file.fileRange(of: other)
    for _ in 0..<2 {  // the second time after a release, which drops the decoded pages
      try file.mapping.prepare(range)
      #expect(file.mapping.withBytes(range) { Array($0) } == plain.mapping.withBytes(range) { Array($0) })
      file.mapping.release(range)
    }
    let bad = try file.info(try #require(damaged["name"]?.stringValue))
    #expect {
      try file.mapping.prepare(file.fileRange(of: bad))
    } throws: { error in
      guard let e = error as? SafeTensorsError else { return false }
      return e.code == "corrupt-archive" && e.tensor == bad.name && e.file == path
    }
  }

  @Test("Refusals: OUT inside IN, an invalid input, usage errors")
  func refusals() throws {
    let src = TestPaths.fixture("kimi-k2-tiny")
    let inside = try runCkpt(["compress", src, src + "/z"])
    #expect(inside.status == 1 && inside.stderr.contains("output-inside-input"))
    let bad = try runCkpt(["compress", TestPaths.fixture("malformed/checkpoints/bad-scale-shape"), "/tmp/ckpt-never"])
    #expect(bad.status == 1 && bad.stderr.contains("does not pass validation"))
    #expect(try runCkpt(["compress", src]).status == 64)
    #expect(try runCkpt(["compress", src, "/tmp/x", "--level", "40"]).status == 64)
  }
}
