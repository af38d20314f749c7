import Foundation
import StrictJSON
import Testing

@Suite("StrictJSON")
struct ParserTests {
  @Test("Looks up members of small and large objects")
  func lookups() throws {
    for n in [1, 3, 8, 9, 20, 200] {
      let text = "{" + (0..<n).map { "\"k\($0)\":\($0)" }.joined(separator: ",") + "}"
      let v = try JSONParser.parse(text)
      for k in 0..<n { #expect(v["k\(k)"]?.intValue == k, "n=\(n) k=\(k)") }
      #expect(v["missing"] == nil)
      #expect(v.objectValue?.keys == (0..<n).map { "k\($0)" })
    }
  }

  @Test("Parses the fixture expectations file and finds nested members")
  func fixtureFile() throws {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    let bytes = Array(try Data(contentsOf: url.appendingPathComponent("Fixtures/reference/expected.json")))
    let v = try JSONParser.parse(bytes)
    let files = try #require(v["files"]?.objectValue)
    #expect(files.count == 6)
    for (name, entry) in files.members {
      #expect(entry["header_text"]?.stringValue?.hasPrefix("{\"__metadata__\"") == true, "\(name): \(entry.objectValue?.keys ?? [])")
      #expect(files[name]?["header_text"]?.stringValue?.hasPrefix("{\"__metadata__\"") == true, "\(name)")
    }
  }
}
