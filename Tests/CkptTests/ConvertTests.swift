import Foundation
import SafeTensors
import StrictJSON
import Testing
import TestSupport
import Verification

/// `ckpt convert` end to end on the bundled fixture, through the built binary.
@Suite("ckpt convert")
struct ConvertTests {
  static let kimi = TestPaths.fixture("kimi-k2-tiny")

  static func convert(_ to: String, _ out: String, _ extra: [String] = []) throws -> CommandResult {
    try runCkpt(["convert", kimi, out, "--to", to] + extra)
  }

  static func json(_ path: String) throws -> JSONObject {
    try #require(JSONParser.parse(Array(FileManager.default.contents(atPath: path)!)).objectValue)
  }

  /// SHA-256 of every tensor's bytes in every output shard.
  static func tensorDigests(_ dir: String) throws -> [String: (dtype: DType, shape: [Int], sha256: String)] {
    var out: [String: (DType, [Int], String)] = [:]
    for name in try FileManager.default.contentsOfDirectory(atPath: dir) where name.hasSuffix(".safetensors") {
      let f = try SafeTensorsFile(path: dir + "/" + name)
      for t in f.tensors {
        out[t.name] = (t.dtype, t.shape, f.mapping.withBytes(f.fileRange(of: t)) { Hashing.sha256($0) })
      }
    }
    return out
  }

  @Test("--to bf16 equals compressed-tensors' own dequantizer bit for bit, and the output validates")
  func bf16MatchesReference() throws {
    let tmp = TemporaryDirectory("convert-bf16")
    defer { tmp.remove() }
    let out = tmp.path + "/out"
    let r = try Self.convert("bf16", out, ["--json"])
    #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
    let reference = try #require(try Self.json(TestPaths.fixture("convert/kimi-k2-tiny-dequantized.json"))["weights"]?.objectValue)
    let digests = try Self.tensorDigests(out)
    #expect(reference.count == 24)
    for (name, value) in reference.members {
      let got = try #require(digests[name], "\(name) missing")
      #expect(got.dtype == .bf16)
      #expect(got.sha256 == value["bf16_sha256"]?.stringValue, "\(name)")
    }
    // No compressed-tensors part is left; everything else is copied byte for byte.
    #expect(!digests.keys.contains { $0.hasSuffix(".weight_packed") || $0.hasSuffix(".weight_scale") || $0.hasSuffix(".weight_shape") })
    let input = try Self.tensorDigests(Self.kimi)
    for (name, d) in input where !name.contains(".experts.") {
      #expect(digests[name]?.sha256 == d.sha256, "\(name) not copied byte for byte")
    }
    // Report: every converted tensor is lossy in BF16, with error figures.
    let report = try #require(try JSONParser.parse(Array(r.stdout.utf8)).objectValue)
    #expect(report["summary"]?["lossy"]?.intValue == 24)
    // Config and index.
    let config = try Self.json(out + "/config.json")
    #expect(config["quantization_config"] == nil)
    #expect(config["torch_dtype"]?.stringValue == "bfloat16")
    let index = try Self.json(out + "/model.safetensors.index.json")
    let map = try #require(index["weight_map"]?.objectValue)
    #expect(map.count == digests.count)
    let v = try runCkpt(["validate", out, "--data", "--checksums", out + "/checksums.sha256"])
    #expect(v.status == 0, "\(v.stdout)")
    for file in ["tokenizer_config.json", "chat_template.jinja", "generation_config.json", "LICENSE", "tokenization_kimi.py"] {
      #expect(FileManager.default.contents(atPath: out + "/" + file) == FileManager.default.contents(atPath: Self.kimi + "/" + file), "\(file)")
    }
  }

  @Test("fp16 and fp32 are exact on the fixture; --require-exact refuses bf16 before writing and names them")
  func requireExact() throws {
    let tmp = TemporaryDirectory("convert-exact")
    defer { tmp.remove() }
    let bad = try Self.convert("bf16", tmp.path + "/bf16", ["--require-exact"])
    #expect(bad.status == 1)
    #expect(bad.stderr.contains("exact targets for this checkpoint: fp16, fp32"), "\(bad.stderr)")
    #expect(!FileManager.default.fileExists(atPath: tmp.path + "/bf16"))
    for t in ["fp16", "fp32"] {
      let r = try Self.convert(t, tmp.path + "/" + t, ["--require-exact", "--json"])
      #expect(r.status == 0, "\(r.stderr)")
      let report = try #require(try JSONParser.parse(Array(r.stdout.utf8)).objectValue)
      #expect(report["summary"]?["lossy"]?.intValue == 0)
    }
    // FP32 holds the exact products (BF16 holds their rounding).
    let f32 = try Self.tensorDigests(tmp.path + "/fp32")
    #expect(f32["model.layers.1.mlp.experts.0.up_proj.weight"]?.dtype == .f32)
  }

