import Diff
import Foundation
import QuantKernels
import StrictJSON

/// The JSON form of a ``ComparisonReport`` (schema `ckpt-comparison/1`,
/// documented in Docs/REPORTS.md). Infinite or undefined figures (the SQNR
/// of identical tensors) are `null`.
public enum ComparisonJSON {
  public static let schema = "ckpt-comparison/1"

  /// The whole report.
  public static func make(_ r: ComparisonReport) -> JSONValue {
    var o = JSONObject()
    o["schema"] = .string(schema)
    o["command"] = .string(r.command)
    o["tool_version"] = .string(r.toolVersion)
    o["a"] = .object(JSONObject([("path", .string(r.pathA)), ("format", .string(r.formatA))]))
    o["b"] = .object(JSONObject([("path", .string(r.pathB)), ("format", .string(r.formatB))]))
    o["settings"] = .object(JSONObject(r.settings.map { ($0.0, .string($0.1)) }))
    o["passed"] = .bool(r.passed)
    var summary = JSONObject()
    summary["items"] = .number(JSONNumber(r.rows.count))
    summary["exceeding"] = .number(JSONNumber(r.exceeding.count))
    summary["only_in_a"] = .number(JSONNumber(r.onlyInA.count))
    summary["only_in_b"] = .number(JSONNumber(r.onlyInB.count))
    summary["mismatched"] = .number(JSONNumber(r.mismatched.count))
    summary["metrics"] = metrics(r.total)
    o["summary"] = .object(summary)
    o["performance"] = .object(JSONObject(r.performance.map { ($0.0, number($0.1)) }))
    o["histogram_bins"] = .array((0..<ErrorStats.histogramBins).map { .string(ErrorStats.binLabel($0)) })
    o["kinds"] = .array(r.kinds.map(group))
    o["groups"] = .array(r.groups.map(group))
    o["rows"] = .array(r.worstFirst.map(row))
    o["only_in_a"] = .array(r.onlyInA.map(unmatched))
    o["only_in_b"] = .array(r.onlyInB.map(unmatched))
    o["mismatched"] = .array(r.mismatched.map(unmatched))
    return .object(o)
  }

  /// A finite number, or `null`.
  static func number(_ x: Double) -> JSONValue { x.isFinite ? .number(JSONNumber(x)) : .null }

  /// The figures of ``ErrorStats`` (derived metrics and raw sums).
  public static func metrics(_ s: ErrorStats) -> JSONValue {
    .object(JSONObject([
      ("elements", .number(JSONNumber(s.elements))),
      ("identical", .number(JSONNumber(s.identical))),
      ("identical_fraction", number(s.identicalFraction)),
      ("max_abs", number(s.maxAbs)),
      ("max_abs_index", .number(JSONNumber(s.maxAbsIndex))),
      ("rmse", number(s.rmse)),
      ("relative", number(s.relativeError)),
      ("cosine", number(s.cosine)),
      ("sqnr_db", number(s.sqnrDB)),
      ("non_finite_a", .number(JSONNumber(s.nonFiniteA))),
      ("non_finite_b", .number(JSONNumber(s.nonFiniteB))),
      ("non_finite_differing", .number(JSONNumber(s.nonFiniteDiffering))),
      ("sum_sq_diff", number(s.sumSquaredDifference)),
      ("sum_sq_a", number(s.sumSquaredA)),
      ("sum_sq_b", number(s.sumSquaredB)),
      ("sum_ab", number(s.sumProduct)),
    ]))
  }

  static func row(_ r: ComparisonRow) -> JSONValue {
    var o = JSONObject()
    o["name"] = .string(r.name)
    o["layer"] = r.layer.map { .number(JSONNumber($0)) } ?? .null
    o["kind"] = .string(r.kind)
    o["shape"] = .array(r.shape.map { .number(JSONNumber($0)) })
    o["encoding_a"] = .string(r.encodingA)
    o["encoding_b"] = .string(r.encodingB)
    o["tolerance"] = number(r.tolerance)
    o["exceeds"] = .bool(r.exceeds)
    o["metrics"] = metrics(r.stats)
    o["histogram"] = .array(r.stats.histogram.map { .number(JSONNumber($0)) })
    if let a = r.router {
      o["router"] = .object(JSONObject([
        ("tokens", .number(JSONNumber(a.tokens))), ("top_k", .number(JSONNumber(a.topK))),
        ("same_set", .number(JSONNumber(a.sameSet))), ("same_set_fraction", number(a.exactSetFraction)),
        ("overlap_fraction", number(a.overlapFraction)),
      ]))
    }
    return .object(o)
  }

