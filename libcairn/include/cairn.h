/*
 * libcairn: checkpoints driven by the program itself, under a cairn
 * supervisor (`cairn run -D DIR -- CMD`, `cairn pair`).
 *
 * Link with -lcairn (libcairn.so, built by `cargo build --release -p
 * libcairn` as target/release/libcairn_lib.so; its SONAME is libcairn.so).
 * Every call returns a negative errno value on error: -ENOTCONN when the
 * program does not run under a supervisor (no CAIRN_CONTROL_SOCKET in its
 * environment, or nothing listens there). The library connects on its
 * first call: a program that never calls it holds nothing of cairn's.
 * Calls of one process are serialized; the connection belongs to the
 * process that makes the first call (others: -EBUSY).
 *
 * Any process of the supervised tree may connect, whatever its uid (the
 * socket is an abstract unix socket; the supervisor serves the processes
 * that descend from it). Others get -EACCES. The supervisor serves one
 * connection at a time: the call of a second process waits at most 5 s
 * (CAIRN_CONNECT_WAIT_MS) for the first process's connection to close,
 * then returns -ETIMEDOUT (also when a checkpoint comes while it waits);
 * the next call tries again.
 * The protocol: docs/ARCHITECTURE.md, "libcairn".
 */
#ifndef CAIRN_H
#define CAIRN_H

#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How long a second process's call waits for the connection. */
#define CAIRN_CONNECT_WAIT_MS 5000

/* Most bytes one nonrestart checkpoint carries (64 KiB). */
#define CAIRN_DATA_MAX 65536

/*
 * A restart checkpoint of the process (its tree) at this point. Returns
 * 0 in the process that goes on once the supervisor has the checkpoint,
 * and 1 in a process restored from it (like fork's two returns).
 */
int cairn_checkpoint(void);

/*
 * A nonrestart checkpoint: the supervisor keeps these len bytes (at most
 * CAIRN_DATA_MAX, else -E2BIG), the newest replacing the one before.
 * Returns 0 once they are stored.
 */
int cairn_checkpoint_data(const void *buf, size_t len);

/*
 * The newest nonrestart data the supervisor has (in a process that was
 * restored or took over), copied to buf: its length, -ENODATA when there
 * is none, -EMSGSIZE when len is too small (CAIRN_DATA_MAX always does).
 */
ssize_t cairn_takeover_data(void *buf, size_t len);

/* 1 in a process of `cairn pair` that is (or comes from) a backup that
 * took over when the primary failed, 0 in the first primary (always 0
 * under `cairn run`). */
int cairn_is_backup(void);

#ifdef __cplusplus
}
#endif

#endif /* CAIRN_H */
