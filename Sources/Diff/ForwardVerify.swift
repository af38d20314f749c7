import BLAS
import Checkpoint
import Conversion
import CompressedTensors
import Dispatch
import QuantKernels
import SafeTensors
import StrictJSON

#if canImport(Glibc)
  import Glibc
#endif

/// Options of `ckpt verify`.
public struct VerifyOptions: Sendable {
  /// Activation rows (tokens) fed through every layer.
  public var samples: Int
  /// Seed of the Gaussian activations.
  public var seed: UInt64
  /// A safetensors file of activation rows (see ``ActivationSource``).
  public var activations: String?
  /// Threads for decoding weights (OpenBLAS uses its own, every core by default).
  public var jobs: Int
  /// Called once with the stored bytes to read, then with bytes done after each module.
  public var started: (@Sendable (Int) -> Void)?
  public var progress: (@Sendable (Int) -> Void)?
  /// Called with each MoE block's outputs `[T, hidden]` and routings, A then B.
  public var blockOutputs: (@Sendable (_ layer: Int, _ a: [Float], _ b: [Float], _ routingA: Routing, _ routingB: Routing) -> Void)?

  public init(
    samples: Int = 32, seed: UInt64 = 0, activations: String? = nil, jobs: Int = Parallel.defaultJobs,
    started: (@Sendable (Int) -> Void)? = nil, progress: (@Sendable (Int) -> Void)? = nil
  ) {
    self.samples = samples
    self.seed = seed
    self.activations = activations
    self.jobs = jobs
    self.started = started
    self.progress = progress
  }
}

/// The DeepSeek-V3 MoE settings of a config (FORMATS.md §7).
public struct MoEConfig: Sendable, Equatable {
  public var experts: Int
  public var topK: Int
  public var groups: Int
  public var topKGroups: Int
  public var routedScaling: Float
  public var normalizeTopK: Bool
  /// `sigmoid` (DeepSeek-V3, Kimi K2) or `softmax`.
  public var scoring: String
  public var rmsNormEps: Float

  public init(
    experts: Int, topK: Int, groups: Int = 1, topKGroups: Int = 1, routedScaling: Float, normalizeTopK: Bool = true,
    scoring: String = "sigmoid", rmsNormEps: Float = 1e-6
  ) {
    self.experts = experts
    self.topK = topK
    self.groups = groups
    self.topKGroups = topKGroups
    self.routedScaling = routedScaling
    self.normalizeTopK = normalizeTopK
    self.scoring = scoring
    self.rmsNormEps = rmsNormEps
  }

  /// Reads the config (its `text_config` for K2.5); `nil` without MoE keys.
  public init?(_ config: JSONObject?) {
    guard let c = config, let e = c["n_routed_experts"]?.intValue, let k = c["num_experts_per_tok"]?.intValue, e >= 1, k >= 1, k <= e
    else { return nil }
    experts = e
    topK = k
    groups = max(1, c["n_group"]?.intValue ?? 1)
    topKGroups = max(1, min(groups, c["topk_group"]?.intValue ?? groups))
    routedScaling = Float(c["routed_scaling_factor"]?.doubleValue ?? 1)
    normalizeTopK = c["norm_topk_prob"]?.boolValue ?? true
    scoring = c["scoring_func"]?.stringValue ?? "softmax"
    rmsNormEps = Float(c["rms_norm_eps"]?.doubleValue ?? 1e-6)
  }
}

/// Routing of `T` tokens: the chosen experts per token (ascending) and their weights.
public struct Routing: Sendable, Equatable {
  public var experts: [[Int]]
  public var weights: [[Float]]
}

/// The reference forward pass of `ckpt verify`, in FP32 through OpenBLAS.
public enum ForwardVerify {
  // MARK: Building blocks

