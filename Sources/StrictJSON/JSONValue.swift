/// A JSON value that keeps what a round trip needs: object key order and the
/// exact text of every number.
///
/// CheckpointKit rewrites `config.json` and index files that other tools wrote.
/// Keeping key order and number spelling (`1e-06`, `50000.0`) means a rewritten
/// file differs from its input only where the rewrite meant it to.
public enum JSONValue: Sendable, Equatable {
  case null
  case bool(Bool)
  case number(JSONNumber)
  case string(String)
  case array([JSONValue])
  case object(JSONObject)

  /// The string, if this is a string.
  public var stringValue: String? {
    if case .string(let s) = self { return s }
    return nil
  }

  /// The boolean, if this is a boolean.
  public var boolValue: Bool? {
    if case .bool(let b) = self { return b }
    return nil
  }

  /// The number, if this is a number.
  public var numberValue: JSONNumber? {
    if case .number(let n) = self { return n }
    return nil
  }

  /// The number as a `Double`, if this is a number.
  public var doubleValue: Double? { numberValue?.double }

  /// The number as an `Int`, if this is a number written as an integer that fits.
  public var intValue: Int? { numberValue?.int }

  /// The elements, if this is an array.
  public var arrayValue: [JSONValue]? {
    if case .array(let a) = self { return a }
    return nil
  }

  /// The object, if this is an object.
  public var objectValue: JSONObject? {
    if case .object(let o) = self { return o }
    return nil
  }

  /// Whether this is `null`.
  public var isNull: Bool {
    if case .null = self { return true }
    return false
  }

  /// The member named `key`, if this is an object that has it.
  public subscript(key: String) -> JSONValue? {
    objectValue?[key]
  }

  /// A short name of the value's kind, for error messages ("string", "array", …).
  public var kindName: String {
    switch self {
    case .null: "null"
    case .bool: "boolean"
    case .number: "number"
    case .string: "string"
    case .array: "array"
    case .object: "object"
    }
  }
}

/// A JSON number kept as the text it was written with.
///
/// Conversions are exact or absent: ``uint64`` is `nil` for `1.0`, `1e3`, `-1`
/// or anything beyond `UInt64.max`, as in serde's strict integer decoding.
public struct JSONNumber: Sendable, Hashable, CustomStringConvertible {
  public static func == (a: JSONNumber, b: JSONNumber) -> Bool { a.text == b.text }
  public func hash(into h: inout Hasher) { h.combine(text) }

  /// The number's JSON text, for example `-1.5e-06`.
  public let text: String
  /// The value when the text is a non-negative integer that fits in `UInt64`
  /// (computed once, by the parser, for fast header validation).
  private let unsigned: UInt64?

  /// Creates a number from JSON text that the caller guarantees is valid,
  /// with its value when the text is a non-negative integer that fits
  /// (the parser computes it while scanning the digits).
  init(validatedText: String, unsigned: UInt64?) {
    self.text = validatedText
    self.unsigned = unsigned
  }

  /// Creates the number for an integer.
  public init(_ value: Int) {
    self.text = String(value)
    self.unsigned = value >= 0 ? UInt64(value) : nil
  }

  /// Creates the number for an unsigned integer.
  public init(_ value: UInt64) {
    self.text = String(value)
    self.unsigned = value
  }

  /// Creates the number for a finite `Double`, in Swift's shortest round-trip
  /// spelling (`0.1`, `1e-06` becomes `1e-06`).
  ///
  /// - Precondition: `value` is finite; JSON has no NaN or infinity.
  public init(_ value: Double) {
    precondition(value.isFinite, "JSON cannot represent \(value)")
    self.text = value.description
    self.unsigned = nil
  }

  /// Whether the text is a plain integer (no fraction, no exponent).
  public var isInteger: Bool { !text.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }) }

  /// The value as `UInt64`, when the text is a non-negative integer that fits.
  public var uint64: UInt64? { unsigned }

  /// The value as `Int64`, when the text is an integer that fits.
  public var int64: Int64? { isInteger ? Int64(text) : nil }

  /// The value as `Int`, when the text is an integer that fits.
  public var int: Int? {
    if let unsigned { return unsigned <= UInt64(Int.max) ? Int(unsigned) : nil }
    return isInteger ? Int(text) : nil
  }

  /// The value as the nearest `Double`.
  public var double: Double { Double(text) ?? .nan }

  public var description: String { text }
}

/// A JSON object that keeps its members in document order.
///
/// Lookup by key is O(1). Setting an existing key keeps its position; a new
/// key is appended.
public struct JSONObject: Sendable, Equatable {
  /// The members in document order.
  public private(set) var members: [(key: String, value: JSONValue)] = []
  /// Key → position, built only for objects larger than ``smallLimit``
  /// (a linear scan is faster than hashing for a handful of keys, and most
  /// objects in checkpoint headers have three).
  private var index: [String: Int]? = nil
  private static let smallLimit = 8

  /// Creates an empty object.
  public init() {}

  /// Creates an object from members in order; a later duplicate key replaces
  /// the value of the earlier one and keeps the earlier position.
  public init(_ members: [(String, JSONValue)]) {
    for (k, v) in members { self[k] = v }
  }

  /// The member keys in document order.
  public var keys: [String] { members.map(\.key) }

  /// The number of members.
  public var count: Int { members.count }

  /// Whether the object has no members.
  public var isEmpty: Bool { members.isEmpty }

  private func position(of key: String) -> Int? {
    if let index { return index[key] }
    return members.firstIndex { $0.key == key }
  }

  /// The value for `key`; assigning `nil` removes the member.
  public subscript(key: String) -> JSONValue? {
    get { position(of: key).map { members[$0].value } }
    set {
      if let newValue {
        if let i = position(of: key) {
          members[i].value = newValue
        } else {
          append(key, newValue)
        }
      } else if let i = position(of: key) {
        members.remove(at: i)
        if index != nil { rebuildIndex() }
      }
    }
  }

  /// Appends a member whose key the caller knows is new (the parser checks).
  mutating func appendNew(_ key: String, _ value: JSONValue) { append(key, value) }

  private mutating func append(_ key: String, _ value: JSONValue) {
    members.append((key, value))
    if index != nil {
      index![key] = members.count - 1
    } else if members.count > Self.smallLimit {
      rebuildIndex()
    }
  }

  private mutating func rebuildIndex() {
    var d = [String: Int](minimumCapacity: members.count * 2)
    for (i, m) in members.enumerated() { d[m.key] = i }
    index = d
  }

  /// Whether the object has a member named `key`.
  public func contains(_ key: String) -> Bool { position(of: key) != nil }

  public static func == (lhs: JSONObject, rhs: JSONObject) -> Bool {
    lhs.members.count == rhs.members.count
      && zip(lhs.members, rhs.members).allSatisfy { $0.key == $1.key && $0.value == $1.value }
  }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByBooleanLiteral,
  ExpressibleByIntegerLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral,
  ExpressibleByNilLiteral, ExpressibleByFloatLiteral
{
  public init(stringLiteral value: String) { self = .string(value) }
  public init(booleanLiteral value: Bool) { self = .bool(value) }
  public init(integerLiteral value: Int) { self = .number(JSONNumber(value)) }
  public init(floatLiteral value: Double) { self = .number(JSONNumber(value)) }
  public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
  public init(dictionaryLiteral elements: (String, JSONValue)...) {
    self = .object(JSONObject(elements))
  }
  public init(nilLiteral: ()) { self = .null }
}
