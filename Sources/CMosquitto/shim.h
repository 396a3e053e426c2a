#ifndef UPLINK_CMOSQUITTO_SHIM_H
#define UPLINK_CMOSQUITTO_SHIM_H
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <errno.h>
static inline int uplink_mosq_errno(void) { return errno; }
#endif