  /// `y = x·Wᵀ` for each `x` of `inputs` (`[T, in]` each) and the weight
  /// `reader` `[out, in]`; returns one `[T, out]` per input and adds the flops.
  ///
  /// W is decoded once, in chunks of rows small enough to stay in L2
  /// (~1 MiB), and every input is multiplied by each chunk while it is hot.
  /// `jobs` threads take chunks in turn, each calling single-threaded sgemm
  /// (``ForwardVerify/run(a:b:options:)`` sets OpenBLAS to one thread), so
  /// decoding and multiplying both use every core and memory stays bounded.
  public static func linear(_ inputs: [[Float]], tokens: Int, _ w: TensorReader, jobs: Int = 1, flops: inout Double) -> [[Float]] {
    let out = w.tensor.rows
    let inDim = w.tensor.columns
    for x in inputs {
      precondition(x.count == tokens * inDim, "activation width \(x.count / max(tokens, 1)) is not the weight's \(inDim)")
    }
    let ys = inputs.map { _ in UnsafeMutableBufferPointer<Float>.allocate(capacity: tokens * out) }
    defer { for y in ys { y.deallocate() } }
    let chunk = max(16, min(out, (256 << 10) / max(inDim, 1)))
    let chunks = (out + chunk - 1) / chunk
    let threads = max(1, min(jobs, chunks))
    let xs = inputs
    nonisolated(unsafe) let outs = ys
    // Threads write disjoint column ranges [r, e) of every output.
    let body = { @Sendable (thread: Int) in
      let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: chunk * inDim)
      defer { buffer.deallocate() }
      var c = thread
      while c < chunks {
        let r = c * chunk
        let e = min(out, r + chunk)
        let part = UnsafeMutableBufferPointer(rebasing: buffer[0..<((e - r) * inDim)])
        w.decode(rows: r..<e, into: part)
        for (x, y) in zip(xs, outs) {
          x.withUnsafeBufferPointer { xb in
            BLAS.sgemm(
              transA: false, transB: true, m: tokens, n: e - r, k: inDim, alpha: 1, a: xb, lda: inDim, b: UnsafeBufferPointer(part),
              ldb: inDim, beta: 0, c: UnsafeMutableBufferPointer(rebasing: y[r...]), ldc: out)
          }
        }
        c += threads
      }
    }
    if threads == 1 { body(0) } else { DispatchQueue.concurrentPerform(iterations: threads, execute: body) }
    flops += 2 * Double(tokens) * Double(out) * Double(inDim) * Double(inputs.count)
    return ys.map { Array($0) }
  }

  /// RMSNorm of each row (`x / sqrt(mean(x²) + eps)`), times `weight` when given.
  public static func rmsNorm(_ x: [Float], width: Int, weight: [Float]?, eps: Float) -> [Float] {
    var y = x
    let rows = width == 0 ? 0 : x.count / width
    for t in 0..<rows {
      var ss: Float = 0
      for j in 0..<width { ss += x[t * width + j] * x[t * width + j] }
      let inv = 1 / (ss / Float(width) + eps).squareRoot()
      for j in 0..<width { y[t * width + j] = x[t * width + j] * inv * (weight?[j] ?? 1) }
    }
    return y
  }

  /// `silu(g) ⊙ u`, the SwiGLU of DeepSeek-V3's MLP.
  public static func swiglu(_ g: [Float], _ u: [Float]) -> [Float] {
    zip(g, u).map { gv, uv in gv / (1 + expf(-gv)) * uv }
  }

  /// DeepSeek-V3's `Gate` for `T` tokens: scores (sigmoid or softmax of
  /// `logits`), `bias` added for selection only, group-limited top-k, weights
  /// from the unbiased scores, normalized (sigmoid) and scaled.
  public static func route(logits: [Float], tokens: Int, bias: [Float]?, config c: MoEConfig) -> Routing {
    let e = c.experts
    var experts: [[Int]] = []
    var weights: [[Float]] = []
    for t in 0..<tokens {
      let row = Array(logits[(t * e)..<((t + 1) * e)])
      var scores: [Float]
      if c.scoring == "softmax" {
        let m = row.max() ?? 0
        let ex = row.map { expf($0 - m) }
        let s = ex.reduce(0, +)
        scores = ex.map { $0 / s }
      } else {
        scores = row.map { 1 / (1 + expf(-$0)) }
      }
      var choice = scores
      if let bias { for i in 0..<e { choice[i] += bias[i] } }
      if c.groups > 1 {
        let size = e / c.groups
        let groupScore: [Float] = (0..<c.groups).map { g in
          let s = choice[(g * size)..<((g + 1) * size)].sorted(by: >)
          return bias == nil ? s[0] : s.prefix(2).reduce(0, +)
        }
        let keep = Set(topIndices(groupScore, c.topKGroups))
        for g in 0..<c.groups where !keep.contains(g) {
          for i in (g * size)..<((g + 1) * size) { choice[i] = -.infinity }
        }
      }
      let chosen = topIndices(choice, c.topK).sorted()
      var w = chosen.map { scores[$0] }
      if c.scoring == "sigmoid" && c.normalizeTopK {
        let s = w.reduce(0, +)
        w = w.map { $0 / s }
      }
      experts.append(chosen)
      weights.append(w.map { $0 * c.routedScaling })
    }
    return Routing(experts: experts, weights: weights)
  }

  /// Indices of the `k` largest values, ties to the lower index.
  static func topIndices(_ v: [Float], _ k: Int) -> [Int] {
    Array(v.indices.sorted { v[$0] != v[$1] ? v[$0] > v[$1] : $0 < $1 }.prefix(k))
  }

  // MARK: Activations

  /// Seeded standard Gaussian values (SplitMix64 + Box–Muller), the same on every machine.
  public static func gaussian(_ count: Int, seed: UInt64) -> [Float] {
    var state = seed &+ 0x9E37_79B9_7F4A_7C15
    func next() -> Double {
      state &+= 0x9E37_79B9_7F4A_7C15
      var z = state
      z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
      z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
      z ^= z >> 31
      return (Double(z >> 11) + 0.5) / Double(1 << 53)
    }
    var out = [Float](repeating: 0, count: count)
    var i = 0
    while i < count {
      let u1 = next()
      let u2 = next()
      let r = (-2 * log(u1)).squareRoot()
      out[i] = Float(r * cos(2 * .pi * u2))
      if i + 1 < count { out[i + 1] = Float(r * sin(2 * .pi * u2)) }
      i += 2
    }
    return out
  }
}

