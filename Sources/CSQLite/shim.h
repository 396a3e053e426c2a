#ifndef UPLINK_CSQLITE_SHIM_H
#define UPLINK_CSQLITE_SHIM_H
#include <sqlite3.h>
// SQLITE_TRANSIENT is a cast macro Swift does not import (PITFALLS G5).
static sqlite3_destructor_type const uplink_sqlite_transient = SQLITE_TRANSIENT;
#endif
