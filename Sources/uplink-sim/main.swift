print("uplink-sim: not built yet")