/// What one `ckpt verify` run measured.
public struct VerifyResult: Sendable {
  public var rows: [ComparisonRow]
  /// Linears present on both sides that were not run, with why.
  public var skipped: [UnmatchedTensor]
  /// Where the activations came from: `gaussian(seed S)` or the file.
  public var activationSource: String
  public var flops: Double
  /// Seconds inside sgemm, and in the whole pass (decoding included).
  public var gemmSeconds: Double
  public var seconds: Double
  /// Stored weight bytes read (both sides).
  public var bytes: Int
}

extension ForwardVerify {
  /// The input-norm weight (a tensor key) whose output feeds `module`, by DeepSeek-V3's layout.
  static func normKey(of module: String) -> String? {
    guard let layer = DeepSeekV3Modules.layerIndex(of: module) else {
      return module == "lm_head" ? "model.norm.weight" : nil
    }
    let p = "model.layers.\(layer)."
    let rest = module.dropFirst(p.count)
    switch rest {
    case "self_attn.q_a_proj", "self_attn.kv_a_proj_with_mqa": return p + "input_layernorm.weight"
    case "self_attn.q_b_proj": return p + "self_attn.q_a_layernorm.weight"
    case "self_attn.kv_b_proj": return p + "self_attn.kv_a_layernorm.weight"
    default:
      if rest.hasPrefix("mlp."), !rest.hasSuffix("down_proj") { return p + "post_attention_layernorm.weight" }
      return nil
    }
  }

