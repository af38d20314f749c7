import CompressedTensors
import QuantKernels

/// One compared item: a tensor (`ckpt diff`), a layer output or a MoE block
/// output (`ckpt verify`).
public struct ComparisonRow: Sendable {
  /// The tensor's matching key, or the module (`….mlp` for a MoE block).
  public var name: String
  /// `N` of `model.layers.N`, or `nil` (embeddings, head, final norm).
  public var layer: Int?
  /// A ``ModuleKind`` raw value, or `moe-block` for a whole MoE block.
  public var kind: String
  public var shape: [Int]
  /// How each side was stored (``WeightEncoding/label``).
  public var encodingA: String
  public var encodingB: String
  public var stats: ErrorStats
  /// The largest relative error that passes (``Tolerance``, or `--fail-above`).
  public var tolerance: Double
  /// For MoE blocks: how often A and B chose the same experts.
  public var router: RouterAgreement?

  public init(
    name: String, layer: Int?, kind: String, shape: [Int], encodingA: String, encodingB: String, stats: ErrorStats,
    tolerance: Double, router: RouterAgreement? = nil
  ) {
    self.name = name
    self.layer = layer
    self.kind = kind
    self.shape = shape
    self.encodingA = encodingA
    self.encodingB = encodingB
    self.stats = stats
    self.tolerance = tolerance
    self.router = router
  }

  /// Above its tolerance, a non-finite value not matched bit for bit on the
  /// other side, or (MoE) routing too different.
  public var exceeds: Bool {
    if stats.nonFiniteDiffering > 0 { return true }
    if stats.relativeError > tolerance { return true }
    if let r = router, 1 - r.exactSetFraction > Tolerance.routerDisagreement { return true }
    return false
  }
}

/// Router agreement of one MoE block between A and B.
public struct RouterAgreement: Sendable, Equatable {
  /// Tokens routed.
  public var tokens: Int
  /// Experts chosen per token.
  public var topK: Int
  /// Tokens whose expert set is the same on both sides.
  public var sameSet: Int
  /// Chosen (token, expert) pairs common to both sides.
  public var overlap: Int

  public init(tokens: Int, topK: Int, sameSet: Int, overlap: Int) {
    self.tokens = tokens
    self.topK = topK
    self.sameSet = sameSet
    self.overlap = overlap
  }

  /// Share of tokens with the same expert set.
  public var exactSetFraction: Double { tokens == 0 ? 1 : Double(sameSet) / Double(tokens) }
  /// Share of chosen experts common to both sides (mean top-k overlap).
  public var overlapFraction: Double { tokens * topK == 0 ? 1 : Double(overlap) / Double(tokens * topK) }
}

/// Rows merged per layer and module kind.
public struct ComparisonGroup: Sendable {
  public var layer: Int?
  public var kind: String
  public var items: Int
  public var exceeding: Int
  public var stats: ErrorStats
}

/// A tensor present in one checkpoint only, or present in both but not comparable.
public struct UnmatchedTensor: Sendable {
  public var name: String
  public var shard: String?
  public var reason: String
}

/// The result of `ckpt diff` or `ckpt verify`: every row, the unmatched
/// tensors, the settings and the run's figures. Writers in `Reports` turn it
/// into a table, JSON, HDF5 and HTML.
public struct ComparisonReport: Sendable {
  /// `diff` or `verify`.
  public var command: String
  public var toolVersion: String
  /// The two inputs as given, and their formats (``WeightCatalog/format``).
  public var pathA: String
  public var pathB: String
  public var formatA: String
  public var formatB: String
  public var rows: [ComparisonRow]
  /// Tensors in A only / B only.
  public var onlyInA: [UnmatchedTensor]
  public var onlyInB: [UnmatchedTensor]
  /// In both but not comparable (shape differs), or not compared (dtype).
  public var mismatched: [UnmatchedTensor]
  /// Settings as `(key, value)` in a stable order: `fail_above`, `samples`, `seed`….
  public var settings: [(String, String)]
  /// Run figures: seconds, bytes read, GFLOP/s, sgemm peak…
  public var performance: [(String, Double)]

