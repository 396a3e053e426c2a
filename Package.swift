// swift-tools-version:6.0
import PackageDescription

// One target per stage of the data flow (see docs/architecture.md):
// config -> poll plan -> poll -> record -> disk buffer -> publish.
// C libraries stay behind their wrapper modules (Modbus, MQTT, Buffer).
let package = Package(
    name: "Uplink",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "uplink", targets: ["uplink"]),
        .executable(name: "uplink-sim", targets: ["uplink-sim"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        // Sparkplug B payloads (Sources/Publisher/sparkplug_b.pb.swift was generated with protoc-gen-swift
        // 1.39.0 and uses its runtime's name-map format, so 1.39.0 is the lowest version that compiles it).
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    ],
    targets: [
        // System libraries (Debian: libmodbus-dev, libmosquitto-dev, libsqlite3-dev).
        .systemLibrary(name: "CModbus", pkgConfig: "libmodbus", providers: [.apt(["libmodbus-dev"])]),
        .systemLibrary(name: "CMosquitto", pkgConfig: "libmosquitto", providers: [.apt(["libmosquitto-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),

        // Pure Swift: records, types, decoding, request planning. No I/O.
        .target(name: "UplinkCore"),
        // YAML -> validated UplinkCore model, with file:line:key errors.
        .target(name: "UplinkConfig", dependencies: ["UplinkCore", .product(name: "Yams", package: "Yams")]),
        // Swift over libmodbus (client side).
        .target(name: "Modbus", dependencies: ["CModbus"]),
        // Poll loops: one per TCP device, one per serial bus.
        .target(name: "Collector", dependencies: ["UplinkCore", "Modbus"]),
        // Durable store-and-forward queue of records (SQLite).
        .target(name: "Buffer", dependencies: ["UplinkCore", "CSQLite"]),
        // Swift over libmosquitto.
        .target(name: "MQTT", dependencies: ["CMosquitto"]),
        // Payload profiles, topics, and the drain loop from the buffer to the broker.
        .target(name: "Publisher", dependencies: ["UplinkCore", "Buffer", "MQTT", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
                exclude: ["sparkplug_b.proto"]),
        // The `uplink run` daemon: wiring, lifecycle, logs, systemd, status.
        .target(name: "Agent", dependencies: ["UplinkCore", "UplinkConfig", "Collector", "Buffer", "MQTT", "Publisher"]),
        // Simulated machines served over Modbus TCP and RTU.
        .target(name: "Simulator", dependencies: [.product(name: "Yams", package: "Yams")]),

        .executableTarget(name: "uplink", dependencies: [
            "UplinkCore", "UplinkConfig", "Modbus", "Collector", "Buffer", "Agent",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "uplink-bench", dependencies: [
            "UplinkCore", "UplinkConfig", "Modbus", "Collector", "Buffer", "MQTT",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "uplink-sim", dependencies: [
            "Simulator",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .testTarget(name: "UplinkCoreTests", dependencies: ["UplinkCore"], resources: [.copy("Fixtures")]),
        .testTarget(name: "UplinkConfigTests", dependencies: ["UplinkConfig", "UplinkCore"], resources: [.copy("testcases")]),
        .testTarget(name: "ModbusTests", dependencies: ["Modbus", "Collector", "UplinkCore", "TestSupport"]),
        .testTarget(name: "SimulatorTests", dependencies: ["Simulator", "Modbus", "TestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["TestSupport"]),
        .testTarget(name: "PublisherTests", dependencies: ["Publisher", "Buffer", "UplinkCore", .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        // Platform profiles end to end (ThingsBoard, Sparkplug B, commands) with real mosquitto, uplink-sim and uplink.
        .testTarget(name: "PlatformTests", dependencies: ["Agent", "Publisher", "UplinkCore", "UplinkConfig", "Collector", "MQTT", "TestSupport",
                                                          .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        .testTarget(name: "AgentTests", dependencies: ["Agent", "TestSupport"]),
        .testTarget(name: "ReliabilityTests", dependencies: ["TestSupport", "UplinkConfig", "UplinkCore", "Simulator", "Buffer", "Agent"]),
        .testTarget(name: "BufferTests", dependencies: ["Buffer", "UplinkCore", "TestSupport"]),
        .testTarget(name: "MQTTTests", dependencies: ["MQTT", "TestSupport"]),
        .target(name: "TestSupport", path: "Tests/TestSupport"),
    ],
    swiftLanguageModes: [.v6]
)
