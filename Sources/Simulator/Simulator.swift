/// Simulator: factory machines that speak Modbus, for running the whole "equipment on cloud" path
/// with no hardware.
///
/// The module's job:
/// - load machine profiles and scenarios (`Simulators/*.yaml`) into a validated model, rejecting a
///   broken file with its path, line, column, key path and what was expected (`ProfileLoader`);
/// - simulate each machine's values over simulated time: states with dwell times driving counters,
///   temperatures, derived values, alarm words, writable set points (`MachineModel`, `Simulation`);
/// - serve them as Modbus TCP and Modbus RTU slaves (on pseudo-terminals or serial devices) from one
///   poll() thread, with a pure-Swift codec (`ModbusPDU`, `MBAP`, `RTUFraming`) rather than libmodbus,
///   because frame-level faults and several unit ids on one RTU line are out of libmodbus' reach;
/// - inject faults per machine, set in the profile or switched at run time through a control
///   interface on 127.0.0.1 (`FaultSet`, `ControlAPI`).
///
/// Guarantees:
/// - Deterministic: the same scenario, seed and simulated time give the same registers. Time moves in
///   whole ticks, so wall-clock jitter and the speed factor never change a value.
/// - Total: the codec and framing take any bytes without trapping; a master sending garbage gets an
///   exception, silence or a closed connection, and every other master keeps being served.
/// - Bounded: a master that floods or never reads is throttled (bounded buffers, a per-wake frame cap),
///   not buffered without limit.
/// - Loopback-only control: the control interface binds 127.0.0.1, and only when asked for.
public enum SimulatorModule {
    /// Shown by `uplink-sim --version`.
    public static let version = "0.1.0"
}
