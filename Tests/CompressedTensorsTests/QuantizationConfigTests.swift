import CompressedTensors
import StrictJSON
import Testing

@Suite("QuantizationConfig parsing")
struct QuantizationConfigTests {
  @Test("The Kimi K2 config of FORMATS.md §3.4 parses with every field as written")
  func kimiK2Fields() throws {
    let config = try QuantizationConfig(json: try kimiK2JSON())
    #expect(config.quantMethod == "compressed-tensors")
    #expect(config.format == "pack-quantized")
    #expect(config.quantizationStatus == .compressed)
    #expect(config.kvCacheScheme == nil)
    #expect(config.kvCacheArgs == nil)
    #expect(
      config.ignore == [
        "lm_head", "re:.*self_attn.*", "re:.*shared_experts.*",
        #"re:.*mlp\.(gate|up|gate_up|down)_proj.*"#,
      ])
    #expect(config.ignorePatterns.map(\.isRegex) == [false, true, true, true])
    #expect(config.ignorePatterns.allSatisfy { !$0.isRegex || $0.isMemoizable })
    #expect(config.configGroups.count == 1)
    let group = try #require(config.configGroups.first)
    #expect(group.name == "group_0")
    #expect(group.targets == ["Linear"])
    #expect(group.targetPatterns == [try NamePattern("Linear")])
    #expect(group.preset == nil && !group.isPreset)
    #expect(group.format == nil)
    #expect(group.inputActivations == nil)
    #expect(group.outputActivations == nil)
    let w = try #require(group.weights)
    #expect(w.numBits == 4)
    #expect(w.type == .int)
    #expect(w.symmetric)
    #expect(w.strategy == .group)
    #expect(w.groupSize == 32)
    #expect(w.dynamic == .off)
    #expect(w.observer == "minmax")
    #expect(w.observerKwargs.isEmpty)
    #expect(w.actorder == nil)
    #expect(w.blockStructure == nil)
    #expect(w.scaleDtype == nil && w.zpDtype == nil && !w.usesNewerKeys)
    #expect(w.raw.keys.count == 10)
    #expect(config.unsupportedClassTargets.isEmpty)
  }

  @Test("An unmodified config round-trips to the identical JSON value, key order included")
  func roundTrip() throws {
    let json = try kimiK2JSON()
    let config = try QuantizationConfig(json: json)
    #expect(config.toJSON() == json)
    #expect(JSONWriter.string(config.toJSON()) == JSONWriter.string(json))
  }

  @Test("Unknown top-level keys are accepted and preserved in place")
  func unknownTopLevelKey() throws {
    let json = try parseJSON(
      """
      {"global_compression_ratio": 1.5, "quant_method": "compressed-tensors",
       "config_groups": {}, "sparsity_config": {}, "transform_config": {"x": [1]},
       "version": "0.12.2", "ignore": null}
      """)
    let config = try QuantizationConfig(json: json)
    #expect(config.toJSON() == json)
    #expect(config.raw.keys.first == "global_compression_ratio")
    #expect(config.raw["version"] == "0.12.2")
    #expect(config.ignore.isEmpty)
    #expect(config.configGroups.isEmpty)
  }

  @Test("A key unknown to QuantizationArgs is rejected with its name and group")
  func unknownArgsKey() throws {
    let json = try configJSON(weights: #"{"num_bits": 4, "group_size": 32, "rounding": "up"}"#)
    let error = try #require(throws: QuantizationConfigError.self) {
      try QuantizationConfig(json: json)
    }
    #expect(error.code == .unknownKey)
    #expect(error.group == "group_0")
    #expect(error.key == "weights")
    #expect(error.message.contains("\"rounding\""))
    #expect(error.message.contains("config_groups.group_0.weights"))
  }

  @Test("A key unknown to QuantizationScheme is rejected")
  func unknownSchemeKey() throws {
    let json = try parseJSON(
      #"{"quant_method": "compressed-tensors", "config_groups": {"g": {"targets": [], "bits": 4}}}"#
    )
    let error = try #require(throws: QuantizationConfigError.self) {
      try QuantizationConfig(json: json)
    }
    #expect(error.code == .unknownKey && error.group == "g")
    #expect(error.message.contains("\"bits\""))
  }

  @Test("scale_dtype and zp_dtype are accepted and exposed")
  func newerKeys() throws {
    let json = try configJSON(
      weights:
        #"{"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16, "scale_dtype": "torch.float8_e4m3fn", "zp_dtype": null}"#
    )
    let w = try #require(try QuantizationConfig(json: json).configGroups[0].weights)
    #expect(w.scaleDtype == "torch.float8_e4m3fn")
    #expect(w.zpDtype == nil)
    #expect(w.usesNewerKeys)
    #expect(w.type == .float && w.strategy == .tensorGroup)
  }

  @Test("A group written as a bare target list is accepted as a preset without arguments")
  func presetGroup() throws {
    let json = try parseJSON(
      #"{"quant_method": "compressed-tensors", "config_groups": {"w4a16": ["Linear"]}, "ignore": ["lm_head"]}"#
    )
    let config = try QuantizationConfig(json: json)
    let group = try #require(config.configGroups.first)
    #expect(group.isPreset)
    #expect(group.preset == "W4A16")
    #expect(group.targets == ["Linear"])
    #expect(group.weights == nil && group.inputActivations == nil)
    #expect(config.scheme(forModule: "model.layers.0.mlp.up_proj", isLinear: true)?.name == "w4a16")
    #expect(config.scheme(forModule: "lm_head", isLinear: true) == nil)
  }

  @Test("A DeepSeek fp8 config is recognized as not compressed-tensors")
  func notCompressedTensors() throws {
    let fp8 = QuantizationConfig.fp8BlockConfig(blockSize: [128, 128])
    let error = try #require(throws: QuantizationConfigError.self) {
      try QuantizationConfig(json: fp8)
    }
    #expect(error == .notCompressedTensors(method: "fp8"))
    #expect(error.code.rawValue == "not-compressed-tensors")
    let missing = try #require(throws: QuantizationConfigError.self) {
      try QuantizationConfig(json: try parseJSON(#"{"config_groups": {}}"#))
    }
    #expect(missing == .notCompressedTensors(method: nil))
  }

  @Test("fp8BlockConfig writes DeepSeek-V3's keys in DeepSeek-V3's order")
  func fp8Block() {
    #expect(
      JSONWriter.string(QuantizationConfig.fp8BlockConfig(blockSize: [128, 128]))
        == #"{"activation_scheme":"dynamic","fmt":"e4m3","quant_method":"fp8","weight_block_size":[128,128]}"#
    )
  }

  @Test("Library defaults apply when keys are absent")
  func defaults() throws {
    let w = try QuantizationArgs(json: try parseJSON("{}"))
    #expect(w.numBits == 8 && w.type == .int && w.symmetric)
    #expect(w.strategy == .tensor && w.groupSize == nil)
    #expect(w.dynamic == .off && w.observer == "minmax" && w.actorder == nil)
    #expect(try QuantizationArgs(json: try parseJSON(#"{"group_size": 128}"#)).strategy == .group)
    #expect(try QuantizationArgs(json: try parseJSON(#"{"group_size": -1}"#)).strategy == .channel)
    let dyn = try QuantizationArgs(
      json: try parseJSON(#"{"strategy": "TOKEN", "dynamic": true, "observer": "minmax"}"#))
    #expect(dyn.strategy == .token && dyn.dynamic == .on && dyn.observer == nil)
  }

  @Test("actorder accepts booleans and aliases as the library does")
  func actorder() throws {
    func order(_ v: String) throws -> QuantizationArgs.ActivationOrdering? {
      try QuantizationArgs(json: try parseJSON(#"{"group_size": 32, "actorder": \#(v)}"#)).actorder
    }
    #expect(try order("true") == .group)
    #expect(try order("false") == nil)
    #expect(try order("null") == nil)
    #expect(try order(#""dynamic""#) == .group)
    #expect(try order(#""Weight""#) == .weight)
    #expect(try order(#""static""#) == .weight)
  }

  @Test(
    "Invalid arguments are rejected naming the group and key",
    arguments: [
      (#"{"num_bits": 9}"#, "weights.num_bits", QuantizationConfigError.Code.invalidValue),
      (#"{"num_bits": 0}"#, "weights.num_bits", .invalidValue),
      (#"{"num_bits": 4.0}"#, "weights.num_bits", .invalidValue),
      (#"{"num_bits": null}"#, "weights.num_bits", .wrongType),
      (#"{"type": "float", "num_bits": 6}"#, "weights.num_bits", .invalidValue),
      (#"{"type": "uint"}"#, "weights.type", .invalidValue),
      (#"{"strategy": "row"}"#, "weights.strategy", .invalidValue),
      (#"{"strategy": "group"}"#, "weights", .inconsistentArguments),
      (#"{"strategy": "channel", "group_size": 32}"#, "weights", .inconsistentArguments),
      (#"{"group_size": -2}"#, "weights.group_size", .invalidValue),
      (#"{"group_size": 0}"#, "weights.group_size", .invalidValue),
      (#"{"strategy": "block"}"#, "weights", .inconsistentArguments),
      (#"{"block_structure": [128, 128]}"#, "weights", .inconsistentArguments),
      (
        #"{"strategy": "block", "block_structure": [128]}"#, "weights.block_structure",
        .invalidValue
      ),
      (#"{"strategy": "token"}"#, "weights", .inconsistentArguments),
      (#"{"actorder": "group"}"#, "weights", .inconsistentArguments),
      (#"{"dynamic": "global"}"#, "weights.dynamic", .invalidValue),
      (#"{"dynamic": "local"}"#, "weights", .inconsistentArguments),
      (#"{"strategy": "channel", "dynamic": true}"#, "weights", .inconsistentArguments),
      (#"{"symmetric": "yes"}"#, "weights.symmetric", .wrongType),
      (#"{"observer_kwargs": null}"#, "weights.observer_kwargs", .wrongType),
    ])
  func invalidArgs(weights: String, key: String, code: QuantizationConfigError.Code) throws {
    let json = try configJSON(weights: weights)
    let error = try #require(throws: QuantizationConfigError.self) {
      try QuantizationConfig(json: json)
    }
    #expect(error.code == code)
    #expect(error.group == "group_0")
    #expect(error.key == key)
    #expect(error.message.contains("group_0"))
  }

  @Test("block_structure accepts a list or the legacy RxC string")
  func blockStructure() throws {
    let a = try QuantizationArgs(
      json: try parseJSON(#"{"type": "float", "strategy": "block", "block_structure": [128, 64]}"#))
    #expect(a.blockStructure == [128, 64] && a.strategy == .block)
    let b = try QuantizationArgs(
      json: try parseJSON(#"{"strategy": "block", "block_structure": "2x4"}"#))
    #expect(b.blockStructure == [2, 4])
  }

  @Test("Scheme-level checks: activation strategy and actorder")
  func schemeChecks() throws {
    let json = try parseJSON(
      #"{"quant_method": "compressed-tensors", "config_groups": {"g": {"targets": ["Linear"], "input_activations": {"strategy": "channel"}}}}"#
    )
    let error = try #require(throws: QuantizationConfigError.self) {
      try QuantizationConfig(json: json)
    }
    #expect(error.code == .inconsistentArguments && error.key == "input_activations")
    let noTargets = try parseJSON(
      #"{"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {}}}}"#)
    let missing = try #require(throws: QuantizationConfigError.self) {
      try QuantizationConfig(json: noTargets)
    }
    #expect(missing.code == .missingKey && missing.key == "targets")
  }

  @Test("Top-level errors: not an object, bad status, missing config_groups, bad kv_cache_scheme")
  func topLevelErrors() throws {
    #expect(throws: QuantizationConfigError.self) { try QuantizationConfig(json: .array([])) }
    func code(_ text: String) throws -> QuantizationConfigError.Code? {
      do {
        _ = try QuantizationConfig(json: try parseJSON(text))
        return nil
      } catch let e as QuantizationConfigError { return e.code }
    }
    #expect(
      try code(
        #"{"quant_method": "compressed-tensors", "config_groups": {}, "quantization_status": "done"}"#
      )
        == .invalidValue)
    #expect(try code(#"{"quant_method": "compressed-tensors"}"#) == .missingKey)
    #expect(
      try code(#"{"quant_method": "compressed-tensors", "config_groups": {}, "ignore": [1]}"#)
        == .wrongType)
    #expect(
      try code(
        #"{"quant_method": "compressed-tensors", "config_groups": {}, "kv_cache_scheme": {"num_bits": 99}}"#
      ) == .invalidValue)
  }

  @Test("setValue and setIgnore edit raw in place and re-parse")
  func editing() throws {
    var config = try QuantizationConfig(json: try kimiK2JSON())
    #expect(config.isIgnored("model.layers.1.self_attn.o_proj"))
    try config.setIgnore(["lm_head"])
    #expect(!config.isIgnored("model.layers.1.self_attn.o_proj"))
    #expect(config.raw.keys.last == "ignore")
    try config.setValue("frozen", forKey: "quantization_status")
    #expect(config.quantizationStatus == .frozen)
    #expect(config.raw.keys[2] == "quantization_status")
    let before = config.raw
    #expect(throws: QuantizationConfigError.self) {
      try config.setValue("nope", forKey: "quantization_status")
    }
    #expect(config.raw == before)
    config.raw["kv_cache_scheme"] = nil
    #expect(try config.reparsed().raw.keys.contains("kv_cache_scheme") == false)
  }
}
