print("uplink: not built yet")
