import Testing
import TestSupport

@testable import Pipeline

// MARK: - Helpers

private func scalar(_ text: String, _ line: Int, quoted: Bool = false) -> PipelineNode {
  PipelineNode(kind: .scalar(text, quoted: quoted), line: line)
}

private func null(_ line: Int) -> PipelineNode { PipelineNode(kind: .null, line: line) }

private func seq(_ line: Int, _ items: [PipelineNode]) -> PipelineNode {
  PipelineNode(kind: .sequence(items), line: line)
}

private func map(_ line: Int, _ entries: [(String, Int, PipelineNode)]) -> PipelineNode {
  PipelineNode(kind: .mapping(entries.map { PipelineEntry(key: $0.0, line: $0.1, value: $0.2) }), line: line)
}

/// The error `text` is rejected with, or nil if it parses.
private func parseError(_ text: String) -> PipelineTextError? {
  do {
    _ = try PipelineText.parse(text)
    return nil
  } catch {
    return error
  }
}

extension SeededRandom {
  /// A value in `0..<n` for the fuzz tests.
  fileprivate mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

private let samplePipeline = """
  # Convert, then verify.
  ---
  name: llama-8b-fp8   # trailing comment
  version: 2
  enabled: true
  source: /models/llama/model-00001-of-00004.safetensors
  steps:
  - op: convert
    args:
      dtype: fp8_e4m3
      skip: [lm_head, "embed_tokens", 'norm']
  - op: verify
    tolerance: 1e-3
    checks:
      - sha256
      - {name: shapes, strict: true}
  output: "out/\\u00e9t\\u00e9"
  notes: 'it''s fine'
  empty:
  """

private let sampleJSON = """
  {
    "name": "convert-and-verify",
    "steps": [
      {
        "op": "convert",
        "args": {"dtype": "bf16", "shards": [1, 2.5e-3, -4]}
      },
      {"op": "verify", "strict": false, "note": null}
    ],
    "escaped": "tab\\there \\"q\\" \\ud83d\\ude00 \\/"
  }
  """

// MARK: - Structure

@Suite("PipelineText: structure")
struct PipelineStructureTests {
  @Test("A realistic pipeline parses into the exact tree, with lines")
  func samplePipelineTree() throws {
    let node = try PipelineText.parse(samplePipeline)
    let expected = map(3, [
      ("name", 3, scalar("llama-8b-fp8", 3)),
      ("version", 4, scalar("2", 4)),
      ("enabled", 5, scalar("true", 5)),
      ("source", 6, scalar("/models/llama/model-00001-of-00004.safetensors", 6)),
      ("steps", 7, seq(8, [
        map(8, [
          ("op", 8, scalar("convert", 8)),
          ("args", 9, map(10, [
            ("dtype", 10, scalar("fp8_e4m3", 10)),
            ("skip", 11, seq(11, [
              scalar("lm_head", 11), scalar("embed_tokens", 11, quoted: true), scalar("norm", 11, quoted: true),
            ])),
          ])),
        ]),
        map(12, [
          ("op", 12, scalar("verify", 12)),
          ("tolerance", 13, scalar("1e-3", 13)),
          ("checks", 14, seq(15, [
            scalar("sha256", 15),
            map(16, [("name", 16, scalar("shapes", 16)), ("strict", 16, scalar("true", 16))]),
          ])),
        ]),
      ])),
      ("output", 17, scalar("out/été", 17, quoted: true)),
      ("notes", 18, scalar("it's fine", 18, quoted: true)),
      ("empty", 19, null(19)),
    ])
    #expect(node == expected)
  }

  @Test("A multi-line JSON document parses, with each entry's line")
  func jsonDocument() throws {
    let node = try PipelineText.parse(sampleJSON)
    let expected = map(1, [
      ("name", 2, scalar("convert-and-verify", 2, quoted: true)),
      ("steps", 3, seq(3, [
        map(4, [
          ("op", 5, scalar("convert", 5, quoted: true)),
          ("args", 6, map(6, [
            ("dtype", 6, scalar("bf16", 6, quoted: true)),
            ("shards", 6, seq(6, [scalar("1", 6), scalar("2.5e-3", 6), scalar("-4", 6)])),
          ])),
        ]),
        map(8, [
          ("op", 8, scalar("verify", 8, quoted: true)),
          ("strict", 8, scalar("false", 8)),
          ("note", 8, null(8)),
        ]),
      ])),
      ("escaped", 10, scalar("tab\there \"q\" 😀 /", 10, quoted: true)),
    ])
    #expect(node == expected)
  }

