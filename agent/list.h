/*
 * list.h: an intrusive, circular, doubly linked list, after HAProxy's
 * `struct list` (include/haproxy/list.h).
 *
 * What it does: a `struct list` is both the head of a list and the link an
 * element embeds; an empty head points at itself, so insertion and removal
 * never test for NULL or for the ends. LIST_ELEM() gets from a link back to
 * the element that embeds it; the _SAFE walk allows the current element to
 * be deleted (and freed) during the walk.
 *
 * What it never does: allocate, lock, or count; an element is on at most one
 * list through a given link, and the list does not own what it links (the
 * caller frees an element after list_delete()).
 */
#ifndef SPOA_LIST_H
#define SPOA_LIST_H

#include <stddef.h>

struct list {
	struct list *next, *prev;
};

/* A head (or link) initializer: an empty list, a detached link. */
#define LIST_HEAD_INIT(l) { &(l), &(l) }

/* Makes <l> an empty list (or a detached link). */
static inline void list_init(struct list *l)
{
	l->next = l->prev = l;
}

/* 1 if the list headed by <l> is empty (or the link <l> is detached). */
static inline int list_empty(const struct list *l)
{
	return l->next == l;
}

/* Inserts <el> (a detached link) right after <at>: at the front when <at>
 * is the head. */
static inline void list_insert(struct list *at, struct list *el)
{
	el->next = at->next;
	el->prev = at;
	at->next->prev = el;
	at->next = el;
}

/* Inserts <el> (a detached link) right before <at>: at the back when <at>
 * is the head. */
static inline void list_append(struct list *at, struct list *el)
{
	list_insert(at->prev, el);
}

/* Unlinks <el> from its list and leaves it detached (deleting a detached
 * link again is harmless). Never touches the element around <el>. */
static inline void list_delete(struct list *el)
{
	el->prev->next = el->next;
	el->next->prev = el->prev;
	list_init(el);
}

/* The element of type <type> whose member <member> is the link <lnk>. */
#define LIST_ELEM(lnk, type, member) \
	((type *)(void *)((char *)(lnk) - offsetof(type, member)))

/* Walks the elements <it> (a pointer to <type>) of the list <head>, front to
 * back. The body must not delete <it>: use LIST_FOR_EACH_SAFE for that. */
#define LIST_FOR_EACH(it, head, type, member) \
	for ((it) = LIST_ELEM((head)->next, type, member); \
	     &(it)->member != (head); \
	     (it) = LIST_ELEM((it)->member.next, type, member))

/* The same walk, where the body may delete (and free) <it>, but no other
 * element; <nx> (a pointer to <type>) holds the next one. */
#define LIST_FOR_EACH_SAFE(it, nx, head, type, member) \
	for ((it) = LIST_ELEM((head)->next, type, member), \
	     (nx) = LIST_ELEM((it)->member.next, type, member); \
	     &(it)->member != (head); \
	     (it) = (nx), (nx) = LIST_ELEM((nx)->member.next, type, member))

#endif /* SPOA_LIST_H */