  /// Runs every Linear, router and MoE block of A and B on the same activations.
  ///
  /// Inputs, per Linear: an exact input from `--activations` when the file
  /// has a tensor named after the module; else base rows (the file's
  /// `hidden_states`, or any 2-D float tensor of the right width, or seeded
  /// Gaussian rows) RMS-normalized and scaled by A's norm weight that feeds
  /// the module in DeepSeek-V3 (`input_layernorm` for `q_a`/`kv_a`,
  /// `q_a_layernorm` for `q_b`, `kv_a_layernorm` for `kv_b`,
  /// `post_attention_layernorm` for the MLP, router and experts, `model.norm`
  /// for `lm_head`). A `down_proj` gets `silu(gate·x) ⊙ (up·x)` of A's
  /// weights, on both sides, so its row measures the down weights alone;
  /// the MoE block runs each side end to end with its own weights.
  public static func run(a: WeightCatalog, b: WeightCatalog, options: VerifyOptions) throws(DiffError) -> VerifyResult {
    guard options.samples >= 1 else { throw DiffError("invalid-option", "--samples must be at least 1") }
    let start = ConvertJob.monotonicSeconds()
    // Our threads each call single-threaded sgemm on their own chunk (``linear``).
    let blasThreads = BLAS.threadCount
    BLAS.threadCount = 1
    defer { BLAS.threadCount = blasThreads }
    let matched = CheckpointDiff.match(a, b)
    var linears: [String: TensorPair] = [:]
    var order: [String] = []
    var vectors: [String: TensorPair] = [:]
    for p in matched.pairs {
      if let m = p.a.module, p.a.shape.count == 2, DeepSeekV3Modules.isLinear(m) || p.a.kind == .router {
        if case .integer = p.a.encoding { continue }
        linears[m] = p
        order.append(m)
      } else if p.a.shape.count == 1 {
        vectors[p.a.key] = p
      }
    }
    let source = try ActivationSource(path: options.activations, samples: options.samples, seed: options.seed)
    let moe = MoEConfig((a.checkpoint.textConfig))
    if let m = moe {
      // Refused, not patched: a block run on settings the model does not have would measure nothing.
      guard m.experts % m.groups == 0 else {
        throw DiffError("bad-config", file: Checkpoint.configFileName, "n_routed_experts \(m.experts) is not a multiple of n_group \(m.groups)")
      }
      guard ["sigmoid", "softmax"].contains(m.scoring) else {
        throw DiffError("bad-config", file: Checkpoint.configFileName, "scoring_func \"\(m.scoring)\" is neither sigmoid nor softmax")
      }
    }
    let eps = moe?.rmsNormEps ?? Float((a.checkpoint.textConfig?["rms_norm_eps"]?.doubleValue) ?? 1e-6)
    var state = PassState(a: a, b: b, options: options, vectors: vectors, source: source, eps: eps)
    options.started?(order.reduce(0) { sum, m in
      let p = linears[m]!
      return sum + ((try? TensorReader(p.a, file: a.files[p.a.shard]!, prepare: false).storedBytes) ?? 0)
        + ((try? TensorReader(p.b, file: b.files[p.b.shard]!, prepare: false).storedBytes) ?? 0)
    })

    var done = Set<String>()
    var layers: [Int?] = []
    for m in order where !layers.contains(DeepSeekV3Modules.layerIndex(of: m)) { layers.append(DeepSeekV3Modules.layerIndex(of: m)) }
    for layer in layers {
      let modules = order.filter { DeepSeekV3Modules.layerIndex(of: $0) == layer }
      // MLP units: a prefix with gate_proj, up_proj and down_proj on both sides.
      var units: [String] = []
      for m in modules where m.hasSuffix(".gate_proj") {
        let u = String(m.dropLast(".gate_proj".count))
        if linears[u + ".up_proj"] != nil, linears[u + ".down_proj"] != nil { units.append(u) }
      }
      if let layer, let moe, let router = linears["model.layers.\(layer).mlp.gate"] {
        let experts = units.filter { DeepSeekV3Modules.expertIndex(of: $0 + ".gate_proj") != nil }
        let shared = units.filter { $0.hasSuffix(".shared_experts") }
        if !experts.isEmpty {
          try state.moeBlock(layer: layer, router: router, experts: experts, shared: shared, linears: linears, config: moe)
          for u in experts + shared { for p in [".gate_proj", ".up_proj", ".down_proj"] { done.insert(u + p) } }
          done.insert(router.a.module!)
        }
      }
      for u in units where !done.contains(u + ".gate_proj") {
        _ = try state.mlpUnit(u, linears: linears)
        for p in [".gate_proj", ".up_proj", ".down_proj"] { done.insert(u + p) }
      }
      for m in modules where !done.contains(m) {
        try state.single(m, linears[m]!)
        done.insert(m)
      }
    }
    return VerifyResult(
      rows: state.rows, skipped: matched.mismatched, activationSource: source.description, flops: state.flops,
      gemmSeconds: state.gemmSeconds, seconds: ConvertJob.monotonicSeconds() - start, bytes: state.bytes)
  }
}

/// Where activation rows come from (`--activations` or seeded Gaussian).
struct ActivationSource: CustomStringConvertible {
  let samples: Int
  let seed: UInt64
  let path: String?
  /// 2-D float tensors of the file, decoded, by name, in file order.
  let tensors: [(name: String, rows: Int, width: Int, values: [Float])]

