/// UplinkCore: the plain-Swift heart of Uplink, with no I/O.
///
/// It holds the validated model of what to poll (devices, signals, data types, byte orders),
/// the request planner that turns a device's signals into the fewest Modbus reads, the decoder
/// that turns register words into values, and the `Record` that every later stage carries.
///
/// Guarantees: every function here is pure and deterministic; decoding never traps on any input
/// (short or malformed data yields a `DecodeError`, never a crash); the planner never emits a
/// request over the protocol limits (125 registers, 2000 bits) or the device's own limits.
