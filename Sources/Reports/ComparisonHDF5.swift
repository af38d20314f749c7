import Diff
import HDF5
import QuantKernels
import SafeTensors

#if canImport(Glibc)
  import Glibc
#endif

/// The HDF5 form of a ``ComparisonReport`` (layout in Docs/REPORTS.md):
///
/// ```
/// /                       attributes: schema, tool, tool_version, command, a, b, format_a, format_b, passed, settings.*
/// /histogram_bin_lower_edges   float64 [bins]   (0 for the zero and underflow bins)
/// /histogram_bin_labels        strings [bins]
/// /metric_names                strings [M]      columns of every `metrics` dataset
/// /summary/metrics             float64 [M]      all rows merged
/// /kinds/names, /kinds/metrics [K, M], /kinds/histograms int64 [K, bins]
/// /layers/<N>|global/          one group per layer (`global`: no layer)
///     names strings [R], kinds strings [R], metrics float64 [R, M],
///     histograms int64 [R, bins], tolerance float64 [R], exceeds int32 [R]
///     router int64 [R, 4] (tokens, top_k, same_set, overlap; -1 when not a MoE block)
/// ```
public enum ComparisonHDF5 {
  /// Columns of the `metrics` datasets.
  public static let metricNames = [
    "elements", "identical", "identical_fraction", "max_abs", "max_abs_index", "rmse", "relative", "cosine", "sqnr_db",
    "non_finite_a", "non_finite_b", "non_finite_differing", "sum_sq_diff", "sum_sq_a", "sum_sq_b", "sum_ab",
  ]

  static func values(_ s: ErrorStats) -> [Double] {
    [
      Double(s.elements), Double(s.identical), s.identicalFraction, s.maxAbs, Double(s.maxAbsIndex), s.rmse, s.relativeError,
      s.cosine, s.sqnrDB, Double(s.nonFiniteA), Double(s.nonFiniteB), Double(s.nonFiniteDiffering), s.sumSquaredDifference, s.sumSquaredA, s.sumSquaredB,
      s.sumProduct,
    ]
  }

  /// Writes the report to `path` (a temporary name first, renamed when complete).
  public static func write(_ r: ComparisonReport, to path: String) throws(HDF5Error) {
    let temporary = FileSystem.temporaryPath(for: path)
    do { try fill(r, temporary) } catch {
      unlink(temporary)
      throw error
    }
    // `fill` returned: every handle is released and the file closed.
    do { try FileSystem.commit(temporary, to: path) } catch {
      unlink(temporary)
      throw HDF5Error(operation: "rename", file: path, path: "/", message: "\(error)")
    }
  }

  private static func fill(_ r: ComparisonReport, _ temporary: String) throws(HDF5Error) {
    let f = try HDF5File(creatingAt: temporary)
    try f.setAttribute("schema", to: ComparisonJSON.schema)
    try f.setAttribute("tool", to: "ckpt (CheckpointKit)")
    try f.setAttribute("tool_version", to: r.toolVersion)
    try f.setAttribute("command", to: r.command)
    try f.setAttribute("a", to: r.pathA)
    try f.setAttribute("b", to: r.pathB)
    try f.setAttribute("format_a", to: r.formatA)
    try f.setAttribute("format_b", to: r.formatB)
    try f.setAttribute("passed", to: Int32(r.passed ? 1 : 0))
    for (k, v) in r.settings { try f.setAttribute("settings." + k, to: v) }
    for (k, v) in r.performance { try f.setAttribute("performance." + k, to: v) }
    let bins = ErrorStats.histogramBins
    try f.createDataset("histogram_bin_lower_edges", values: (0..<bins).map(ErrorStats.binLowerEdge))
    try f.createStringDataset("histogram_bin_labels", strings: (0..<bins).map(ErrorStats.binLabel))
    try f.createStringDataset("metric_names", strings: metricNames)
    try f.createDataset("summary/metrics", values: values(r.total))
    try f.createDataset("summary/histogram", values: r.total.histogram)
    let kinds = r.kinds
    try f.createStringDataset("kinds/names", strings: kinds.map(\.kind))
    try f.createDataset("kinds/metrics", values: kinds.flatMap { values($0.stats) }, shape: [kinds.count, metricNames.count])
    try f.createDataset("kinds/histograms", values: kinds.flatMap(\.stats.histogram), shape: [kinds.count, bins])
    var byLayer: [String: [ComparisonRow]] = [:]
    var order: [String] = []
    for row in r.rows {
      let key = row.layer.map(String.init) ?? "global"
      if byLayer[key] == nil { order.append(key) }
      byLayer[key, default: []].append(row)
    }
    _ = try f.createGroup("layers")
    for key in order {
      let rows = byLayer[key]!
      let g = "layers/\(key)/"
      try f.createStringDataset(g + "names", strings: rows.map(\.name))
      try f.createStringDataset(g + "kinds", strings: rows.map(\.kind))
      try f.createDataset(g + "metrics", values: rows.flatMap { values($0.stats) }, shape: [rows.count, metricNames.count])
      try f.createDataset(g + "histograms", values: rows.flatMap(\.stats.histogram), shape: [rows.count, bins])
      try f.createDataset(g + "tolerance", values: rows.map(\.tolerance))
      try f.createDataset(g + "exceeds", values: rows.map { Int32($0.exceeds ? 1 : 0) })
      try f.createDataset(
        g + "router",
        values: rows.flatMap { row in row.router.map { [$0.tokens, $0.topK, $0.sameSet, $0.overlap] } ?? [-1, -1, -1, -1] },
        shape: [rows.count, 4])
    }
    for (name, list) in [("only_in_a", r.onlyInA), ("only_in_b", r.onlyInB), ("mismatched", r.mismatched)] {
      try f.createStringDataset("unmatched/\(name)/names", strings: list.map(\.name))
      try f.createStringDataset("unmatched/\(name)/reasons", strings: list.map(\.reason))
    }
    try f.flush()
  }
}