  init(path: String?, samples: Int, seed: UInt64) throws(DiffError) {
    self.samples = samples
    self.seed = seed
    self.path = path
    guard let path else {
      tensors = []
      return
    }
    let file: SafeTensorsFile
    do { file = try SafeTensorsFile(path: path) } catch { throw DiffError("bad-activations", file: path, "\(error)") }
    var out: [(String, Int, Int, [Float])] = []
    for t in file.tensors.sorted(by: { $0.begin < $1.begin }) where t.shape.count == 2 && [.f32, .bf16, .f16].contains(t.dtype) {
      let logical = LogicalTensor(name: t.name, key: t.name, shape: t.shape, shard: path, storedNames: [t.name], encoding: .float(t.dtype))
      let reader = try TensorReader(logical, file: file)
      let rows = min(samples, t.shape[0])
      var v = [Float](repeating: 0, count: rows * t.shape[1])
      v.withUnsafeMutableBufferPointer { reader.decode(rows: 0..<rows, into: $0) }
      reader.release()
      if v.contains(where: { !$0.isFinite }) {
        throw DiffError("bad-activations", file: path, tensor: t.name, "holds NaN or Inf")
      }
      out.append((t.name, rows, t.shape[1], v))
    }
    guard !out.isEmpty else { throw DiffError("bad-activations", file: path, "no 2-D F32, BF16 or F16 tensor") }
    tensors = out
  }

  var description: String {
    guard let path else { return "gaussian(seed \(seed))" }
    let widths = Set(tensors.map(\.width)).sorted().map(String.init).joined(separator: ", ")
    return "file \(path) (widths \(widths); gaussian(seed \(seed)) for other widths)"
  }

  /// An exact input for `module`, if the file has one.
  func exact(_ module: String, width: Int) -> (x: [Float], tokens: Int)? {
    tensors.first { $0.name == module && $0.width == width }.map { ($0.values, $0.rows) }
  }

  /// Base rows of `width` for `layer`: the file's `hidden_states` or first
  /// tensor of that width, else Gaussian rows seeded by (seed, layer, width).
  func base(width: Int, layer: Int?) -> (x: [Float], tokens: Int) {
    if let t = tensors.first(where: { $0.name == "hidden_states" && $0.width == width }) ?? tensors.first(where: { $0.width == width }) {
      return (t.values, t.rows)
    }
    let s = seed &* 0x100_0000_01B3 &+ UInt64(bitPattern: Int64((layer ?? -1) + 1)) &* 0x9E37_79B9 &+ UInt64(width)
    return (ForwardVerify.gaussian(samples * width, seed: s), samples)
  }
}

/// Running state of one verify pass: rows, flops, timers.
struct PassState {
  let a: WeightCatalog
  let b: WeightCatalog
  let options: VerifyOptions
  let vectors: [String: TensorPair]
  let source: ActivationSource
  let eps: Float
  var rows: [ComparisonRow] = []
  var flops = 0.0
  var gemmSeconds = 0.0
  var bytes = 0

  init(a: WeightCatalog, b: WeightCatalog, options: VerifyOptions, vectors: [String: TensorPair], source: ActivationSource, eps: Float) {
    self.a = a
    self.b = b
    self.options = options
    self.vectors = vectors
    self.source = source
    self.eps = eps
  }

  func readers(_ p: TensorPair) throws(DiffError) -> (TensorReader, TensorReader) {
    (try TensorReader(p.a, file: a.files[p.a.shard]!), try TensorReader(p.b, file: b.files[p.b.shard]!))
  }

  /// A's vector `key` (a norm weight, a router bias), if present with `width` values.
  ///
  /// - Throws: When it is present but cannot be read (a damaged archive chunk).
  func vector(_ key: String?, width: Int, side: Int = 0) throws(DiffError) -> [Float]? {
    guard let key, let p = vectors[key], p.a.elementCount == width else { return nil }
    let t = side == 0 ? p.a : p.b
    let r = try TensorReader(t, file: (side == 0 ? a : b).files[t.shard]!)
    defer { r.release() }
    return r.decodeAll()
  }

  /// The input of `module` (see ``ForwardVerify/run(a:b:options:)``).
  func input(_ module: String, width: Int) throws(DiffError) -> (x: [Float], tokens: Int) {
    if let e = source.exact(module, width: width) { return e }
    let base = source.base(width: width, layer: DeepSeekV3Modules.layerIndex(of: module))
    let w = try vector(ForwardVerify.normKey(of: module), width: width)
    return (ForwardVerify.rmsNorm(base.x, width: width, weight: w, eps: eps), base.tokens)
  }

