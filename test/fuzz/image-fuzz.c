// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the image reader (tools/image-fmt.c): any byte
 * string must parse into a consistent image or be refused, never crash,
 * read out of bounds or leak.  Build and run: make fuzz (test/fuzz/README.md).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "image-fmt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct img *im;
	char err[512];
	uint32_t i;
	uint64_t sum = 0;

	if (img_parse(data, size, &im, err, sizeof(err)))
		return 0;
	/* a parsed image: every page resolves inside the buffer */
	(void)img_check_data(im, err, sizeof(err));
	for (i = 0; i < im->nreg; i++) {
		const struct img_region *r = &im->reg[i];
		uint64_t k;

		if (img_find(im, r->start) != r)
			__builtin_trap();
		for (k = 0; k < r->npages; k++) {
			const uint8_t *d, *h;

			if (img_page(im, r->start + k * IMG_PAGE, &d, &h) !=
			    IMG_NONE)
				sum += d[IMG_PAGE - 1] + h[15];
		}
	}
	img_free(im);
	return (int)(sum & 0);
}
