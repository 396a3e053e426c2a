#!/usr/bin/env python3
"""A third-party Modbus server (pymodbus) with known contents, for Uplink's client tests.

  pymodbus_server.py tcp PORT        serves units 1 and 2 on 127.0.0.1:PORT
  pymodbus_server.py rtu PTY_PATH    serves units 1 and 2 over RTU on a serial device (9600 8N1)

Contents (PDU addresses; pymodbus blocks start at 1 to serve address 0):
  unit 1 holding 0..99   = 1000 + address
  unit 1 holding 100..101 = float32 123.25 in ABCD, 102..103 = the same in CDAB
  unit 1 holding 104..107 = int64 -1234567890123 in ABCD, 108..111 = "IMM-3000" ASCII
  unit 1 input 0..9      = 2000 + address
  unit 1 coils 0..15     = address % 3 == 0;  discrete 0..15 = address % 2 == 1
  unit 2 holding 0..9    = 5000 + address
Reads beyond these blocks answer exception 2 (illegal data address).
"""
import logging, struct, sys
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusSlaveContext, ModbusServerContext
from pymodbus.framer import FramerType
from pymodbus.server import StartSerialServer, StartTcpServer

logging.basicConfig(level=logging.ERROR)

def words(data):
    return [(data[i] << 8) | data[i + 1] for i in range(0, len(data), 2)]

f = struct.pack(">f", 123.25)
holding = [1000 + a for a in range(100)]
holding += words(f) + words(f[2:] + f[:2])
holding += words(struct.pack(">q", -1234567890123)) + words(b"IMM-3000")
unit1 = ModbusSlaveContext(
    hr=ModbusSequentialDataBlock(1, holding),
    ir=ModbusSequentialDataBlock(1, [2000 + a for a in range(10)]),
    co=ModbusSequentialDataBlock(1, [a % 3 == 0 for a in range(16)]),
    di=ModbusSequentialDataBlock(1, [a % 2 == 1 for a in range(16)]),
)
unit2 = ModbusSlaveContext(
    hr=ModbusSequentialDataBlock(1, [5000 + a for a in range(10)]),
    ir=ModbusSequentialDataBlock(1, [0] * 10),
    co=ModbusSequentialDataBlock(1, [False] * 10),
    di=ModbusSequentialDataBlock(1, [False] * 10),
)
context = ModbusServerContext(slaves={1: unit1, 2: unit2}, single=False)

mode, where = sys.argv[1], sys.argv[2]
print("serving %s %s" % (mode, where), flush=True)
if mode == "tcp":
    StartTcpServer(context=context, address=("127.0.0.1", int(where)))
else:
    StartSerialServer(context=context, framer=FramerType.RTU, port=where, baudrate=9600, bytesize=8, parity="N", stopbits=1)
