/* Intrusive doubly linked lists: an object's state is the list it sits on, so every object
 * embeds one node and moving it between states is O(1) without allocation. */
#ifndef PGWARDEN_POOL_LIST_H
#define PGWARDEN_POOL_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct plist {
    struct plist *next; /* borrowed */
    struct plist *prev; /* borrowed */
};

#define plist_entry(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static inline void plist_init(struct plist *h)
{
    h->next = h->prev = h;
}

static inline bool plist_empty(const struct plist *h)
{
    return h->next == h;
}

static inline void plist_append(struct plist *h, struct plist *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}

static inline void plist_prepend(struct plist *h, struct plist *n)
{
    n->next = h->next;
    n->prev = h;
    h->next->prev = n;
    h->next = n;
}

static inline void plist_remove(struct plist *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}

/* Moves every node of src to the end of dst; src is left empty. */
static inline void plist_splice_tail(struct plist *dst, struct plist *src)
{
    if (plist_empty(src))
        return;
    src->next->prev = dst->prev;
    dst->prev->next = src->next;
    src->prev->next = dst;
    dst->prev = src->prev;
    plist_init(src);
}

/* First node or NULL. */
static inline struct plist *plist_first(const struct plist *h)
{
    return plist_empty(h) ? NULL : h->next;
}

static inline size_t plist_count(const struct plist *h)
{
    size_t n = 0;
    for (const struct plist *p = h->next; p != h; p = p->next)
        n++;
    return n;
}

/* Iterate allowing removal of the current node. */
#define plist_for_each_safe(pos, tmp, head)                                                        \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head);                               \
         (pos) = (tmp), (tmp) = (pos)->next)

#endif
