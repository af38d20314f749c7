import Diff
import Foundation
import QuantKernels

/// The HTML form of a ``ComparisonReport``: one self-contained file (inline
/// CSS and SVG, no script, nothing fetched) with a summary, a chart of the
/// relative error per layer and module kind, the error histogram, and tables.
public enum ComparisonHTML {
  /// One colour per kind, in ``ComparisonReport/kindNames`` order.
  static let palette = ["#8c564b", "#7f7f7f", "#1f77b4", "#17becf", "#bcbd22", "#9467bd", "#2ca02c", "#ff7f0e", "#d62728", "#e377c2", "#393b79", "#aaaaaa"]

  static func color(_ kind: String) -> String {
    palette[min(palette.count - 1, ComparisonReport.kindNames.firstIndex(of: kind) ?? palette.count - 1)]
  }

  /// Escapes text for HTML.
  static func esc(_ s: String) -> String {
    var o = ""
    for c in s {
      switch c {
      case "&": o += "&amp;"
      case "<": o += "&lt;"
      case ">": o += "&gt;"
      case "\"": o += "&quot;"
      default: o.append(c)
      }
    }
    return o
  }

  /// The page.
  public static func render(_ r: ComparisonReport) -> String {
    let title = "ckpt \(r.command): \(r.pathA) vs \(r.pathB)"
    var h = """
      <!DOCTYPE html>
      <html lang="en"><head><meta charset="utf-8"><title>\(esc(title))</title>
      <style>
      body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
      h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
      table{border-collapse:collapse;font-size:12.5px;width:100%} th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
      th{background:#f6f6f6;position:sticky;top:0} td.l,th.l{text-align:left} .fail{color:#b00020;font-weight:600} .ok{color:#1b7f3b}
      .badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
      .meta td{text-align:left;border:none;padding:1px 8px} svg text{font:11px system-ui,sans-serif;fill:#333} .note{color:#666;font-size:12px}
      </style></head><body>
      <h1>\(esc(title))</h1>

      """
    let pass = r.passed
    h += "<p><span class=\"badge\" style=\"background:\(pass ? "#1b7f3b" : "#b00020")\">\(pass ? "PASS" : "FAIL")</span> "
    h += "\(r.rows.count) \(r.command == "diff" ? "tensors" : "outputs") compared, \(r.exceeding.count) above tolerance, "
    h += "\(r.onlyInA.count) only in A, \(r.onlyInB.count) only in B, \(r.mismatched.count) not comparable.</p>\n"
    h += "<table class=\"meta\">"
    let meta: [(String, String)] = [("A", "\(r.pathA) (\(r.formatA))"), ("B", "\(r.pathB) (\(r.formatB))"), ("tool", "ckpt \(r.toolVersion)")]
      + r.settings + r.performance.map { ($0.0, ComparisonTable.performanceValue($0.0, $0.1)) }
    for (k, v) in meta { h += "<tr><td><b>\(esc(k))</b></td><td>\(esc(v))</td></tr>" }
    h += "</table>\n"
    h += "<h2>Relative error per layer and module kind</h2>\n" + layerChart(r)
    h += "<h2>Histogram of |A − B| over all elements</h2>\n" + histogramChart(r.total)
    h += "<h2>By module kind</h2>\n" + groupTable(r.kinds, layers: false)
    h += "<h2>Worst \(min(100, r.rows.count)) of \(r.rows.count)</h2>\n" + rowTable(Array(r.worstFirst.prefix(100)))
    h += "<h2>By layer</h2>\n" + groupTable(r.groups, layers: true)
    for (t, list) in [("Only in A", r.onlyInA), ("Only in B", r.onlyInB), ("Not compared", r.mismatched)] where !list.isEmpty {
      h += "<h2>\(t) (\(list.count))</h2>\n<table><tr><th class=\"l\">name</th><th class=\"l\">reason</th></tr>"
      for u in list.prefix(500) { h += "<tr><td class=\"l\">\(esc(u.name))</td><td class=\"l\">\(esc(u.reason))</td></tr>" }
      h += "</table>\n"
    }
    h += "<p class=\"note\">Relative error is ‖A − B‖ / ‖A‖; SQNR is 10·log10(‖A‖² / ‖A − B‖²). Schema and definitions: Docs/REPORTS.md.</p>\n"
    h += "</body></html>\n"
    return h
  }

  static func sci(_ x: Double) -> String { ComparisonTable.sci(x) }