  static func group(_ g: ComparisonGroup) -> JSONValue {
    .object(JSONObject([
      ("layer", g.layer.map { .number(JSONNumber($0)) } ?? .null), ("kind", .string(g.kind)),
      ("items", .number(JSONNumber(g.items))), ("exceeding", .number(JSONNumber(g.exceeding))),
      ("metrics", metrics(g.stats)), ("histogram", .array(g.stats.histogram.map { .number(JSONNumber($0)) })),
    ]))
  }

  static func unmatched(_ u: UnmatchedTensor) -> JSONValue {
    .object(JSONObject([("name", .string(u.name)), ("shard", u.shard.map(JSONValue.string) ?? .null), ("reason", .string(u.reason))]))
  }
}

/// The terminal table of a ``ComparisonReport``: worst rows first, then per
/// kind and per layer summaries.
public enum ComparisonTable {
  /// Renders the report; `limit` rows of the per-item table (all when `nil`).
  public static func render(_ r: ComparisonReport, limit: Int? = 25) -> String {
    var s = ""
    s += "\(r.command == "diff" ? "Diff" : "Verify") A: \(r.pathA) (\(r.formatA))\n"
    s += "\(String(repeating: " ", count: r.command == "diff" ? 4 : 6))B: \(r.pathB) (\(r.formatB))\n"
    for (k, v) in r.settings { s += "  \(k): \(v)\n" }
    let rows = r.worstFirst
    let shown = limit.map { Array(rows.prefix($0)) } ?? rows
    var t = TextTable(
      ["", r.command == "diff" ? "tensor" : "output", "A", "B", "rel err", "tol", "max abs", "cosine", "SQNR dB", "identical"],
      alignments: [.left, .left, .left, .left, .right, .right, .right, .right, .right, .right])
    for row in shown {
      var name = row.name
      if let a = row.router { name += " (top-\(a.topK) same \(a.sameSet)/\(a.tokens))" }
      t.add([
        row.exceeds ? "FAIL" : "ok", name, row.encodingA, row.encodingB, sci(row.stats.relativeError), sci(row.tolerance),
        sci(row.stats.maxAbs), cosine(row.stats.cosine), db(row.stats.sqnrDB), percent(row.stats.identicalFraction),
      ])
    }
    s += "\n\(r.command == "diff" ? "Tensors" : "Outputs"), worst first (\(shown.count) of \(rows.count))\n"
    s += t.render()
    var k = TextTable(["kind", "items", "failing", "rel err", "max abs", "cosine", "SQNR dB", "identical"],
      alignments: [.left, .right, .right, .right, .right, .right, .right, .right])
    for g in r.kinds {
      k.add([g.kind, String(g.items), String(g.exceeding), sci(g.stats.relativeError), sci(g.stats.maxAbs), cosine(g.stats.cosine), db(g.stats.sqnrDB), percent(g.stats.identicalFraction)])
    }
    s += "\nBy module kind\n" + k.render()
    var l = TextTable(["layer", "kind", "items", "rel err", "max abs", "SQNR dB"], alignments: [.right, .left, .right, .right, .right, .right])
    for g in r.groups {
      l.add([g.layer.map(String.init) ?? "-", g.kind, String(g.items), sci(g.stats.relativeError), sci(g.stats.maxAbs), db(g.stats.sqnrDB)])
    }
    s += "\nBy layer\n" + l.render()
    for (title, list) in [("Only in A", r.onlyInA), ("Only in B", r.onlyInB), ("Not compared", r.mismatched)] where !list.isEmpty {
      s += "\n\(title) (\(list.count))\n"
      for u in list.prefix(20) { s += "  \(u.name): \(u.reason)\n" }
      if list.count > 20 { s += "  … \(list.count - 20) more\n" }
    }
    if !r.performance.isEmpty {
      s += "\n" + r.performance.map { "\($0.0) \(performanceValue($0.0, $0.1))" }.joined(separator: ", ") + "\n"
    }
    let failing = r.exceeding.count
    s += "\n" + (r.passed
      ? "PASS: \(r.rows.count) compared, none above tolerance\n"
      : "FAIL: \(failing) of \(r.rows.count) above tolerance, \(r.mismatched.count) not comparable\n")
    return s
  }

  /// A run figure: bytes as bytes, other figures with two decimals.
  public static func performanceValue(_ key: String, _ v: Double) -> String {
    key.hasPrefix("bytes") ? Format.bytes(Int(v)) : Format.fixed(v, 2)
  }

  static func sci(_ x: Double) -> String {
    if x == 0 { return "0" }
    if !x.isFinite { return x > 0 ? "inf" : "-inf" }
    return String(format: "%.2e", x)
  }

  static func cosine(_ c: Double) -> String { c == 1 ? "1" : Format.fixed(c, 6) }
  static func db(_ x: Double) -> String { x.isFinite ? Format.fixed(x, 1) : (x > 0 ? "inf" : "-inf") }
  static func percent(_ f: Double) -> String { f == 1 ? "100%" : Format.fixed(100 * f, 2) + "%" }
}
