// Fault decisions in-process: what each fault makes a machine do with a request, independent of
// the transport. The interop tests check what masters then see on the wire.

import Testing
@testable import Simulator

@Suite("Fault injection decisions")
struct FaultTests {
    static let read: [UInt8] = [3, 0, 0, 0, 4]

    func machine(_ faults: FaultSet = FaultSet()) throws -> Machine {
        var definition = try loadProfile("temperature-controller")
        definition.faults = faults
        return Machine(definition: definition, seed: 3, now: 100)
    }

    @Test("no fault: a normal response from the request's unit")
    func clean() throws {
        let reply = try machine().handle(pdu: Self.read, unit: 1, now: 100)
        guard case .respond(let pdu) = reply.action else { Issue.record("no response"); return }
        #expect(pdu.prefix(2) == [3, 8] && pdu.count == 10)
        #expect(reply.unit == 1 && reply.delay == 0 && reply.mutation == .none)
    }

    @Test("exception: the configured code instead of the answer, and a write is not applied")
    func exception() throws {
        let machine = try machine(FaultSet(exception: .init(code: .serverDeviceBusy)))
        #expect(machine.handle(pdu: Self.read, unit: 1, now: 100).action == .respond([0x83, 0x06]))
        #expect(machine.handle(pdu: [6, 0, 1, 0x04, 0xB0], unit: 1, now: 100).action == .respond([0x86, 0x06]))
        #expect(machine.model.value(of: "setpoint") == 180)
        machine.setFaults(FaultSet(exception: .init(code: .illegalDataAddress)))
        #expect(machine.handle(pdu: Self.read, unit: 1, now: 100).action == .respond([0x83, 0x02]))
    }

    @Test("no_response is silence; drop_connection closes")
    func silenceAndClose() throws {
        #expect(try machine(FaultSet(noResponse: 1)).handle(pdu: Self.read, unit: 1, now: 100).action == .silent)
        #expect(try machine(FaultSet(dropConnection: 1)).handle(pdu: Self.read, unit: 1, now: 100).action == .close)
    }

    @Test("slow: the response is delayed by delay +- jitter")
    func slow() throws {
        let exact = try machine(FaultSet(slow: .init(delay: 1.5))).handle(pdu: Self.read, unit: 1, now: 100)
        #expect(exact.delay == 1.5)
        let jittery = try machine(FaultSet(slow: .init(delay: 1, jitter: 0.2)))
        for _ in 0..<100 { #expect((0.8...1.2).contains(jittery.handle(pdu: Self.read, unit: 1, now: 100).delay)) }
    }

    @Test("short: a well-framed read response with fewer values than asked (byte count agrees with the data)")
    func short() throws {
        let reply = try machine(FaultSet(short: 1)).handle(pdu: Self.read, unit: 1, now: 100)
        guard case .respond(let pdu) = reply.action else { Issue.record("no response"); return }
        #expect(pdu[0] == 3 && Int(pdu[1]) == pdu.count - 2 && pdu[1] < 8)
        #expect(Machine.shortened([1, 2, 0xFF, 0x03]) == [1, 1, 0xFF])
        #expect(Machine.shortened([6, 0, 1, 0, 5]) == [6, 0, 1, 0])
    }

    @Test("garbled and truncated mark the frame; the transports damage it so a master can tell")
    func frameDamage() throws {
        let garbled = try machine(FaultSet(garbled: 1)).handle(pdu: Self.read, unit: 1, now: 100)
        guard case .garbled(let noise) = garbled.mutation else { Issue.record("not garbled"); return }
        let pdu = Machine.garbledPDU([3, 8, 1, 2, 3, 4, 5, 6, 7, 8], noise: noise)
        #expect(pdu.count == 10 && (0x41...0x48).contains(pdu[0]))
        let frame = RTUFraming.encode(unit: 1, pdu: [3, 2, 0, 7])
        #expect(!RTUFraming.hasValidCRC(Machine.garbledRTU(frame, noise: noise)))
        #expect(try machine(FaultSet(truncated: 1)).handle(pdu: Self.read, unit: 1, now: 100).mutation == .truncated)
    }

    @Test("wrong_unit answers from another unit id (the configured one if given)")
    func wrongUnit() throws {
        #expect(try machine(FaultSet(wrongUnit: .init())).handle(pdu: Self.read, unit: 1, now: 100).unit == 2)
        #expect(try machine(FaultSet(wrongUnit: .init())).handle(pdu: Self.read, unit: 247, now: 100).unit == 1)
        #expect(try machine(FaultSet(wrongUnit: .init(unit: 9))).handle(pdu: Self.read, unit: 1, now: 100).unit == 9)
    }

    @Test("offline: away for 'for' seconds after 'after', again every 'every', counted from when it was set")
    func offlineSchedule() throws {
        let schedule = FaultSet.Offline(after: 10, duration: 5, every: 60)
        #expect(!schedule.isOffline(elapsed: 9.9))
        #expect(schedule.isOffline(elapsed: 10) && schedule.isOffline(elapsed: 14.9))
        #expect(!schedule.isOffline(elapsed: 15) && !schedule.isOffline(elapsed: 69))
        #expect(schedule.isOffline(elapsed: 71))
        let machine = try machine()
        machine.setFaults(FaultSet(offline: .init(duration: 30)), now: 1000)
        #expect(machine.isOffline(now: 1000) && machine.isOffline(now: 1029))
        #expect(machine.handle(pdu: Self.read, unit: 1, now: 1010).action == .silent)
        #expect(!machine.isOffline(now: 1030))
        #expect(machine.handle(pdu: Self.read, unit: 1, now: 1031).action != .silent)
    }

    @Test("probabilities: a 30 % fault fires on about 30 % of requests, and never at 0 %")
    func probability() throws {
        let machine = try machine(FaultSet(noResponse: 0.3))
        var silent = 0
        for _ in 0..<2000 where machine.handle(pdu: Self.read, unit: 1, now: 100).action == .silent { silent += 1 }
        #expect((480...720).contains(silent))
        let never = try self.machine(FaultSet(noResponse: 0))
        for _ in 0..<200 { #expect(never.handle(pdu: Self.read, unit: 1, now: 100).action != .silent) }
        #expect(machine.statistics.faults["no_response"] == silent)
    }

    @Test("faults are per machine, and adding merges while setting replaces")
    func perMachine() throws {
        let first = try machine(), second = try machine()
        first.setFaults(FaultSet(noResponse: 1))
        #expect(second.handle(pdu: Self.read, unit: 1, now: 100).action != .silent)
        first.addFaults(FaultSet(slow: .init(delay: 2)))
        #expect(first.faults.activeNames == ["slow", "no_response"])
        first.setFaults(FaultSet(garbled: 1))
        #expect(first.faults.activeNames == ["garbled"])
    }
}
