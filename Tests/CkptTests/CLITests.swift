import Foundation
import StrictJSON
import Testing
import TestSupport

@Suite("ckpt command line")
struct CLITests {
  static let kimi = TestPaths.fixture("kimi-k2-tiny")

  @Test("validate exits 0 on the fixture and prints a summary")
  func validateValid() throws {
    let r = try runCkpt(["validate", Self.kimi, "--data", "--checksums", Self.kimi + "/checksums.sha256"])
    #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
    #expect(r.stdout.contains("valid: "))
  }

  @Test("validate exits 1 and names file and tensor for every malformed checkpoint", arguments: ManifestEntry.folders.filter { $0.code != "valid" })
  func validateInvalid(_ entry: ManifestEntry) throws {
    var args = ["validate", TestPaths.fixture(entry.path)]
    if entry.data { args.append("--data") }
    if let c = entry.checksums { args += ["--checksums", TestPaths.fixture(entry.path + "/" + c)] }
    let r = try runCkpt(args)
    #expect(r.status == 1)
    let lines = r.stdout.split(separator: "\n").filter { $0.contains("[\(entry.code)]") }
    #expect(!lines.isEmpty, "\(r.stdout)")
    if let file = entry.file { #expect(lines.contains { $0.contains(file) }, "\(lines)") }
    if let tensor = entry.tensor { #expect(lines.contains { $0.contains(tensor) }, "\(lines)") }
  }

  @Test("validate exits 1 for every malformed single file, naming it", arguments: ManifestEntry.files.filter { $0.code != "valid" })
  func validateInvalidFile(_ entry: ManifestEntry) throws {
    let r = try runCkpt(["validate", TestPaths.fixture(entry.path)])
    #expect(r.status == 1)
    let line = r.stdout.split(separator: "\n").first { $0.contains("[\(entry.code)]") }
    #expect(line?.contains(entry.file ?? "") == true, "\(r.stdout)")
    if let tensor = entry.tensor { #expect(line?.contains(tensor) == true, "\(r.stdout)") }
  }

  @Test("validate --json lists every problem with file, tensor and code")
  func validateJSON() throws {
    let r = try runCkpt(["validate", TestPaths.fixture("malformed/checkpoints/missing-weight-scale"), "--json"])
    #expect(r.status == 1)
    let root = try JSONParser.parse(r.stdout)
    #expect(root["valid"]?.boolValue == false)
    let problems = try #require(root["problems"]?.arrayValue)
    #expect(problems.contains { $0["code"]?.stringValue == "missing-weight-scale" && $0["tensor"]?.stringValue == "model.layers.1.mlp.experts.0.gate_proj.weight_scale" && $0["file"]?.stringValue == "model-00002-of-000002.safetensors" })
    #expect(root["summary"]?["tensors"]?.intValue ?? 0 > 0)
  }

  @Test("Usage errors exit 64")
  func usageErrors() throws {
    #expect(try runCkpt(["validate", "/nonexistent/checkpoint"]).status == 64)
    #expect(try runCkpt(["validate", Self.kimi, "--jobs", "0"]).status == 64)
    #expect(try runCkpt(["validate", Self.kimi, "--checksums", "/nonexistent.sha256"]).status == 64)
    #expect(try runCkpt(["validate", Self.kimi, "--no-such-flag"]).status == 64)
    #expect(try runCkpt(["validate"]).status == 64)
  }

  @Test("inspect --json reports architecture, scheme, shards, dtypes and module kinds")
  func inspectJSON() throws {
    let r = try runCkpt(["inspect", Self.kimi, "--json"])
    #expect(r.status == 0, "\(r.stderr)")
    let root = try JSONParser.parse(r.stdout)
    #expect(root["architecture"]?["n_routed_experts"]?.intValue == 4)
    #expect(root["quantization"]?["format"]?.stringValue == "pack-quantized")
    let group = try #require(root["quantization"]?["config_groups"]?.arrayValue?.first)
    #expect(group["num_bits"]?.intValue == 4)
    #expect(group["group_size"]?.intValue == 32)
    #expect(group["symmetric"]?.boolValue == true)
    #expect(root["shards"]?.arrayValue?.count == 3)
    let modules = try #require(root["modules"]?.arrayValue)
    let gate = modules.first { $0["kind"]?.stringValue == "routed-expert-gate" }
    #expect(gate?["quantized"]?.intValue == 8)
    let attention = modules.first { $0["kind"]?.stringValue == "attention" }
    #expect(attention?["quantized"]?.intValue == 0)
    #expect(root["dtypes"]?.arrayValue?.contains { $0["dtype"]?.stringValue == "F32" } == true)
  }

  @Test("inspect prints a readable table")
  func inspectText() throws {
    let r = try runCkpt(["inspect", Self.kimi])
    #expect(r.status == 0)
    #expect(r.stdout.contains("group_0: int4 weights, group size 32, symmetric"))
    #expect(r.stdout.contains("routed-expert-down"))
  }

  @Test("hash writes a sha256sum manifest equal to the fixture's checksums")
  func hashManifest() throws {
    let dir = TemporaryDirectory()
    defer { dir.remove() }
    let out = dir.file("manifest.sha256")
    let r = try runCkpt(["hash", Self.kimi, "-o", out])
    #expect(r.status == 0, "\(r.stderr)")
    #expect(try readFile(out) == readFile(Self.kimi + "/checksums.sha256"))
    let check = try runCkpt(["validate", Self.kimi, "--checksums", out])
    #expect(check.status == 0)
  }

  @Test("hash --tensors gives each tensor's SHA-256 as computed by Python")
  func hashTensors() throws {
    let r = try runCkpt(["hash", Self.kimi, "--tensors"])
    #expect(r.status == 0, "\(r.stderr)")
    let root = try JSONParser.parse(r.stdout)
    let expected = try JSONParser.parse(try readFile(TestPaths.fixture("kimi-k2-tiny.expected.json")))
    let tensors = try #require(expected["tensors"]?.objectValue)
    #expect(root["tensors"]?.objectValue?.count == tensors.count)
    for (name, info) in tensors.members {
      #expect(root["tensors"]?[name]?["sha256"]?.stringValue == info["sha256"]?.stringValue, "\(name)")
    }
  }
}

@Suite("ckpt per-tensor checksums")
struct TensorChecksumTests {
  @Test("A same-size bit flip is caught by hash and the tensor manifest names the tensor")
  func namesFlippedTensor() throws {
    let dir = TemporaryDirectory()
    defer { dir.remove() }
    let root = dir.file("ck")
    try copyTree(TestPaths.fixture("kimi-k2-tiny"), to: root)
    let manifest = dir.file("tensors.json")
    #expect(try runCkpt(["hash", root, "--tensors", "-o", manifest]).status == 0)
    // Flip one bit inside a routed expert's scale in shard 2 (same size, headers still valid).
    let expected = try JSONParser.parse(try readFile(TestPaths.fixture("kimi-k2-tiny.expected.json")))
    let name = "model.layers.1.mlp.experts.2.up_proj.weight_scale"
    let info = try #require(expected["tensors"]?[name])
    let shard = try #require(info["shard"]?.stringValue)
    let begin = try #require(info["data_offsets"]?.arrayValue?.first?.intValue)
    let headerLength = try #require(expected["shards"]?[shard]?["header_length"]?.intValue)
    var bytes = try readFile(root + "/" + shard)
    bytes[8 + headerLength + begin + 3] ^= 0x01
    try writeFile(root + "/" + shard, bytes)
    #expect(try runCkpt(["validate", root]).status == 0)
    let r = try runCkpt(["validate", root, "--checksums", manifest])
    #expect(r.status == 1)
    #expect(r.stdout.contains("[checksum-mismatch]"))
    let line = r.stdout.split(separator: "\n").first { $0.contains("[tensor-checksum-mismatch]") }
    #expect(line?.contains(name) == true, "\(r.stdout)")
    #expect(r.stdout.split(separator: "\n").filter { $0.contains("[tensor-checksum-mismatch]") }.count == 1)
  }
}