  /// A scatter-and-line chart: x = layer (unlayered items at the right), y = log10 relative error.
  static func layerChart(_ r: ComparisonReport) -> String {
    let groups = r.groups
    let layers = r.layers
    let hasGlobal = groups.contains { $0.layer == nil }
    let columns = max(1, layers.count + (hasGlobal ? 1 : 0))
    let (w, hgt, left, right, top, bottom) = (1100.0, 360.0, 64.0, 170.0, 14.0, 40.0)
    let plotW = w - left - right
    let plotH = hgt - top - bottom
    let errors = groups.map(\.stats.relativeError).filter { $0 > 0 && $0.isFinite }
    let lo = floor(log10(errors.min() ?? 1e-8)) - (errors.isEmpty ? 0 : 0.5)
    let hi = max(lo + 1, ceil(log10(errors.max() ?? 1)))
    let floorY = top + plotH  // exact (zero error) sits on the axis
    func x(_ layer: Int?) -> Double {
      let i = layer.flatMap { layers.firstIndex(of: $0) } ?? layers.count
      return left + (Double(i) + 0.5) * plotW / Double(columns)
    }
    func y(_ e: Double) -> Double {
      guard e > 0, e.isFinite else { return e.isFinite ? floorY : top }
      return top + (hi - log10(e)) / (hi - lo + 0.5) * plotH
    }
    var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(hgt))\" viewBox=\"0 0 \(Int(w)) \(Int(hgt))\" role=\"img\" aria-label=\"relative error per layer\">\n"
    s += "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(plotW)\" height=\"\(plotH)\" fill=\"#fbfbfb\" stroke=\"#ccc\"/>\n"
    var d = Int(lo)
    while Double(d) <= hi {
      let yy = y(pow(10, Double(d)))
      if yy >= top && yy <= floorY {
        s += "<line x1=\"\(left)\" x2=\"\(left + plotW)\" y1=\"\(yy)\" y2=\"\(yy)\" stroke=\"#e4e4e4\"/>"
        s += "<text x=\"\(left - 6)\" y=\"\(yy + 4)\" text-anchor=\"end\">1e\(d)</text>\n"
      }
      d += 1
    }
    s += "<text x=\"\(left - 6)\" y=\"\(floorY + 4)\" text-anchor=\"end\">exact</text>\n"
    let step = max(1, columns / 30)
    for (i, l) in layers.enumerated() where i % step == 0 {
      s += "<text x=\"\(x(l))\" y=\"\(hgt - bottom + 16)\" text-anchor=\"middle\">\(l)</text>"
    }
    if hasGlobal { s += "<text x=\"\(x(nil))\" y=\"\(hgt - bottom + 16)\" text-anchor=\"middle\">other</text>" }
    s += "<text x=\"\(left + plotW / 2)\" y=\"\(hgt - 6)\" text-anchor=\"middle\">layer</text>\n"
    let kinds = r.kinds.map(\.kind)
    for (k, kind) in kinds.enumerated() {
      let pts = groups.filter { $0.kind == kind }
      let c = color(kind)
      let layered = pts.filter { $0.layer != nil }
      if layered.count > 1 {
        let path = layered.map { "\(x($0.layer)),\(y($0.stats.relativeError))" }.joined(separator: " ")
        s += "<polyline fill=\"none\" stroke=\"\(c)\" stroke-width=\"1.5\" points=\"\(path)\"/>\n"
      }
      for p in pts {
        let fail = p.exceeding > 0
        s += "<circle cx=\"\(x(p.layer))\" cy=\"\(y(p.stats.relativeError))\" r=\"\(fail ? 5 : 3.5)\" fill=\"\(c)\" stroke=\"\(fail ? "#b00020" : "none")\" stroke-width=\"2\">"
        s += "<title>\(esc(kind)) layer \(p.layer.map(String.init) ?? "-"): rel \(sci(p.stats.relativeError)), \(p.items) item(s)</title></circle>"
      }
      let ly = top + 14 + Double(k) * 17
      s += "<circle cx=\"\(w - right + 16)\" cy=\"\(ly - 4)\" r=\"4\" fill=\"\(c)\"/><text x=\"\(w - right + 26)\" y=\"\(ly)\">\(esc(kind))</text>\n"
    }
    return s + "</svg>\n"
  }

  /// Bars of the histogram's non-empty bins, log-scaled counts.
  static func histogramChart(_ s: ErrorStats) -> String {
    let bins = (1..<ErrorStats.histogramBins).filter { s.histogram[$0] > 0 }
    let (w, hgt, left, bottom, top) = (1100.0, 260.0, 64.0, 56.0, 14.0)
    var o = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(hgt))\" viewBox=\"0 0 \(Int(w)) \(Int(hgt))\" role=\"img\" aria-label=\"error histogram\">\n"
    let exact = s.histogram[0]
    o += "<text x=\"\(left)\" y=\"\(top + 4)\">\(exact) of \(s.count) finite pairs differ by exactly 0 (not drawn)</text>\n"
    guard let first = bins.first, let last = bins.last else { return o + "</svg>\n" }
    let range = Array(first...last)
    let maxCount = Double(range.map { s.histogram[$0] }.max() ?? 1)
    let plotH = hgt - bottom - top - 16
    let bw = (w - left - 20) / Double(range.count)
    for (i, k) in range.enumerated() {
      let c = Double(s.histogram[k])
      let hh = c > 0 ? max(1, log10(c + 1) / log10(maxCount + 1) * plotH) : 0
      let xx = left + Double(i) * bw
      o += "<rect x=\"\(xx + 1)\" y=\"\(top + 16 + plotH - hh)\" width=\"\(max(1, bw - 2))\" height=\"\(hh)\" fill=\"#1f77b4\"><title>|d| in \(esc(ErrorStats.binLabel(k))): \(Int(c))</title></rect>"
      if range.count <= 24 || i % max(1, range.count / 24) == 0 {
        o += "<text x=\"\(xx + bw / 2)\" y=\"\(hgt - bottom + 14)\" text-anchor=\"middle\">\(esc(ErrorStats.binLabel(k)))</text>"
      }
    }
    o += "<text x=\"\(left + (w - left) / 2)\" y=\"\(hgt - 8)\" text-anchor=\"middle\">|A − B| (bin lower edge, powers of two); bar height: log count</text>\n"
    return o + "</svg>\n"
  }

  static func groupTable(_ groups: [ComparisonGroup], layers: Bool) -> String {
    var h = "<table><tr>\(layers ? "<th>layer</th>" : "")<th class=\"l\">kind</th><th>items</th><th>failing</th><th>rel err</th><th>max abs</th><th>cosine</th><th>SQNR dB</th><th>identical</th></tr>"
    for g in groups {
      h += "<tr>\(layers ? "<td>\(g.layer.map(String.init) ?? "-")</td>" : "")<td class=\"l\"><span style=\"color:\(color(g.kind))\">■</span> \(esc(g.kind))</td>"
      h += "<td>\(g.items)</td><td class=\"\(g.exceeding > 0 ? "fail" : "")\">\(g.exceeding)</td><td>\(sci(g.stats.relativeError))</td><td>\(sci(g.stats.maxAbs))</td>"
      h += "<td>\(ComparisonTable.cosine(g.stats.cosine))</td><td>\(ComparisonTable.db(g.stats.sqnrDB))</td><td>\(ComparisonTable.percent(g.stats.identicalFraction))</td></tr>"
    }
    return h + "</table>\n"
  }

  static func rowTable(_ rows: [ComparisonRow]) -> String {
    var h = "<table><tr><th class=\"l\"></th><th class=\"l\">name</th><th class=\"l\">A</th><th class=\"l\">B</th><th>rel err</th><th>tol</th><th>max abs</th><th>cosine</th><th>SQNR dB</th><th>identical</th><th class=\"l\">router</th></tr>"
    for r in rows {
      h += "<tr><td class=\"l \(r.exceeds ? "fail" : "ok")\">\(r.exceeds ? "FAIL" : "ok")</td><td class=\"l\">\(esc(r.name))</td><td class=\"l\">\(esc(r.encodingA))</td><td class=\"l\">\(esc(r.encodingB))</td>"
      h += "<td>\(sci(r.stats.relativeError))</td><td>\(sci(r.tolerance))</td><td>\(sci(r.stats.maxAbs))</td><td>\(ComparisonTable.cosine(r.stats.cosine))</td>"
      h += "<td>\(ComparisonTable.db(r.stats.sqnrDB))</td><td>\(ComparisonTable.percent(r.stats.identicalFraction))</td>"
      h += "<td class=\"l\">\(r.router.map { "top-\($0.topK) same set \($0.sameSet)/\($0.tokens), overlap \(ComparisonTable.percent($0.overlapFraction))" } ?? "")</td></tr>"
    }
    return h + "</table>\n"
  }
}
