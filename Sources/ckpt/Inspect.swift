import ArgumentParser
import Checkpoint
import CompressedTensors
import Reports
import SafeTensors
import StrictJSON
import Verification

/// `ckpt inspect PATH [--json]`.
struct Inspect: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show a checkpoint's architecture, quantization scheme, shards, dtypes and quantized modules.",
    discussion: "Reads config.json, the index and shard headers only. Exit status 1 if part of it cannot be read.")

  @Argument(help: "A checkpoint folder or a single .safetensors file.")
  var path: String

  @OptionGroup var output: OutputOptions

  func run() throws {
    let checkpoint = try loadCheckpoint(path)
    let info = Inspection(checkpoint)
    if output.json {
      printJSON(Self.json(info))
    } else {
      print(Self.text(info), terminator: "")
    }
    if info.problems.contains(where: { $0.severity == .error }) { throw ExitCode.failure }
  }

  static func schemeJSON(_ q: QuantizationSource?) -> JSONValue {
    switch q {
    case nil: return .null
    case .other(let path, let json):
      return .object(JSONObject([("location", .string(path.joined(separator: "."))), ("config", json)]))
    case .compressedTensors(let path, let c):
      let groups: [JSONValue] = c.configGroups.map { g in
        var o = JSONObject()
        o["name"] = .string(g.name)
        o["targets"] = .array(g.targets.map(JSONValue.string))
        if let w = g.weights {
          o["num_bits"] = .number(JSONNumber(w.numBits))
          o["type"] = .string(w.type.rawValue)
          o["symmetric"] = .bool(w.symmetric)
          o["strategy"] = .string(w.strategy.rawValue)
          o["group_size"] = w.groupSize.map { .number(JSONNumber($0)) } ?? .null
          o["actorder"] = w.actorder.map { .string($0.rawValue) } ?? .null
        }
        return .object(o)
      }
      return .object(JSONObject([
        ("location", .string(path.joined(separator: "."))),
        ("quant_method", .string(c.quantMethod)), ("format", c.format.map(JSONValue.string) ?? .null),
        ("quantization_status", c.quantizationStatus.map { JSONValue.string($0.rawValue) } ?? .null),
        ("config_groups", .array(groups)), ("ignore", .array(c.ignore.map(JSONValue.string))),
      ]))
    }
  }

  static func json(_ info: Inspection) -> JSONValue {
    var root = JSONObject()
    root["path"] = .string(info.checkpoint.path)
    root["single_file"] = .bool(info.checkpoint.isSingleFile)
    root["architecture"] = .object(JSONObject(info.architecture.map { ($0.key, $0.value) }))
    root["quantization"] = schemeJSON(info.quantization)
    root["shards"] = .array(info.shards.map { s in
      .object(JSONObject([("name", .string(s.name)), ("bytes", .number(JSONNumber(s.bytes))), ("tensors", .number(JSONNumber(s.tensors)))]))
    })
    root["total_bytes"] = .number(JSONNumber(info.totalBytes))
    root["tensor_count"] = .number(JSONNumber(info.tensorCount))
    root["dtypes"] = .array(info.dtypes.map { d in
      .object(JSONObject([("dtype", .string(d.dtype.rawValue)), ("tensors", .number(JSONNumber(d.tensors))), ("bytes", .number(JSONNumber(d.bytes)))]))
    })
    root["modules"] = .array(info.kinds.map { k in
      .object(JSONObject([
        ("kind", .string(k.kind.rawValue)), ("quantized", .number(JSONNumber(k.quantized))),
        ("plain", .number(JSONNumber(k.plain))),
        ("dtypes", .array(k.dtypes.map(\.rawValue).sorted().map(JSONValue.string))),
        ("bytes", .number(JSONNumber(k.bytes))),
        ("quantized_layers", .array(k.quantizedLayers.sorted().map { .number(JSONNumber($0)) })),
      ]))
    })
    root["other_files"] = .array(info.checkpoint.otherFiles.map(JSONValue.string))
    root["problems"] = .array(info.problems.map(problemJSON))
    return .object(root)
  }

  static func text(_ info: Inspection) -> String {
    var out = "Checkpoint \(info.checkpoint.path)\n"
    out += "  \(info.shards.count) shard(s), \(Format.grouped(info.tensorCount)) tensors, \(Format.bytes(info.totalBytes))\n"
    if !info.architecture.isEmpty {
      out += "\nArchitecture\n"
      var t = TextTable(["key", "value"])
      for (k, v) in info.architecture { t.add([k, JSONWriter.string(v)]) }
      out += t.render()
    }
    out += "\nQuantization\n"
    switch info.quantization {
    case nil:
      out += "  none (no quantization_config)\n"
    case .other(let path, let json):
      out += "  \(path.joined(separator: ".")): \(JSONWriter.string(json))\n"
    case .compressedTensors(let path, let c):
      out += "  \(c.quantMethod), format \(c.format ?? "?"), status \(c.quantizationStatus?.rawValue ?? "?") (in \(path.joined(separator: ".")))\n"
      for g in c.configGroups {
        if let w = g.weights {
          out += "  \(g.name): \(w.type.rawValue)\(w.numBits) weights, \(w.strategy.rawValue)"
          out += w.groupSize.map { " size \($0)" } ?? ""
          out += w.symmetric ? ", symmetric" : ", asymmetric"
          out += w.actorder.map { ", actorder \($0.rawValue)" } ?? ""
          out += "; targets \(g.targets.joined(separator: ", "))\n"
        } else {
          out += "  \(g.name): targets \(g.targets.joined(separator: ", ")) (no weight args)\n"
        }
      }
      out += "  ignore: \(c.ignore.joined(separator: ", "))\n"
    }
    out += "\nShards\n"
    var st = TextTable(["file", "size", "tensors"], alignments: [.left, .right, .right])
    for s in info.shards { st.add([s.name, Format.bytes(s.bytes), Format.grouped(s.tensors)]) }
    out += st.render()
    out += "\nTensors by dtype\n"
    var dt = TextTable(["dtype", "tensors", "bytes"], alignments: [.left, .right, .right])
    for d in info.dtypes { dt.add([d.dtype.rawValue, Format.grouped(d.tensors), Format.bytes(d.bytes)]) }
    out += dt.render()
    out += "\nModules by kind\n"
    var mt = TextTable(["kind", "quantized", "plain", "dtypes", "bytes", "quantized in layers"], alignments: [.left, .right, .right, .left, .right, .left])
    for k in info.kinds {
      mt.add([k.kind.rawValue, Format.grouped(k.quantized), Format.grouped(k.plain), k.dtypes.map(\.rawValue).sorted().joined(separator: ","), Format.bytes(k.bytes), ranges(k.quantizedLayers)])
    }
    out += mt.render()
    if !info.checkpoint.otherFiles.isEmpty {
      out += "\nOther files: \(info.checkpoint.otherFiles.joined(separator: ", "))\n"
    }
    if !info.problems.isEmpty {
      out += "\nProblems\n" + render(info.problems)
    }
    return out
  }

  /// `1-60` style ranges.
  static func ranges(_ s: Set<Int>) -> String {
    let v = s.sorted()
    guard var lo = v.first else { return "" }
    var parts: [String] = []
    var hi = lo
    for x in v.dropFirst() {
      if x == hi + 1 { hi = x; continue }
      parts.append(lo == hi ? "\(lo)" : "\(lo)-\(hi)")
      lo = x
      hi = x
    }
    parts.append(lo == hi ? "\(lo)" : "\(lo)-\(hi)")
    return parts.joined(separator: ",")
  }
}
