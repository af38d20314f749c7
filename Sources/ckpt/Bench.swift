import ArgumentParser
import Checkpoint
import Reports
import SafeTensors
import StrictJSON

#if canImport(Glibc)
  import Glibc
#endif

/// `ckpt bench …`: measurements and synthetic inputs for Docs/PERFORMANCE.md.
struct Bench: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Measure throughput on this machine and make synthetic benchmark inputs.",
    subcommands: [BenchHeader.self, BenchMemcpy.self, BenchKernels.self, MakeK2.self, MakeShard.self])
}

/// Times parsing a synthetic safetensors header with many tensors.
struct BenchHeader: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "header", abstract: "Time parsing and validating a synthetic header with N tensors.")

  @Option(help: "Number of tensors.") var tensors = 100_000
  @Option(help: "Repetitions (the best is reported).") var repeats = 5

  func run() throws {
    var plan: [PlannedTensor] = []
    for i in 0..<tensors {
      plan.append(PlannedTensor(name: "model.layers.\(i / 3456).mlp.experts.\(i % 384).down_proj.weight_packed_\(i)", dtype: .i32, shape: [7168, 256]))
    }
    let sizes = plan.map { $0.byteCount! }
    let header = SafeTensorsWriter.headerBytes(tensors: plan, sizes: sizes, metadata: SafeTensorsWriter.defaultMetadata)
    let prefix = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) }
    let fileSize = 8 + header.count + sizes.reduce(0, +)
    var best = Double.infinity
    for _ in 0..<repeats {
      let t0 = now()
      let (h, problems) = SafeTensorsHeader.validate(prefix: prefix, header: header, fileSize: fileSize)
      let dt = now() - t0
      precondition(h != nil && problems.isEmpty, "synthetic header must validate")
      best = min(best, dt)
    }
    print("header parse+validate: \(Format.grouped(tensors)) tensors, \(Format.bytes(header.count)) of JSON: \(Format.fixed(best * 1000, 1)) ms (\(Format.rate(Double(header.count) / best)))")
  }
}

/// Measures single-threaded memcpy bandwidth, the machine's own ceiling.
struct BenchMemcpy: ParsableCommand {
  static let configuration = CommandConfiguration(commandName: "memcpy", abstract: "Measure memcpy bandwidth.")

  @Option(help: "Buffer size in MiB.") var mib = 256

  func run() throws {
    let n = mib << 20
    let a = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 64)
    let b = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 64)
    defer { a.deallocate(); b.deallocate() }
    memset(a, 1, n)
    memset(b, 2, n)
    var best = Double.infinity
    var check = 0
    for k in 0..<5 {
      // Alternate direction and read the destination, so the copy cannot be elided.
      let (dst, src) = k % 2 == 0 ? (b, a) : (a, b)
      (src + (k * 4099) % n).storeBytes(of: UInt8(truncatingIfNeeded: k), as: UInt8.self)
      let t0 = now()
      memcpy(dst, src, n)
      best = min(best, now() - t0)
      check &+= Int(dst.load(fromByteOffset: (k * 4099) % n, as: UInt8.self))
    }
    print("memcpy: \(Format.rate(Double(n) / best)) (\(mib) MiB buffers, one core; check \(check))")
  }
}

