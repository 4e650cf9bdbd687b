/* eb_clients — the registry of connected clients, their shared-memory segments and liveness.
 *
 * A client exists from its first message until it has been silent for client_timeout_ms (any
 * message counts: requests, heartbeats, registrations) or says DISCONNECT. It may register a few
 * shared-memory segments (normally one): REGISTER names the segment, the broker maps it
 * read-only and answers a CHALLENGE with a random nonce, the client writes the nonce into the
 * segment header and sends PROVE, and the broker checks the nonce in the mapping. Only then
 * do requests from that client (and no other) reference the segment, by a broker-assigned id.
 * A segment name is registered (proven) by at most one live client at a time; a pending
 * registration blocks nobody and is never unlinked by the broker.
 *
 * The registry keeps clients in a list ordered by last activity, so finding the ones that
 * timed out costs O(expired), not O(clients). It unlinks nothing and sends nothing itself: the
 * broker does that (eb_shm_cleanup_unlink, RELEASE_SEGMENT) when it reaps a client.
 *
 * Not thread-safe.
 */
#ifndef EB_CLIENTS_H
#define EB_CLIENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "eb_idmap.h"
#include "eb_proto.h"
#include "eb_shm.h"
#include "eb_shm_reader.h"

struct eb_request;

enum { EB_CLIENT_MAX_SEGMENTS = 4 };

typedef struct eb_segment {
    uint32_t id;       /* broker-assigned, used in references */
    uint32_t epoch;    /* from the segment header */
    uint64_t size;     /* object size at registration: references are checked against it */
    char name[EB_SHM_NAME_MAX];
    eb_shm_reader *reader; /* read-only mapping (header check, nonce, reference validation) */
    bool proven;           /* nonce verified: usable in requests */
    uint8_t nonce[EB_PROTO_NONCE_BYTES];
} eb_segment;

typedef struct eb_client {
    uint8_t key[EB_IDMAP_KEY_MAX]; /* socket index byte + routing identity */
    size_t key_len;
    void *socket;   /* the frontend ROUTER it talks on */
    bool ipc;       /* that socket is the ipc:// one (segments allowed) */
    int64_t first_seen_us, last_seen_us;
    struct eb_client *live_prev, *live_next;
    eb_segment *segments[EB_CLIENT_MAX_SEGMENTS]; /* proven or pending */
    uint32_t n_segments;
    struct eb_request *requests; /* open requests (doubly linked through the request) */
    size_t n_requests;
    uint64_t n_received;
} eb_client;

typedef struct eb_clients {
    eb_idmap *by_key;
    eb_idmap *segment_by_name; /* name -> eb_segment, registered or pending */
    eb_client *live_head, *live_tail;
    size_t count;
    size_t n_segments;
    uint32_t next_segment_id;
} eb_clients;

eb_status eb_clients_init(eb_clients *c);

/* Free every client and segment still registered (segments are NOT unlinked). */
void eb_clients_fini(eb_clients *c);

/* The client with this key, or NULL. */
eb_client *eb_clients_find(const eb_clients *c, const void *key, size_t key_len);

/* The client with this key, created when absent (NULL when out of memory or bad key). Marks
 * it active now either way. */
eb_client *eb_clients_touch(eb_clients *c, const void *key, size_t key_len, void *socket,
                            bool ipc, int64_t now_us);

/* The client silent the longest, or NULL. */
eb_client *eb_clients_oldest(const eb_clients *c);

/* Take the client out of the registry and free it with its segment records (mappings
 * unmapped; names NOT unlinked: the caller does that first, see eb_clients_segment_names).
 * The caller must have detached its requests. */
void eb_clients_remove(eb_clients *c, eb_client *client);

/* Start a registration: map `name` read-only (eb_shm_reader_attach), check the declared size
 * and that the name is not registered by another client, draw a nonce (written to nonce_out).
 * On EB_OK the segment is pending on this client. Errors with a reason in err:
 *   EB_ERR_DENIED     registration over tcp://, name registered by another client, or the
 *                     segment belongs to another uid
 *   EB_ERR_INVALID    bad name / header, or size differs from the object's
 *   EB_ERR_NOT_FOUND  no such segment
 *   EB_ERR_TOO_LARGE  the client has EB_CLIENT_MAX_SEGMENTS already
 *   EB_ERR_IO, EB_ERR_NOMEM */
eb_status eb_clients_register(eb_clients *c, eb_client *client, const char *name, uint64_t size,
                              uint8_t nonce_out[EB_PROTO_NONCE_BYTES], char *err,
                              size_t err_len);

/* Finish a registration: the pending segment `name` of this client must now hold the nonce.
 * EB_OK and *out = the proven segment; EB_ERR_DENIED when the nonce does not match (the
 * pending registration is dropped: the client must start again), EB_ERR_NOT_FOUND when no
 * registration of that name is pending on this client. */
eb_status eb_clients_prove(eb_clients *c, eb_client *client, const char *name, eb_segment **out,
                           char *err, size_t err_len);

/* The proven segment `id` of this client, or NULL. */
eb_segment *eb_clients_segment(const eb_client *client, uint32_t id);

#endif
