import CompressedTensors
import StrictJSON
import Testing

@Suite("Locating quantization_config in config.json")
struct ModelConfigQuantizationTests {
  @Test("Top-level quantization_config is found and removed, other keys kept in order")
  func topLevel() throws {
    let config = try #require(
      try parseJSON(
        #"{"architectures": ["DeepseekV3ForCausalLM"], "quantization_config": {"quant_method": "fp8"}, "vocab_size": 163840}"#
      ).objectValue)
    let found = try #require(ModelConfigQuantization.locate(in: config))
    #expect(found.path == ["quantization_config"])
    #expect(found.json["quant_method"] == "fp8")
    let removed = ModelConfigQuantization.replacing(in: config, at: found.path, with: nil)
    #expect(removed.keys == ["architectures", "vocab_size"])
    let replaced = ModelConfigQuantization.replacing(
      in: config, at: found.path, with: QuantizationConfig.fp8BlockConfig(blockSize: [128, 128]))
    #expect(replaced.keys == ["architectures", "quantization_config", "vocab_size"])
    #expect(
      replaced["quantization_config"] == QuantizationConfig.fp8BlockConfig(blockSize: [128, 128]))
  }

  @Test(
    "K2.5 layout: quantization_config under text_config is located and removed, other keys kept")
  func nestedTextConfig() throws {
    let config = try #require(
      try parseJSON(
        """
        {"architectures": ["KimiK25ForConditionalGeneration"],
         "text_config": {"hidden_size": 7168, "quantization_config": \(kimiK2ConfigText),
                         "rms_norm_eps": 1e-05},
         "vision_config": {"depth": 27}}
        """
      ).objectValue)
    let found = try #require(ModelConfigQuantization.locate(in: config))
    #expect(found.path == ["text_config", "quantization_config"])
    #expect(found.json == (try kimiK2JSON()))
    #expect(ModelConfigQuantization.locateAll(in: config).count == 1)
    _ = try QuantizationConfig(json: found.json)

    let removed = ModelConfigQuantization.replacing(in: config, at: found.path, with: nil)
    #expect(removed.keys == ["architectures", "text_config", "vision_config"])
    #expect(removed["text_config"]?.objectValue?.keys == ["hidden_size", "rms_norm_eps"])
    #expect(removed["text_config"]?["rms_norm_eps"]?.numberValue?.text == "1e-05")
    #expect(removed["vision_config"] == config["vision_config"])
    #expect(ModelConfigQuantization.locate(in: removed) == nil)

    let replaced = ModelConfigQuantization.replacing(in: config, at: found.path, with: .null)
    #expect(
      replaced["text_config"]?.objectValue?.keys
        == ["hidden_size", "quantization_config", "rms_norm_eps"])
  }

  @Test("A config without quantization_config is left alone")
  func absent() throws {
    let config = try #require(try parseJSON(#"{"a": 1, "text_config": {"b": 2}}"#).objectValue)
    #expect(ModelConfigQuantization.locate(in: config) == nil)
    let same = ModelConfigQuantization.replacing(
      in: config, at: ["text_config", "quantization_config"], with: nil)
    #expect(same == config)
    let nullValued = try #require(try parseJSON(#"{"quantization_config": null}"#).objectValue)
    #expect(ModelConfigQuantization.locate(in: nullValued)?.json == .null)
  }
}
