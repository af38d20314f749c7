/// A plain-text table for terminal output: a header row, aligned columns.
public struct TextTable: Sendable {
  /// Column alignment.
  public enum Alignment: Sendable { case left, right }

  /// Column titles.
  public let headers: [String]
  /// Alignment per column.
  public let alignments: [Alignment]
  /// Rows of cells.
  public private(set) var rows: [[String]] = []

  /// Creates a table; columns are left-aligned unless given.
  public init(_ headers: [String], alignments: [Alignment]? = nil) {
    self.headers = headers
    self.alignments = alignments ?? Array(repeating: .left, count: headers.count)
  }

  /// Appends a row (missing cells are blank).
  public mutating func add(_ cells: [String]) { rows.append(cells) }

  /// The table as text, one line per row, two spaces between columns.
  public func render(indent: Int = 2) -> String {
    let all = [headers] + rows
    var widths = Array(repeating: 0, count: headers.count)
    for row in all {
      for (i, c) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) }
    }
    let pad = String(repeating: " ", count: indent)
    var out = ""
    for (r, row) in all.enumerated() {
      var line = pad
      for i in 0..<headers.count {
        let c = i < row.count ? row[i] : ""
        let fill = String(repeating: " ", count: widths[i] - c.count)
        let cell = alignments[i] == .right ? fill + c : c + (i == headers.count - 1 ? "" : fill)
        line += cell + (i == headers.count - 1 ? "" : "  ")
      }
      out += line.trimmingTrailingSpaces() + "\n"
      if r == 0 {
        out += pad + widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ") + "\n"
      }
    }
    return out
  }
}

extension String {
  func trimmingTrailingSpaces() -> String {
    var s = self
    while s.last == " " { s.removeLast() }
    return s
  }
}

/// Number formatting for reports.
public enum Format {
  /// Bytes in binary-free SI units as people read disk sizes: `1.67 GB`, `512 B`.
  public static func bytes(_ n: Int) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"]
    var v = Double(n)
    var u = 0
    while v >= 1000 && u < units.count - 1 {
      v /= 1000
      u += 1
    }
    return u == 0 ? "\(n) B" : fixed(v, v >= 100 ? 0 : v >= 10 ? 1 : 2) + " " + units[u]
  }

  /// A rate in bytes per second: `2.31 GB/s`.
  public static func rate(_ bytesPerSecond: Double) -> String {
    bytes(Int(bytesPerSecond.isFinite ? bytesPerSecond : 0)) + "/s"
  }

  /// A duration as `m:ss` or `h:mm:ss`.
  public static func duration(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0 else { return "--:--" }
    let s = Int(seconds.rounded())
    let h = s / 3600
    let m = (s % 3600) / 60
    let r = s % 60
    let two = { (x: Int) in x < 10 ? "0\(x)" : "\(x)" }
    return h > 0 ? "\(h):\(two(m)):\(two(r))" : "\(m):\(two(r))"
  }

  /// `value` with `digits` digits after the point.
  public static func fixed(_ value: Double, _ digits: Int) -> String {
    guard value.isFinite else { return "\(value)" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let r = (value * scale).rounded() / scale
    var s = "\(r)"
    if s.contains("e") { return "\(value)" }
    if !s.contains(".") { s += "." }
    let frac = s.split(separator: ".", omittingEmptySubsequences: false).last!.count
    if digits == 0 { return String(s.split(separator: ".").first!) }
    if frac < digits { s += String(repeating: "0", count: digits - frac) }
    return s
  }

  /// An integer with thousands separators: `69,120`.
  public static func grouped(_ n: Int) -> String {
    let s = String(n.magnitude)
    var out = ""
    for (i, c) in s.enumerated() {
      if i > 0 && (s.count - i) % 3 == 0 { out += "," }
      out.append(c)
    }
    return (n < 0 ? "-" : "") + out
  }
}
