/*
 * test_list.c: unit tests of the intrusive list (agent/list.h).
 *
 * What it does: empty heads, front and back insertion, order of both walks,
 * deletion of the first, a middle and the last element, deletion (and free)
 * during the safe walk, a second delete of a detached link, LIST_ELEM with
 * the link not first in its struct.
 *
 * What it never does: depend on anything but list.h.
 */
#include <stdlib.h>

#include "list.h"
#include "tap.h"

struct item {
	int value;                      /* before the link: LIST_ELEM must subtract */
	struct list link;
};

#define N_ITEMS 5

/* The values of <head>'s elements, front to back, as digits in <out>. */
static const char *values(struct list *head, char *out, size_t size)
{
	struct item *it;
	size_t n = 0;

	LIST_FOR_EACH(it, head, struct item, link)
		if (n + 1 < size)
			out[n++] = (char)('0' + it->value);
	out[n] = '\0';
	return out;
}

/* The same, back to front through the prev links. */
static const char *values_back(struct list *head, char *out, size_t size)
{
	struct list *l;
	size_t n = 0;

	for (l = head->prev; l != head; l = l->prev)
		if (n + 1 < size)
			out[n++] = (char)('0' + LIST_ELEM(l, struct item, link)->value);
	out[n] = '\0';
	return out;
}

static void test_basic(void)
{
	struct list head = LIST_HEAD_INIT(head);
	struct item items[N_ITEMS];
	char buf[16];
	int i;

	ok(list_empty(&head), "initialized head is empty");
	ok(*values(&head, buf, sizeof(buf)) == '\0', "empty walk visits nothing");
	for (i = 0; i < N_ITEMS; i++) {
		items[i].value = i;
		list_init(&items[i].link);
		ok(list_empty(&items[i].link), "a detached link says empty");
	}
	list_append(&head, &items[2].link);
	list_append(&head, &items[3].link);
	list_insert(&head, &items[1].link);
	list_append(&head, &items[4].link);
	list_insert(&head, &items[0].link);
	ok(!list_empty(&head), "not empty after inserts");
	is_mem(values(&head, buf, sizeof(buf)), 5, "01234", 5, "front and back inserts in order");
	is_mem(values_back(&head, buf, sizeof(buf)), 5, "43210", 5, "prev links agree");

	list_delete(&items[2].link);
	is_mem(values(&head, buf, sizeof(buf)), 4, "0134", 4, "middle deleted");
	ok(list_empty(&items[2].link), "deleted link is detached");
	list_delete(&items[2].link);
	is_mem(values(&head, buf, sizeof(buf)), 4, "0134", 4, "second delete is harmless");
	list_delete(&items[0].link);
	list_delete(&items[4].link);
	is_mem(values(&head, buf, sizeof(buf)), 2, "13", 2, "first and last deleted");
	is_mem(values_back(&head, buf, sizeof(buf)), 2, "31", 2, "prev links still agree");
	list_insert(&items[1].link, &items[2].link);
	is_mem(values(&head, buf, sizeof(buf)), 3, "123", 3, "insert after an element");
	list_delete(&items[1].link);
	list_delete(&items[2].link);
	list_delete(&items[3].link);
	ok(list_empty(&head), "empty again");
}

static void test_safe_walk_frees(void)
{
	struct list head;
	struct item *it, *nx;
	char buf[16];
	int i, seen = 0, freed = 0;

	list_init(&head);
	for (i = 0; i < N_ITEMS; i++) {
		it = malloc(sizeof(*it));
		if (!it)
			abort();
		it->value = i;
		list_append(&head, &it->link);
	}
	LIST_FOR_EACH_SAFE(it, nx, &head, struct item, link) {
		seen++;
		if (it->value % 2 == 0) {
			list_delete(&it->link);
			free(it);
			freed++;
		}
	}
	is_int(seen, N_ITEMS, "safe walk visits every element");
	is_int(freed, 3, "even ones freed during the walk");
	is_mem(values(&head, buf, sizeof(buf)), 2, "13", 2, "odd ones remain in order");
	LIST_FOR_EACH_SAFE(it, nx, &head, struct item, link) {
		list_delete(&it->link);
		free(it);
	}
	ok(list_empty(&head), "all freed: empty");
}

int main(void)
{
	test_basic();
	test_safe_walk_frees();
	return done_testing();
}