  /// `x·Wᵀ` on both sides; records a row and returns both outputs. With
  /// `alsoB`, B's weight (decoded once) also multiplies that input: the
  /// third output.
  mutating func linear(
    _ module: String, _ p: TensorPair, x: [Float], tokens: Int, alsoB: [Float]? = nil
  ) throws(DiffError) -> ([Float], [Float], [Float]?) {
    let (ra, rb) = try readers(p)
    defer {
      ra.release()
      rb.release()
    }
    let t0 = ConvertJob.monotonicSeconds()
    var f = 0.0
    let ya = ForwardVerify.linear([x], tokens: tokens, ra, jobs: options.jobs, flops: &f)[0]
    let yb = ForwardVerify.linear([x] + (alsoB.map { [$0] } ?? []), tokens: tokens, rb, jobs: options.jobs, flops: &f)
    gemmSeconds += ConvertJob.monotonicSeconds() - t0
    flops += f
    let moved = ra.storedBytes + rb.storedBytes
    bytes += moved
    options.progress?(moved)
    let stats = ya.withUnsafeBufferPointer { x in yb[0].withUnsafeBufferPointer { y in ErrorStats.measure(x, y, threads: options.jobs) } }
    rows.append(ComparisonRow(
      name: module, layer: p.a.layer, kind: p.a.kind.rawValue, shape: [tokens, p.a.rows], encodingA: p.a.encoding.label,
      encodingB: p.b.encoding.label, stats: stats,
      tolerance: Tolerance.relative(reference: p.a.encoding, candidate: p.b.encoding) * Tolerance.outputFactor))
    return (ya, yb[0], yb.count > 1 ? yb[1] : nil)
  }

  /// One Linear on its own input.
  mutating func single(_ module: String, _ p: TensorPair) throws(DiffError) {
    let (x, tokens) = try input(module, width: p.a.columns)
    _ = try linear(module, p, x: x, tokens: tokens)
  }

  /// A gate/up/down unit on input `x` (or its own input): rows for the three
  /// Linears, and each side's unit output with its own weights.
  mutating func mlpUnit(_ u: String, linears: [String: TensorPair], x given: (x: [Float], tokens: Int)? = nil) throws(DiffError) -> ([Float], [Float], Double) {
    let gate = linears[u + ".gate_proj"]!
    let up = linears[u + ".up_proj"]!
    let down = linears[u + ".down_proj"]!
    let (x, tokens): (x: [Float], tokens: Int)
    if let given { (x, tokens) = given } else { (x, tokens) = try input(u + ".gate_proj", width: gate.a.columns) }
    guard up.a.columns == gate.a.columns, down.a.columns == gate.a.rows, up.a.rows == gate.a.rows else {
      throw DiffError("bad-shape", tensor: u, "gate \(gate.a.shape), up \(up.a.shape) and down \(down.a.shape) do not form an MLP")
    }
    let (ga, gb, _) = try linear(u + ".gate_proj", gate, x: x, tokens: tokens)
    let (ua, ub, _) = try linear(u + ".up_proj", up, x: x, tokens: tokens)
    let ha = ForwardVerify.swiglu(ga, ua)
    let hb = ForwardVerify.swiglu(gb, ub)
    // The down row: both sides on A's intermediate. B end to end: B's down on
    // B's own intermediate (no row of its own; the block row covers it).
    let (da, _, bb) = try linear(u + ".down_proj", down, x: ha, tokens: tokens, alsoB: hb)
    let db = bb!
    let tol = [gate, up, down].map { Tolerance.relative(reference: $0.a.encoding, candidate: $0.b.encoding) }.max() ?? 0
    return (da, db, tol)
  }