  @Test("--to fp8-block writes DeepSeek-V3 FP8: F8_E4M3 weights, F32 weight_scale_inv, fp8 config")
  func fp8Block() throws {
    let tmp = TemporaryDirectory("convert-fp8")
    defer { tmp.remove() }
    let out = tmp.path + "/out"
    let r = try Self.convert("fp8-block", out)
    #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
    let d = try Self.tensorDigests(out)
    let expert = try #require(d["model.layers.1.mlp.experts.0.gate_proj.weight"])
    #expect(expert.dtype == .f8E4M3 && expert.shape == [96, 256])
    let scale = try #require(d["model.layers.1.mlp.experts.0.gate_proj.weight_scale_inv"])
    #expect(scale.dtype == .f32 && scale.shape == [1, 2])
    // BF16 Linears become FP8 too (DeepSeek-V3 layout); lm_head, router, norms, embeddings do not.
    #expect(d["model.layers.0.self_attn.q_a_proj.weight"]?.dtype == .f8E4M3)
    #expect(d["model.layers.0.self_attn.q_a_proj.weight_scale_inv"] != nil)
    #expect(d["lm_head.weight"]?.dtype == .bf16)
    #expect(d["model.embed_tokens.weight"]?.dtype == .bf16)
    #expect(d["model.layers.1.mlp.gate.weight"]?.dtype == .bf16)
    let config = try Self.json(out + "/config.json")
    let q = try #require(config["quantization_config"]?.objectValue)
    #expect(q["quant_method"]?.stringValue == "fp8" && q["fmt"]?.stringValue == "e4m3")
    #expect(q["activation_scheme"]?.stringValue == "dynamic")
    #expect(q["weight_block_size"]?.arrayValue?.compactMap(\.intValue) == [128, 128])
    let v = try runCkpt(["validate", out, "--data"])
    #expect(v.status == 0, "\(v.stdout)")
  }

  @Test("Output bytes do not depend on --jobs; a rerun skips verified shards and redoes a damaged one")
  func jobsAndResume() throws {
    let tmp = TemporaryDirectory("convert-resume")
    defer { tmp.remove() }
    let a = tmp.path + "/a"
    let b = tmp.path + "/b"
    #expect(try Self.convert("fp8-block", a, ["--jobs", "1"]).status == 0)
    #expect(try Self.convert("fp8-block", b, ["--jobs", "3"]).status == 0)
    let shard = "model-00002-of-000003.safetensors"
    let original = FileManager.default.contents(atPath: a + "/" + shard)
    #expect(original == FileManager.default.contents(atPath: b + "/" + shard))
    // Rerun: nothing to do.
    let again = try Self.convert("fp8-block", a, ["--resume", "--json"])
    #expect(again.status == 0, "\(again.stderr)")
    let shards = try #require(try JSONParser.parse(Array(again.stdout.utf8))["shards"]?.arrayValue)
    #expect(shards.allSatisfy { $0["skipped"]?.boolValue == true })
    // Damage one output (as a crash of another tool might): only it is redone, and comes back identical.
    let handle = try #require(FileHandle(forWritingAtPath: a + "/" + shard))
    try handle.truncate(atOffset: 1000)
    try handle.close()
    let fixed = try Self.convert("fp8-block", a, ["--json"])
    #expect(fixed.status == 0, "\(fixed.stderr)")
    let list = try #require(try JSONParser.parse(Array(fixed.stdout.utf8))["shards"]?.arrayValue)
    #expect(list.filter { $0["skipped"]?.boolValue == false }.compactMap { $0["name"]?.stringValue } == [shard])
    #expect(FileManager.default.contents(atPath: a + "/" + shard) == original)
    // A different conversion into the same OUT is refused.
    let other = try Self.convert("bf16", a)
    #expect(other.status == 1 && other.stderr.contains("journal-mismatch"), "\(other.stderr)")
  }

  @Test("Refusals: OUT inside IN, a non-empty OUT without journal, an invalid input, a bad --to")
  func refusals() throws {
    let tmp = TemporaryDirectory("convert-refuse")
    defer { tmp.remove() }
    let inside = try Self.convert("bf16", Self.kimi + "/converted")
    #expect(inside.status == 1 && inside.stderr.contains("output-inside-input"), "\(inside.stderr)")
    #expect(!FileManager.default.fileExists(atPath: Self.kimi + "/converted"))
    try FileManager.default.createDirectory(atPath: tmp.path + "/full", withIntermediateDirectories: true)
    _ = FileManager.default.createFile(atPath: tmp.path + "/full/keep.txt", contents: Data("x".utf8))
    let full = try Self.convert("bf16", tmp.path + "/full")
    #expect(full.status == 1 && full.stderr.contains("output-not-empty"), "\(full.stderr)")
    #expect(FileManager.default.contents(atPath: tmp.path + "/full/keep.txt") == Data("x".utf8))
    let invalid = ManifestEntry.folders.first { $0.code == "missing-scale" } ?? ManifestEntry.folders.first { $0.code != "valid" }!
    let r = try runCkpt(["convert", TestPaths.fixture(invalid.path), tmp.path + "/bad", "--to", "bf16"])
    #expect(r.status == 1 && r.stderr.contains("does not pass validation"), "\(r.stderr)")
    let usage = try Self.convert("int8", tmp.path + "/x")
    #expect(usage.status == 64)
    let dry = try Self.convert("fp32", tmp.path + "/dry", ["--dry-run"])
    #expect(dry.status == 0 && dry.stdout.contains("nothing written"))
    #expect(!FileManager.default.fileExists(atPath: tmp.path + "/dry"))
  }
}
