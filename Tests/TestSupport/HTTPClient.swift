import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A request to a test peer's HTTP interface (the simulator's control interface) that failed.
public struct HTTPClientError: Error, CustomStringConvertible {
    public let description: String
}

/// One HTTP/1.1 request on 127.0.0.1 (the simulator's control interface closes after each).
public enum HTTPClient {
    public static func request(port: Int, method: String, path: String, body: String = "",
                               timeout: Int = 10) throws -> (status: Int, body: String) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HTTPClientError(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var receiveTimeout = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &receiveTimeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            throw HTTPClientError(description: "connect to 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
        }
        let request = Array("\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)".utf8)
        var sent = 0
        while sent < request.count {
            let n = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw HTTPClientError(description: "send to 127.0.0.1:\(port): \(String(cString: strerror(errno)))") }
            sent += n
        }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            response += chunk[0..<n]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let status = text.split(separator: " ", maxSplits: 2).dropFirst().first.flatMap({ Int($0) }),
              let split = text.range(of: "\r\n\r\n") else {
            throw HTTPClientError(description: "bad HTTP response from 127.0.0.1:\(port): \(text)")
        }
        return (status, String(text[split.upperBound...]))
    }
}
