/*
 * exchange.h: one NOTIFY -> one user-service call (or, later, a cache
 * answer) -> one struct decision -> one ACK.
 *
 * An exchange belongs to its worker; while its connection lives it is on the
 * connection's in-flight list. If the connection closes first, the exchange
 * is orphaned (conn = NULL): it still completes, and its result is dropped.
 * Nothing here blocks.
 */
#ifndef SPOA_EXCHANGE_H
#define SPOA_EXCHANGE_H

#include <stdint.h>
#include <time.h>

struct cfg;
struct conn;
struct decision;
struct spop_frame;
struct worker;

struct exchange {
	struct conn *conn;              /* borrowed; NULL once orphaned */
	struct worker *w;               /* owner */
	struct cfg *cfg;                /* reference: the cfg it started with */
	uint64_t sid, fid;              /* echoed exactly in the ACK */
	struct exchange *prev, *next;   /* the connection's in-flight list */
	struct timespec start;
	char cred_hash[9];              /* 8 hex chars of SHA-256(credentials) or "-" */
};

/* Handles NOTIFY frame <f> received on <c> (RUNNING). Either ACKs at once
 * (no `exchange` message: `unset-var txn noop`) or starts an exchange which
 * ACKs through conn_exchange_done() when it completes. All frame data needed
 * later is copied: the frame may be discarded when this returns.
 * Returns 0, or -(enum spop_error) if the payload is malformed (the caller
 * disconnects). */
int exchange_notify(struct conn *c, const struct spop_frame *f);

/* Detaches <x> from its connection (which is closing). The exchange keeps
 * running; its result will be dropped. */
void exchange_orphan(struct exchange *x);

#endif /* SPOA_EXCHANGE_H */