  public init(
    command: String, toolVersion: String, pathA: String, pathB: String, formatA: String, formatB: String, rows: [ComparisonRow],
    onlyInA: [UnmatchedTensor] = [], onlyInB: [UnmatchedTensor] = [], mismatched: [UnmatchedTensor] = [],
    settings: [(String, String)] = [], performance: [(String, Double)] = []
  ) {
    self.command = command
    self.toolVersion = toolVersion
    self.pathA = pathA
    self.pathB = pathB
    self.formatA = formatA
    self.formatB = formatB
    self.rows = rows
    self.onlyInA = onlyInA
    self.onlyInB = onlyInB
    self.mismatched = mismatched
    self.settings = settings
    self.performance = performance
  }

  /// Rows above their tolerance.
  public var exceeding: [ComparisonRow] { rows.filter(\.exceeds) }

  /// Whether the comparison passes: no row above tolerance, nothing mismatched.
  public var passed: Bool { exceeding.isEmpty && mismatched.isEmpty }

  /// Rows sorted worst first: exceeding rows, then by relative error, then by name.
  public var worstFirst: [ComparisonRow] {
    rows.sorted { x, y in
      if x.exceeds != y.exceeds { return x.exceeds }
      let rx = x.stats.relativeError, ry = y.stats.relativeError
      if rx != ry { return rx > ry }
      return x.name < y.name
    }
  }

  /// Every row merged into one.
  public var total: ErrorStats { rows.reduce(ErrorStats()) { $0.merged($1.stats) } }

  /// Rows merged per (layer, kind), by layer (unlayered last) then kind order.
  public var groups: [ComparisonGroup] {
    var map: [String: ComparisonGroup] = [:]
    for r in rows {
      let key = "\(r.layer.map(String.init) ?? "-")/\(r.kind)"
      var g = map[key] ?? ComparisonGroup(layer: r.layer, kind: r.kind, items: 0, exceeding: 0, stats: ErrorStats())
      g.items += 1
      if r.exceeds { g.exceeding += 1 }
      g.stats.merge(r.stats)
      map[key] = g
    }
    return map.values.sorted { x, y in
      if x.layer != y.layer { return (x.layer ?? Int.max) < (y.layer ?? Int.max) }
      return Self.kindOrder(x.kind) < Self.kindOrder(y.kind)
    }
  }

  /// Rows merged per kind.
  public var kinds: [ComparisonGroup] {
    var map: [String: ComparisonGroup] = [:]
    for g in groups {
      var k = map[g.kind] ?? ComparisonGroup(layer: nil, kind: g.kind, items: 0, exceeding: 0, stats: ErrorStats())
      k.items += g.items
      k.exceeding += g.exceeding
      k.stats.merge(g.stats)
      map[g.kind] = k
    }
    return map.values.sorted { Self.kindOrder($0.kind) < Self.kindOrder($1.kind) }
  }

  /// Layers present, in order.
  public var layers: [Int] { Array(Set(rows.compactMap(\.layer))).sorted() }

  /// Kinds in the order the model runs them.
  public static let kindNames: [String] = [
    ModuleKind.embedding.rawValue, ModuleKind.norm.rawValue, ModuleKind.attention.rawValue, ModuleKind.denseMLP.rawValue,
    ModuleKind.router.rawValue, ModuleKind.sharedExpert.rawValue, ModuleKind.routedExpertGate.rawValue,
    ModuleKind.routedExpertUp.rawValue, ModuleKind.routedExpertDown.rawValue, "moe-block", ModuleKind.head.rawValue,
    ModuleKind.other.rawValue,
  ]

  static func kindOrder(_ k: String) -> Int { kindNames.firstIndex(of: k) ?? kindNames.count }
}
