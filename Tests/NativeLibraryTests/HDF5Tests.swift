import Foundation
import HDF5
import Testing

@Suite("HDF5")
struct HDF5Tests {
  @Test("Writes groups, datasets and attributes, then reads them back")
  func roundTrip() throws {
    try withTemporaryDirectory { directory in
      let path = directory.appendingPathComponent("report.h5").path
      let weight: [Float] = (0..<12).map { Float($0) * 0.25 - 1 }
      let bias: [Double] = [0.5, -1e-300, .pi, 1e300]
      let indices: [Int64] = [0, -1, Int64.max, Int64.min, 42]
      let counts: [Int64] = [1, 2, 3, 4, 5, 6]

      do {
        let file = try HDF5File(creatingAt: path)
        try file.setAttribute("tool", to: "ckpt")
        try file.setAttribute("format_version", to: Int64(3))
        try file.setAttribute("tolerance", to: 1e-3)
        try file.setAttribute("note", to: "first")
        try file.setAttribute("note", to: "naïve ✓")  // replaces the first value

        let layer = try file.createGroup("layers/0")  // creates "layers" too
        let dataset = try layer.createDataset("weight", values: weight, shape: [3, 4])
        try dataset.setAttribute("units", to: "ulp")
        try dataset.setAttribute("scale", to: Float(0.5))
        try layer.setAttribute("name", to: "model.layers.0.mlp")
        try layer.createDataset("bias", values: bias)
        try file.createDataset("/layers/0/indices", values: indices)
        try file.createDataset("summary/counts", values: counts, shape: [2, 3])
        try file.createDataset("summary/empty", values: [Double](), shape: [0])
        try file.createDataset("summary/scalar", values: [Float(7)], shape: [])
        try file.flush()
      }

      let file = try HDF5File(openingAt: path)
      #expect(try file.stringAttribute("tool") == "ckpt")
      #expect(try file.attribute("format_version", as: Int64.self) == 3)
      #expect(try file.attribute("tolerance", as: Double.self) == 1e-3)
      #expect(try file.stringAttribute("note") == "naïve ✓")
      #expect(try file.attributeNames() == ["format_version", "note", "tolerance", "tool"])

      #expect(
        try file.members() == [
          .init(name: "layers", kind: .group), .init(name: "summary", kind: .group),
        ])
      let layer = try file.openGroup("layers/0")
      #expect(layer.path == "/layers/0")
      #expect(try layer.stringAttribute("name") == "model.layers.0.mlp")
      #expect(try layer.members().map(\.name) == ["bias", "indices", "weight"])
      #expect(try layer.members().allSatisfy { $0.kind == .dataset })

      let dataset = try layer.openDataset("weight")
      #expect(dataset.shape == [3, 4])
      #expect(dataset.path == "/layers/0/weight")
      #expect(try dataset.read(as: Float.self) == weight)
      #expect(try dataset.read(as: Double.self) == weight.map(Double.init))
      #expect(try dataset.stringAttribute("units") == "ulp")
      #expect(try dataset.attribute("scale", as: Float.self) == 0.5)
      #expect(try dataset.attribute("scale", as: Double.self) == 0.5)

      #expect(try layer.readDataset("bias", as: Double.self) == bias)
      #expect(try layer.readDataset("indices", as: Int64.self) == indices)
      let summary = try file.openGroup("summary")
      #expect(try summary.openDataset("counts").shape == [2, 3])
      #expect(try summary.readDataset("counts", as: Int64.self) == counts)
      #expect(try summary.openDataset("empty").shape == [0])
      #expect(try summary.readDataset("empty", as: Double.self) == [])
      #expect(try summary.openDataset("scalar").shape == [])
      #expect(try summary.readDataset("scalar", as: Float.self) == [7])
    }
  }

  @Test("Reports a missing object with the failing call and its path")
  func missingObject() throws {
    try withTemporaryDirectory { directory in
      let path = directory.appendingPathComponent("empty.h5").path
      let file = try HDF5File(creatingAt: path)
      let error = #expect(throws: HDF5Error.self) { try file.openDataset("layers/7/weight") }
      #expect(error?.operation == "H5Dopen2")
      #expect(error?.path == "/layers/7/weight")
      #expect(error?.file == path)
      #expect(error?.description.contains("/layers/7/weight") == true)

      #expect(throws: HDF5Error.self) { try file.openGroup("nowhere") }
      #expect(throws: HDF5Error.self) { try file.stringAttribute("absent") }
      _ = try file.createGroup("taken")
      #expect(throws: HDF5Error.self) { try file.createGroup("taken") }
    }
  }

  @Test("Refuses to read integers as floats, strings as numbers, and arrays as scalars")
  func typeMismatch() throws {
    try withTemporaryDirectory { directory in
      let file = try HDF5File(creatingAt: directory.appendingPathComponent("types.h5").path)
      try file.createDataset("ints", values: [Int64(1), 2])
      try file.createDataset("floats", values: [Float(1), 2])
      try file.setAttribute("label", to: "x")
      try file.setAttribute("count", to: 3)

      let error = #expect(throws: HDF5Error.self) { try file.readDataset("ints", as: Float.self) }
      #expect(error?.message.contains("integer") == true)
      #expect(throws: HDF5Error.self) { try file.readDataset("floats", as: Int64.self) }
      #expect(throws: HDF5Error.self) { try file.attribute("label", as: Double.self) }
      #expect(throws: HDF5Error.self) { try file.stringAttribute("count") }
      #expect(try file.attribute("count", as: Int.self) == 3)
    }
  }

  @Test("Rejects writes to a file opened read-only, and opening a missing file")
  func readOnly() throws {
    try withTemporaryDirectory { directory in
      let path = directory.appendingPathComponent("frozen.h5").path
      try HDF5File(creatingAt: path).setAttribute("state", to: "sealed")
      let file = try HDF5File(openingAt: path, mode: .readOnly)
      #expect(throws: HDF5Error.self) { try file.setAttribute("state", to: "changed") }
      #expect(throws: HDF5Error.self) { try file.createGroup("new") }
      #expect(try file.stringAttribute("state") == "sealed")

      let missing = directory.appendingPathComponent("missing.h5").path
      let error = #expect(throws: HDF5Error.self) { try HDF5File(openingAt: missing) }
      #expect(error?.operation == "H5Fopen")
      #expect(error?.file == missing)
    }
  }

  @Test("Serializes libhdf5 across concurrent writers of separate files")
  func concurrentWriters() async throws {
    let directory = FileManager.default.temporaryDirectory
      .appendingPathComponent("NativeLibraryTests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }

    try await withThrowingTaskGroup(of: Void.self) { group in
      for task in 0..<8 {
        group.addTask {
          let path = directory.appendingPathComponent("file\(task).h5").path
          let values = (0..<1000).map { Double($0 * task) }
          do {
            let file = try HDF5File(creatingAt: path)
            for index in 0..<10 {
              try file.createDataset("group\(index)/values", values: values, shape: [10, 100])
              try file.setAttribute("attribute\(index)", to: Int64(index))
            }
          }
          let file = try HDF5File(openingAt: path)
          #expect(try file.members().count == 10)
          #expect(try file.readDataset("group9/values", as: Double.self) == values)
        }
      }
      try await group.waitForAll()
    }
  }
}