/// Writes a full-scale Kimi K2 Thinking checkpoint as sparse files.
struct MakeK2: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "make-k2",
    abstract: "Write a Kimi-K2-Thinking-shaped checkpoint with real headers, index and config, and sparse (zero) data.",
    discussion: "Shard i holds layer i-2 (shard 1: embeddings + layer 0; last: norm + lm_head), like the real 62-shard layout. weight_shape values are written; everything else is a hole, so the files take almost no disk space.")

  @Argument(help: "Output folder (must not exist).") var output: String
  @Option(help: "Layers.") var layers = 61
  @Option(help: "Routed experts per MoE layer.") var experts = 384

  func run() throws {
    guard FileSystem.fileSize(output) == nil else { throw ValidationError("\(output) already exists") }
    try FileSystem.createDirectory(output)
    let (hidden, inter, moe, vocab) = (7168, 18432, 2048, 163840)
    var config = try JSONParser.parse(Array(Self.config.utf8)).objectValue!
    config["num_hidden_layers"] = .number(JSONNumber(layers))
    config["n_routed_experts"] = .number(JSONNumber(experts))
    let shardCount = layers + 1
    func shardName(_ i: Int) -> String { "model-\(pad(i, 5))-of-\(pad(shardCount, 6)).safetensors" }
    var weightMap: [(String, String)] = []
    var total = 0
    for s in 1...shardCount {
      var tensors: [(PlannedTensor, [Int]?)] = []  // weight_shape values when a triplet
      func bf16(_ n: String, _ shape: [Int]) { tensors.append((PlannedTensor(name: n, dtype: .bf16, shape: shape), nil)) }
      func int4(_ m: String, _ out: Int, _ inF: Int) {
        tensors.append((PlannedTensor(name: m + ".weight_packed", dtype: .i32, shape: [out, inF / 8]), nil))
        tensors.append((PlannedTensor(name: m + ".weight_scale", dtype: .bf16, shape: [out, inF / 32]), nil))
        tensors.append((PlannedTensor(name: m + ".weight_shape", dtype: .i64, shape: [2]), [out, inF]))
      }
      let layer = s - 1
      if s == 1 { bf16("model.embed_tokens.weight", [vocab, hidden]) }
      if layer < layers {
        let l = "model.layers.\(layer)"
        bf16("\(l).input_layernorm.weight", [hidden])
        bf16("\(l).post_attention_layernorm.weight", [hidden])
        bf16("\(l).self_attn.q_a_proj.weight", [1536, hidden])
        bf16("\(l).self_attn.q_a_layernorm.weight", [1536])
        bf16("\(l).self_attn.q_b_proj.weight", [64 * 192, 1536])
        bf16("\(l).self_attn.kv_a_proj_with_mqa.weight", [576, hidden])
        bf16("\(l).self_attn.kv_a_layernorm.weight", [512])
        bf16("\(l).self_attn.kv_b_proj.weight", [64 * 256, 512])
        bf16("\(l).self_attn.o_proj.weight", [hidden, 64 * 128])
        if layer == 0 {
          bf16("\(l).mlp.gate_proj.weight", [inter, hidden])
          bf16("\(l).mlp.up_proj.weight", [inter, hidden])
          bf16("\(l).mlp.down_proj.weight", [hidden, inter])
        } else {
          bf16("\(l).mlp.gate.weight", [experts, hidden])
          tensors.append((PlannedTensor(name: "\(l).mlp.gate.e_score_correction_bias", dtype: .f32, shape: [experts]), nil))
          bf16("\(l).mlp.shared_experts.gate_proj.weight", [moe, hidden])
          bf16("\(l).mlp.shared_experts.up_proj.weight", [moe, hidden])
          bf16("\(l).mlp.shared_experts.down_proj.weight", [hidden, moe])
          for e in 0..<experts {
            int4("\(l).mlp.experts.\(e).gate_proj", moe, hidden)
            int4("\(l).mlp.experts.\(e).up_proj", moe, hidden)
            int4("\(l).mlp.experts.\(e).down_proj", hidden, moe)
          }
        }
      } else {
        bf16("model.norm.weight", [hidden])
        bf16("lm_head.weight", [vocab, hidden])
      }
      try writeSparse(output + "/" + shardName(s), tensors)
      for (t, _) in tensors {
        weightMap.append((t.name, shardName(s)))
        total += t.byteCount!
      }
    }
    var index = ShardIndex(weightMap: weightMap)
    index.totalSize = total
    try FileSystem.writeAtomically(index.fileBytes(), to: output + "/" + ShardIndex.fileName)
    try FileSystem.writeAtomically(JSONWriter.bytes(.object(config), style: .pretty()) + [0x0A], to: output + "/config.json")
    print("wrote \(shardCount) sparse shards, \(Format.grouped(weightMap.count)) tensors, \(Format.bytes(total)) of (zero) tensor data to \(output)")
  }

  func pad(_ n: Int, _ width: Int) -> String {
    let s = String(n)
    return String(repeating: "0", count: max(0, width - s.count)) + s
  }

  /// Header + weight_shape values; the rest of the file is a hole.
  func writeSparse(_ path: String, _ tensors: [(PlannedTensor, [Int]?)]) throws {
    let plan = tensors.map(\.0)
    let ordered = plan.sorted {
      $0.dtype != $1.dtype ? $0.dtype.referenceOrder > $1.dtype.referenceOrder : $0.name.utf8.lexicographicallyPrecedes($1.name.utf8)
    }
    let sizes = ordered.map { $0.byteCount! }
    let header = SafeTensorsWriter.headerBytes(tensors: ordered, sizes: sizes, metadata: SafeTensorsWriter.defaultMetadata)
    let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o644)
    guard fd >= 0 else { throw ValidationError("cannot create \(path)") }
    defer { close(fd) }
    let prefix = withUnsafeBytes(of: UInt64(header.count).littleEndian) { Array($0) } + header
    _ = prefix.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    let values = Dictionary(uniqueKeysWithValues: tensors.compactMap { t in t.1.map { (t.0.name, $0) } })
    var offset = prefix.count
    for (t, size) in zip(ordered, sizes) {
      if let v = values[t.name] {
        let bytes = v.flatMap { x in withUnsafeBytes(of: Int64(x).littleEndian) { Array($0) } }
        _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
      }
      offset += size
    }
    guard ftruncate(fd, off_t(offset)) == 0 else { throw ValidationError("cannot size \(path)") }
  }

  static let config = """
    {"architectures":["DeepseekV3ForCausalLM"],"model_type":"kimi_k2","hidden_size":7168,"intermediate_size":18432,
    "moe_intermediate_size":2048,"num_hidden_layers":61,"first_k_dense_replace":1,"moe_layer_freq":1,
    "n_routed_experts":384,"num_experts_per_tok":8,"n_shared_experts":1,"n_group":1,"topk_group":1,
    "topk_method":"noaux_tc","scoring_func":"sigmoid","norm_topk_prob":true,"routed_scaling_factor":2.827,
    "num_attention_heads":64,"num_key_value_heads":64,"q_lora_rank":1536,"kv_lora_rank":512,
    "qk_nope_head_dim":128,"qk_rope_head_dim":64,"v_head_dim":128,"vocab_size":163840,
    "max_position_embeddings":262144,"rms_norm_eps":1e-06,"num_nextn_predict_layers":0,
    "tie_word_embeddings":false,"torch_dtype":"bfloat16",
    "quantization_config":{"quant_method":"compressed-tensors","format":"pack-quantized",
    "quantization_status":"compressed","kv_cache_scheme":null,"config_groups":{"group_0":{"targets":["Linear"],
    "input_activations":null,"output_activations":null,"weights":{"num_bits":4,"type":"int","symmetric":true,
    "strategy":"group","group_size":32,"dynamic":false,"observer":"minmax","observer_kwargs":{},"actorder":null,
    "block_structure":null}}},"ignore":["lm_head","re:.*self_attn.*","re:.*shared_experts.*",
    "re:.*mlp\\\\.(gate|up|gate_up|down)_proj.*"]}}
    """
}

