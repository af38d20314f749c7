import ArgumentParser
import Checkpoint
import Reports
import StrictJSON
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// Options shared by every command that prints a report.
struct OutputOptions: ParsableArguments {
  @Flag(name: .long, help: "Print stable, machine-readable JSON on standard output instead of a table.")
  var json = false
}

/// Loads a checkpoint or fails with exit status 64 (a usage error: the path).
func loadCheckpoint(_ path: String) throws -> Checkpoint {
  do {
    return try Checkpoint.load(path)
  } catch {
    throw ValidationError(error.problems.map { "\($0.file ?? path): \($0.message)" }.joined(separator: "\n"))
  }
}

/// Flushes standard output and exits with `status`, skipping teardown.
func exitFlushing(_ status: Int32) -> Never {
  fflush(nil)
  exit(status)
}

/// Writes to standard error.
/// Ends a command that refused or failed: `{"ok": false, "error": …}` on
/// stdout with `--json`, else `ckpt COMMAND: message` on stderr; exits `status`.
func failCommand(_ command: String, json: Bool, _ message: String, status: Int32) -> Never {
  if json {
    var o = JSONObject()
    o["ok"] = .bool(false)
    o["error"] = .string(message)
    printJSON(.object(o))
  } else {
    printError("ckpt \(command): " + message)
  }
  exitFlushing(status)
}

func printError(_ text: String) {
  var s = text
  if !s.hasSuffix("\n") { s += "\n" }
  writeStderr(s)
}

/// Writes raw text to file descriptor 2.
func writeStderr(_ s: String) {
  var bytes = Array(s.utf8)
  bytes.withUnsafeMutableBytes { raw in
    var done = 0
    while done < raw.count {
      let n = write(2, raw.baseAddress! + done, raw.count - done)
      if n <= 0 { break }
      done += n
    }
  }
}

/// Prints JSON (pretty, two spaces, UTF-8) and a newline to standard output.
func printJSON(_ value: JSONValue) {
  print(JSONWriter.string(value, style: .pretty(indent: 2, asciiOnly: false)))
}

/// JSON for a problem.
func problemJSON(_ p: Problem) -> JSONValue {
  .object(JSONObject([
    ("severity", .string(p.severity.rawValue)), ("code", .string(p.code)),
    ("file", p.file.map(JSONValue.string) ?? .null), ("tensor", p.tensor.map(JSONValue.string) ?? .null),
    ("message", .string(p.message)),
  ]))
}

/// One line per problem, errors first: `error: FILE: message [code]`.
func render(_ problems: [Problem]) -> String {
  problems.map { "\($0.description)\n" }.joined()
}

/// Monotonic seconds.
func now() -> Double {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Whether standard error is a terminal.
var stderrIsTerminal: Bool { isatty(2) == 1 }

/// Shows bytes done, throughput and ETA on standard error, at most five times a
/// second, only when standard error is a terminal and JSON output is off.
final class ProgressReporter: Sendable {
  private struct State {
    var total: Int
    var done = 0
    var lastPrint = 0.0
    var printed = false
  }
  private let label: String
  private let enabled: Bool
  private let start = Mutex(now())
  private let state: Mutex<State>

  init(label: String, total: Int, enabled: Bool) {
    self.label = label
    self.state = Mutex(State(total: total))
    self.enabled = enabled && stderrIsTerminal
  }

  /// Restarts the count for `total` bytes (after work found already done was skipped).
  func reset(total: Int) {
    state.withLock { $0 = State(total: total) }
    start.withLock { $0 = now() }
  }

  /// Records `bytes` more done.
  func add(_ bytes: Int) {
    guard enabled else { return }
    state.withLock { s in
      s.done += bytes
      let t = now()
      guard t - s.lastPrint >= 0.2 else { return }
      s.lastPrint = t
      s.printed = true
      let elapsed = t - start.withLock { $0 }
      let rate = Double(s.done) / max(elapsed, 1e-9)
      let eta = rate > 0 ? Double(s.total - s.done) / rate : .infinity
      let pct = s.total > 0 ? Format.fixed(100 * Double(s.done) / Double(s.total), 1) : "?"
      writeStderr("\r\u{1B}[K\(label) \(Format.bytes(s.done)) / \(Format.bytes(s.total)) (\(pct)%)  \(Format.rate(rate))  ETA \(Format.duration(eta))")
    }
  }

  /// Clears the progress line.
  func finish() {
    guard enabled else { return }
    state.withLock { s in if s.printed { writeStderr("\r\u{1B}[K") } }
  }
}