  /// A whole DeepSeek-V3 MoE block: router, shared expert, routed experts.
  mutating func moeBlock(
    layer: Int, router: TensorPair, experts: [String], shared: [String], linears: [String: TensorPair], config: MoEConfig
  ) throws(DiffError) {
    let hidden = router.a.columns
    guard router.a.rows == config.experts else {
      throw DiffError("bad-shape", tensor: router.a.key, "router has \(router.a.rows) rows, config n_routed_experts is \(config.experts)")
    }
    let (x, tokens) = try input(router.a.module!, width: hidden)
    let (la, lb, _) = try linear(router.a.module!, router, x: x, tokens: tokens)
    let biasKey = "model.layers.\(layer).mlp.gate.e_score_correction_bias"
    let ra = ForwardVerify.route(logits: la, tokens: tokens, bias: try vector(biasKey, width: config.experts, side: 0), config: config)
    let rb = ForwardVerify.route(logits: lb, tokens: tokens, bias: try vector(biasKey, width: config.experts, side: 1), config: config)
    var ya = [Float](repeating: 0, count: tokens * hidden)
    var yb = ya
    var tolerance = Tolerance.relative(reference: router.a.encoding, candidate: router.b.encoding)
    for u in shared {
      let (da, db, tol) = try mlpUnit(u, linears: linears, x: (x, tokens))
      for i in 0..<ya.count {
        ya[i] += da[i]
        yb[i] += db[i]
      }
      tolerance = max(tolerance, tol)
    }
    for u in experts.sorted(by: { DeepSeekV3Modules.expertIndex(of: $0 + ".gate_proj")! < DeepSeekV3Modules.expertIndex(of: $1 + ".gate_proj")! }) {
      let e = DeepSeekV3Modules.expertIndex(of: u + ".gate_proj")!
      let (da, db, tol) = try mlpUnit(u, linears: linears, x: (x, tokens))
      tolerance = max(tolerance, tol)
      for t in 0..<tokens {
        if let k = ra.experts[t].firstIndex(of: e) {
          let w = ra.weights[t][k]
          for j in 0..<hidden { ya[t * hidden + j] += w * da[t * hidden + j] }
        }
        if let k = rb.experts[t].firstIndex(of: e) {
          let w = rb.weights[t][k]
          for j in 0..<hidden { yb[t * hidden + j] += w * db[t * hidden + j] }
        }
      }
    }
    var same = 0
    var overlap = 0
    for t in 0..<tokens {
      if ra.experts[t] == rb.experts[t] { same += 1 }
      overlap += Set(ra.experts[t]).intersection(rb.experts[t]).count
    }
    options.blockOutputs?(layer, ya, yb, ra, rb)
    let stats = ya.withUnsafeBufferPointer { p in yb.withUnsafeBufferPointer { q in ErrorStats.measure(p, q, threads: options.jobs) } }
    rows.append(ComparisonRow(
      name: "model.layers.\(layer).mlp", layer: layer, kind: "moe-block", shape: [tokens, hidden],
      encodingA: linears[experts[0] + ".gate_proj"]!.a.encoding.label, encodingB: linears[experts[0] + ".gate_proj"]!.b.encoding.label,
      stats: stats, tolerance: tolerance * Tolerance.outputFactor,
      router: RouterAgreement(tokens: tokens, topK: config.topK, sameSet: same, overlap: overlap)))
  }
}

extension ForwardVerify {
  /// The OpenBLAS kernel set to ask for (`OPENBLAS_CORETYPE`), or `nil` to keep
  /// `current`: `SkylakeX` when the CPU has AVX-512, OpenBLAS chose a set
  /// without it (0.3.21 takes Zen 5 for `Haswell`), and the user chose nothing.
  public static func preferredBLASCore(current: String, cpuHasAVX512: Bool, userChoice: String?) -> String? {
    guard cpuHasAVX512, userChoice == nil || userChoice == "" else { return nil }
    let c = current.lowercased()
    return ["skylakex", "cooperlake", "sapphirerapids"].contains(where: { c.contains($0) }) ? nil : "SkylakeX"
  }

  /// OpenBLAS sgemm throughput on this machine now, in GFLOP/s: the best of
  /// three 2048 × 2048 × 2048 products (all cores, OpenBLAS's threads).
  public static func sgemmPeak(size n: Int = 2048, repeats: Int = 3) -> Double {
    let a = gaussian(n * n, seed: 1)
    let b = gaussian(n * n, seed: 2)
    var c = [Float](repeating: 0, count: n * n)
    var best = Double.infinity
    for _ in 0..<repeats {
      let t0 = ConvertJob.monotonicSeconds()
      a.withUnsafeBufferPointer { ab in
        b.withUnsafeBufferPointer { bb in
          c.withUnsafeMutableBufferPointer { cb in
            BLAS.sgemm(transA: false, transB: true, m: n, n: n, k: n, alpha: 1, a: ab, lda: n, b: bb, ldb: n, beta: 0, c: cb, ldc: n)
          }
        }
      }
      best = min(best, ConvertJob.monotonicSeconds() - t0)
    }
    return 2 * Double(n) * Double(n) * Double(n) / best / 1e9
  }
}