  @Test("Compact JSON on one line, and JSON with tab indentation inside braces")
  func compactJSON() throws {
    let node = try PipelineText.parse(#"{"a":1,"b":[true,null,{"c":"d"}],"e":{}}"#)
    #expect(node == map(1, [
      ("a", 1, scalar("1", 1)),
      ("b", 1, seq(1, [scalar("true", 1), null(1), map(1, [("c", 1, scalar("d", 1, quoted: true))])])),
      ("e", 1, map(1, [])),
    ]))
    let tabbed = try PipelineText.parse("{\n\t\"a\": [\n\t\t1\n\t]\n}\n")
    #expect(tabbed == map(1, [("a", 2, seq(2, [scalar("1", 3)]))]))
    #expect(try PipelineText.parse("[]") == seq(1, []))
    #expect(try PipelineText.parse("\n\n[\n]\n") == seq(3, []))
  }

  @Test("Sequences at the key's indentation and indented deeper are the same")
  func sequenceIndentation() throws {
    let flush = try PipelineText.parse("steps:\n- a\n- b\nafter: 1\n")
    let deep = try PipelineText.parse("steps:\n    - a\n    - b\nafter: 1\n")
    let expected = map(1, [("steps", 1, seq(2, [scalar("a", 2), scalar("b", 3)])), ("after", 4, scalar("1", 4))])
    #expect(flush == expected)
    #expect(deep == expected)
  }

  @Test("Mappings inside sequence items align on the first key")
  func compactMappings() throws {
    let text = """
      - name: a
        args:
        - x
        - y
      -   name: b
          deep:
            k: v
      - name: c
      """
    let node = try PipelineText.parse(text)
    #expect(node == seq(1, [
      map(1, [("name", 1, scalar("a", 1)), ("args", 2, seq(3, [scalar("x", 3), scalar("y", 4)]))]),
      map(5, [("name", 5, scalar("b", 5)), ("deep", 6, map(7, [("k", 7, scalar("v", 7))]))]),
      map(8, [("name", 8, scalar("c", 8))]),
    ]))
  }

  @Test("Nested sequences, empty items and items on the next line")
  func nestedSequences() throws {
    let text = """
      - - a
        - b
      -
      - # just a comment
      -
        k: v
      -
        - z
      - last
      """
    let node = try PipelineText.parse(text)
    #expect(node == seq(1, [
      seq(1, [scalar("a", 1), scalar("b", 2)]),
      null(3),
      null(4),
      map(6, [("k", 6, scalar("v", 6))]),
      seq(8, [scalar("z", 8)]),
      scalar("last", 9),
    ]))
  }

  @Test("Indented documents, values on the next line, and dedent back out")
  func indentation() throws {
    let text = """
        top:
          mid:
              low: 1
          value:
            on next line
        other: 2
      """
    let node = try PipelineText.parse(text)
    #expect(node == map(1, [
      ("top", 1, map(2, [
        ("mid", 2, map(3, [("low", 3, scalar("1", 3))])),
        ("value", 4, scalar("on next line", 5)),
      ])),
      ("other", 6, scalar("2", 6)),
    ]))
  }

  @Test("Comments and blank lines anywhere, whatever their indentation")
  func commentsAndBlanks() throws {
    let text = "# head\n\na: 1 # c\n      # indented comment\n\t# tab-indented comment\n  \t  \nb:   # nothing\n\n  c: 2\n# tail"
    let node = try PipelineText.parse(text)
    #expect(node == map(3, [("a", 3, scalar("1", 3)), ("b", 7, map(9, [("c", 9, scalar("2", 9))]))]))
  }

  @Test("CRLF and CR line ends and a byte-order mark are accepted")
  func lineEnds() throws {
    let expected = map(1, [("a", 1, scalar("1", 1)), ("b", 2, seq(3, [scalar("x", 3)]))])
    #expect(try PipelineText.parse("a: 1\r\nb:\r\n- x\r\n") == expected)
    #expect(try PipelineText.parse("a: 1\rb:\r- x") == expected)
    #expect(try PipelineText.parse("\u{FEFF}a: 1\nb:\n- x") == expected)
  }

  @Test("A top-level scalar is a document")
  func topLevelScalar() throws {
    #expect(try PipelineText.parse("hello world") == scalar("hello world", 1))
    #expect(try PipelineText.parse("\n\n'quoted' # c\n") == scalar("quoted", 3, quoted: true))
    #expect(try PipelineText.parse("---\n~\n") == null(2))
  }
}

