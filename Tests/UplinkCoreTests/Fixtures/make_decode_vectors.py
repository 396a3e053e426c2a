#!/usr/bin/env python3
"""Generates decode_vectors.json: register words for known values, produced independently of
Uplink's decoder (Python's struct for the byte layout, pymodbus for CDAB word order).

Orders, named after a 32-bit value's bytes A..D as they arrive on the wire:
  ABCD = struct big-endian;  DCBA = struct little-endian;
  CDAB = pymodbus convert_to_registers(word_order="little");  BADC = big-endian with each byte pair swapped.
Run: .venv/bin/python Tests/UplinkCoreTests/Fixtures/make_decode_vectors.py > Tests/UplinkCoreTests/Fixtures/decode_vectors.json
"""
import json, math, struct, sys
from pymodbus.client import ModbusTcpClient

DT = ModbusTcpClient.DATATYPE
FORMATS = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q",
           "float32": "f", "float64": "d"}
PYMODBUS = {"int16": DT.INT16, "uint16": DT.UINT16, "int32": DT.INT32, "uint32": DT.UINT32,
            "int64": DT.INT64, "uint64": DT.UINT64, "float32": DT.FLOAT32, "float64": DT.FLOAT64}
VALUES = {
    "int16": [0, 1, -1, 12345, -32768, 32767],
    "uint16": [0, 1, 65535, 0x1234],
    "int32": [0, -1, 123456789, -2147483648, 2147483647],
    "uint32": [0, 4294967295, 0x12345678, 305419896],
    "int64": [0, -1, -9223372036854775808, 9223372036854775807, 0x0102030405060708],
    "uint64": [0, 18446744073709551615, 0x0102030405060708],
    "float32": [0.0, -0.0, 1.5, -273.15, 3.4028234663852886e38, 1.401298464324817e-45, math.inf, -math.inf, math.nan],
    "float64": [0.0, 1.0 / 3.0, -1e300, 5e-324, 1.7976931348623157e308, math.inf, -math.inf, math.nan],
}

def words_of(data):
    return [(data[i] << 8) | data[i + 1] for i in range(0, len(data), 2)]

def encode(type_name, order, value):
    fmt = FORMATS[type_name]
    big = struct.pack(">" + fmt, value)
    if order == "ABCD":
        return words_of(big)
    if order == "DCBA":
        return words_of(struct.pack("<" + fmt, value))
    if order == "BADC":
        swapped = bytearray(big)
        for i in range(0, len(swapped), 2):
            swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
        return words_of(bytes(swapped))
    if order == "CDAB":
        if type_name in ("int16", "uint16"):
            return words_of(big)
        return ModbusTcpClient.convert_to_registers(value, PYMODBUS[type_name], word_order="little")
    raise ValueError(order)

def expected(type_name, value):
    if type_name == "float32":
        value = struct.unpack(">f", struct.pack(">f", value))[0]
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)  # exact round-trip text, parsed as Double by the test
    return str(value)       # integers as text: JSON numbers lose 64-bit precision

vectors = []
for type_name, values in VALUES.items():
    for order in ("ABCD", "BADC", "CDAB", "DCBA"):
        for value in values:
            vectors.append({"type": type_name, "order": order, "words": encode(type_name, order, value),
                            "expected": expected(type_name, value)})
# Strings: two ASCII characters per register, first in the high byte (BADC/DCBA: low byte first).
for text, registers in (("IMM-3000", 4), ("SN12345", 4), ("AB", 1), ("", 2)):
    raw = text.encode("ascii").ljust(registers * 2, b"\0")
    vectors.append({"type": "string:%d" % registers, "order": "ABCD", "words": words_of(raw), "expected": text})
    swapped = bytearray(raw)
    for i in range(0, len(swapped), 2):
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    vectors.append({"type": "string:%d" % registers, "order": "BADC", "words": words_of(bytes(swapped)), "expected": text})
json.dump(vectors, sys.stdout, indent=0)
sys.stdout.write("\n")
