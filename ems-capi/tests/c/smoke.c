/* A small C runtime-style program driving the ems heap through its C ABI. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "linmem_ems.h"

static uint64_t pool[8192];  /* 64 KiB, 8-aligned */
static uint64_t moved[8192];

#define CHECK(cond, code)                                   \
    do {                                                    \
        if (!(cond)) {                                      \
            fprintf(stderr, "check failed: %s\n", #cond);   \
            return code;                                    \
        }                                                   \
    } while (0)

int main(void) {
    ems_heap_t *h = ems_init_with_pool(pool, sizeof pool);
    CHECK(h != NULL, 1);
    CHECK(ems_init_with_pool((char *)pool + 4, 1024) == NULL, 2);

    char *a = ems_alloc(h, 100);
    CHECK(a != NULL && ((uintptr_t)a % 8) == 0, 3);
    strcpy(a, "hello from C");
    char *b = ems_alloc_aligned(h, 64, 4096);
    CHECK(b != NULL && ((uintptr_t)b % 4096) == 0, 4);
    a = ems_realloc(h, a, 5000);
    CHECK(a != NULL && strcmp(a, "hello from C") == 0, 5);

    ems_stats_t st;
    CHECK(ems_stats(h, &st) == EMS_OK, 6);
    CHECK(st.used_blocks == 2 && st.used + st.free == st.total, 7);
    CHECK(st.high_water >= st.used, 8);

    /* The runtime moves the pool: copy the bytes, rebase in O(1). */
    size_t off_a = (size_t)(a - (char *)pool);
    size_t off_b = (size_t)(b - (char *)pool);
    memcpy(moved, pool, sizeof pool);
    memset(pool, 0xAB, sizeof pool);
    CHECK(ems_migrate(h, moved) == EMS_OK, 9);
    a = (char *)moved + off_a;
    b = (char *)moved + off_b;
    CHECK(strcmp(a, "hello from C") == 0, 10);
    char *c = ems_alloc(h, 300);
    CHECK(c >= (char *)moved && c < (char *)moved + sizeof moved, 11);
    CHECK(ems_free(h, c) == EMS_OK, 12);
    CHECK(ems_free(h, b) == EMS_OK, 13);
    CHECK(ems_free(h, NULL) == EMS_OK, 14);

    /* Misuse fails closed and stays closed. */
    CHECK(ems_free(h, b) == EMS_ERR_DOUBLE_FREE, 15);
    CHECK(ems_is_corrupted(h) == 1, 16);
    CHECK(ems_alloc(h, 8) == NULL, 17);
    CHECK(ems_free(h, a) == EMS_ERR_FAILED_CLOSED, 18);
    CHECK(ems_stats(h, &st) == EMS_ERR_CORRUPTED, 19);
    ems_destroy(h);

    puts("ems c abi ok");
    return 0;
}