// MARK: - Scalars

@Suite("PipelineText: scalars")
struct PipelineScalarTests {
  @Test(
    "Plain scalars keep their text",
    arguments: [
      ("a: a:b", "a:b"),
      ("a: /x/y.safetensors", "/x/y.safetensors"),
      ("a: https://example.com:8080/p?q=1", "https://example.com:8080/p?q=1"),
      ("a: value   ", "value"),
      ("a: value # comment", "value"),
      ("a: value\t# comment", "value"),
      ("a: a#b", "a#b"),
      ("a: x, y [z] {w}", "x, y [z] {w}"),
      ("a: -1.5e+3", "-1.5e+3"),
      ("a: true", "true"),
      ("a: 0x1F", "0x1F"),
      ("a: ---", "---"),
      ("a: - ", nil),
      ("a:\tv", "v"),
      ("a: Null", "Null"),
      ("a : spaced", "spaced"),
      ("a: multiple words here", "multiple words here"),
      ("a: -x", "-x"),
      ("a: ?x", "?x"),
      ("a: ::x", "::x"),
      ("a: é ü 中文", "é ü 中文"),
    ] as [(String, String?)])
  func plainScalars(text: String, expected: String?) throws {
    if let expected {
      #expect(try PipelineText.parse(text)["a"] == scalar(expected, 1), "\(text)")
    } else {
      #expect(parseError(text) != nil, "\(text)")
    }
  }

