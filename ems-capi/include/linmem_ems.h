/*
 * linmem_ems.h - C ABI of the linmem ems heap (crate linmem-ems-capi).
 *
 * A heap over a caller-given pool, WAMR ems style: 4-byte block headers,
 * exact-size free lists and a balanced size tree, every internal link a
 * pool offset (so ems_migrate after moving the pool is O(1)), and
 * fail-closed checks: a double free, a foreign pointer or a damaged header
 * makes every later call fail, and ems_is_corrupted() report 1.
 *
 * The bookkeeping lives in the handle, outside the pool. Calls on one
 * handle must not run concurrently. Link with liblinmem_ems_capi.a and the
 * Rust standard library's native dependencies (on Linux:
 * -lpthread -ldl -lm -lrt -lutil -lgcc_s -lc).
 */
#ifndef LINMEM_EMS_H
#define LINMEM_EMS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EMS_OK 0
#define EMS_ERR_DOUBLE_FREE (-1)
#define EMS_ERR_FOREIGN (-2)
#define EMS_ERR_CORRUPTED (-3)
#define EMS_ERR_FAILED_CLOSED (-4)
#define EMS_ERR_INVALID (-5)

/* Opaque heap handle. */
typedef struct EmsHeap ems_heap_t;

/* Heap statistics, filled by a full heap walk. Histogram bucket i counts
 * blocks (header included) of 2^i .. 2^(i+1)-1 bytes. */
typedef struct ems_stats {
    size_t pool_len;
    size_t total;       /* bytes in blocks: used + free */
    size_t used;        /* bytes in live blocks, headers included */
    size_t free;
    size_t high_water;  /* most bytes ever in use */
    size_t gap;
    size_t used_blocks;
    size_t free_blocks;
    uint32_t used_hist[32];
    uint32_t free_hist[32];
    size_t tree_nodes;
    uint32_t tree_height;
} ems_stats_t;

/* A heap over [buf, buf + size); buf must be 8-aligned. NULL on failure. */
ems_heap_t *ems_init_with_pool(void *buf, size_t size);
/* Releases the handle (not the pool). */
void ems_destroy(ems_heap_t *heap);
/* size bytes, 8-aligned; NULL when out of memory or failed closed. */
void *ems_alloc(ems_heap_t *heap, size_t size);
/* size bytes aligned to align (a power of two). */
void *ems_alloc_aligned(ems_heap_t *heap, size_t size, size_t align);
/* EMS_OK or a negative EMS_ERR_* (the heap then fails closed). free(NULL) is OK. */
int ems_free(ems_heap_t *heap, void *ptr);
/* Resize keeping contents, in place when possible; NULL ptr allocates.
 * NULL on failure (the old block stays live unless the heap failed closed). */
void *ems_realloc(ems_heap_t *heap, void *ptr, size_t size);
/* The pool's bytes were copied to new_base (8-aligned): O(1) rebase. */
int ems_migrate(ems_heap_t *heap, void *new_base);
/* The pool grew by extra bytes at its end. */
int ems_extend(ems_heap_t *heap, size_t extra);
/* EMS_OK, or EMS_ERR_CORRUPTED when the walk finds damage / failed closed. */
int ems_stats(ems_heap_t *heap, ems_stats_t *out);
/* 1 when the heap failed closed, else 0. */
int ems_is_corrupted(ems_heap_t *heap);

#ifdef __cplusplus
}
#endif

#endif /* LINMEM_EMS_H */
