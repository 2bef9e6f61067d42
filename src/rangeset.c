// SPDX-License-Identifier: MIT
/* Sorted, disjoint, coalesced sets of address ranges. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void sd_rset_free(struct sd_rset *s)
{
	free(s->v);
	memset(s, 0, sizeof(*s));
}

void sd_rset_clear(struct sd_rset *s)
{
	s->n = 0;
}

int sd_rset_reserve(struct sd_rset *s, size_t n)
{
	struct softdirty_range *v;
	size_t cap;

	if (n <= s->cap)
		return 0;
	cap = s->cap ? s->cap * 2 : 16;
	while (cap < n)
		cap *= 2;
	v = realloc(s->v, cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	s->v = v;
	s->cap = cap;
	return 0;
}

size_t sd_rset_find(const struct sd_rset *s, uint64_t addr)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->v[mid].end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

bool sd_rset_contains(const struct sd_rset *s, uint64_t addr)
{
	size_t i = sd_rset_find(s, addr);

	return i < s->n && s->v[i].start <= addr;
}

int sd_rset_add(struct sd_rset *s, uint64_t start, uint64_t end)
{
	size_t i, j;
	int err;

	if (start >= end)
		return 0;
	/* fast path: appending in order, as most callers do */
	if (s->n && s->v[s->n - 1].end == start) {
		s->v[s->n - 1].end = end;
		return 0;
	}
	if (!s->n || s->v[s->n - 1].end < start) {
		err = sd_rset_reserve(s, s->n + 1);
		if (err)
			return err;
		s->v[s->n++] = (struct softdirty_range){ start, end, 0 };
		return 0;
	}
	/* i: first range touching or after start; j: first range after end */
	i = s->n;
	{
		size_t lo = 0, hi = s->n;

		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;

			if (s->v[mid].end < start)
				lo = mid + 1;
			else
				hi = mid;
		}
		i = lo;
	}
	for (j = i; j < s->n && s->v[j].start <= end; j++)
		;
	if (i == j) {
		err = sd_rset_reserve(s, s->n + 1);
		if (err)
			return err;
		memmove(&s->v[i + 1], &s->v[i], (s->n - i) * sizeof(s->v[0]));
		s->v[i] = (struct softdirty_range){ start, end, 0 };
		s->n++;
		return 0;
	}
	start = MIN(start, s->v[i].start);
	end = MAX(end, s->v[j - 1].end);
	s->v[i].start = start;
	s->v[i].end = end;
	memmove(&s->v[i + 1], &s->v[j], (s->n - j) * sizeof(s->v[0]));
	s->n -= j - i - 1;
	return 0;
}

int sd_rset_remove(struct sd_rset *s, uint64_t start, uint64_t end)
{
	size_t i, j;
	int err;

	if (start >= end)
		return 0;
	i = sd_rset_find(s, start);
	if (i == s->n || s->v[i].start >= end)
		return 0;
	/* removing from the middle of one range splits it */
	if (s->v[i].start < start && s->v[i].end > end) {
		err = sd_rset_reserve(s, s->n + 1);
		if (err)
			return err;
		memmove(&s->v[i + 1], &s->v[i], (s->n - i) * sizeof(s->v[0]));
		s->n++;
		s->v[i].end = start;
		s->v[i + 1].start = end;
		return 0;
	}
	if (s->v[i].start < start) {
		s->v[i].end = start;
		i++;
	}
	for (j = i; j < s->n && s->v[j].end <= end; j++)
		;
	if (j < s->n && s->v[j].start < end)
		s->v[j].start = end;
	memmove(&s->v[i], &s->v[j], (s->n - j) * sizeof(s->v[0]));
	s->n -= j - i;
	return 0;
}