/// Writes one dense BF16 shard of a given size with pseudo-random finite values.
struct MakeShard: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "make-shard", abstract: "Write a dense BF16 shard of about N MiB (pseudo-random finite values).")

  @Argument(help: "Output file.") var output: String
  @Option(help: "Size in MiB.") var mib = 2048

  func run() throws {
    let rows = 7168
    let cols = 2048
    let tensorBytes = rows * cols * 2
    let count = max(1, (mib << 20) / tensorBytes)
    let plan = (0..<count).map { PlannedTensor(name: "model.layers.\($0).mlp.shared_experts.down_proj.weight", dtype: .bf16, shape: [rows, cols]) }
    let writer = try SafeTensorsWriter(path: output, tensors: plan)
    var buffer = [UInt16](repeating: 0, count: rows * cols)
    var state: UInt64 = 0x1234_5678_9ABC_DEF1
    for t in writer.tensors {
      for i in 0..<buffer.count {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        // Sign, exponent 0x78..0x7B (about 2^-7..2^-4), random mantissa: always finite.
        buffer[i] = UInt16(truncatingIfNeeded: (state & 0x807F) | (0x3C00 + ((state >> 20) & 0x3) << 7))
      }
      try buffer.withUnsafeBytes { raw in try writer.write(raw, for: t.name) }
    }
    try writer.finish()
    print("wrote \(output): \(count) BF16 tensors, \(Format.bytes(writer.fileSize))")
  }
}