  @Test("Quoted scalars: single quotes, JSON escapes, and quoted keys")
  func quotedScalars() throws {
    let text = #"""
      s1: 'it''s'
      s2: '# not a comment, \n not an escape'
      s3: ''
      d1: "a\"b\\c\/d\b\f\n\r\t"
      d2: "\u00e9\u4E2D\ud83d\ude00"
      d3: "tab	inside"
      d4: "# not a comment" # a comment
      "quoted key": 1
      'single key': 2
      "json":3
      "": empty key
      n1: "null"
      n2: '~'
      n3: ~
      n4: null
      """#
    let node = try PipelineText.parse(text)
    #expect(node["s1"] == scalar("it's", 1, quoted: true))
    #expect(node["s2"] == scalar(#"# not a comment, \n not an escape"#, 2, quoted: true))
    #expect(node["s3"] == scalar("", 3, quoted: true))
    #expect(node["d1"] == scalar("a\"b\\c/d\u{08}\u{0C}\n\r\t", 4, quoted: true))
    #expect(node["d2"] == scalar("é中😀", 5, quoted: true))
    #expect(node["d3"] == scalar("tab\tinside", 6, quoted: true))
    #expect(node["d4"] == scalar("# not a comment", 7, quoted: true))
    #expect(node.entry("quoted key")?.line == 8)
    #expect(node["single key"] == scalar("2", 9))
    #expect(node["json"] == scalar("3", 10))
    #expect(node[""] == scalar("empty key", 11))
    #expect(node["n1"] == scalar("null", 12, quoted: true))
    #expect(node["n2"] == scalar("~", 13, quoted: true))
    #expect(node["n3"] == null(14))
    #expect(node["n4"] == null(15))
  }
}

// MARK: - Flow collections

@Suite("PipelineText: flow collections")
struct PipelineFlowTests {
  @Test("Nested flow collections spanning lines, with comments")
  func multiLineFlow() throws {
    let text = """
      a: [1, "b", 3]
      m: {x: 1, "y": [2, 3], z: {w: v}}
      long: [
        one,   # first
        two,
        [three,
         four]
      ]
      after: end
      """
    let node = try PipelineText.parse(text)
    #expect(node == map(1, [
      ("a", 1, seq(1, [scalar("1", 1), scalar("b", 1, quoted: true), scalar("3", 1)])),
      ("m", 2, map(2, [
        ("x", 2, scalar("1", 2)),
        ("y", 2, seq(2, [scalar("2", 2), scalar("3", 2)])),
        ("z", 2, map(2, [("w", 2, scalar("v", 2))])),
      ])),
      ("long", 3, seq(3, [scalar("one", 4), scalar("two", 5), seq(6, [scalar("three", 6), scalar("four", 7)])])),
      ("after", 9, scalar("end", 9)),
    ]))
  }

  @Test("One trailing comma is tolerated; empty values in flow mappings are null")
  func trailingCommaAndNulls() throws {
    #expect(try PipelineText.parse("[a, b,]") == seq(1, [scalar("a", 1), scalar("b", 1)]))
    #expect(try PipelineText.parse("[\n  a,\n  b,\n]") == seq(1, [scalar("a", 2), scalar("b", 3)]))
    #expect(try PipelineText.parse("{a: 1,}") == map(1, [("a", 1, scalar("1", 1))]))
    #expect(
      try PipelineText.parse("{a: , b:, c: ~, d: 'x'}")
        == map(1, [("a", 1, null(1)), ("b", 1, null(1)), ("c", 1, null(1)), ("d", 1, scalar("x", 1, quoted: true))]))
    #expect(try PipelineText.parse("{a:}") == map(1, [("a", 1, null(1))]))
  }

  @Test("Flow plain scalars stop at flow indicators but keep inner colons")
  func flowPlainScalars() throws {
    #expect(
      try PipelineText.parse("[a:b, http://x/y, 1 2, -3]")
        == seq(1, [scalar("a:b", 1), scalar("http://x/y", 1), scalar("1 2", 1), scalar("-3", 1)]))
    #expect(try PipelineText.parse("{k: [a]}")["k"] == seq(1, [scalar("a", 1)]))
  }

  @Test("Flow collections as sequence items and top-level values")
  func flowInBlock() throws {
    let node = try PipelineText.parse("- [1, 2]\n- {a: b}\n- []\n- {}\n")
    #expect(node == seq(1, [
      seq(1, [scalar("1", 1), scalar("2", 1)]),
      map(2, [("a", 2, scalar("b", 2))]),
      seq(3, []),
      map(4, []),
    ]))
  }
}

// MARK: - Accessors

@Suite("PipelineText: accessors")
struct PipelineAccessorTests {
  @Test("string, items, entries, keys, subscript, entry, isNull, kindName")
  func accessors() throws {
    let node = try PipelineText.parse("a: x\nb: [1, 2]\nc:\nd: {e: f}\n")
    #expect(node.keys == ["a", "b", "c", "d"])
    #expect(node["a"]?.string == "x")
    #expect(node["b"]?.items?.compactMap(\.string) == ["1", "2"])
    #expect(node["c"]?.isNull == true)
    #expect(node["d"]?["e"]?.string == "f")
    #expect(node.entry("d")?.line == 4)
    #expect(node["missing"] == nil)
    #expect(node["a"]?["x"] == nil)
    #expect(node.string == nil)
    #expect(node.items == nil)
    #expect(node["a"]?.entries == nil)
    #expect(node.entries?.count == 4)
    #expect(
      [node.kindName, node["a"]?.kindName, node["b"]?.kindName, node["c"]?.kindName]
        == ["mapping", "scalar", "sequence", "null"])
  }
}

// MARK: - Errors

@Suite("PipelineText: errors")
struct PipelineErrorTests {
  @Test(
    "Rejected input names the line and the problem",
    arguments: [
      // Features outside the subset.
      ("a: &x 1", 1, "anchors"),
      ("a: 1\nb: *x", 2, "aliases"),
      ("&x a: 1", 1, "anchors"),
      ("a: !!str 1", 1, "tags"),
      ("- !tag x", 1, "tags"),
      ("a: |\n  text", 1, "block scalars"),
      ("a:\n  b: >-\n    text", 2, "block scalars"),
      ("? a\n: b", 1, "complex mapping keys"),
      ("a: 1\n? b", 2, "complex mapping keys"),
      ("{? a: 1}", 1, "complex mapping keys"),
      ("%YAML 1.2\n---\na: 1", 1, "directives"),
      ("a: @x", 1, "reserved"),
      ("a: `x`", 1, "reserved"),
      ("a: 1\n---\nb: 2", 2, "multiple documents"),
      ("---\n---\na: 1", 2, "multiple documents"),
      ("a: 1\n...\n", 2, "'...'"),
      ("--- a: 1", 1, "content on the '---' line"),
      // Empty documents.
      ("", 1, "empty document"),
      ("   \n# only a comment\n\n", 1, "empty document"),
      ("# c\n---\n# c\n", 1, "empty document"),
      // Indentation.
      ("\ta: 1", 1, "tab character in indentation"),
      ("a:\n\tb: 1", 2, "tab character in indentation"),
      ("a:\n  \tb: 1", 2, "tab character in indentation"),
      ("-\ta: 1", 1, "tab character after '-'"),
      ("a:\n  b: 1\n c: 2", 3, "inconsistent indentation"),
      ("a:\n  b: 1\n   c: 2", 3, "inconsistent indentation"),
      ("a: b\n  c", 2, "multi-line plain scalars"),
      ("- a\n  b", 2, "inconsistent indentation"),
      ("- a: 1\n   b: 2", 2, "inconsistent indentation"),
      ("- a: 1\n b: 2", 2, "inconsistent indentation"),
      ("  a: 1\nb: 2", 2, "inconsistent indentation"),
      ("just\ntext", 2, "multi-line plain scalars"),
      ("- a\nb: 1", 2, "expected a sequence item"),
      ("a:\n  - x\n  b: 1", 3, "expected a sequence item"),
      ("a: 1\n- b", 2, "expected 'key: value'"),
      ("a: 1\nb", 2, "expected 'key: value'"),
      // Junk after values.
      ("a: \"x\" y", 1, "unexpected text after \"x\""),
      ("a: 'x'y", 1, "unexpected text after \"x\""),
      ("a: [1] x", 1, "unexpected text after the flow sequence"),
      ("a: {b: 1} x", 1, "unexpected text after the flow mapping"),
      ("a:\n  b: [1, 2]#x", 2, "unexpected text after the flow sequence"),
      ("\"top\" junk", 1, "unexpected text"),
      ("{}\nx", 2, "unexpected content after the document's top-level value"),
      ("a: b: c", 1, "a nested mapping must start on its own line"),
      ("- a: b: c", 1, "a nested mapping must start on its own line"),
      ("a: - b", 1, "block sequence cannot start on its key's line"),
      (": x", 1, "missing mapping key"),
      ("a: ]", 1, "unexpected ']'"),
      ("[a]: b", 1, "flow collections cannot be mapping keys"),
      ("{[a]: b}", 1, "flow collections cannot be mapping keys"),
      // Quotes.
      ("a: \"abc\nb: 1", 1, "unterminated double-quoted scalar"),
      ("x:\n  - 'abc", 2, "unterminated single-quoted scalar"),
      ("x: \"abc\\", 1, "unterminated double-quoted scalar"),
      ("a: \"\\x41\"", 1, "unsupported escape '\\x'"),
      ("a: \"\\ud800\"", 1, "unpaired surrogate \\uD800"),
      ("a: \"\\ud800\\u0041\"", 1, "unpaired surrogate"),
      ("a: \"\\udc00\"", 1, "unpaired surrogate \\uDC00"),
      ("a: \"\\u12\"", 1, "four hexadecimal digits"),
      // Flow collections.
      ("a: [1,\n 2\n", 1, "unterminated flow sequence"),
      ("{\n\"a\": {\n\"b\": 1", 2, "unterminated flow mapping: '{' at line 2"),
      ("[a: 1]", 1, "inside a flow sequence"),
      ("{a}", 1, "expected ':' after key \"a\""),
      ("{a:1}", 1, "expected ':' after key \"a:1\""),
      ("[a,,b]", 1, "empty entry"),
      ("[,]", 1, "empty entry"),
      ("{,}", 1, "empty entry"),
      ("[\"a\" \"b\"]", 1, "expected ',' or ']'"),
      ("{a: 1 ]", 1, "expected ',' or '}'"),
      ("[\n1,\n- 2]", 3, "block sequence items"),
      ("[a,#b]", 1, "comment must follow whitespace"),
      // Duplicates.
      ("a: 1\nb: 2\na: 3", 3, "duplicate key \"a\" at lines 1 and 3"),
      ("a: 1\n\"a\": 2", 2, "duplicate key \"a\" at lines 1 and 2"),
      ("- k: 1\n  j: 2\n  k: 3", 3, "duplicate key \"k\" at lines 1 and 3"),
      ("{\n\"x\": 1,\n\"x\": 2\n}", 3, "duplicate key \"x\" at lines 2 and 3"),
      // Bytes.
      ("a: 1\nb: x\u{07}", 2, "control character U+0007"),
      ("a: \u{7F}", 1, "control character U+007F"),
    ] as [(String, Int, String)])
  func rejected(text: String, line: Int, message: String) throws {
    let error = try #require(parseError(text), "should be rejected: \(text.debugDescription)")
    #expect(error.line == line, "\(text.debugDescription): \(error)")
    #expect(error.message.contains(message), "\(text.debugDescription): \(error)")
  }

  @Test("Duplicate keys in different mappings are fine")
  func duplicatesInSeparateMappings() throws {
    let node = try PipelineText.parse("s:\n- k: 1\n- k: 2\nm: {k: 3}")
    #expect(node["s"]?.items?.compactMap { $0["k"]?.string } == ["1", "2"])
    #expect(node["m"]?["k"]?.string == "3")
    #expect(parseError("a: {k: 1}\nb: {k: 2}") == nil)
  }

  @Test("The description is 'line N: message'")
  func description() {
    let error = PipelineTextError(line: 7, message: "boom")
    #expect(error.description == "line 7: boom")
    #expect(parseError("a: 1\na: 2")?.description == "line 2: duplicate key \"a\" at lines 1 and 2")
  }

  @Test("Nesting is bounded, in flow and in block style")
  func depthLimit() throws {
    let deepFlow = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
    #expect(parseError(deepFlow)?.message.contains("nesting deeper than") == true)
    let deepBlock = (0..<200).map { String(repeating: " ", count: $0) + "k\($0):" }.joined(separator: "\n")
    #expect(parseError(deepBlock)?.message.contains("nesting deeper than") == true)
    let deepDashes = String(repeating: "- ", count: 500) + "x"
    #expect(parseError(deepDashes)?.message.contains("nesting deeper than") == true)
    let fine = String(repeating: "[", count: PipelineText.maxDepth) + String(repeating: "]", count: PipelineText.maxDepth)
    #expect(parseError(fine) == nil)
  }
}

// MARK: - Robustness

@Suite("PipelineText: robustness")
struct PipelineFuzzTests {
  /// Parses and ignores the outcome: the point is that nothing traps.
  private func survive(_ text: String) {
    _ = try? PipelineText.parse(text)
  }

  @Test("Every prefix of valid documents parses or throws")
  func prefixes() {
    for document in [samplePipeline, sampleJSON] {
      let bytes = Array(document.utf8)
      for n in 0...bytes.count { survive(String(decoding: bytes[..<n], as: UTF8.self)) }
    }
  }

  @Test("Random byte mutations of valid documents parse or throw")
  func mutations() {
    var rng = SeededRandom(seed: 0x5EED)
    let interesting = Array(" \t\n\r:-#'\"[]{},\\&*!|>?%@`~.u0".utf8) + [0x00, 0x80, 0xC3, 0xFF]
    var accepted = 0
    for document in [samplePipeline, sampleJSON] {
      let original = Array(document.utf8)
      for _ in 0..<1500 {
        var bytes = original
        for _ in 0..<(1 + rng.below(4)) {
          let i = rng.below(bytes.count)
          switch rng.below(4) {
          case 0: bytes[i] = interesting[rng.below(interesting.count)]
          case 1: bytes[i] = UInt8(truncatingIfNeeded: rng.next())
          case 2: bytes.insert(interesting[rng.below(interesting.count)], at: i)
          default: bytes.remove(at: i)
          }
          if bytes.isEmpty { bytes = [0x20] }
        }
        if (try? PipelineText.parse(String(decoding: bytes, as: UTF8.self))) != nil { accepted += 1 }
      }
    }
    // Some mutations (inside scalars, say) leave a valid document.
    #expect(accepted > 0)
  }

  @Test("Short random texts over the indicator alphabet parse or throw")
  func randomTexts() {
    var rng = SeededRandom(seed: 42)
    let alphabet = Array(" \n:-#'\"[]{},\\ab1~".utf8)
    for _ in 0..<3000 {
      let bytes = (0..<rng.below(24)).map { _ in alphabet[rng.below(alphabet.count)] }
      survive(String(decoding: bytes, as: UTF8.self))
    }
  }
}
