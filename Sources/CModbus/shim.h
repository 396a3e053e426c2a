#ifndef UPLINK_CMODBUS_SHIM_H
#define UPLINK_CMODBUS_SHIM_H
#include <modbus/modbus.h>
#include <errno.h>

// libmodbus' error codes are enum arithmetic macros that Swift does not import (PITFALLS G5).
static const int uplink_modbus_enobase = MODBUS_ENOBASE;
static const int uplink_embbadcrc = EMBBADCRC;
static const int uplink_embbaddata = EMBBADDATA;
static const int uplink_embbadexc = EMBBADEXC;
static const int uplink_embmdata = EMBMDATA;
static const int uplink_embbadslave = EMBBADSLAVE;
static const int uplink_embunkexc = EMBUNKEXC;

static inline int uplink_errno(void) { return errno; }
#endif
