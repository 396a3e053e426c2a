#!/usr/bin/env python3
"""Writes a ThingsBoard IoT Gateway config directory for the benchmark's synthetic machines:
  tb_config.py DIR BROKER_PORT DEVICES SIGNALS INTERVAL_MS SIM_PORT_BASE STORAGE(memory|sqlite|file)
The "thingsboard" connection points at the local mosquitto (any access token); the Modbus
connector polls DEVICES machines on SIM_PORT_BASE.. with SIGNALS uint16 holding registers each
(function code 3, addresses 0..SIGNALS-1), reporting every reading (ON_RECEIVED), QoS 1."""
import json, os, sys

d, port, devices, signals, interval, base, storage = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
os.makedirs(d, exist_ok=True)
data = os.path.join(d, "data") + "/"
os.makedirs(data, exist_ok=True)
storage_cfg = {"type": storage}
if storage == "sqlite":
    storage_cfg.update(data_file_path=data, messages_ttl_check_in_hours=1, messages_ttl_in_days=7, max_read_records_count=1000)
elif storage == "file":
    storage_cfg.update(data_folder_path=data, max_file_count=100, max_read_records_count=100, max_records_per_file=10000)
else:
    storage_cfg.update(read_records_count=100, max_records_count=1000000)
gw = {
    "thingsboard": {
        "host": "127.0.0.1", "port": port, "remoteShell": False, "remoteConfiguration": False, "latencyDebugMode": False,
        "statistics": {"enable": False, "statsSendPeriodInSeconds": 3600, "customStatsSendPeriodInSeconds": 3600},
        "deviceFiltering": {"enable": False},
        "maxPayloadSizeBytes": 8196, "minPackSendDelayMS": 50, "minPackSizeToSend": 500,
        "checkConnectorsConfigurationInSeconds": 3600, "handleDeviceRenaming": False,
        "security": {"type": "accessToken", "accessToken": "bench"},
        "qos": 1, "reportStrategy": {"type": "ON_RECEIVED"},
        "checkingDeviceActivity": {"checkDeviceInactivity": False},
        "rateLimits": "0:0,", "dpRateLimits": "0:0,", "messagesRateLimits": "0:0,", "deviceMessagesRateLimits": "0:0,",
        "deviceRateLimits": "0:0,", "deviceDpRateLimits": "0:0,",
    },
    "storage": storage_cfg,
    "grpc": {"enabled": False},
    "connectors": [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}],
}
slaves = [{
    "host": "127.0.0.1", "port": base + i, "type": "tcp", "method": "socket", "unitId": 1,
    "deviceName": "m%d" % i, "deviceType": "bench", "timeout": 2, "byteOrder": "BIG", "wordOrder": "BIG",
    "retries": 1, "retryOnEmpty": False, "retryOnInvalid": False, "pollPeriod": interval,
    "connectAttemptTimeMs": 500, "connectAttemptCount": 5, "waitAfterFailedAttemptsMs": 1000,
    "reportStrategy": {"type": "ON_RECEIVED"}, "sendDataOnlyOnChange": False,
    "attributes": [], "attributeUpdates": [], "rpc": [],
    "timeseries": [{"tag": "r%d" % s, "type": "16uint", "functionCode": 3, "objectsCount": 1, "address": s} for s in range(signals)],
} for i in range(devices)]
json.dump(gw, open(os.path.join(d, "tb_gateway.json"), "w"), indent=1)
json.dump({"name": "Modbus", "master": {"slaves": slaves}}, open(os.path.join(d, "modbus.json"), "w"), indent=1)
src = os.path.join(os.path.dirname(__import__("thingsboard_gateway").__file__), "config", "logs.json") if False else None
json.dump({"version": 1, "disable_existing_loggers": False,
           "formatters": {"f": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
           "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "f", "level": "WARNING", "stream": "ext://sys.stdout"}},
           "loggers": {n: {"handlers": ["console"], "level": "WARNING", "propagate": False} for n in
                       ["service", "connector", "converter", "tb_connection", "storage", "extension", "root"]},
           "root": {"level": "WARNING", "handlers": ["console"]}}, open(os.path.join(d, "logs.json"), "w"), indent=1)
