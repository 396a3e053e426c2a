import Testing
@testable import Agent

@Suite struct LogThrottleTests {
    @Test func theFirstLineGoesThroughAndRepeatsAreHeldAndCounted() async throws {
        let throttle = LogThrottle(interval: .seconds(2))
        #expect(throttle.admit() == 0)
        #expect(throttle.admit() == nil)
        #expect(throttle.admit() == nil)
        try await Task.sleep(for: .milliseconds(2100))
        #expect(throttle.admit() == 2, "the next line carries the count of the held-back ones")
        #expect(throttle.admit() == nil)
    }
}
