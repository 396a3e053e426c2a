// Issue 6, part 1: the crash loop. `uplink run` is killed with SIGKILL at random moments (while it
// starts, polls, commits and publishes, and during a broker outage) and restarted on the same state
// directory each time. At the end the subscriber's data shows that no committed record is missing,
// that the buffer opened cleanly every time, and that repeats are only re-deliveries.

import Foundation
import Testing
import TestSupport

/// Every attack test of issue 6 runs inside this suite, one at a time: each starts several real
/// processes (broker, simulator, agent, subscriber) and the CI machine has two cores.
@Suite("Reliability and security (issue 6)", .serialized)
struct Reliability {}

/// The suites that start a broker.
let needsBroker = ConditionTrait.enabled(if: Broker.isAvailable, "needs mosquitto, mosquitto_sub and mosquitto_pub (PITFALLS G19)")

extension Reliability {
    @Suite("1. Crash loop", needsBroker) struct CrashLoop {
        @Test("SIGKILL at random moments, restarted each time: every committed seq arrives, the buffer opens cleanly every time, repeats are re-deliveries",
              .timeLimit(.minutes(5)))
        func killAndRestartRepeatedly() async throws {
            let sandbox = Sandbox("crash")
            defer { sandbox.cleanUp() }
            var random = SeededGenerator.fromEnvironment()
            let rounds = Environment.soak ? 200 : 30
            let outage = (rounds * 2 / 5)...(rounds * 3 / 5)
            report("crash loop: seed \(random.seed), \(rounds) kills, broker down during rounds \(outage)")

            let broker = try Broker(sandbox)
            let subscriber = try await Subscriber(sandbox, broker: broker)
            let fleet = machines(3, registers: 4)
            _ = try Sim(sandbox, machines: fleet)
            let config = try writeAgentConfig(sandbox, machines: fleet, broker: broker.url, interval: "50ms", buffer: ["late_after: 2s"])
            let state = sandbox.path("state")

            var previousNextSeq: UInt64 = 0
            var previousAcked: UInt64 = 0
            var killsDuringStart = 0, killsWhilePublishing = 0, killsDuringOutage = 0
            for round in 0..<rounds {
                if round == outage.lowerBound { broker.stop() }
                if round == outage.upperBound + 1 { try broker.start() }
                let brokerDown = outage.contains(round)
                let agent = try Agent(sandbox, config: config, stateDirectory: state)
                // Every third round is killed while it starts (opening the buffer, replaying); the others
                // once it is ready, while it polls every 50 ms, commits and publishes.
                let duringStart = round % 3 == 2
                if duringStart {
                    await pause(Double.random(in: 0.0...0.5, using: &random))
                } else {
                    #expect(await agent.waitForLog("msg=ready"), "round \(round): \(agent.output)")
                    await pause(Double.random(in: 0.1...1.5, using: &random))
                }
                let wasRunning = agent.isRunning
                agent.kill9()
                #expect(wasRunning, "round \(round): the agent exited by itself: \(agent.output)")
                #expect(agent.process.process.terminationReason == .uncaughtSignal, "round \(round)")
                // The buffer opened cleanly: no recovery, nothing moved aside.
                #expect(!agent.output.contains("damaged"), "round \(round): \(agent.output)")
                #expect(!agent.output.contains("level=error msg=\"buffer"), "round \(round): \(agent.output)")
                guard round > 0 || agent.output.contains("msg=ready") else { continue }
                let status = try agent.status()
                // seq is never reused: next_seq never goes back, acks only grow.
                #expect(status.nextSeq >= previousNextSeq, "round \(round): next_seq went back: \(status.text)")
                #expect(status.lastAckedSeq >= previousAcked || status.lastAckedSeq == 0, "round \(round): \(status.text)")
                #expect(status.dropped.total == 0, "round \(round): \(status.text)")
                let published = status.lastAckedSeq > previousAcked
                if duringStart { killsDuringStart += 1 } else if brokerDown { killsDuringOutage += 1 } else if published { killsWhilePublishing += 1 }
                previousNextSeq = status.nextSeq
                previousAcked = max(previousAcked, status.lastAckedSeq)
            }
            let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: state.path)) ?? []
            #expect(!leftovers.contains { $0.contains("corrupt") }, "\(leftovers)")

            // A last life, undisturbed: it must deliver everything every earlier life committed.
            let final = try Agent(sandbox, config: config, stateDirectory: state)
            #expect(await final.waitForLog("connected to the broker"), "\(final.output)")
            let target = try final.status().nextSeq
            _ = await subscriber.waitForAll(below: target, timeout: 90)
            #expect(final.terminate(timeout: 5) == 0, "\(final.output)")
            #expect(!final.output.contains("damaged"))
            let status = try final.status()
            #expect(status.backlog.records == 0 && status.dropped.total == 0, "\(status.text)")
            let ledger = await subscriber.waitForAll(below: status.nextSeq)
            expectDelivered(ledger, nextSeq: status.nextSeq)
            // Repeats (checked by expectDelivered) carry the same record as the first delivery: a seq
            // is never given to another record.
            report("crash loop: \(rounds) SIGKILLs (\(killsDuringStart) during start-up, \(killsWhilePublishing) while publishing, \(killsDuringOutage) during the broker outage); \(status.nextSeq - 1) records committed, all delivered; \(ledger.repeatedCount) repeated deliveries, all identical to the first; no recovery needed at any start")
            #expect(killsDuringOutage >= 3 && killsWhilePublishing >= 3 && killsDuringStart >= 3)
        }
    }
}
