import Foundation
import TestSupport

/// Throw-away PKI made with the openssl command line: a CA, a server certificate for 127.0.0.1, a
/// client certificate (clientAuth, CN uplink-gw-1) for mutual TLS, and a second CA with a client
/// certificate of its own (one the broker must refuse).
struct PKI: Sendable {
    let caFile: String
    let serverCertificate: String
    let serverKey: String
    let clientCertificate: String
    let clientKey: String
    let otherCAFile: String
    let otherClientCertificate: String
    let otherClientKey: String

    static var isAvailable: Bool { TestSupport.which("openssl") != nil }

    init(_ sandbox: Sandbox) throws {
        let dir = sandbox.path("pki")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n".write(toFile: path("server.ext"), atomically: true, encoding: .utf8)
        try "extendedKeyUsage=clientAuth\n".write(toFile: path("client.ext"), atomically: true, encoding: .utf8)
        func ca(_ name: String, _ subject: String) -> [String] {
            ["req", "-x509"] + ec + ["-keyout", path("\(name).key"), "-out", path("\(name).crt"), "-subj", subject, "-days", "2",
                                     "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
        }
        func leaf(_ name: String, _ subject: String, ca: String, ext: String) -> [[String]] {
            [["req"] + ec + ["-keyout", path("\(name).key"), "-out", path("\(name).csr"), "-subj", subject],
             ["x509", "-req", "-in", path("\(name).csr"), "-CA", path("\(ca).crt"), "-CAkey", path("\(ca).key"), "-CAcreateserial",
              "-out", path("\(name).crt"), "-days", "2", "-extfile", path(ext)]]
        }
        let steps = [ca("ca", "/CN=Uplink Reliability CA"), ca("other-ca", "/CN=Some Other CA")]
            + leaf("server", "/CN=127.0.0.1", ca: "ca", ext: "server.ext")
            + leaf("client", "/CN=uplink-gw-1", ca: "ca", ext: "client.ext")
            + leaf("other-client", "/CN=uplink-gw-1", ca: "other-ca", ext: "client.ext")
        for step in steps { try Shell.must(["openssl"] + step) }
        for key in ["ca.key", "other-ca.key", "server.key", "client.key", "other-client.key"] { chmod(path(key), 0o600) }
        caFile = path("ca.crt")
        serverCertificate = path("server.crt")
        serverKey = path("server.key")
        clientCertificate = path("client.crt")
        clientKey = path("client.key")
        otherCAFile = path("other-ca.crt")
        otherClientCertificate = path("other-client.crt")
        otherClientKey = path("other-client.key")
    }
}
